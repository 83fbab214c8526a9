"""One prepared GPU check: inference, training and joint-optimiser speed and a DDP smoke run, written to one JSON.

    scripts/gpu_check.sh                   # on a GPU host: under 8 minutes on one GPU, nothing downloaded
    scripts/gpu_check.sh --dry-run         # on the CPU with tiny sizes, in seconds (tests/test_scripts.py runs it)

Writes ``<out>/gpu_check.json`` (rewritten after every row, so an interrupted run keeps what it measured) and
``<out>/gpu_check.md`` (the same as markdown tables); default ``--out gpu_check``. Sections:

* ``inference``: the slim (``DefocusGANGenerator``) and the release (``DefocusGANReleaseGenerator``) generator on one
  1680x1120 image, batch 1, without a map: fp32, bf16 autocast, bf16 + channels-last weights, and that compiled
  (``torch.compile``, inductor); median ms of 20 forwards after 3 warm-up ones (the first call, which compiles, is
  reported separately) and the peak GPU memory allocated (weights included).
* ``training``: every training recipe (``options/train/train_*.yml``: its networks, losses, 512 crops and batch 4)
  for 200 iterations through the model's ``optimize_parameters``, fp32 and ``train.amp: bf16`` (the stage-2 release
  recipe also with channels-last, with fp16 + GradScaler, and with its maps precomputed as the release trained,
  instead of the frozen stage-1 network's forward); iterations/s over the iterations after the first 20 and the peak
  GPU memory. DefocusGAN runs its costliest phase from the first iteration (critic, gradient penalty, adversarial
  term, guidance; the stage-1 network and VGG19 randomly initialised: nothing is downloaded), stage 1 its network
  phase. The batches (8, drawn by the recipe's DPDDDataset from a DPDD-sized synthetic stand-in set written
  by ``scripts/make_dpdd_sized.py``) are loaded onto the GPU first: the rows time the GPU, not the data loader
  (``scripts/benchmark_data.py`` measures that).
* ``joint``: the joint DP optimiser (``DPJointSolver``, preset ``fast``) on one synthetic 1344x1008 DP pair; seconds
  (after a warm-up on a small crop) and iterations per level.
* ``ddp``: ``torchrun --nproc_per_node=1 -m defocusgan_plugin.train`` with nccl: a tiny DefocusGAN run (critic,
  gradient penalty, EMA) with bf16 and channels-last, 4 iterations; its result and seconds.

Every row records its ``status``: 'ok', 'error: ...' (the other rows still run; exit code 1) or 'skipped: time
budget' (rows still waiting when ``--budget-s`` is spent; the compiled rows run last and start only with 150 s
left). ``--dry-run`` runs every row on the CPU with tiny networks, 32-pixel crops, 2 iterations, the 'eager' compile
backend and gloo (fp16 is skipped there).
"""
import argparse
import copy
import json
import logging
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from os import path as osp

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
OPTIONS = osp.join(ROOT, 'options', 'train')
GENERATORS = {'slim': 'DefocusGANGenerator', 'release': 'DefocusGANReleaseGenerator'}
# label -> (amp, channels_last, compile)
INFERENCE_MODES = {
    'fp32': (None, False, False),
    'bf16': ('bf16', False, False),
    'bf16 + channels_last': ('bf16', True, False),
    'bf16 + channels_last + compile': ('bf16', True, True)
}
RECIPES = {  # label -> (option file, overrides)
    'DefocusGAN stage 2, release': ('train_defocusgan.yml', {}),
    # as the release trained: maps precomputed per patch instead of the frozen stage-1 network's forward
    'DefocusGAN stage 2, release, maps precomputed': ('train_defocusgan.yml', {'train:defocus_map': {'source': 'gt'}}),
    'DefocusGAN stage 2, slim': ('train_defocusgan_slim.yml', {}),
    'stage 1 map, release': ('train_defocus_map.yml', {}),
    'stage 1 map, slim': ('train_defocus_map_slim.yml', {}),
    'MCCNet': ('train_mccnet.yml', {}),
}
GOAL = ('DefocusGAN stage 2, release', 20.0)  # the goal: >= 20 it/s at batch 4, 512 crops (one H100)
# training rows in the order they run: (recipe, amp, channels_last)
TRAINING_ROWS = [(GOAL[0], False, False), (GOAL[0], 'bf16', False), (GOAL[0], 'bf16', True),
                 ('DefocusGAN stage 2, release, maps precomputed', 'bf16', True), (GOAL[0], 'fp16', False)]
