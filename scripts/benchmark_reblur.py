"""FFT versus grouped-conv2d layer blurring (``ops.render.blur_layers``) for the stage-1 reblur.

    python scripts/benchmark_reblur.py                      # 26 kernels, sizes 3..51, crops 128/256/512
    python scripts/benchmark_reblur.py --sizes 64 128 --kernels 3 9 21 --backward layers

Times one call of ``blur_layers`` on (batch, 26 layers, 4 channels, S, S) - the combined-image reblur of
DefocusGAN (colour + weight per |CoC| layer, radii 0..25) - for each kernel size K and crop size S: forward only
(validation, deconvolution), forward + backward to the layers (training the map network, kernels frozen) or to
layers and kernels (training the kernels). Conv runs whose predicted time exceeds ``--max-seconds`` are skipped
(their cost grows with K^2, FFT's does not). The last column is the faster method; ``CONV_MAX_KERNEL`` in
``ops/render.py`` is the largest K at which conv wins, as printed at the end.
"""
import argparse
import time
import torch

from defocusgan_plugin.ops import render
from defocusgan_plugin.ops.psf import disk_psf


def timed(fn, repeat, device):
    fn()  # warm-up (FFT plans, allocator)
    if device.type == 'cuda':
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    if device.type == 'cuda':
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeat


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', type=int, nargs='+', default=[128, 256, 512], help='crop sizes S')
    parser.add_argument('--kernels', type=int, nargs='+', default=[3, 5, 7, 9, 11, 15, 21, 31, 41, 51])
    parser.add_argument('--layers', type=int, default=26, help='layers N (radii 0..25)')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument(
        '--backward',
        choices=('none', 'layers', 'both'),
        default='none',
        help='also back-propagate to the layers (map phase) or to layers and kernels (kernel phase)')
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--max-seconds', type=float, default=20.0, help='skip conv runs predicted slower than this')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: torch default)')
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    mode = {
        'none': 'forward',
        'layers': 'forward + backward to the layers',
        'both': 'forward + backward to layers and kernels'
    }[args.backward]
    print(f'blur_layers, {args.layers} layers x 4 channels, batch {args.batch}, {mode}, {device} '
          f'({torch.get_num_threads()} CPU threads); seconds per call')
    print('| crop | K  |   fft    |   conv   | faster |')
    print('|------|----|----------|----------|--------|')
    crossover = {}
    for size in args.sizes:
        layers = torch.rand(
            args.batch, args.layers, 4, size, size, device=device, requires_grad=args.backward != 'none')
        conv_rate = None  # seconds per (K^2 * pixel * layer) from the last conv run, to predict the next
        crossover[size] = 0
        for k in args.kernels:
            radii = torch.linspace(0, (k - 1) / 2, args.layers)
            kernels = disk_psf(radii, k, device=device).requires_grad_(args.backward == 'both')
            work = k * k * size * size * args.layers * args.batch
            row = {}
            for method in ('fft', 'conv'):
                if method == 'conv' and conv_rate is not None and conv_rate * work > args.max_seconds:
                    row[method] = None
                    continue

                def run():
                    out = render.blur_layers(layers, kernels, method=method)
                    if args.backward != 'none':
                        out.sum().backward()

                row[method] = timed(run, args.repeat, device)
                if method == 'conv':
                    conv_rate = row[method] / work
            conv_wins = row['conv'] is not None and row['conv'] < row['fft']
            if conv_wins:
                crossover[size] = k
            conv_text = f'{row["conv"]:8.4f}' if row['conv'] is not None else f'>{conv_rate * work:7.1f}'
            print(
                f'| {size:4d} | {k:2d} | {row["fft"]:8.4f} | {conv_text} | {"conv" if conv_wins else "fft":>6s} |',
                flush=True)
    print('\nLargest K where conv is faster, per crop size: ' + ', '.join(f'{s}: {k or "none"}'
                                                                          for s, k in crossover.items()))
    print(f'ops/render.py has CONV_MAX_KERNEL = {render.CONV_MAX_KERNEL}.')


if __name__ == '__main__':
    main()
