"""Benchmark of the joint DP optimiser (DPJointSolver, Xin et al. ICCV 2021): time per image and quality vs iterations.

    # time per image (one synthetic DP pair per size; DPDD 1680x1120 and the Pixel-4 crop 1344x1008 on a GPU)
    python scripts/benchmark_dp_joint.py speed --device cuda --sizes 1680x1120 1344x1008
    python scripts/benchmark_dp_joint.py speed --device cpu --sizes 128x96 256x192 --threads 1
    # quality against iterations on the embedded synthetic test split (python scripts/make_synthetic_dpdd.py first)
    python scripts/benchmark_dp_joint.py quality --device cpu --crop 96 --images 3 --reference-iters 3000
    # the two presets on a folder in the Pixel-4 release layout (real, or python scripts/make_fake_pixel4.py)
    python scripts/benchmark_dp_joint.py pixel4 --data datasets/pixel4_fake --presets fast release --threads 2
    # cost of one iteration of the release objective per level of the 1008x1344 Pixel-4 crop (6x8 kernel grid)
    python scripts/benchmark_dp_joint.py profile --device cpu --threads 2

``speed`` renders a DP pair of the Middlebury motorcycle (real depth, |CoC| up to 25 px at 1680 px wide, scaled
with the width) with the synthetic data's PSF and times the default solver (coarse to fine, cross-convolution start,
early stopping), reporting seconds per image, iterations per level, milliseconds per iteration at full resolution
and peak memory (CUDA). ``quality`` compares, on crops of the synthetic test images with ground truth, the release's
schedule (uniform start, full resolution only, lr 0.3 -> 0.1, with the plugin's loss weights: the release's own
weights belong to its loss normalisation; PSNR of the all-in-focus image and AIWE(1) of the map recorded along one
long run, ``--reference-iters`` long: 10 000 in the paper) with the plugin's fast schedules. ``pixel4`` runs
presets of the solver on raw DP scenes in the release layout (:class:`defocusgan_plugin.data.dp_raw_dataset.
DPRawPixel4Dataset`, calibrated 6x8 kernels) and reports, per scene and on average, the all-in-focus PSNR against the
input (L + R) / 2 (GT units, peak 1), AIWE(1) against the constant-map floor, seconds and iterations; the release
preset is also scored along its run (100, 300, 1000, 3000, 10000 iterations). ``profile`` times one iteration (loss,
backward, Adam step; wall and CPU seconds) of the release objective at each level of the fast preset on the 1008x1344
crop with a 6x8 grid of kernels of the calibration's size.
"""
import argparse
import math
import numpy as np
import os
import sys
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
        full = DPJointSolver(
            bank,
            levels=[{
                'scale': 1.0,
                'iters': args.timing_iters
            }],
            early_stop=None,
            max_radius=solver.max_radius,
            amp=args.amp)
        full(left, right, out['range'], callback=lambda _: (sync(device), stamps.append(time.perf_counter())))
        per_iter = 1e3 * (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1)
        memory = f'{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB' if device.type == 'cuda' else 'n/a'
        print(
            f'| {width}x{height} | {device_name(device)} | {seconds:.1f} | {out["iters"]} | {per_iter:.0f} | '
            f'{memory} |',
            flush=True)


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
        read = [
            cv2.imread(os.path.join(root, folder, name), cv2.IMREAD_UNCHANGED)[:crop, :crop, ::-1] / 65535.0
            for folder in ('test_l/source', 'test_r/source', 'test_c/source', 'test_c/target')
        ]
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
        reference = DPJointSolver(
            bank,
            levels=[{
                'scale': 1.0,
                'iters': args.reference_iters
            }],
            lr=(0.3, 0.1),
            init='uniform',
            early_stop=None,
            max_radius=args.max_radius)
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
    'fast: c2f 1/4 -> 1/2 -> 1, cross start, early stop (demo)': [{
        'scale': 0.25,
        'iters': 300
    }, {
        'scale': 0.5,
        'iters': 100
    }, {
        'scale': 1.0,
        'iters': 30
    }],
    'fast: same, solver defaults (400/200/100)': [{
        'scale': 0.25,
        'iters': 400
    }, {
        'scale': 0.5,
        'iters': 200
    }, {
        'scale': 1.0,
        'iters': 100
    }],
}


# ---------------------------------------------------------------------- Pixel-4 layout
def fake_set(args):
    """The folder of the fake set that ``--fake H W`` asks for, written on first use (same options: same folder)."""
    import json

    from defocusgan_plugin.data.fake_pixel4 import write_fake_pixel4
    height, width = args.fake
    name = (f'{"mismatch" if args.mismatch else "calibration"}_{height}x{width}_s{args.max_scale:g}_n{args.scenes}_'
            f'seed{args.seed}')
    root = os.path.join(args.fake_root, name)
    if not os.path.isfile(os.path.join(root, 'fake_set.json')):
        start = time.perf_counter()
        write_fake_pixel4(
            root,
            args.scenes, (height, width),
            args.seed,
            mismatch=True if args.mismatch else None,
            max_scale=args.max_scale)
        print(f'Wrote the fake set {root} in {time.perf_counter() - start:.0f} s.')
    with open(os.path.join(root, 'fake_set.json')) as f:
        return root, json.load(f)