TRAINING_ROWS += [(recipe, amp, False) for recipe in list(RECIPES)[2:] for amp in (False, 'bf16')]
# --dry-run: tiny networks of the same types (option key -> value)
DRY_NETWORKS = {
    'train_defocusgan.yml': {
        'network_g:num_feat': 16,
        'network_g:branch_settings': [1, 1, 1, 1],
        'network_g:reduction': 4,
        'network_d:num_feat': 8,
        'train:defocus_map:network:num_feat': 16,
        'train:defocus_map:network:branch_settings': [1, 1, 1, 1],
        'train:defocus_map:network:reduction': 4
    },
    'train_defocusgan_slim.yml': {
        'network_g:num_feat': [8, 8, 8],
        'network_d:num_feat': 8,
        'train:defocus_map:network:num_feat': 8,
        'train:defocus_map:network:num_level': 2,
        'train:defocus_map:network:max_feat': 16,
        'train:defocus_map:network:cap': 5
    },
    'train_defocus_map.yml': {
        'network_map:num_feat': 16,
        'network_map:branch_settings': [1, 1, 1, 1],
        'network_map:reduction': 4,
        'network_map:clamp': 5,
        'network_kernel:max_radius': 5
    },
    'train_defocus_map_slim.yml': {
        'network_map:num_feat': 8,
        'network_map:num_level': 2,
        'network_map:max_feat': 16,
        'network_map:cap': 5,
        'network_kernel:max_radius': 5,
        'train:reblur_opt:crop_border': 2
    },
    'train_mccnet.yml': {
        'network_g:num_feat': 8
    },
}
DRY_GENERATORS = {
    'slim': {
        'num_feat': [8, 8, 8],
        'num_levels': [2, 2, 2],
        'branch_blocks': [0, 1],
        'mask_edges': [2.0],
        'squeeze_factor': 4
    },
    'release': {
        'num_feat': 16,
        'branch_settings': [1, 1, 1, 1],
        'reduction': 4
    }
}
COMPILE_S = 150  # budget seconds a compiled inference row needs left to start
JOINT_SIZE, JOINT_MAX_COC = (1344, 1008), 25.0 * 1344 / 1680  # DPDD's 25 px |CoC| per 1680 px of width


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='gpu_check', help='output folder (default: gpu_check)')
    parser.add_argument('--dry-run', action='store_true', help='CPU, tiny sizes and networks, 2 iterations, gloo')
    parser.add_argument('--iters', type=int, help='training iterations per row (default 200; dry run 2)')
    parser.add_argument('--warmup', type=int, help='untimed first iterations (default 20; dry run 1)')
    parser.add_argument(
        '--budget-s',
        type=float,
        default=450.0,
        help='rows that would start after this many seconds are skipped (default 450; a compiled row '
        f'needs {COMPILE_S} s left)')
    parser.add_argument('--keep-work', action='store_true', help='keep the data and experiments under <out>/work')
    parser.add_argument(
        '--rows',
        help='run only the rows whose section and labels match this regular expression, e.g. "slim|MCCNet" '
        '(a second lease measures what the first one\'s budget skipped)')
    args = parser.parse_args(argv)
    dry = args.dry_run
    args.device = 'cpu' if dry else 'cuda'
    args.iters = args.iters or (2 if dry else 200)
    args.warmup = args.warmup if args.warmup is not None else (1 if dry else 20)
    args.size = (32, 48) if dry else (1120, 1680)  # inference H, W
    args.joint_size = (64, 48) if dry else JOINT_SIZE
    args.crop, args.batch = (32, 1) if dry else (None, None)  # None: the recipe's
    args.repeats, args.infer_warmup = (1, 1) if dry else (20, 3)
    args.compile = {'backend': 'eager'} if dry else {}
    args.backend = 'gloo' if dry else 'nccl'
    if args.iters <= args.warmup or args.warmup < 0:
        parser.error('--iters must exceed --warmup >= 0')
    # absolute: the DDP row's torchrun child runs in another folder and reads the option file and data from here
    args.out = osp.abspath(args.out)
    return args


