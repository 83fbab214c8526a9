"""Writes the one-time decoded cache of a DPDD-layout dataset for the fast training loader.

    python scripts/cache_dpdd.py --dataroot datasets/DPDD --out datasets/DPDD_cache --workers 8

then add ``cache_root: datasets/DPDD_cache`` to the training dataset block (same ``dataroot``). Each image becomes an
uncompressed ``.npy`` of its decoded samples (uint16 for DPDD: about 11.3 MB per 1680x1120 file, 15.8 GB for the
DPDD training split); the loader memory-maps and crops it, giving the same values as decoding the PNG. The sharpness
scores of the training patch grid (--gt-size / --patch-stride, the release's 512 / 204 by default) are stored too,
so that ``drop_least_sharp`` needs no full-image pass at start-up. Re-running only redoes files that changed.
"""
import argparse
import os
import sys
import time

from defocusgan_plugin.data.dpdd_cache import write_cache


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dataroot', required=True, help='DPDD root (the dataset option dataroot)')
    parser.add_argument('--out', required=True, help='cache folder (the dataset option cache_root)')
    parser.add_argument('--splits', nargs='+', default=['train'], help='splits to cache (default: train)')
    parser.add_argument('--all', action='store_true', help='cache every image under --dataroot')
    parser.add_argument('--gt-size', type=int, default=512, help='gt_size of the stored patch scores')
    parser.add_argument('--patch-stride', type=int, default=204, help='patch_stride of the stored patch scores')
    parser.add_argument('--color', choices=['rgb', 'gray'], default='rgb', help='the dataset option color')
    parser.add_argument('--no-scores', action='store_true', help='do not store patch sharpness scores')
    parser.add_argument('--workers', type=int, default=max(1, (os.cpu_count() or 1) // 2))
    args = parser.parse_args(argv)
    start = time.time()
    try:
        counts = write_cache(args.dataroot, args.out, args.splits, args.all, args.gt_size, args.patch_stride,
                             args.color, not args.no_scores, args.workers)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f'error: {err}')
    print(f'Cache {args.out}: {counts["cached"]} files written, {counts["unchanged"]} unchanged, '
          f'{time.time() - start:.1f} s')


if __name__ == '__main__':
    main()