def pixel4_inputs(args):
    """Dataset, calibrated bank and crop of a folder in the release layout."""
    import cv2

    from defocusgan_plugin.data.dp_raw_dataset import DPRawPixel4Dataset
    from defocusgan_plugin.ops.kernel_bank import ResampledKernelBank
    crop = args.pixel4_crop
    if crop is None:  # the GT's size, else the Pixel-4 crop
        gt = os.path.join(args.data, 'gt_all_in_focus_im')
        names = sorted(os.listdir(gt)) if os.path.isdir(gt) else []
        crop = list(cv2.imread(os.path.join(gt, names[0]), cv2.IMREAD_UNCHANGED).shape[:2]) if names else [1008, 1344]
    dataset = DPRawPixel4Dataset({'dataroot': args.data, 'crop': crop})
    calib = os.path.join(args.data, 'calibration')
    bank = ResampledKernelBank.from_npy(
        os.path.join(calib, 'blur_kernels_left.npy'),
        os.path.join(calib, 'blur_kernels_right.npy'),
        grid=[6, 8],
        frame_size=crop,
        trim=args.trim)
    return dataset, bank, crop


def run_pixel4(args, device):
    import json
    import platform
    info = None
    if args.fake:
        args.data, info = fake_set(args)
    dataset, bank, crop = pixel4_inputs(args)
    max_radius = args.max_radius if args.max_radius else args.radius_factor * float(bank.radii[0])
    scenes = range(min(args.images, len(dataset)))
    lines = []

    def emit(line=''):
        print(line, flush=True)
        lines.append(line)

    what = 'FAKE set' if info else 'set'
    if info:
        mismatch = info['mismatch']
        what += (f' rendered with mismatched PSFs (scale error {mismatch["scale_error"]:g} per cell, shape change '
                 f'{mismatch["shape_change"]:g}, soft edges {mismatch["soft_edge"]:g}, {mismatch["subgrid"]}x finer '
                 f'grid)' if mismatch else ' rendered with its own calibration')
        what += f', noise {info["noise"][0]:g} / {info["noise"][1]:g}, scales up to {info["max_scale"]:g}'
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    emit(f'{len(scenes)} scene(s) of the {what} {args.data}, crop {crop[0]}x{crop[1]}, {bank.describe()}, '
         f'max_radius {max_radius:.1f} px, {device_name(device)}, load average {load:.2f} at the start\n')
    emit('| preset | scene | iterations | seconds | input PSNR | AiF PSNR | gain (dB) | AIWE(1) floor | AIWE(1) | '
         'below floor |')
    emit('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')
    rows, records = {}, []
    checkpoints = {100, 300, 1000, 3000, 10000}
    for preset in args.presets:
        overrides = {'levels': [{'scale': 1.0, 'iters': args.release_iters}]} if preset == 'release' else {}
        solver = DPJointSolver(bank, preset=preset, max_radius=max_radius, **overrides)
        for index in scenes:
            sample = dataset[index]
            scale = float(sample['norm_scale'])
            gt, gt_map = sample['gt'][0].numpy(), sample['defocus'][0].numpy()
            left, right = sample['lq_l'][None].to(device), sample['lq_r'][None].to(device)
            floor = calculate_aiwe1(np.random.default_rng(0).normal(0, 1e-6, gt_map.shape), gt_map)
            base = psnr(sample['lq_c'][0].numpy() * scale, gt)
            views = torch.stack([left, right], 1)
            start = time.perf_counter()

            def record(state,
                       solver=solver,
                       index=index,
                       gt=gt,
                       gt_map=gt_map,
                       scale=scale,
                       floor=floor,
                       base=base,
                       views=views,
                       start=start):
                if preset != 'release' or state['iteration'] not in checkpoints:
                    return
                aif, defocus, _ = solver.outputs(state['params'], state['radii'])
                aif = solver.post_process(aif, views)
                add_row(f'release, {state["iteration"]} it.', index, state['iteration'],
                        time.perf_counter() - start, base, psnr(aif[0, 0].cpu().numpy() * scale, gt), floor,
                        calculate_aiwe1(defocus[0, 0].cpu().numpy(), gt_map))

            def add_row(label, index, iters, seconds, base, aif_psnr, floor, aiwe):
                rows.setdefault(label, []).append((iters, seconds, base, aif_psnr, floor, aiwe))
                records.append(
                    dict(
                        label=label,
                        scene=f'{index + 1:03d}',
                        iterations=int(iters),
                        seconds=round(seconds, 2),
                        input_psnr=round(base, 4),
                        aif_psnr=round(aif_psnr, 4),
                        aiwe1_floor=round(floor, 5),
                        aiwe1=round(aiwe, 5)))
                emit(f'| {label} | {index + 1:03d} | {iters} | {seconds:.0f} | {base:.2f} | {aif_psnr:.2f} | '
                     f'{aif_psnr - base:+.2f} | {floor:.4f} | {aiwe:.4f} | {100 * (1 - aiwe / floor):.0f} % |')

            out = solver(left, right, callback=record)
            sync(device)
            add_row(preset, index, sum(out['iters']), out['seconds'], base,
                    psnr(out['aif'][0, 0].cpu().numpy() * scale, gt), floor,
                    calculate_aiwe1(out['defocus'][0, 0].cpu().numpy(), gt_map))
    emit('\nMean over the scenes (worst scene in brackets):\n')
    emit('| preset | iterations | seconds / scene | AiF PSNR gain (dB) | AIWE(1) | floor | below floor |')
    emit('| --- | --- | --- | --- | --- | --- | --- |')
    means = {}
    for label, values in rows.items():
        v = np.asarray(values, dtype=np.float64)
        gains, below = v[:, 3] - v[:, 2], 1 - v[:, 5] / v[:, 4]
        m = v.mean(0)
        means[label] = dict(
            iterations=m[0],
            seconds=m[1],
            gain=gains.mean(),
            worst_gain=gains.min(),
            aiwe1=m[5],
            floor=m[4],
            below_floor=1 - m[5] / m[4],
            worst_below_floor=below.min())
        emit(f'| {label} | {m[0]:.0f} | {m[1]:.0f} | {gains.mean():+.2f} ({gains.min():+.2f}) | {m[5]:.4f} | '
             f'{m[4]:.4f} | {100 * means[label]["below_floor"]:.0f} % ({100 * below.min():.0f} %) |')
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        command = 'python ' + ' '.join(sys.argv)
        with open(args.out + '.md', 'w') as f:
            f.write(f'```bash\n{command}\n```\n\n' + '\n'.join(lines) + '\n')
        meta = dict(
            command=command,
            data=args.data,
            crop=crop,
            fake_set=info,
            presets=args.presets,
            max_radius=max_radius,
            device=device_name(device),
            torch=torch.__version__,
            machine=platform.processor() or platform.machine(),
            load_average_start=load,
            load_average_end=os.getloadavg()[0] if hasattr(os, 'getloadavg') else None)
        with open(args.out + '.json', 'w') as f:
            json.dump(dict(meta=meta, rows=records, means=means), f, indent=1)
        print(f'\nWrote {args.out}.md and {args.out}.json')


