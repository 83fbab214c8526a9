"""Writes the embedded synthetic dual-pixel dataset (DPDD layout, 16-bit PNG, GT defocus maps).

    python scripts/make_synthetic_dpdd.py --out datasets/synthetic_dpdd

Sources ship with scikit-image (Middlebury motorcycle with real disparity; photos with procedural depth), so
nothing is downloaded. The output is deterministic for a given --seed.
"""
import argparse
import time

from defocusgan_plugin.data.dp_synthesis import write_synthetic_dpdd


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='datasets/synthetic_dpdd', help='output root')
    parser.add_argument('--max-side', type=int, default=384, help='longer side of each scene in pixels')
    parser.add_argument('--coc-max', type=float, default=8.0, help='largest |CoC| radius in pixels')
    parser.add_argument('--train', type=int, default=5, help='training images (focal planes) per scene')
    parser.add_argument('--val', type=int, default=1, help='validation images per scene')
    parser.add_argument('--test', type=int, default=1, help='test images per scene')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    start = time.time()
    counts = write_synthetic_dpdd(
        args.out,
        max_side=args.max_side,
        coc_max=args.coc_max,
        focus_per_scene=(args.train, args.val, args.test),
        seed=args.seed)
    print(f'Wrote {counts} images to {args.out} in {time.time() - start:.1f} s')


if __name__ == '__main__':
    main()
