# Record of the profile quoted in the README (cProfile of the fast preset on fake scene 001, 1008x1344, before
# heap_reuse); run from the repository root, NT=1 by default; output: profile_fast.txt (1 thread, machine shared).
import cProfile, pstats, sys, time, torch, argparse
sys.argv = ['x', 'pixel4', '--fake', '1008', '1344', '--scenes', '3']
sys.path.insert(0, 'scripts')
import benchmark_dp_joint as b
torch.set_num_threads(int(__import__('os').environ.get('NT', '1')))
p = b.argparse.Namespace(fake=(1008, 1344), mismatch=True, max_scale=1.9, scenes=3, seed=0,
                         fake_root='datasets/fake_pixel4_bench', pixel4_crop=None, trim=1e-3, data=None)
p.data, info = b.fake_set(p)
dataset, bank, crop = b.pixel4_inputs(p)
from defocusgan_plugin.ops.dp_joint import DPJointSolver
solver = DPJointSolver(bank, preset='fast', max_radius=1.9 * float(bank.radii[0]))
s = dataset[0]
left, right = s['lq_l'][None], s['lq_r'][None]
marks = []
def cb(state):
    marks.append((state['level'], state['iteration'], time.perf_counter()))
t0 = time.perf_counter()
pr = cProfile.Profile(); pr.enable()
out = solver(left, right, callback=cb)
pr.disable()
t1 = time.perf_counter()
print('total', t1 - t0, 'iters', out['iters'])
print('first step end', marks[0][2] - t0)
for lv in (0, 1):
    m = [x for x in marks if x[0] == lv]
    if len(m) > 1: print('level', lv, 'n', len(m), 's/it', (m[-1][2] - m[0][2]) / (len(m) - 1))
print('after last step', t1 - marks[-1][2])
pstats.Stats(pr).sort_stats('tottime').print_stats(25)
