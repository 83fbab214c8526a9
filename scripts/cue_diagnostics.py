"""Scores the untrained DP cue of ``DefocusMapNet`` on a synthetic DP set with GT maps, by high-pass radius and PSF
family: where the photo recipes' ``match_highpass`` comes from.

    python scripts/cue_diagnostics.py --split val --highpass 0 3 5 7 11
    python scripts/cue_diagnostics.py --split test --highpass 0 7

The map network's zero-initialised head makes the untrained network exactly its cross-convolution cue. It is built
with the ``network_map`` options of ``--opt`` (only ``match_highpass`` changes) and run on every image of the split.
Metrics against the GT signed CoC maps: AIWE(1) (after the L1 affine fit, as the learning curves score stage 1) and
the plain L1 (what a supervised L1 loss charges); AIWE(1) also per PSF family of the set's ``manifest.json``. Prints a
markdown table.
"""
import argparse
import glob
import json
import numpy as np
import torch
from os import path as osp

import defocusgan_plugin  # noqa: F401  # isort: skip  (before basicsr: torchvision alias, registrations)
from basicsr.archs import build_network

from defocusgan_plugin.metrics.defocus_map_metric import calculate_aiwe1
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
    rows = []
    for radius in args.highpass:
        net = build_network(dict(net_opt, match_highpass=radius)).eval()
        aiwe, l1 = {}, []
        for name, map_path in zip(names, maps):
            gt = np.load(map_path).astype(np.float32)
            pair = torch.cat([view(osp.join(args.data, f'{args.split}_{s}', 'source', f'{name}.png')) for s in 'lr'], 1)
            with torch.no_grad():
                pred = net(pair)[0, 0].numpy()
            aiwe.setdefault(family_of.get(name, '-'), []).append(calculate_aiwe1(pred, gt))
            l1.append(float(np.abs(pred - gt).mean()))
        every = [v for values in aiwe.values() for v in values]
        rows.append((radius, np.mean(every), np.mean(l1), [np.mean(aiwe[g]) if g in aiwe else None for g in groups]))
    print(f'Untrained DP cue (`{args.opt}` network_map), `{args.data}` {args.split} split, {len(maps)} images; '
          'AIWE(1) and plain L1 to the GT maps (px).\n')
    counts = [sum(family_of.get(n, '-') == g for n in names) for g in groups]
    per_family = ' | '.join(f'AIWE(1) {g} ({c})' for g, c in zip(groups, counts))
    print(f'| match_highpass | AIWE(1) | plain L1 | {per_family} |')
    print('| ---: | ---: | ---: | ' + ' | '.join('---:' for _ in groups) + ' |')
    for radius, aiwe, l1, per_family in rows:
        cells = ' | '.join(f'{v:.3f}' for v in per_family)
        print(f'| {radius or "off"} | {aiwe:.3f} | {l1:.3f} | {cells} |')


if __name__ == '__main__':
    main()
