"""Scores the untrained DP cue of ``DefocusMapNet`` on a synthetic DP set with GT maps, by high-pass radius and PSF
family: where the photo recipes' ``match_highpass`` comes from. ``--search`` also scores the labels of
``ReblurSearchMapLoss`` (the reblur objective searched from the sharp image and both views) by cost window.

    python scripts/cue_diagnostics.py --split val --highpass 0 3 5 7 11
    python scripts/cue_diagnostics.py --split test --highpass 0 7
    python scripts/cue_diagnostics.py --split val --highpass 7 --search 7 11 15 --search-highpass 7 15

The map network's zero-initialised head makes the untrained network exactly its cross-convolution cue. It is built
with the ``network_map`` options of ``--opt`` (only ``match_highpass`` changes) and run on every image of the split.
Metrics against the GT signed CoC maps: AIWE(1) (after the L1 affine fit, as the learning curves score stage 1) and
the plain L1 (what a supervised L1 loss charges), and for the search the L1 weighted by its confidence (what
``confidence: true`` charges); AIWE(1) also per PSF family of the set's ``manifest.json``. The search uses the
untrained ``network_kernel`` of ``--opt`` and 0.5-px steps. Prints a markdown table.
"""
import argparse
import glob
import json
import numpy as np
import sys
import torch
from os import path as osp

import defocusgan_plugin  # noqa: F401  # isort: skip  (before basicsr: torchvision alias, registrations)
from basicsr.archs import build_network

from defocusgan_plugin.metrics.defocus_map_metric import calculate_aiwe1
from defocusgan_plugin.ops.reblur_search import reblur_search, search_confidence
from defocusgan_plugin.utils.img_io import read_image
from defocusgan_plugin.utils.options import read_yaml


def families(data):
    """Image name -> PSF family, from the set's manifest ('-' without one)."""
    path = osp.join(data, 'manifest.json')
    if not osp.isfile(path):
        return {}
    with open(path) as f:
        photos = json.load(f).get('photos', [])
    return {image['name']: image.get('family', '-') for photo in photos for image in photo.get('images', [])}


def view(path):
    image = read_image(path)[0][..., ::-1].copy()  # RGB float32 in [0, 1]
    return torch.from_numpy(image).permute(2, 0, 1)[None]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data', default='datasets/photos_dpdd', help='a synthetic DPDD-layout set with GT maps')
    parser.add_argument('--split', default='val')
    parser.add_argument('--opt', default='options/train/train_defocus_map_photos.yml', help='its network_map block')
    parser.add_argument('--highpass', type=int, nargs='+', default=[0, 7], help='match_highpass radii (0: off)')
    parser.add_argument('--search', type=int, nargs='*', default=[], help='reblur-search cost windows (odd)')
    parser.add_argument('--search-highpass', type=int, nargs='+', default=[7], help='reblur-search high-pass radii')
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    maps = sorted(glob.glob(osp.join(args.data, f'{args.split}_defocus', '*.npy')))
    if not maps:
        parser.error(f'--data {args.data} --split {args.split}: no GT maps in {args.split}_defocus/')
    net_opt = read_yaml(args.opt).get('network_map')
    if not net_opt or net_opt.get('type') != 'DefocusMapNet':
        parser.error(f'--opt {args.opt}: network_map must be a DefocusMapNet (the cue is its).')
    family_of = families(args.data)
    names = [osp.splitext(osp.basename(p))[0] for p in maps]
    groups = sorted(set(family_of.get(n, '-') for n in names))
    samples = []
    for name, map_path in zip(names, maps):
        left, right = (view(osp.join(args.data, f'{args.split}_{s}', 'source', f'{name}.png')) for s in 'lr')
        sharp = view(osp.join(args.data, f'{args.split}_c', 'target', f'{name}.png'))
        samples.append((family_of.get(name, '-'), np.load(map_path).astype(np.float32), left, right, sharp))

    def score(label, estimate):
        """One table row: ``estimate(left, right, sharp)`` -> (map, confidence or None) on every image."""
        aiwe, l1, weighted = {}, [], []
        for family, gt, left, right, sharp in samples:
            with torch.no_grad():
                pred, conf = estimate(left, right, sharp)
            pred = pred[0, 0].numpy()
            aiwe.setdefault(family, []).append(calculate_aiwe1(pred, gt))
            l1.append(float(np.abs(pred - gt).mean()))
            if conf is not None:
                conf = conf[0, 0].numpy()
                weighted.append(float((conf * np.abs(pred - gt)).sum() / max(conf.sum(), 1e-12)))
        every = [v for values in aiwe.values() for v in values]
        per_family = [np.mean(aiwe[g]) if g in aiwe else None for g in groups]
        return label, np.mean(every), np.mean(l1), np.mean(weighted) if weighted else None, per_family

    rows = []
    for radius in args.highpass:
        net = build_network(dict(net_opt, match_highpass=radius)).eval()

        def cue(left, right, sharp, net=net):
            return net(torch.cat([left, right], 1)), None

        rows.append(score(f'cue, match_highpass {radius or "off"}', cue))
    if args.search:
        kernel_opt = read_yaml(args.opt).get('network_kernel') or {}
        kernels = build_network(kernel_opt)
        with torch.no_grad():
            dp = kernels.dp_kernels()

        def searched(window, highpass):

            def estimate(left, right, sharp):
                label, cost = reblur_search(sharp, torch.stack([left, right], 1), dp, 0.5, window, highpass,
                                            kernels.linear_light)
                return label, search_confidence(cost)

            return estimate

        for highpass in args.search_highpass:
            for window in args.search:
                rows.append(score(f'reblur search, window {window}, high-pass {highpass}', searched(window, highpass)))
    searched = ' and the reblur search (its network_kernel, untrained)' if args.search else ''
    print(f'Untrained DP cue (`{args.opt}` network_map){searched}, `{args.data}` {args.split} split, {len(maps)} '
          f'images; AIWE(1) and plain L1 to the GT maps (px).\n\n    python scripts/{osp.basename(__file__)} '
          f'{" ".join(sys.argv[1:])}\n')
    counts = [sum(family_of.get(n, '-') == g for n in names) for g in groups]
    per_family = ' | '.join(f'AIWE(1) {g} ({c})' for g, c in zip(groups, counts))
    print(f'| estimate | AIWE(1) | plain L1 | confidence-weighted L1 | {per_family} |')
    print('| --- | ---: | ---: | ---: | ' + ' | '.join('---:' for _ in groups) + ' |')
    for label, aiwe, l1, weighted, per_family in rows:
        cells = ' | '.join(f'{v:.3f}' for v in per_family)
        print(f'| {label} | {aiwe:.3f} | {l1:.3f} | {"" if weighted is None else f"{weighted:.3f}"} | {cells} |')


if __name__ == '__main__':
    main()
