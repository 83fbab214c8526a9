"""Benchmark of single-image / DP deblurring generators: parameters, MACs per pixel, forward time and peak memory.

    python scripts/benchmark_generator.py                           # CPU, reduced size (128x128), fp32
    python scripts/benchmark_generator.py --device cuda             # GPU, 1680x1120 (a DPDD image), all modes

Rows: DefocusGANGenerator (defaults), BasicSR's RCAN and SwinIR configured for scale 1 (reference points), and
MCCNet (6-channel DP input) when it is registered. Modes: fp32, bf16 / fp16 autocast, bf16 with channels_last,
bf16 with channels_last and torch.compile (CUDA; on the CPU only fp32 and bf16 are meaningful). MACs are counted with
``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products; MAC = FLOP / 2) at the benchmark
size. Each measurement runs in its own process, so that peak memory is its own: ``torch.cuda.max_memory_allocated``
on the GPU, the growth of the process's peak resident memory during the forward passes on the CPU.
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

ROWS = {
    'DefocusGANGenerator': ({'type': 'DefocusGANGenerator'}, 3),
    'RCAN': ({'type': 'RCAN', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_group': 10, 'num_block': 16,
              'upscale': 1, 'img_range': 1.0}, 3),
    'SwinIR': ({'type': 'SwinIR', 'upscale': 1, 'in_chans': 3, 'img_size': 128, 'window_size': 8, 'img_range': 1.0,
                'depths': [6] * 6, 'embed_dim': 180, 'num_heads': [6] * 6, 'mlp_ratio': 2, 'upsampler': '',
                'resi_connection': '1conv'}, 3),
    'MCCNet': ({'type': 'MCCNet'}, 6),
}
MODES = ('fp32', 'bf16', 'fp16', 'bf16-channels_last', 'bf16-compile')


def measure(name, device, size, mode, repeats, warmup):
    """Builds one row's network and measures it in one mode (run in a fresh process); returns a result dict."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import defocusgan_plugin  # noqa: F401  (registers the plugin's archs)
    from basicsr.archs import build_network
    from basicsr.utils.registry import ARCH_REGISTRY

    net_opt, in_ch = ROWS[name]
    if net_opt['type'] not in ARCH_REGISTRY:
        return {'model': name, 'mode': mode, 'error': 'not registered'}
    net = build_network(dict(net_opt)).eval().to(device)
    x = torch.rand(1, in_ch, *size, device=device)
    dtype = torch.float16 if mode == 'fp16' else torch.bfloat16
    model, inp = net, x
    if mode.endswith('channels_last') or mode.endswith('compile'):
        model, inp = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    if mode.endswith('compile'):
        model = torch.compile(model)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for i in range(warmup + repeats):
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=mode != 'fp32'):
            model(inp)
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    if device.type == 'cuda':
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:  # growth of the peak resident memory, KiB on Linux
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    with torch.no_grad(), FlopCounterMode(display=False) as counter:  # after timing: not part of the peak
        net.to(memory_format=torch.contiguous_format)(x)
    return {'model': name, 'in_ch': in_ch, 'params_m': sum(p.numel() for p in net.parameters()) / 1e6,
            'gmac_per_mp': counter.get_total_flops() / 2 / (size[0] * size[1]) * 1e6 / 1e9, 'mode': mode,
            'ms': 1e3 * statistics.median(times), 'peak_mb': peak_mb}


def format_table(rows, size, device_name):
    lines = [f'Device: {device_name}; input {size[0]}x{size[1]}; median forward time, batch 1.', '',
             '| model | input ch | params (M) | GMAC / megapixel | mode | time (ms) | peak memory (MB) |',
             '|---|---|---|---|---|---|---|']
    for r in rows:
        if 'error' in r:
            lines.append(f"| {r['model']} | | | | {r.get('mode', '')} | {r['error']} | |")
        else:
            lines.append(f"| {r['model']} | {r['in_ch']} | {r['params_m']:.2f} | {r['gmac_per_mp']:.0f} | "
                         f"{r['mode']} | {r['ms']:.1f} | {r['peak_mb']:.0f} |")
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (default: cpu)")
    parser.add_argument('--size', help='HxW (default: 1120x1680 on CUDA, 128x128 on the CPU)')
    parser.add_argument('--modes', help=f'comma-separated, from {",".join(MODES)} (default: all on CUDA, fp32 '
                        'on the CPU)')
    parser.add_argument('--models', default=','.join(ROWS), help='comma-separated rows (default: all)')
    parser.add_argument('--repeats', type=int, default=None, help='timed runs (default: 10 on CUDA, 2 on the CPU)')
    parser.add_argument('--warmup', type=int, default=None, help='untimed runs first (default: 3 on CUDA, 1 on CPU)')
    parser.add_argument('--timeout', type=int, default=1800, help='seconds allowed per measurement (default 1800)')
    parser.add_argument('--worker', help=argparse.SUPPRESS)  # internal: measure one row, print JSON
    args = parser.parse_args()

    cuda = args.device.startswith('cuda')
    size = tuple(int(v) for v in (args.size or ('1120x1680' if cuda else '128x128')).lower().split('x'))
    modes = (args.modes or (','.join(MODES) if cuda else 'fp32')).split(',')
    repeats = args.repeats or (10 if cuda else 2)
    warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    unknown = [m for m in modes if m not in MODES] + [m for m in args.models.split(',') if m not in ROWS]
    if unknown:
        parser.error(f'unknown mode/model: {", ".join(unknown)}')

    if args.worker:
        import torch
        print(json.dumps(measure(args.worker, torch.device(args.device), size, modes[0], repeats, warmup)))
        return

    import torch
    if cuda and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device is available.')
    device_name = torch.cuda.get_device_name(args.device) if cuda else f'CPU ({torch.get_num_threads()} threads)'
    rows = []
    for name in args.models.split(','):
        for mode in modes:  # one process per measurement: peak memory and compile caches are its own
            cmd = [sys.executable, __file__, '--worker', name, '--device', args.device, '--size',
                   f'{size[0]}x{size[1]}', '--modes', mode, '--repeats', str(repeats), '--warmup', str(warmup)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                rows.append({'model': name, 'mode': mode, 'error': f'timed out after {args.timeout} s'})
                continue
            if proc.returncode != 0:  # e.g. a mode the device does not support: report it, keep the others
                error = (proc.stderr.strip().splitlines() or ['failed'])[-1][:100]
                rows.append({'model': name, 'mode': mode, 'error': error})
            else:
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f'{name} {mode}: done', file=sys.stderr, flush=True)
    print(format_table(rows, size, device_name))


if __name__ == '__main__':
    main()