# ---------------------------------------------------------------------------------------------------- helpers
def sync(device):
    import torch
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def reset_peak(device):
    import torch
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device):
    import torch
    return round(torch.cuda.max_memory_allocated(device) / 2**20) if device.type == 'cuda' else None


def release_memory():
    import gc
    import torch
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def machine_info(device):
    import platform
    import torch
    info = {
        'torch': torch.__version__,
        'python': platform.python_version(),
        'cpus': os.cpu_count(),
        'device': str(device)
    }
    if device.type == 'cuda':
        info.update(
            gpu=torch.cuda.get_device_name(device),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            gpu_memory_mb=round(torch.cuda.get_device_properties(device).total_memory / 2**20),
            bf16=torch.cuda.is_bf16_supported(including_emulation=False),
            cudnn_tf32=torch.backends.cudnn.allow_tf32,
            matmul_tf32=torch.backends.cuda.matmul.allow_tf32)
    return info


# ---------------------------------------------------------------------------------------------------- data
def prepare_data(work, args):
    """The DPDD-sized stand-in set (training rows) and the tiny synthetic set with GT maps (DDP smoke run)."""
    import numpy as np
    sys.path.insert(0, osp.join(ROOT, 'scripts'))
    from make_dpdd_sized import write_dpdd_sized

    from defocusgan_plugin.data.dp_synthesis import write_synthetic_dpdd
    standin, synthetic = osp.join(work, 'dpdd_sized'), osp.join(work, 'synthetic_dpdd')
    if args.dry_run:
        written = write_dpdd_sized(standin, images=1, width=96, height=64)
    else:
        written = write_dpdd_sized(standin, images=2)  # 2 x 28 patches of 512 (stride 204), 70 % kept: 9 batches of 4
    os.makedirs(osp.join(standin, 'train_defocus'))
    for path in written:  # signed CoC maps (a ramp of +-12 px) for the 'maps precomputed' row
        if osp.basename(osp.dirname(osp.dirname(path))) == 'train_c' and osp.basename(osp.dirname(path)) == 'source':
            height, width = (64, 96) if args.dry_run else (1120, 1680)
            ramp = np.linspace(-12.0, 12.0, width, dtype=np.float32)
            np.save(
                osp.join(standin, 'train_defocus',
                         osp.splitext(osp.basename(path))[0] + '.npy'), np.repeat(ramp[None], height, axis=0))
    write_synthetic_dpdd(synthetic, max_side=96, coc_max=4.0, focus_per_scene=(2, 1, 1), seed=0)
    return {'standin': standin, 'synthetic': synthetic}


