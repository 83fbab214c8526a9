"""Times deblurring generators in one process, interleaved: parameters, GMAC per megapixel, median forward time.

    python scripts/benchmark_generator.py                        # slim vs release generator, CPU, 1 thread, 256x384
    python scripts/benchmark_generator.py --device cuda --dtype bf16 --channels-last --compile   # GPU, 1680x1120

Every round runs each model once, in the order given (A B A B ...), so that a machine whose speed drifts (other
processes, turbo, thermal limits) affects all models alike; the first ``--warmup`` rounds are not timed. The table
gives the median time per model and, for every model after the first, its time ratio to the first: the ratio of the
medians and the median of the per-round ratios (robust to drift). MACs are counted once per model with
``torch.utils.flop_counter.FlopCounterMode`` (convolutions, transposed convolutions and matrix products; MAC =
FLOP / 2) at the benchmark size. On CUDA the peak memory a forward pass adds is reported as well.

Rows (``--models``): DefocusGANGenerator (defaults, the plugin's slim generator), DefocusGANReleaseGenerator (the
authors' release), BasicSR's RCAN and SwinIR at scale 1 (reference points), MCCNet (6-channel DP input).
"""
import argparse
import statistics
import sys
import time

ROWS = {
    'DefocusGANGenerator': ({
        'type': 'DefocusGANGenerator'
    }, 3),
    'DefocusGANReleaseGenerator': ({
        'type': 'DefocusGANReleaseGenerator'
    }, 3),
    'RCAN': ({
        'type': 'RCAN',
        'num_in_ch': 3,
        'num_out_ch': 3,
        'num_feat': 64,
        'num_group': 10,
        'num_block': 16,
        'upscale': 1,
        'img_range': 1.0
    }, 3),
    'SwinIR': ({
        'type': 'SwinIR',
        'upscale': 1,
        'in_chans': 3,
        'img_size': 128,
        'window_size': 8,
        'img_range': 1.0,
        'depths': [6] * 6,
        'embed_dim': 180,
        'num_heads': [6] * 6,
        'mlp_ratio': 2,
        'upsampler': '',
        'resi_connection': '1conv'
    }, 3),
    'MCCNet': ({
        'type': 'MCCNet'
    }, 6),
}
DTYPES = ('fp32', 'bf16', 'fp16')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        '--models',
        default='DefocusGANGenerator,DefocusGANReleaseGenerator',
        help=f'comma-separated, from {",".join(ROWS)}; ratios are to the first '
        '(default: DefocusGANGenerator,DefocusGANReleaseGenerator)')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda[:N]' (default: cpu)")
    parser.add_argument('--size', help='HxW (default: 256x384 on the CPU, 1120x1680 on CUDA)')
    parser.add_argument('--threads', type=int, default=1, help='CPU threads (torch.set_num_threads; default 1)')
    parser.add_argument('--repeats', type=int, default=None, help='timed rounds (default: 5 on the CPU, 20 on CUDA)')
    parser.add_argument(
        '--warmup',
        type=int,
        default=None,
        help='untimed rounds first (default: 1 on the CPU, 3 on '
        'CUDA; raise it with --compile)')
    parser.add_argument('--dtype', default='fp32', choices=DTYPES, help='fp32, or bf16 / fp16 autocast')
    parser.add_argument('--channels-last', action='store_true', help='channels_last memory format')
    parser.add_argument('--compile', action='store_true', help='torch.compile every model')
    args = parser.parse_args(argv)
    unknown = [m for m in args.models.split(',') if m not in ROWS]
    if unknown:
        parser.error(f'unknown model(s) {", ".join(unknown)}; choose from {", ".join(ROWS)}')
    cuda = args.device.startswith('cuda')
    args.size = tuple(int(v) for v in (args.size or ('1120x1680' if cuda else '256x384')).lower().split('x'))
    args.repeats = args.repeats or (20 if cuda else 5)
    args.warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    if len(args.size) != 2 or min(args.size) < 1 or args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        parser.error('--size must be HxW, --repeats and --threads >= 1, --warmup >= 0')
    return parser, args


def count_macs(net, x):
    """Multiply-accumulates of one forward pass (FlopCounterMode: FLOP / 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops() / 2


def main(argv=None):
    parser, args = parse_args(argv)
    import defocusgan_plugin  # noqa: F401  # isort: skip  (first: basicsr's torchvision alias, the plugin's archs)
    import torch
    from basicsr.archs import build_network
    from basicsr.utils.registry import ARCH_REGISTRY

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == 'cuda'
    if cuda and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device is available.')
    dtype = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}[args.dtype]
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    height, width = args.size

    models = []
    for name in args.models.split(','):
        net_opt, in_ch = ROWS[name]
        if net_opt['type'] not in ARCH_REGISTRY:
            print(f'{name}: not registered, skipped', file=sys.stderr)
            continue
        torch.manual_seed(0)
        net = build_network(dict(net_opt)).eval().to(device)
        x = torch.rand(1, in_ch, height, width, device=device)
        row = {
            'name': name,
            'in_ch': in_ch,
            'params': sum(p.numel() for p in net.parameters()),
            'macs': count_macs(net, x),
            'times': [],
            'peak': 0
        }
        net, x = net.to(memory_format=fmt), x.contiguous(memory_format=fmt)
        row['run'] = torch.compile(net) if args.compile else net
        row['x'] = x
        models.append(row)
    if not models:
        parser.error('no model to time')

    for rnd in range(args.warmup + args.repeats):
        for row in models:  # interleaved: every round runs every model once
            if cuda:
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            start = time.perf_counter()
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                row['run'](row['x'])
            if cuda:
                torch.cuda.synchronize(device)
                row['peak'] = max(row['peak'], torch.cuda.max_memory_allocated(device) - base)
            if rnd >= args.warmup:
                row['times'].append(time.perf_counter() - start)
        print(f'round {rnd + 1}/{args.warmup + args.repeats} done', file=sys.stderr, flush=True)

    where = torch.cuda.get_device_name(device) if cuda else f'CPU, {torch.get_num_threads()} thread(s)'
    mode = args.dtype + (' + channels_last' if args.channels_last else '') + (' + compile' if args.compile else '')
    print(f'{where}; input {height}x{width}; {mode}; batch 1; {args.repeats} interleaved rounds after {args.warmup} '
          'warm-up; median forward time.\n')
    peak_head = ' peak memory (MB) |' if cuda else ''
    print(f'| model | input ch | params | GMAC / megapixel | time (ms) | ratio to {models[0]["name"]} |{peak_head}')
    print('|---|---|---|---|---|---|' + ('---|' if cuda else ''))
    first = models[0]['times']
    for row in models:
        median = statistics.median(row['times'])
        ratio = statistics.median(row['times']) / statistics.median(first)
        paired = statistics.median(t / f for t, f in zip(row['times'], first))
        peak = f' {row["peak"] / 2**20:.0f} |' if cuda else ''
        print(f'| {row["name"]} | {row["in_ch"]} | {row["params"]:,} | {row["macs"] / (height * width) / 1e3:.0f} | '
              f'{1e3 * median:.1f} | {ratio:.2f} (paired {paired:.2f}) |{peak}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
