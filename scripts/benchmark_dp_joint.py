"""Benchmark of the joint DP optimiser (DPJointSolver, Xin et al. ICCV 2021): time per image and quality vs iterations.

    # time per image (one synthetic DP pair per size; DPDD 1680x1120 and the Pixel-4 crop 1344x1008 on a GPU)
    python scripts/benchmark_dp_joint.py speed --device cuda --sizes 1680x1120 1344x1008
    python scripts/benchmark_dp_joint.py speed --device cpu --sizes 128x96 256x192 --threads 1
    # quality against iterations on the embedded synthetic test split (python scripts/make_synthetic_dpdd.py first)
    python scripts/benchmark_dp_joint.py quality --device cpu --crop 96 --images 3 --reference-iters 3000

``speed`` renders a DP pair of the Middlebury motorcycle (real depth, |CoC| up to 25 px at 1680 px wide, scaled
with the width) with the synthetic data's PSF and times the default solver (coarse to fine, cross-convolution start,
early stopping), reporting seconds per image, iterations per level, milliseconds per iteration at full resolution
and peak memory (CUDA). ``quality`` compares, on crops of the synthetic test images with ground truth, the release's
schedule (uniform start, full resolution only, lr 0.3 -> 0.1, with the plugin's loss weights: the release's own
weights belong to its loss normalisation; PSNR of the all-in-focus image and AIWE(1) of the map recorded along one
long run, ``--reference-iters`` long: 10 000 in the paper) with the plugin's fast schedules.
"""
import argparse
import math
import numpy as np
import os
import time
import torch

from defocusgan_plugin.data.dp_synthesis import DEFAULT_PSF, linear_to_srgb, srgb_to_linear, synthesize_dp
from defocusgan_plugin.metrics.defocus_map_metric import calculate_aiwe1
from defocusgan_plugin.ops.dp_joint import DPJointSolver
from defocusgan_plugin.ops.kernel_bank import ParametricKernelBank

PSF = {k: v for k, v in DEFAULT_PSF.items() if k != 'profile'}
DPDD_WIDTH, DPDD_MAX_COC = 1680, 25.0


def psnr(a, b):
    return float(10 * np.log10(1.0 / np.mean((a - b)**2)))


def to_device(img, device):
    """HWC sRGB numpy -> (1, C, H, W) linear tensor."""
    return torch.from_numpy(srgb_to_linear(img)).permute(2, 0, 1)[None].to(device)


