"""Scores every defocus-map estimator of the plugin on real dual-pixel captures with measured depth (the Sdirt / DP119
sample set, ``shared/data/sdirt_real_dp``), against the signed inverse depth ``1/z_f - 1/z``; writes a markdown table,
the per-scene numbers as JSON and a figure to ``--out``, and prints the sign check on the flat target.

    python scripts/score_dp_maps.py --data datasets/sdirt_real_dp
    python scripts/score_dp_maps.py --data datasets/sdirt_real_dp --weights-map-net net_map.pth \\
        --map-net-opt options/train/<its training file>.yml --weights-release release_map.pth

Estimators (``--estimators``): ``cue_default`` (DefocusMapNet untrained, its cross-convolution cue with the options
of ``test_dp_maps_sdirt.yml`` but the cue's defaults: mean channel, no high-pass, radius steps), ``cue`` (the same
with the real-capture options of that file: green channel, high-pass, sub-pixel radius), ``sgbm``
(``scripts/sgbm_defocus.py``), ``sad`` (a plain SAD block matcher on green, 31-px window, +-8 px, parabola
sub-pixel), ``map_net`` / ``release_net`` (DefocusMapNet / DefocusMapReleaseNet with ``--weights-*``; without
weights DefocusMapNet is the cue (not run twice) and DefocusMapReleaseNet has seeded random weights: both are marked
untrained), ``joint`` (DPJointOptimModel, parametric kernels, ``fast`` preset, at ``--joint-scale``), ``joint_real``
(the same with the solver's range search and start matched as the cue's real-capture options: ``search``). The
constant-map floor is scored for every scene. Metrics: AIWE(1), AIWE(2), 1 - |Spearman rho|; the floor ratio is mean
AIWE(1) / mean floor AIWE(1) over the scenes of a row. Maps are cached in ``--cache`` (``--resume`` reuses them).

Sign check: the flat target at 0.6 m (in front of the 1 m focal plane: negative in the plugin's convention) and
1.5 m (behind: positive), f/4 and f/20; the median of each estimator's map over the image.
"""
import argparse
import json
import numpy as np
import os
import sys
import time
import torch
from os import path as osp

import defocusgan_plugin  # noqa: F401  # isort: skip  (before basicsr: torchvision alias, registrations)
from defocusgan_plugin.data.dp_pairs_dataset import DPPairsDataset
from defocusgan_plugin.metrics.defocus_map_metric import (affine_fit, calculate_aiwe1, calculate_aiwe2,
                                                          calculate_constant_floor, calculate_spearman_error)
from defocusgan_plugin.ops.filters import box_mean
from defocusgan_plugin.utils.options import read_yaml

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from sgbm_defocus import sgbm_defocus, to_gray8  # noqa: E402

SDIRT_OPT = 'options/test/test_dp_maps_sdirt.yml'
RELEASE_OPT = 'options/test/test_defocus_map.yml'
JOINT_OPT = 'options/test/test_dp_joint.yml'
# the cue's real-capture options (DefocusMapNet), reset to the arch's defaults for the cue_default row
CUE_OPTIONS = {'match_channel': 'mean', 'match_highpass': 0, 'match_subpixel': False}
SUBSETS = (('all 17', ''), ('box (5, tuning)', 'box_'), ('casual (12, untouched)', 'casual_'),
           ('casual/iphone (6)', 'casual_iphone_'), ('casual/orbbec (6)', 'casual_orbbec_'))
METRICS = ('aiwe1', 'aiwe2', 'spearman', 'floor1', 'floor2')
FIGURE_TITLES = {
    'cue': 'cue, real-capture options',
    'joint': 'joint optimiser, fast',
    'joint_real': 'joint optimiser, real-capture search',
    'sgbm': 'SGBM',
    'map_net': 'DefocusMapNet',
    'release_net': 'DefocusMapReleaseNet'
}


