"""Collects the test metrics of the demo's runs into one table (and the blurred input's scores for reference).

    python scripts/demo_summary.py --data datasets/synthetic_dpdd --out demo_output test_defocusgan_synthetic ...

Each positional argument is an option file stem under ``options/``; its metrics are read from the newest BasicSR
test log ``results/<name>/test_<name>_*.log`` (the numbers BasicSR printed, nothing recomputed), with the protocol
label the plugin's models log next to each value (``# psnr: 27.83 [16-bit reads, scored 8-bit, ...]``). The input row
scores the blurred combined view against the target on the same split with the same metric functions. Writes
``<out>/metrics.md`` (the table, then what each number measured) and ``<out>/metrics.json`` (per method and metric:
``value`` and ``protocol``) and prints the table with the image folders.
"""
import argparse
import glob
import json
import os
import re
import yaml
from os import path as osp

# '# name: value [label]' (a label may hold brackets itself, e.g. '[0, 1]'), then a tab ('Best: ...') or the line end
METRIC_LINE = re.compile(r'^\s*# (\w+): (-?[\d.]+(?:e[-+]?\d+)?|nan|inf)(?: \[(.*?)\])?(?=\t|\s*$)', re.IGNORECASE)
COLUMNS = ('psnr', 'ssim', 'mae', 'reblur_psnr', 'aiwe1', 'aiwe2', 'spearman')  # then any other metric found
WHAT = {
    'defocus_map_synthetic': 'stage 1: defocus map (unsupervised) + reblur',
    'defocus_deconv_synthetic': 'stage 1 map + Wiener deconvolution',
    'defocus_deconv_occlusion_synthetic': 'stage 1 map + occlusion-aware deconvolution of both DP views (ours)',
    'defocusgan_synthetic': 'DefocusGAN (single image)',
    'mccnet_synthetic': 'MCCNet (dual pixel)',
    'dp_joint_synthetic': 'joint DP optimisation (no training)',
}


def newest_test_log(name):
    """Newest ``results/<name>/test_<name>_*.log`` (BasicSR's test log), or None."""
    logs = sorted(glob.glob(osp.join('results', name, f'test_{name}_*.log')), key=osp.getmtime)
    return logs[-1] if logs else None


def parse_validation(log_path):
    """The last ``Validation`` block of a BasicSR log as ``{name: (value, protocol label or None)}``.

    The plugin's models write ``# name: value [label]``; BasicSR's own models write no label.
    """
    with open(log_path) as f:
        return parse_validation_lines(f)


def parse_validation_lines(lines):
    """:func:`parse_validation` on the lines of a log (any iterable of str)."""
    metrics, inside = {}, False
    for line in lines:
        if 'INFO: Validation ' in line:
            metrics, inside = {}, True
        elif inside:
            match = METRIC_LINE.match(line)
            if match:
                metrics[match.group(1)] = (float(match.group(2)), match.group(3))
            elif line.strip():
                inside = False
    return metrics


def parse_metrics(log_path):
    """Metric values of the last ``Validation`` block of a BasicSR log (``# name: value`` lines)."""
    return {name: value for name, (value, _) in parse_validation(log_path).items()}


def input_scores(dataroot, split):
    """PSNR / SSIM / MAE of the blurred combined view against the target, on the files' values (float from their
    own bit depth, [0, 1]); returns ``{name: (value, protocol label)}``."""
    import defocusgan_plugin  # noqa: F401  (heavy imports only here)
    from defocusgan_plugin.data.dpdd_dataset import DPDDDataset
    from defocusgan_plugin.metrics import calculate_dpdd_psnr, calculate_dpdd_ssim, calculate_mae, metric_label

    dataset = DPDDDataset({
        'name': 'input',
        'phase': split,
        'dataroot': dataroot,
        'split': split,
        'input': 'single',
        'load_dp_views': False
    })
    functions = {'psnr': calculate_dpdd_psnr, 'ssim': calculate_dpdd_ssim, 'mae': calculate_mae}
    sums, reads = dict.fromkeys(functions, 0.0), set()
    for item in dataset:
        img, gt = item['lq'].unsqueeze(0), item['gt'].unsqueeze(0)
        reads.add(int(item.get('bit_depth', 0)))
        for name, function in functions.items():
            sums[name] += function(img, gt)
    return {
        name: (sums[name] / len(dataset),
               metric_label({'type': functions[name].__name__}, 'float', reads, 'the combined view itself'))
        for name in functions
    }


