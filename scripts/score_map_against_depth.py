"""Scores saved signed defocus maps (``.npy``, e.g. ``defocusgan-dp``'s ``NAME_map.npy``) against the measured depth
of their DP pair (the Sdirt layouts read by ``DPPairsDataset``): Pearson and Spearman correlation with the target
``1/z_f - 1/z`` and AIWE(1) as a share of the constant-map floor, on the pixels with valid depth.

    python scripts/score_map_against_depth.py ../shared/data/sdirt_real_dp/box/001 out/001_map.npy [more maps ...]
"""
import argparse
import numpy as np
from scipy.stats import pearsonr, spearmanr

import defocusgan_plugin  # noqa: F401  # isort: skip  (before basicsr: torchvision alias, registrations)
from defocusgan_plugin.data.dp_pairs_dataset import DPPairsDataset
from defocusgan_plugin.metrics.defocus_map_metric import calculate_aiwe1, calculate_constant_floor


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('pair', help='folder of one DP pair with its depth (l.png, r.png, d.png)')
    parser.add_argument('maps', nargs='+', help='H x W signed maps of that pair, at the views\' size')
    parser.add_argument('--focus-distance', type=float, default=1.0, help='m (Sdirt: 1 m)')
    parser.add_argument('--depth-min', type=float, default=0.25)
    parser.add_argument('--depth-max', type=float, default=10.0)
    parser.add_argument('--border', type=int, default=8)
    args = parser.parse_args()
    dataset = DPPairsDataset(
        dict(
            dataroot=args.pair,
            focus_distance=args.focus_distance,
            depth_format='sdirt',
            depth_min=args.depth_min,
            depth_max=args.depth_max,
            border=args.border,
            require_depth=True))
    target = dataset[0]['defocus'][0].numpy()
    valid = np.isfinite(target)
    for path in args.maps:
        pred = np.load(path)
        if pred.shape != target.shape:
            parser.error(f'{path}: a {pred.shape[0]}x{pred.shape[1]} map for {target.shape[0]}x{target.shape[1]} '
                         'views')
        ratio = calculate_aiwe1(pred, target) / calculate_constant_floor(pred, target)
        print(f'{path}: Pearson {pearsonr(pred[valid], target[valid])[0]:+.3f}, Spearman '
              f'{spearmanr(pred[valid], target[valid])[0]:+.3f}, AIWE(1) / floor {ratio:.3f} ({int(valid.sum())} px)')


if __name__ == '__main__':
    main()