def sad_defocus(left, right, max_disp=8, window=31):
    """Plain SAD block matching on the green channel over integer shifts ``-max_disp..max_disp`` with a parabola
    through the best cost and its neighbours; signed disparity in the plugin's convention (left(x) ~ right(x - d))."""
    lg, rg = left[1:2][None], right[1:2][None]
    costs = torch.cat(
        [box_mean((lg - torch.roll(rg, d, -1)).abs(), window // 2) for d in range(-max_disp, max_disp + 1)], 1)[0]
    best = costs.argmin(0, keepdim=True).clamp(1, 2 * max_disp - 1)
    c0, c1, c2 = (costs.gather(0, best + k)[0] for k in (-1, 0, 1))
    shift = (0.5 * (c0 - c2) / (c0 - 2 * c1 + c2).clamp_min(1e-12)).clamp(-1, 1)
    return (best[0].float() - max_disp + shift).numpy()


def build_map_net(block, weights=None, param_key='params'):
    """A map network from an option block, with weights (strict) or seeded random ones."""
    from basicsr.archs import build_network

    from defocusgan_plugin.utils.checkpoint import load_state_dict_from
    torch.manual_seed(0)
    net = build_network(dict(block))
    if weights:
        net.load_state_dict(load_state_dict_from(weights, param_key)[0])
    return net.eval()


def build_joint(max_radius, search=None):
    """DPJointOptimModel with test_dp_joint.yml's parametric kernels and map filter, the ``fast`` preset (and the
    solver's ``search`` options)."""
    from basicsr.models import build_model
    block = dict(read_yaml(JOINT_OPT)['dp_joint'])
    block['solver'] = {'preset': 'fast', 'max_radius': float(max_radius), 'search': search}
    opt = {
        'name': 'score_dp_maps',
        'model_type': 'DPJointOptimModel',
        'is_train': False,
        'dist': False,
        'num_gpu': 0,
        'path': {},
        'dp_joint': block
    }
    return build_model(opt)


def make_estimators(args):
    """{key: (label, note, function of an item -> H x W map, dataset scale)}."""
    sdirt_opt = read_yaml(SDIRT_OPT)
    sdirt = sdirt_opt['network_map']
    cue_scale = float(sdirt_opt['datasets']['test_1'].get('scale', 1.0))  # the option file's resolution
    est = {}
    nets = {}

    def net_fn(net):
        return lambda item: net(item['lq'][None]).mean(1)[0].numpy()

    nets['cue_default'] = build_map_net(dict(sdirt, **CUE_OPTIONS))
    est['cue_default'] = (f'cue, default options, {cue_scale:g}x', 'DefocusMapNet untrained as test_dp_maps_sdirt.yml '
                          'but match_channel mean, no high-pass, no sub-pixel', net_fn(nets['cue_default']), cue_scale)
    nets['cue'] = build_map_net(sdirt)
    est['cue'] = (f'cue, real-capture options, {cue_scale:g}x', 'DefocusMapNet untrained as test_dp_maps_sdirt.yml: '
                  f'green, high-pass {sdirt["match_highpass"]}, sub-pixel', net_fn(nets['cue']), cue_scale)
    est['sgbm'] = ('SGBM', 'scripts/sgbm_defocus.py: 4x up-sampling, +-8 px, block 5',
                   lambda it: sgbm_defocus(to_gray8(it['lq_l']), to_gray8(it['lq_r']), 8, 4, 5), 1.0)
    est['sad'] = ('SAD block matcher', 'green, 31-px window, +-8 px, parabola',
                  lambda it: sad_defocus(it['lq_l'], it['lq_r']), 1.0)
    if args.weights_map_net:
        block = read_yaml(args.map_net_opt)['network_map']
        net = build_map_net(block, args.weights_map_net)
        est['map_net'] = ('DefocusMapNet, trained', args.weights_map_net, net_fn(net), args.map_net_scale)
    release = build_map_net(read_yaml(RELEASE_OPT)['network_map'], args.weights_release, 'state_dict')
    trained = 'trained' if args.weights_release else 'UNTRAINED (seeded random weights)'
    est['release_net'] = (f'DefocusMapReleaseNet, {trained}', args.weights_release
                          or 'no --weights-release', net_fn(release), 1.0)

    def joint_fn(search=None):
        model = build_joint(args.joint_max_radius * args.joint_scale, search)

        def joint(item):
            model.feed_data({k: item[k][None] for k in ('lq_l', 'lq_r', 'lq_c')})
            model.test()
            return model.output[0, 0].numpy()

        return joint

    note = (f'DPJointOptimModel, parametric kernels (test_dp_joint.yml), max_radius {args.joint_max_radius:g} px at '
            'full size')
    est['joint'] = (f'joint optimiser, fast, {args.joint_scale:g}x', note, joint_fn(), args.joint_scale)
    # the solver's range search and start matched as the cue with its real-capture options (same resolution when
    # --joint-scale is the option file's scale)
    search = dict(
        step=sdirt['match_step'],
        window=sdirt['match_window'],
        channel=sdirt['match_channel'],
        highpass=sdirt['match_highpass'],
        subpixel=sdirt['match_subpixel'])
    est['joint_real'] = (f'joint optimiser, fast, real-capture search, {args.joint_scale:g}x',
                         f'{note}; solver search {search}', joint_fn(search), args.joint_scale)
    if not args.weights_map_net:
        est['map_net'] = ('DefocusMapNet, UNTRAINED (= the cue row)', 'no --weights-map-net', None, cue_scale)
    return {k: v for k, v in est.items() if k in args.estimators or (k == 'map_net' and v[2] is None)}


def upsample(pred, shape):
    """A map of a downscaled run brought to the target's size (bilinear)."""
    if pred.shape == shape:
        return pred
    t = torch.from_numpy(np.ascontiguousarray(pred, np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=shape, mode='bilinear', align_corners=False)[0, 0].numpy()


def score(pred, target):
    return {
        'aiwe1': calculate_aiwe1(pred, target),
        'aiwe2': calculate_aiwe2(pred, target),
        'spearman': calculate_spearman_error(pred, target),
        'floor1': calculate_constant_floor(pred, target),
        'floor2': calculate_constant_floor(pred, target, order=2)
    }


def scene_name(item):
    return osp.basename(item['lq_path'])


def run(args, estimators):
    data = dict(
        dataroot=args.data,
        require_depth=True,
        focus_distance=1.0,
        depth_format='sdirt',
        depth_min=args.depth_min,
        depth_max=args.depth_max,
        border=args.border)
    datasets = {s: DPPairsDataset(dict(data, scale=s)) for s in sorted({e[3] for e in estimators.values()})}
    full = datasets[1.0] if 1.0 in datasets else DPPairsDataset(data)
    os.makedirs(args.cache, exist_ok=True)
    results = {}
    if args.resume and osp.isfile(osp.join(args.cache, 'scores.json')):
        with open(osp.join(args.cache, 'scores.json')) as f:
            results = json.load(f)
    for index in range(len(full)):
        if args.scenes and not full.samples[index][0].name.startswith(tuple(args.scenes)):
            continue
        item = full[index]
        name, target = scene_name(item), item['defocus'][0].numpy()
        for key, (label, _, fn, scale) in estimators.items():
            if fn is None or name in results.get(key, {}):
                continue
            sample = item if scale == 1.0 else datasets[scale][index]
            start = time.perf_counter()
            with torch.no_grad():
                pred = fn(sample)
            seconds = time.perf_counter() - start
            pred = upsample(pred, target.shape)
            np.save(osp.join(args.cache, f'{key}_{name}.npy'), pred.astype(np.float32))
            results.setdefault(key, {})[name] = dict(score(pred, target), seconds=seconds)
            row = results[key][name]
            print(
                f'{name:20s} {key:12s} AIWE(1) {row["aiwe1"]:.4f} (floor {row["floor1"]:.4f}, '
                f'{row["aiwe1"] / row["floor1"]:.3f}) AIWE(2) {row["aiwe2"]:.4f} 1-|rho| {row["spearman"]:.3f} '
                f'{seconds:.1f} s',
                flush=True)
            with open(osp.join(args.cache, 'scores.json'), 'w') as f:
                json.dump(results, f, indent=1)
    if 'map_net' in estimators and estimators['map_net'][2] is None and 'cue' in results:
        results['map_net'] = results['cue']  # untrained DefocusMapNet is the cue: the same maps
    return results, full


def summarise(results, estimators):
    """Rows per estimator and subset: mean metrics, floor ratio, mean seconds."""
    rows = {}
    for key in estimators:
        per = results.get(key, {})
        for subset, prefix in SUBSETS:
            names = [n for n in per if n.startswith(prefix)]
            if not names:
                continue
            mean = {m: float(np.mean([per[n][m] for n in names])) for m in METRICS + ('seconds', )}
            mean['ratio'] = mean['aiwe1'] / mean['floor1']
            mean['ratio2'] = mean['aiwe2'] / mean['floor2']
            mean['ratio_mean'] = float(np.mean([per[n]['aiwe1'] / per[n]['floor1'] for n in names]))
            mean['scenes'] = len(names)
            rows.setdefault(key, {})[subset] = mean
    return rows


def sign_check(args, estimators):
    """Median map value of each estimator on the flat target (0.6 m: in front, 1.5 m: behind the focal plane)."""
    root = osp.join(args.data, 'flat')
    if not osp.isdir(root):
        return {}
    checks = {}
    flat = {
        s: DPPairsDataset(dict(dataroot=root, border=args.border, scale=s))
        for s in sorted({e[3]
                         for e in estimators.values()})
    }
    for index in range(len(flat[min(flat)])):
        for key, (_, _, fn, scale) in estimators.items():
            if fn is None:
                continue
            item = flat[scale][index]
            b = int(np.ceil(args.border * scale))
            with torch.no_grad():
                pred = fn(item)[b:-b, b:-b]
            checks.setdefault(key, {})[scene_name(item)] = float(np.median(pred))
    for key, values in checks.items():
        print(f'sign check {key:12s} ' + ' '.join(f'{n.replace("flat_001_", "")} {v:+.3f}' for n, v in values.items()))
    return checks


def sign_verdict(values):
    """'plugin' when 0.6 m maps negative and 1.5 m positive at f/4, 'swapped' when the reverse, else 'unclear'."""
    near = next((v for n, v in values.items() if n.endswith('0600_f4')), None)
    far = next((v for n, v in values.items() if n.endswith('1500_f4')), None)
    if near is None or far is None:
        return 'n/a'
    if near < 0 < far:
        return 'plugin convention'
    if far < 0 < near:
        return 'opposite'
    return 'unclear'


def write_table(args, rows, checks, estimators, command):
    os.makedirs(args.out, exist_ok=True)
    lines = [
        '# Defocus maps on real Canon DP captures (Sdirt sample set, 17 scenes with depth)', '', f'`{command}`', '',
        f'Target: 1/z_f - 1/z (z_f = 1 m), depth in ({args.depth_min:g}, {args.depth_max:g}) m, {args.border}-px '
        'border excluded. Lower is better. "floor" = AIWE(1) of a constant map; ratio = mean AIWE(1) / mean floor '
        '(1 - ratio = "below the floor"). Tuning used the box scenes only; the 12 casual scenes are untouched. Views '
        'as stored (l.png = left): the metrics are sign-invariant; the sign itself is checked below. Maps of runs at '
        '0.5x are up-sampled (bilinear) and scored against the full-size target. `--resume` reuses the per-scene '
        'scores and maps of an identical earlier run (`--cache`).', ''
    ]
    for subset, _ in SUBSETS:
        lines += [
            f'## {subset}', '', '| estimator | AIWE(1) | AIWE(2) | 1 - \\|rho\\| | AIWE(1) / floor | '
            'AIWE(2) / floor | mean of scene AIWE(1) / floor | s / scene |',
            '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |'
        ]
        floor = None
        for key, (label, _, _, _) in estimators.items():
            row = rows.get(key, {}).get(subset)
            if row is None:
                continue
            floor = floor or row
            lines.append(f'| {label} | {row["aiwe1"]:.4f} | {row["aiwe2"]:.4f} | {row["spearman"]:.3f} | '
                         f'{row["ratio"]:.3f} | {row["ratio2"]:.3f} | {row["ratio_mean"]:.3f} | {row["seconds"]:.1f} |')
        if floor is not None:
            lines.append(f'| constant map (floor) | {floor["floor1"]:.4f} | {floor["floor2"]:.4f} | 1.000 | 1.000 | '
                         '1.000 | 1.000 | 0 |')
        lines.append('')
    lines += ['## Estimators', ''] + [f'- `{k}`: {v[0]} — {v[1]}' for k, v in estimators.items()] + ['']
    if checks:
        names = sorted(next(iter(checks.values())))
        lines += [
            '## Sign check on the flat target (median of the map)', '',
            'Plugin convention: negative in front of the focal plane (0.6 m), positive behind (1.5 m).', '',
            '| estimator | ' + ' | '.join(n.replace('flat_001_', '') for n in names) + ' | f/4 sign |',
            '| --- | ' + ' | '.join('---:' for _ in names) + ' | --- |'
        ]
        for key, values in checks.items():
            lines.append(f'| {estimators[key][0]} | ' + ' | '.join(f'{values[n]:+.3f}'
                                                                   for n in names) + f' | {sign_verdict(values)} |')
        lines.append('')
    with open(osp.join(args.out, 'table.md'), 'w') as f:
        f.write('\n'.join(lines))
    print('\n'.join(lines))


def write_figure(args, full, estimators, rows, scenes):
    """Views, GT target and the maps (each affine-fitted to the target for display) of a few scenes."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    items = {pair.name: i for i, (pair, _) in enumerate(full.samples)}
    scenes = [s for s in scenes if s in items and osp.isfile(osp.join(args.cache, f'cue_{s}.npy'))]
    keys = [
        k for k in ('cue', 'joint', 'joint_real', 'sgbm', 'map_net', 'release_net')
        if k in estimators and all(osp.isfile(osp.join(args.cache, f'{k}_{s}.npy')) for s in scenes)
    ]
    if not scenes:
        return
    fig, axes = plt.subplots(
        len(scenes), 2 + len(keys), figsize=(3 * (2 + len(keys)), 2.2 * len(scenes)), squeeze=False)
    for r, name in enumerate(scenes):
        item = full[items[name]]
        target = item['defocus'][0].numpy()
        lim = np.nanpercentile(np.abs(target), 98)
        axes[r, 0].imshow(item['lq_c'].permute(1, 2, 0).numpy())
        axes[r, 0].set_title(f'{name} (L+R)/2', fontsize=8)
        axes[r, 1].imshow(target, cmap='coolwarm', vmin=-lim, vmax=lim)
        axes[r, 1].set_title('GT 1/z_f - 1/z (1/m)', fontsize=8)
        valid = np.isfinite(target)
        for c, key in enumerate(keys, 2):
            pred = np.load(osp.join(args.cache, f'{key}_{name}.npy'))
            a, b = affine_fit(pred[valid].astype(np.float64), target[valid].astype(np.float64), np.ones(valid.sum()))
            axes[r, c].imshow(a * pred + b, cmap='coolwarm', vmin=-lim, vmax=lim)
            untrained = ', untrained' if 'UNTRAINED' in estimators[key][0] else ''
            axes[r, c].set_title(f'{FIGURE_TITLES[key]}{untrained} (affine fit)', fontsize=8)
    for ax in axes.ravel():
        ax.axis('off')
    fig.tight_layout()
    fig.savefig(osp.join(args.out, 'maps.png'), dpi=80)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data', default='datasets/sdirt_real_dp', help='the Sdirt real_sample_set folder')
    parser.add_argument('--out', default='docs/results/sdirt_maps')
    parser.add_argument('--cache', default='results/sdirt_maps_cache', help='maps and per-scene scores')
    parser.add_argument('--resume', action='store_true', help='reuse the scores and maps in --cache')
    parser.add_argument(
        '--estimators',
        nargs='+',
        default=['cue_default', 'cue', 'sgbm', 'sad', 'map_net', 'release_net', 'joint', 'joint_real'])
    parser.add_argument('--weights-map-net', help='trained DefocusMapNet (net_map_*.pth)')
    parser.add_argument('--map-net-opt', default=SDIRT_OPT, help='option file whose network_map the weights fit')
    parser.add_argument('--map-net-scale', type=float, default=1.0, help='view scale the trained DefocusMapNet runs at')
    parser.add_argument('--weights-release', help='trained DefocusMapReleaseNet (its state_dict file)')
    parser.add_argument('--joint-scale', type=float, default=0.5, help='views downscaled for the joint optimiser')
    parser.add_argument('--joint-max-radius', type=float, default=4.0, help='largest |radius| searched, full-size px')
    parser.add_argument('--depth-min', type=float, default=0.25)
    parser.add_argument('--depth-max', type=float, default=10.0)
    parser.add_argument('--border', type=int, default=8)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--figure-scenes', nargs='+', default=['box_003', 'casual_iphone_004', 'casual_orbbec_002'])
    parser.add_argument('--scenes', nargs='+', help='only scenes whose names start so (e.g. box_001)')
    parser.add_argument('--no-sign-check', action='store_true')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    command = 'python scripts/score_dp_maps.py ' + ' '.join(sys.argv[1:])
    estimators = make_estimators(args)
    checks = {} if args.no_sign_check else sign_check(args, estimators)
    results, full = run(args, estimators)
    rows = summarise(results, estimators)
    write_table(args, rows, checks, estimators, command)
    with open(osp.join(args.out, 'results.json'), 'w') as f:
        json.dump({'command': command, 'summary': rows, 'per_scene': results, 'sign_check': checks}, f, indent=1)
    write_figure(args, full, estimators, rows, args.figure_scenes)


if __name__ == '__main__':
    main()