def to_srgb(aif):
    return linear_to_srgb(aif[0].permute(1, 2, 0).detach().cpu().numpy())


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------- speed
def motorcycle_pair(width, height, device):
    """A DP pair of the Middlebury motorcycle at ``width x height`` with |CoC| up to 25 px per 1680 px of width."""
    import cv2
    from defocusgan_plugin.data.dp_synthesis import embedded_scenes, sample_coc
    scene = embedded_scenes(max_side=None)[0]
    image = cv2.resize(scene['image'], (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    inv_depth = cv2.resize(scene['inv_depth'], (width, height), interpolation=cv2.INTER_LINEAR)
    coc_max = DPDD_MAX_COC * width / DPDD_WIDTH
    coc = sample_coc(inv_depth, np.random.default_rng(0), coc_max, fill=(1.0, 1.0))
    views = synthesize_dp(image, coc, np.random.default_rng(1), layer_step=max(0.5, coc_max / 25), device=device)
    return views, coc_max


def run_speed(args, device):
    print('| size | device | seconds / image | iterations per level | ms / full-res iteration | peak GPU memory |')
    print('| --- | --- | --- | --- | --- | --- |')
    for size in args.sizes:
        width, height = (int(v) for v in size.lower().split('x'))
        views, coc_max = motorcycle_pair(width, height, str(device))
        left, right = to_device(views['left'], device), to_device(views['right'], device)
        bank = ParametricKernelBank(**PSF)
        solver = DPJointSolver(bank, max_radius=math.ceil(coc_max) + 1, amp=args.amp)
        if device.type == 'cuda':
            solver(left[..., :64, :64], right[..., :64, :64])  # warm-up (cuFFT plans, kernels)
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        start = time.perf_counter()
        out = solver(left, right)
        sync(device)
        seconds = time.perf_counter() - start
        # one more timed pass of the full-resolution level alone, for the per-iteration cost
        stamps = []
        full = DPJointSolver(bank, levels=[{'scale': 1.0, 'iters': args.timing_iters}], early_stop=None,
                             max_radius=solver.max_radius, amp=args.amp)
        full(left, right, out['range'], callback=lambda _: (sync(device), stamps.append(time.perf_counter())))
        per_iter = 1e3 * (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1)
        memory = f'{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB' if device.type == 'cuda' else 'n/a'
        print(f'| {width}x{height} | {device_name(device)} | {seconds:.1f} | {out["iters"]} | {per_iter:.0f} | '
              f'{memory} |', flush=True)


def device_name(device):
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'CPU ({torch.get_num_threads()} thread{"s" if torch.get_num_threads() > 1 else ""})'


# ---------------------------------------------------------------------- quality
def load_test_images(root, crop, count):
    import cv2
    names = sorted(os.listdir(os.path.join(root, 'test_c', 'source')))[:count]
    if not names:
        raise FileNotFoundError(f'No test images under {root}; run python scripts/make_synthetic_dpdd.py first.')
    images = []
    for name in names:
        read = [cv2.imread(os.path.join(root, folder, name), cv2.IMREAD_UNCHANGED)[:crop, :crop, ::-1] / 65535.0
                for folder in ('test_l/source', 'test_r/source', 'test_c/source', 'test_c/target')]
        coc = np.load(os.path.join(root, 'test_defocus', os.path.splitext(name)[0] + '.npy'))[:crop, :crop]
        images.append(dict(name=name, left=read[0], right=read[1], combined=read[2], target=read[3], coc=coc))
    return images


def scores(aif, defocus, item):
    return psnr(to_srgb(aif), item['target']), calculate_aiwe1(defocus[0, 0].cpu().numpy(), item['coc'])


def run_quality(args, device):
    images = load_test_images(args.data, args.crop, args.images)
    bank = ParametricKernelBank(**PSF)
    checkpoints = sorted({c for c in (100, 300, 1000, 3000, 10000, args.reference_iters) if c <= args.reference_iters})
    rows = {}  # label -> list over images of (psnr, aiwe1, seconds, iterations)

    def add(label, value):
        rows.setdefault(label, []).append(value)

    for item in images:
        left, right = to_device(item['left'], device), to_device(item['right'], device)
        add('input (combined view)', (psnr(item['combined'], item['target']), float('nan'), 0.0, 0))
        # the release's schedule (uniform start, full resolution, lr 0.3 -> 0.1) with the plugin's loss weights and
        # estimated layer range, scored along one long run
        reference = DPJointSolver(bank, levels=[{'scale': 1.0, 'iters': args.reference_iters}], lr=(0.3, 0.1),
                                  init='uniform', early_stop=None, max_radius=args.max_radius)
        start = time.perf_counter()

        def record(state, solver=reference, item=item, start=start):
            if state['iteration'] in checkpoints:
                aif, defocus, _ = solver.outputs(state['params'], state['radii'])
                add(f'release schedule, {state["iteration"]} full-res iterations',
                    (*scores(aif, defocus, item), time.perf_counter() - start, state['iteration']))

        reference(left, right, callback=record)
        # the plugin's fast schedules
        for label, levels in FAST_SCHEDULES.items():
            solver = DPJointSolver(bank, levels=levels, max_radius=args.max_radius)
            out = solver(left, right)
            add(label, (*scores(out['aif'], out['defocus'], item), out['seconds'], sum(out['iters'])))
        print(f'{item["name"]} done', flush=True)

    print(f'\nQuality on {len(images)} synthetic test crop(s) of {args.crop} px, {device_name(device)}:\n')
    print('| method | iterations (mean) | seconds / image | AiF PSNR (dB) | map AIWE(1) (px) |')
    print('| --- | --- | --- | --- | --- |')
    for label, values in rows.items():
        v = np.asarray(values, dtype=np.float64)
        aiwe = '-' if np.isnan(v[:, 1]).all() else f'{np.nanmean(v[:, 1]):.3f}'
        print(f'| {label} | {v[:, 3].mean():.0f} | {v[:, 2].mean():.1f} | {v[:, 0].mean():.2f} | {aiwe} |')


FAST_SCHEDULES = {
    'fast: c2f 1/4 -> 1/2 -> 1, cross start, early stop (demo)': [{'scale': 0.25, 'iters': 300},
                                                                   {'scale': 0.5, 'iters': 100},
                                                                   {'scale': 1.0, 'iters': 30}],
    'fast: same, solver defaults (400/200/100)': [{'scale': 0.25, 'iters': 400}, {'scale': 0.5, 'iters': 200},
                                                 {'scale': 1.0, 'iters': 100}],
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('mode', choices=('speed', 'quality'))
    parser.add_argument('--device', default='cpu', help='cpu or cuda')
    parser.add_argument('--threads', type=int, default=None, help='CPU threads (torch.set_num_threads)')
    parser.add_argument('--sizes', nargs='+', default=['128x96', '256x192'], help='speed: WIDTHxHEIGHT')
    parser.add_argument('--timing-iters', type=int, default=20, help='speed: full-resolution iterations timed')
    parser.add_argument('--amp', action='store_true', help='bfloat16 autocast of the rendering (CUDA)')
    parser.add_argument('--data', default='datasets/synthetic_dpdd', help='quality: synthetic DPDD root')
    parser.add_argument('--crop', type=int, default=96, help='quality: top-left crop size')
    parser.add_argument('--images', type=int, default=3, help='quality: number of test images')
    parser.add_argument('--max-radius', type=float, default=10.0, help='quality: largest |CoC| searched')
    parser.add_argument('--reference-iters', type=int, default=10000, help='quality: length of the release run')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device is available here.')
    torch.manual_seed(0)
    (run_speed if args.mode == 'speed' else run_quality)(args, device)


if __name__ == '__main__':
    main()