def joint_pair(width, height, device):
    """A synthetic DP pair of the Middlebury motorcycle: (left, right) linear (1, 3, H, W) tensors."""
    import cv2
    import numpy as np
    import torch

    from defocusgan_plugin.data.dp_synthesis import embedded_scenes, sample_coc, srgb_to_linear, synthesize_dp
    scene = embedded_scenes(max_side=None)[0]
    image = cv2.resize(scene['image'], (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    inv_depth = cv2.resize(scene['inv_depth'], (width, height), interpolation=cv2.INTER_LINEAR)
    coc_max = JOINT_MAX_COC * width / JOINT_SIZE[0]
    coc = sample_coc(inv_depth, np.random.default_rng(0), coc_max, fill=(1.0, 1.0))
    views = synthesize_dp(image, coc, np.random.default_rng(1), layer_step=max(0.5, coc_max / 25), device=str(device))
    left, right = (
        torch.from_numpy(srgb_to_linear(views[k])).permute(2, 0, 1)[None].to(device) for k in ('left', 'right'))
    return left, right, coc_max


# ---------------------------------------------------------------------------------------------------- rows
def inference_row(args, device, generator, mode):
    import torch
    from basicsr.archs import build_network
    amp, channels_last, compiled = INFERENCE_MODES[mode]
    torch.manual_seed(0)
    net_opt = dict(DRY_GENERATORS[generator] if args.dry_run else {}, type=GENERATORS[generator])
    net = build_network(net_opt).eval().to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)  # the weights only, as train.channels_last
    run = torch.compile(net, **args.compile) if compiled else net
    height, width = args.size
    x = torch.rand(1, 3, height, width, device=device)
    dtype = {'bf16': torch.bfloat16}.get(amp)

    def forward():
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return run(x)

    start = time.perf_counter()
    forward()
    sync(device)
    first = time.perf_counter() - start
    for _ in range(args.infer_warmup - 1):
        forward()
    reset_peak(device)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        forward()
        sync(device)
        times.append(time.perf_counter() - start)
    return {
        'generator': GENERATORS[generator],
        'mode': mode,
        'size': f'{width}x{height}',
        'params_m': round(sum(p.numel() for p in net.parameters()) / 1e6, 2),
        'ms': round(1e3 * statistics.median(times), 2),
        'peak_mb': peak_mb(device),
        'first_call_s': round(first, 2),
        'repeats': args.repeats
    }


def training_options(args, data, work, recipe, amp, channels_last):
    """The recipe's options with the check's overrides, written to a file; returns its path."""
    import torch
    import yaml
    from basicsr.archs import build_network
    option, recipe_over = RECIPES[recipe]
    with open(osp.join(OPTIONS, option)) as f:
        opt = yaml.safe_load(f)
    tag = f"{option[:-4]}{'_maps' if recipe_over else ''}_{amp or 'fp32'}{'_cl' if channels_last else ''}"
    over = {
        'name': f'gpu_check_{tag}',
        'num_gpu': 0 if args.dry_run else 1,
        'manual_seed': 0,
        'val': None,
        'datasets:train:dataroot': data['standin'],
        'datasets:train:num_worker_per_gpu': 0,
        'logger:use_tb_logger': False,
        'train:total_iter': args.iters,
        'train:amp': amp,
        'train:channels_last': channels_last
    }
    if args.dry_run:
        over.update(
            {
                'datasets:train:gt_size': args.crop,
                'datasets:train:batch_size_per_gpu': args.batch,
                'datasets:train:patch_stride': 32
            }, **DRY_NETWORKS[option])
    opt['datasets'] = {'train': opt['datasets']['train']}
    if opt['model_type'] == 'DefocusGANModel':
        # the costliest phase from iteration 1; VGG19 and the stage-1 network randomly initialised (no download)
        over.update({
            'train:critic_start_iter': 0,
            'train:gan_start_iter': 0,
            'train:guidance:anneal_start_iter': 0,
            'train:perceptual_opt:pretrained': False
        })
    over.update(recipe_over)
    from defocusgan_plugin.utils.options import set_option
    for key, value in over.items():
        set_option(opt, key, value)
    if opt['model_type'] == 'DefocusGANModel' and opt['train']['defocus_map']['source'] == 'network':
        stage1 = osp.join(work, f'stage1_{tag}.pth')
        torch.manual_seed(0)
        torch.save({'params': build_network(copy.deepcopy(opt['train']['defocus_map']['network'])).state_dict()},
                   stage1)
        opt['train']['defocus_map']['pretrain'] = stage1
    path = osp.join(work, f'{tag}.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


def gpu_batches(opt, device, count=8):
    """``count`` training batches drawn by the recipe's dataset, on the device."""
    import torch
    from basicsr.data import build_dataset
    dataset_opt = opt['datasets']['train']
    dataset = build_dataset(dataset_opt)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=dataset_opt['batch_size_per_gpu'],
        shuffle=True,
        drop_last=True,
        num_workers=0 if device.type == 'cpu' else 8,
        generator=torch.Generator().manual_seed(0))
    batches = []
    for batch in loader:
        batches.append({k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()})
        if len(batches) == count:
            break
    if not batches:
        raise RuntimeError(f'The stand-in set gave no full batch of {dataset_opt["batch_size_per_gpu"]}.')
    return batches


def training_row(args, device, data, work, recipe, amp, channels_last):
    from basicsr.models import build_model

    from defocusgan_plugin.utils.options import parse_options
    path = training_options(args, data, work, recipe, amp, channels_last)
    opt, _ = parse_options(work, is_train=True, argv=['-opt', path])
    batches = gpu_batches(opt, device)
    model = build_model(opt)
    reset_peak(device)
    start = None
    for it in range(1, args.iters + 1):
        if it == args.warmup + 1:
            sync(device)
            start = time.perf_counter()
        model.feed_data(batches[it % len(batches)])
        model.optimize_parameters(it)
    sync(device)
    seconds = time.perf_counter() - start
    train = opt['datasets']['train']
    row = {
        'recipe': recipe,
        'option': RECIPES[recipe][0],
        'model': opt['model_type'],
        'amp': amp or 'off',
        'channels_last': channels_last,
        'batch': train['batch_size_per_gpu'],
        'crop': train['gt_size'],
        'iters': args.iters,
        'timed_iters': args.iters - args.warmup,
        'it_s': round((args.iters - args.warmup) / seconds, 2),
        'peak_mb': peak_mb(device),
        'losses_finite': all(math.isfinite(float(v)) for v in model.log_dict.values()),
        'losses': {
            k: float(v)
            for k, v in model.log_dict.items()
        }
    }
    if getattr(model, 'grad_scaler', None) is not None and model.grad_scaler.is_enabled():
        row['grad_scale'] = model.grad_scaler.get_scale()
    del model, batches
    release_memory()
    return row


def joint_row(args, device):
    """The joint optimiser through its public interface: preset 'fast' on one synthetic DP pair."""
    from defocusgan_plugin.data.dp_synthesis import DEFAULT_PSF
    from defocusgan_plugin.ops.dp_joint import DPJointSolver
    from defocusgan_plugin.ops.kernel_bank import ParametricKernelBank
    width, height = args.joint_size
    left, right, coc_max = joint_pair(width, height, device)
    extra = {'levels': [{'scale': 0.5, 'iters': 3}, {'scale': 1.0, 'iters': 2}]} if args.dry_run else {}
    solver = DPJointSolver(
        ParametricKernelBank(**{
            k: v
            for k, v in DEFAULT_PSF.items() if k != 'profile'
        }),
        preset='fast',
        max_radius=math.ceil(coc_max) + 1,
        **extra)
    if device.type == 'cuda':
        solver(left[..., :64, :64], right[..., :64, :64])  # warm-up: cuFFT plans, kernels
    reset_peak(device)
    start = time.perf_counter()
    out = solver(left, right)
    sync(device)
    return {
        'size': f'{width}x{height}',
        'preset': 'fast',
        'seconds': round(time.perf_counter() - start, 2),
        'iters': list(out['iters']),
        'peak_mb': peak_mb(device)
    }


def child_error(stderr, lines=40):
    """The real error of a failed child process: its last exception line (torchrun's own ChildFailedError wrapper
    skipped) and the tail of its stderr; (error line or '', tail)."""
    tail = '\n'.join(stderr.rstrip().splitlines()[-lines:])
    errors = [
        line.strip() for line in stderr.splitlines()
        if re.match(r'^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b(: |$)', line.strip())
        and 'ChildFailedError' not in line
    ]
    return (errors[-1] if errors else ''), tail


def ddp_row(args, data, work):
    """torchrun with one process: a tiny DefocusGAN run (critic, gradient penalty, EMA) with bf16 and channels-last."""
    import yaml
    folder = osp.join(work, 'ddp')
    os.makedirs(folder, exist_ok=True)
    with open(osp.join(OPTIONS, 'train_defocusgan_synthetic.yml')) as f:
        opt = yaml.safe_load(f)
    opt['datasets'] = {'train': opt['datasets']['train']}
    over = {
        'name': 'gpu_check_ddp',
        'num_gpu': 0 if args.dry_run else 1,
        'val': None,
        'dist_params': {
            'backend': args.backend
        },
        'datasets:train:dataroot': data['synthetic'],
        'datasets:train:gt_size': 32,
        'datasets:train:batch_size_per_gpu': 2,
        'datasets:train:num_worker_per_gpu': 0,
        'network_g:num_feat': [8, 8, 8],
        'network_d:num_feat': 8,
        'train:gan_start_iter': 0,
        'train:ema_decay': 0.5,
        'train:total_iter': 4,
        'train:amp': 'bf16',
        'train:channels_last': True,
        'logger:print_freq': 1,
        'logger:save_checkpoint_freq': 4,
        'logger:use_tb_logger': False
    }
    from defocusgan_plugin.utils.options import set_option
    for key, value in over.items():
        set_option(opt, key, value)
    path = osp.join(folder, 'ddp.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    cmd = [
        sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=1', '-m',
        'defocusgan_plugin.train', '-opt', path, '--launcher', 'pytorch'
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=120 if args.dry_run else 300)
    seconds = time.perf_counter() - start
    saved = osp.join(folder, 'experiments', 'gpu_check_ddp', 'models', 'net_g_latest.pth')
    if proc.returncode != 0 or not osp.isfile(saved):
        # the first line (the report's table cell) names the child's own error; the stderr tail follows
        error, tail = child_error(proc.stderr or proc.stdout)
        what = f'torchrun exited with {proc.returncode}' if proc.returncode else f'torchrun wrote no {saved}'
        raise RuntimeError(f'{what}: {error or "no error line"}; last output:\n{tail[-3000:]}')
    return {
        'processes': 1,
        'backend': args.backend,
        'run': 'DefocusGAN, 4 iterations, bf16 + channels_last',
        'seconds': round(seconds, 1)
    }


# ---------------------------------------------------------------------------------------------------- report
def _cell(value):
    return '' if value is None else str(value).splitlines()[0].replace('|', '/')  # the first line of an error


def markdown(report):
    m, lines = report['machine'], []
    where = m.get('gpu') or f"CPU ({m['cpus']} cores)"
    lines += [
        f"# GPU check: {where}", '',
        f"torch {m['torch']}" + (f", CUDA {m['cuda']}, cuDNN {m['cudnn']}" if 'cuda' in m else '') +
        (' - DRY RUN (CPU, tiny sizes: not a measurement)' if report['dry_run'] else '') +
        f"; `scripts/gpu_check.sh{' --dry-run' if report['dry_run'] else ''}`, {report['seconds']:.0f} s.", ''
    ]
    goal = [r for r in report['training'] if r['recipe'].startswith(GOAL[0]) and r['status'] == 'ok']
    if goal:
        best = max(goal, key=lambda r: r['it_s'])
        lines += [
            f"Goal (DefocusGAN stage 2, release recipe, batch {best['batch']}, {best['crop']}² crops): "
            f"{best['it_s']} it/s at best ({best['recipe']}; amp {best['amp']}"
            f"{', channels_last' if best['channels_last'] else ''}); target >= {GOAL[1]:.0f} it/s on one H100.", ''
        ]
    lines += [
        '## Generator inference', '', '| generator | size | mode | ms | peak MB | first call s | status |',
        '|---|---|---|---|---|---|---|'
    ]
    for r in report['inference']:
        lines.append(f"| {r['generator']} | {_cell(r.get('size'))} | {r['mode']} | {_cell(r.get('ms'))} | "
                     f"{_cell(r.get('peak_mb'))} | {_cell(r.get('first_call_s'))} | {_cell(r['status'])} |")
    lines += [
        '', '## Training (batches preloaded on the device)', '',
        '| recipe | model | amp | channels_last | batch x crop | it/s | peak MB | losses finite | status |',
        '|---|---|---|---|---|---|---|---|---|'
    ]
    for r in report['training']:
        size = f"{r['batch']} x {r['crop']}²" if 'batch' in r else ''
        lines.append(f"| {r['recipe']} | {_cell(r.get('model'))} | {r['amp']} | {r['channels_last']} | {size} | "
                     f"{_cell(r.get('it_s'))} | {_cell(r.get('peak_mb'))} | {_cell(r.get('losses_finite'))} | "
                     f"{_cell(r['status'])} |")
    lines += [
        '', '## Joint DP optimiser', '', '| size | preset | s | iterations per level | peak MB | status |',
        '|---|---|---|---|---|---|'
    ]
    for r in report['joint']:
        lines.append(f"| {_cell(r.get('size'))} | fast | {_cell(r.get('seconds'))} | {_cell(r.get('iters'))} | "
                     f"{_cell(r.get('peak_mb'))} | {_cell(r['status'])} |")
    lines += ['', '## DDP smoke run', '', '| processes | backend | run | s | status |', '|---|---|---|---|---|']
    for r in report['ddp']:
        lines.append(f"| 1 | {r.get('backend', '')} | {_cell(r.get('run'))} | {_cell(r.get('seconds'))} | "
                     f"{_cell(r['status'])} |")
    return '\n'.join(lines) + '\n'


def main(argv=None):
    args = parse_args(argv)
    import torch

    import defocusgan_plugin  # noqa: F401  # isort: skip  (before basicsr: its torchvision alias; the registrations)
    from basicsr.utils import get_root_logger  # isort: skip
    get_root_logger(log_level=logging.WARNING)  # the first call sets the level: no network printouts
    device = torch.device(args.device)
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            sys.exit('gpu_check: no CUDA device (use --dry-run on a CPU machine).')
        torch.backends.cudnn.benchmark = True  # as the training entry point
    else:
        torch.set_num_threads(1)  # a dry run: tiny tensors, where extra threads only contend
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix='work_', dir=args.out)
    start = time.time()
    report = {
        'dry_run': args.dry_run,
        'machine': machine_info(device),
        'iters': args.iters,
        'warmup': args.warmup,
        'budget_s': args.budget_s,
        'inference': [],
        'training': [],
        'joint': [],
        'ddp': []
    }

    def save():
        report['seconds'] = round(time.time() - start, 1)
        with open(osp.join(args.out, 'gpu_check.json'), 'w') as f:
            json.dump(report, f, indent=1)
        with open(osp.join(args.out, 'gpu_check.md'), 'w') as f:
            f.write(markdown(report))

    data = prepare_data(work, args)
    # the order rows run in: the stage-2 goal first, compilation (minutes with inductor) last
    plan = [('training', dict(recipe=r, amp=a, channels_last=c), training_row, (args, device, data, work))
            for r, a, c in TRAINING_ROWS[:4]]
    plan += [('inference', dict(generator=g, mode=m), inference_row, (args, device)) for g in GENERATORS
             for m in INFERENCE_MODES if not INFERENCE_MODES[m][2]]
    plan += [('joint', {}, joint_row, (args, device)), ('ddp', {}, ddp_row, (args, data, work))]
    plan += [('training', dict(recipe=r, amp=a, channels_last=c), training_row, (args, device, data, work))
             for r, a, c in TRAINING_ROWS[4:]]
    plan += [('inference', dict(generator=g, mode=m), inference_row, (args, device)) for g in GENERATORS
             for m in INFERENCE_MODES if INFERENCE_MODES[m][2]]
    failed = False
    for section, key, fn, fixed in plan:
        label = dict(key)
        if 'generator' in label:
            label['generator'] = GENERATORS[label['generator']]
        if 'amp' in label:
            label['amp'] = label['amp'] or 'off'
        if 'recipe' in label:
            label['option'] = RECIPES[label['recipe']][0]
        print(f'[{time.time() - start:5.0f} s] {section} {key}', file=sys.stderr, flush=True)
        # a compiled row compiles for minutes with inductor: it starts only with COMPILE_S of the budget left
        needs = COMPILE_S if INFERENCE_MODES.get(key.get('mode'), (0, 0, False))[2] and not args.dry_run else 0
        if args.rows and not re.search(args.rows, f'{section} {" ".join(map(str, label.values()))}'):
            row = dict(label, status='not selected (--rows)')
        elif time.time() - start + needs > args.budget_s:
            row = dict(label, status='skipped: time budget')
        elif key.get('amp') == 'fp16' and device.type != 'cuda':
            row = dict(label, status='skipped: fp16 needs CUDA')
        else:
            try:
                row = dict(fn(*fixed, **key), status='ok')
            except Exception as err:  # one broken row must not hide the others
                traceback.print_exc()
                failed = True
                row = dict(label, status=f'error: {type(err).__name__}: {err}'[:600])
            release_memory()
        report[section].append(row)
        save()
    order = {m: i for i, m in enumerate(INFERENCE_MODES)}
    report['inference'].sort(key=lambda r: (r['generator'], order[r['mode']]))
    save()
    if not args.keep_work:
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    print(markdown(report))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