def fmt(value):
    return '' if value is None else f'{value:.4f}'


def protocol_lines(rows):
    """One markdown line per method: its metrics grouped by protocol label."""
    lines = []
    for method, metrics in rows.items():
        groups = {}
        for name, (_, label) in metrics.items():
            groups.setdefault(label or 'not logged (a BasicSR model: uint8 images from tensor2img)', []).append(name)
        lines.append(f'- {method}: ' + '; '.join(f'{", ".join(names)} [{label}]' for label, names in groups.items()))
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('options', nargs='+', help='test option file stems under options/test/')
    parser.add_argument('--data', default='datasets/synthetic_dpdd', help='dataset root, for the input row')
    parser.add_argument('--split', default='test')
    parser.add_argument('--out', default='demo_output', help='where metrics.md / metrics.json go')
    args = parser.parse_args()

    rows, missing = {'input (blurred combined view)': input_scores(args.data, args.split)}, []
    images = {}
    for stem in args.options:
        with open(osp.join('options', 'test', f'{stem}.yml')) as f:
            name = yaml.safe_load(f)['name']
        log = newest_test_log(name)
        if log is None:
            missing.append(name)
            continue
        rows[WHAT.get(name, name)] = parse_validation(log)
        images[WHAT.get(name, name)] = osp.join('results', name, 'visualization')

    found = [m for metrics in rows.values() for m in metrics]
    columns = list(COLUMNS) + [m for m in dict.fromkeys(found) if m not in COLUMNS]
    header = '| method | ' + ' | '.join(columns) + ' |'
    lines = [header, '|' + ' --- |' * (len(columns) + 1)]
    for method, metrics in rows.items():
        lines.append(f'| {method} | ' + ' | '.join(fmt(metrics.get(c, (None, ))[0]) for c in columns) + ' |')
    table = '\n'.join(lines)
    protocol = '\n'.join(protocol_lines(rows))
    os.makedirs(args.out, exist_ok=True)
    with open(osp.join(args.out, 'metrics.md'), 'w') as f:
        f.write(f'Test split `{args.split}` of `{args.data}`. PSNR/SSIM/MAE on [0, 1] (higher/higher/lower); '
                'reblur_psnr: stage-1 reblurred vs captured; aiwe1/aiwe2 (px) and spearman (1 - |rho|) of the '
                'defocus map against ground truth (lower is better).\n\n' + table + '\n\nProtocol (what each number '
                'measured: read depth, depth scored at, model input, region, border crop):\n\n' + protocol + '\n')
    with open(osp.join(args.out, 'metrics.json'), 'w') as f:
        json.dump(
            {
                'split': args.split,
                'data': args.data,
                'images': images,
                'rows': {
                    method: {
                        name: {
                            'value': value,
                            'protocol': label
                        }
                        for name, (value, label) in metrics.items()
                    }
                    for method, metrics in rows.items()
                }
            },
            f,
            indent=2)
    print(table)
    print('\nProtocol:\n' + protocol)
    print('\nImages:')
    for method, folder in images.items():
        print(f'  {method:45s} {folder}')
    print(f'Metrics written to {osp.join(args.out, "metrics.md")} and metrics.json.')
    if missing:
        raise SystemExit(f'No test log found for: {", ".join(missing)} (expected results/<name>/test_<name>_*.log).')


if __name__ == '__main__':
    main()