def run_profile(args, device):
    """Seconds per iteration of the release objective at each level of the fast preset, with a fake Pixel-4-like
    calibration (6x8 grid, 61 px kernels of ~13 px radius at 1008x1344)."""
    from defocusgan_plugin.data.fake_pixel4 import fake_calibration, fake_geometry
    from defocusgan_plugin.ops.dp_joint import PRESETS
    from defocusgan_plugin.ops.kernel_bank import ResampledKernelBank
    width, height = (int(v) for v in args.profile_size.lower().split('x'))
    kernels = fake_calibration(fake_geometry((height, width)))  # (2, 48, K, K)
    bank = ResampledKernelBank(
        kernels.transpose(0, 1)[None], [1.0], (6, 8),
        frame_size=(height, width),
        max_size=kernels.shape[-1],
        trim=args.trim)
    radius = 13.0 * width / 1344
    print(f'One iteration (loss, backward, Adam step) of the release objective, 12 layers over '
          f'0..{args.max_scale * radius:.1f} '
          f'px, grey {width}x{height} views, 6x8 kernel grid, kernel trim {args.trim:g}, {device_name(device)}:\n')
    print('| preset | level (scale) | size | kernel | wall s / iteration | CPU s / iteration |')
    print('| --- | --- | --- | --- | --- | --- |')
    views = torch.rand(1, 2, 1, height, width, device=device) * 0.5
    presets = [p for p in args.presets if p != 'release'] or ['fast']
    for preset, level in ((p, level) for p in presets for level in PRESETS[p]['levels']):
        scale = level['scale']
        size = (round(height * scale), round(width * scale))
        small = torch.nn.functional.interpolate(views[0], size=size, mode='area')[None]
        bank.frame_size = size
        solver = DPJointSolver(
            bank,
            preset=preset,
            levels=[{
                'scale': 1.0,
                'iters': args.timing_iters
            }],
            early_stop=None,
            init='uniform',
            post_filter=None)
        walls, cpus, clock = [], [], {}

        def tick(state, walls=walls, cpus=cpus, clock=clock):
            sync(device)
            now = (time.perf_counter(), time.process_time())
            if 'last' in clock:
                walls.append(now[0] - clock['last'][0])
                cpus.append(now[1] - clock['last'][1])
            clock['last'] = now

        # radii in units of the fake calibration's reference (1.0 = its radius)
        solver(small[:, 0], small[:, 1], radius_range=(0.0, args.max_scale * scale), callback=tick)
        ksize = bank(torch.tensor([args.max_scale * scale])).shape[-1]
        print(
            f'| {preset} | {scale:g} | {size[1]}x{size[0]} | {ksize} | {np.mean(walls):.2f} | {np.mean(cpus):.2f} |',
            flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('mode', choices=('speed', 'quality', 'pixel4', 'profile'))
    parser.add_argument('--device', default='cpu', help='cpu or cuda')
    parser.add_argument('--threads', type=int, default=None, help='CPU threads (torch.set_num_threads)')
    parser.add_argument('--sizes', nargs='+', default=['128x96', '256x192'], help='speed: WIDTHxHEIGHT')
    parser.add_argument('--timing-iters', type=int, default=20, help='speed: full-resolution iterations timed')
    parser.add_argument('--amp', action='store_true', help='bfloat16 autocast of the rendering (CUDA)')
    parser.add_argument(
        '--data',
        default=None,
        help='quality: synthetic DPDD root (datasets/synthetic_dpdd); pixel4: release-layout folder '
        '(datasets/pixel4)')
    parser.add_argument(
        '--presets', nargs='+', default=['fast', 'release'], help='pixel4, profile: solver presets to run')
    parser.add_argument(
        '--fake',
        type=int,
        nargs=2,
        default=None,
        metavar=('H', 'W'),
        help='pixel4: run on a FAKE set of this crop (data/fake_pixel4.py), written under --fake-root on first use')
    parser.add_argument(
        '--no-mismatch',
        dest='mismatch',
        action='store_false',
        help='pixel4 --fake: render the fake set with its own calibration (default: with mismatched PSFs and '
        'phone-level noise, as real captures)')
    parser.add_argument(
        '--max-scale', type=float, default=1.9, help='pixel4 --fake: largest kernel scale (1.9: layers up to ~24 px)')
    parser.add_argument('--scenes', type=int, default=8, help='pixel4 --fake: scenes written')
    parser.add_argument('--seed', type=int, default=0, help='pixel4 --fake: seed of the fake set')
    parser.add_argument('--fake-root', default='datasets/fake_pixel4_bench', help='pixel4 --fake: where sets go')
    parser.add_argument(
        '--radius-factor',
        type=float,
        default=1.9,
        help='pixel4: max_radius = this x the calibration radius unless --max-radius (1.9: 24 px for the Pixel 4, '
        'as test_dp_joint_pixel4.yml)')
    parser.add_argument('--out', default=None, help='pixel4: also write the table to OUT.md and the rows to OUT.json')
    parser.add_argument('--release-iters', type=int, default=10000, help='pixel4: iterations of the release preset')
    parser.add_argument(
        '--pixel4-crop',
        type=int,
        nargs=2,
        default=None,
        metavar=('H', 'W'),
        help='pixel4: calibrated crop (default: the GT size, else 1008 1344)')
    parser.add_argument('--trim', type=float, default=1e-3, help='pixel4: kernel trim (dp_joint.kernels.trim)')
    parser.add_argument('--profile-size', default='1344x1008', help='profile: WIDTHxHEIGHT of the crop')
    parser.add_argument('--profile-kernel', type=int, default=49, help='profile: largest kernel at full resolution')
    parser.add_argument('--crop', type=int, default=96, help='quality: top-left crop size')
    parser.add_argument('--images', type=int, default=3, help='quality: number of test images')
    parser.add_argument(
        '--max-radius',
        type=float,
        default=None,
        help='quality: largest |CoC| searched (default 10); pixel4: default --radius-factor x calibration radius')
    parser.add_argument('--reference-iters', type=int, default=10000, help='quality: length of the release run')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device is available here.')
    torch.manual_seed(0)
    if args.mode == 'quality':
        args.data = args.data or 'datasets/synthetic_dpdd'
        args.max_radius = args.max_radius or 10.0
    elif args.mode == 'pixel4':
        if args.fake and args.data:
            raise SystemExit('pixel4: give --data (a folder) or --fake (a fake set to write), not both.')
        args.data = args.data or 'datasets/pixel4'
    {'speed': run_speed, 'quality': run_quality, 'pixel4': run_pixel4, 'profile': run_profile}[args.mode](args, device)


if __name__ == '__main__':
    main()
