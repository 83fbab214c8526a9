# Record of the page-fault measurement quoted in the README: seconds and GB of newly faulted pages per
# full-resolution step of the fast preset at 1008x1344 (random views); output: faults_per_step.txt.
import os, sys, time, resource, ctypes, torch
if os.environ.get('NOMMAP') == '1':
    libc = ctypes.CDLL('libc.so.6')
    print('mallopt', libc.mallopt(-4, 0), libc.mallopt(-1, 1 << 40))  # M_MMAP_MAX=0, M_TRIM_THRESHOLD huge
torch.set_num_threads(int(os.environ.get('NT', '1')))
sys.path.insert(0, 'scripts')
from defocusgan_plugin.data.fake_pixel4 import fake_calibration, fake_geometry
from defocusgan_plugin.ops.kernel_bank import ResampledKernelBank
from defocusgan_plugin.ops.dp_joint import DPJointSolver
scale = float(os.environ.get('SCALE', '1'))
H, W = round(1008 * scale), round(1344 * scale)
kernels = fake_calibration(fake_geometry((1008, 1344)))
bank = ResampledKernelBank(kernels.transpose(0, 1)[None], [1.0], (6, 8), frame_size=(H, W), max_size=kernels.shape[-1], trim=1e-3)
torch.manual_seed(0)
views = torch.rand(1, 2, 3, H, W) * 0.5
solver = DPJointSolver(bank, preset='fast', levels=[{'scale': 1.0, 'iters': int(os.environ.get('IT', '3'))}], early_stop=None, init='uniform', post_filter=None)
marks = []
def cb(state):
    marks.append((time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt))
solver(views[:, 0], views[:, 1], radius_range=(0.0, 1.9 * scale), callback=cb)
d = [(b[0] - a[0], (b[1] - a[1]) * 4096 / 1e9) for a, b in zip(marks, marks[1:])]
print(os.environ.get('NOMMAP'), 'scale', scale, 's/step', [round(x[0], 2) for x in d], 'GB faulted/step', [round(x[1], 1) for x in d])
print('maxrss GB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)
