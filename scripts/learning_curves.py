"""Learning curves of the plugin's trained methods on the photo-disjoint synthetic DP set, for a wall-clock budget.

    bash scripts/fetch_photos.sh
    python scripts/make_synthetic_dpdd.py --photos datasets/photos --psf-mix all --crop 256 256 \\
        --crops-per-photo 3 1 2 --focus-per-crop 1 1 1 --out datasets/photos_dpdd
    python scripts/learning_curves.py --minutes 60 --out docs/results/learning_curves

One recipe after another (``--recipes``; each an ``options/train/*_photos.yml``, the ablation a named override of
one), each as a user would run it: ``python -m defocusgan_plugin.train`` in a subprocess with ``--threads`` threads.

* Budget: ``--minutes`` per recipe. A short probe run times the recipe's iterations at its two speeds (a GAN's
  before and after its critic starts, a stage-1 recipe's network and kernel-only steps); the iterations that fit
  the budget become ``total_iter`` and every iteration count of the file (learning-rate milestones and periods,
  critic / adversarial / prior starts, guidance annealing, stage-1 phases) is rescaled by the same factor, so the
  whole schedule runs. ``--iters N`` fixes the iterations instead (for a shared machine, where time is no measure).
* Curves: validation on the photo-disjoint val split ``--points`` times; read from the BasicSR training log with
  the log's time stamps (minutes include validation).
* Test: the last checkpoint through ``python -m defocusgan_plugin.test`` with the recipe's ``options/test`` file.
  Reference rows on the same splits: the blurred input, the untrained DP cue of the map network (the stage-1 target
  is relative to it; each stage-1 recipe is tested, and compared, with the cue options it trained with) and the
  model-based path that needs no training of its own beyond stage 1 (map + deconvolution), and the deconvolution with
  the GT maps as its upper bound.
* Health: losses finite, the NaN guard's skipped updates counted, the end of each curve compared with its best.

Writes into ``--out``: ``results.json`` (everything), ``table.md`` and ``curves.png`` (validation PSNR / AIWE(1)
against iterations and minutes, the references as horizontal lines). Work files (derived option files, logs) go to
``--work`` (default ``experiments/learning_curves``); checkpoints to ``experiments/<recipe name>/models`` as BasicSR
writes them, so the ``options/test/*_photos.yml`` files and ``defocusgan-deblur`` find them.

Resuming: results.json is written after every recipe, with a copy of each recipe's training log in ``<out>/logs``
and the SHA-256 of the data set and of each recipe. ``--reuse`` with the same command trains only the recipes not in
it yet, or whose option file (or override) or budget in minutes changed since, in this checkout or a fresh one (the
photo set rebuilt by the commands above; other data is refused).
"""
import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import yaml
from os import path as osp

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'scripts'))
from demo_summary import input_scores, parse_validation, parse_validation_lines  # noqa: E402

from defocusgan_plugin.models.defocus_map_model import stage1_phase  # noqa: E402
from defocusgan_plugin.utils.options import get_option, set_option  # noqa: E402

# recipe key -> option files, the curve's metric, an override and its label
RECIPES = {
    'defocus_map': {
        'train': 'train_defocus_map_photos.yml',
        'tests': ['test_defocus_map_photos.yml', 'test_defocus_deconv_photos.yml'],
        'metric': 'aiwe1',
        'label': 'stage 1: DefocusMapNet + learnable kernel (DP, unsupervised)',
    },
    'defocus_map_raw_cue': {
        'train': 'train_defocus_map_photos.yml',
        'tests': ['test_defocus_map_photos.yml', 'test_defocus_deconv_photos.yml'],
        'metric': 'aiwe1',
        'label': 'stage 1, cue without its high-pass (the recipe before match_highpass: 7)',
        'suffix': '_raw_cue',
        'override': {
            'network_map:match_highpass': 0
        },
    },
    'defocus_map_view_highpass': {
        'train': 'train_defocus_map_photos.yml',
        'tests': ['test_defocus_map_photos.yml', 'test_defocus_deconv_photos.yml'],
        'metric': 'aiwe1',
        'label': 'stage 1, reblur view terms high-passed (ReblurGeometricLoss view_highpass: 7)',
        'suffix': '_view_highpass',
        'override': {
            'train:reblur_opt:view_highpass': 7
        },
    },
    'defocus_map_supervised': {
        'train': 'train_defocus_map_supervised_photos.yml',
        'tests': ['test_defocus_map_photos.yml'],
        'metric': 'aiwe1',
        'label': 'stage 1 + our supervised map loss (train.map_opt: L1 to the GT map)',
    },
    'defocus_map_supervised_affine': {
        'train': 'train_defocus_map_supervised_photos.yml',
        'tests': ['test_defocus_map_photos.yml'],
        'metric': 'aiwe1',
        'label': 'stage 1 + our supervised map loss, affine-invariant (AffineInvariantMapLoss, the form of AIWE)',
        'suffix': '_affine',
        'override': {
            'train:map_opt': {
                'type': 'AffineInvariantMapLoss',
                'loss_weight': 500.0
            }
        },
    },
    'defocus_map_search': {
        'train': 'train_defocus_map_search_photos.yml',
        'tests': ['test_defocus_map_photos.yml', 'test_defocus_deconv_photos.yml'],
        'metric': 'aiwe1',
        'label': 'stage 1 + our unsupervised search loss (ReblurSearchMapLoss: the reblur objective searched)',
    },
    'defocus_map_search_l1': {
        'train': 'train_defocus_map_search_photos.yml',
        'tests': ['test_defocus_map_photos.yml', 'test_defocus_deconv_photos.yml'],
        'metric': 'aiwe1',
        'label': 'stage 1 + our search loss, confidence-weighted L1 (criterion: l1, in the kernels\' pixels)',
        'suffix': '_l1',
        'override': {
            'train:search_opt:criterion': 'l1',
            'train:search_opt:loss_weight': 300.0
        },
    },
    'mccnet': {
        'train': 'train_mccnet_photos.yml',
        'tests': ['test_mccnet_photos.yml'],
        'metric': 'psnr',
        'label': 'MCCNet, width 16 (DP views in)',
    },
    'defocusgan_slim': {
        'train': 'train_defocusgan_slim_photos.yml',
        'tests': ['test_defocusgan_slim_photos.yml'],
        'metric': 'psnr',
        'label': 'DefocusGAN, slim generator (single image in), adversarial weight 0.0002',
    },
    'defocusgan_slim_adv_0005': {
        'train': 'train_defocusgan_slim_photos.yml',
        'tests': ['test_defocusgan_slim_photos.yml'],
        'metric': 'psnr',
        'label': 'DefocusGAN slim, adversarial weight 0.0005 (the recipe until the one-run)',
        'suffix': '_adv_0005',
        'override': {
            'train:gan_opt:loss_weight': 0.0005
        },
    },
    'defocusgan_slim_noguide': {
        'train': 'train_defocusgan_slim_photos.yml',
        'tests': ['test_defocusgan_slim_photos.yml'],
        'metric': 'psnr',
        'label': 'DefocusGAN slim, guidance ablation (masks off from the start)',
        'suffix': '_noguide',
        'override': {
            'train:guidance:anneal_iters': 0
        },
    },
    'defocusgan_slim_l1': {
        'train': 'train_defocusgan_slim_photos.yml',
        'tests': ['test_defocusgan_slim_photos.yml'],
        'metric': 'psnr',
        'label': 'DefocusGAN slim, L1 only (critic and adversarial term never start)',
        'suffix': '_l1',
        'override': {  # the file's total_iter: rescaled with it, they stay at the run's last iteration
            'train:critic_start_iter': 3600,
            'train:gan_start_iter': 3600
        },
    },
    'defocusgan_slim_l1_noguide': {
        'train': 'train_defocusgan_slim_photos.yml',
        'tests': ['test_defocusgan_slim_photos.yml'],
        'metric': 'psnr',
        'label': 'DefocusGAN slim, L1 only, guidance ablation (masks off from the start)',
        'suffix': '_l1_noguide',
        'override': {
            'train:guidance:anneal_iters': 0,
            'train:critic_start_iter': 3600,
            'train:gan_start_iter': 3600
        },
    },
    'defocusgan_slim_paper_weight': {
        'train': 'train_defocusgan_slim_photos.yml',
        'tests': ['test_defocusgan_slim_photos.yml'],
        'metric': 'psnr',
        'label': "DefocusGAN slim, the paper's adversarial weight 0.002",
        'suffix': '_paper_weight',
        'override': {
            'train:gan_opt:loss_weight': 0.002
        },
    },
    'defocusgan_slim_short_critic': {
        'train': 'train_defocusgan_slim_photos.yml',
        'tests': ['test_defocusgan_slim_photos.yml'],
        'metric': 'psnr',
        'label': 'DefocusGAN slim, adversarial weight 0.002, critic alone for 1/9 of the run (release share)',
        'suffix': '_short_critic',
        'override': {  # the release's critic trains alone for 10 of its 91 epochs: here 400 of 3600 iterations
            'train:critic_start_iter': 2000,
            'train:gan_opt:loss_weight': 0.002
        },
    },
    'defocusgan_release': {
        'train': 'train_defocusgan_release_photos.yml',
        'tests': ['test_defocusgan_release_photos.yml'],
        'metric': 'psnr',
        'label': 'DefocusGAN, release generator (single image in)',
    },
}
# test flags that score the options' untrained networks (DefocusMapNet's zero-initialised head: exactly its cue)
UNTRAINED = ['--force_yml', 'path:pretrain_network_map=~', 'path:pretrain_network_kernel=~']
# iteration-valued option keys that the budget rescales (a list value: every element)
SCHEDULE_KEYS = ('train:total_iter', 'train:scheduler:milestones', 'train:scheduler:periods', 'train:gan_start_iter',
                 'train:critic_start_iter', 'train:prior_start_iter', 'train:guidance:anneal_iters',
                 'train:guidance:anneal_start_iter', 'train:phase_schedule:network_iters',
                 'train:phase_schedule:alternate_iters')
ITER_LINE = re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO: \[.*?iter:\s*([\d,]+),.*?\](.*)$')
STAMP = re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ')
LOSS = re.compile(r'(l_\w+): (\S+)')


def scale_schedule(opt, iters):
    """Rescales every iteration count of ``opt`` (in place) to a run of ``iters`` iterations.

    Returns:
        dict[str, tuple]: option key -> (value in the file, rescaled value), for the keys the file has.
    """
    total = int(opt['train']['total_iter'])
    factor = iters / total
    mapping = {}
    for key in SCHEDULE_KEYS:
        value = get_option(opt, key)
        if value is None:
            continue
        if isinstance(value, list):
            new = [max(1, int(round(v * factor))) for v in value]
        elif key == 'train:total_iter':
            new = iters
        else:  # a start of 0 stays 0; anneal_iters 0 (guidance off) stays off
            new = 0 if int(value) == 0 else max(1, int(round(value * factor)))
        mapping[key] = (value, new)
        set_option(opt, key, new)
    periods = get_option(opt, 'train:scheduler:periods')
    if periods:  # CosineAnnealingRestartLR: the periods must cover the run exactly
        periods[-1] += iters - sum(periods)
    return mapping


def parse_time(stamp):
    return datetime.datetime.strptime(stamp, '%Y-%m-%d %H:%M:%S,%f').timestamp()


def read_train_log(path, total_iter=None):
    """Iteration lines, validation blocks and NaN-guard skips of a BasicSR training log.

    Returns:
        dict: ``iters`` [(iter, time, {loss: value})], ``val`` [(iter, time, {metric: value})], ``skips`` (int),
        ``start`` (time of the first line), ``val_seconds`` (all validations: each from the line before it to its
        ``Validation`` line, which BasicSR writes when it ends).
    """
    iters, vals, skips, start, last_iter, val_seconds, previous = [], [], 0, None, 0, 0.0, None
    with open(path) as f:
        lines = f.readlines()
    for i, line in enumerate(lines):
        stamp = STAMP.match(line)
        if stamp:
            now = parse_time(stamp.group(1))
            start = now if start is None else start
        match = ITER_LINE.match(line)
        if match:
            last_iter = int(match.group(2).replace(',', ''))
            losses = {k: float(v) for k, v in LOSS.findall(match.group(3))}
            iters.append((last_iter, parse_time(match.group(1)), losses))
        elif 'End of training' in line and total_iter:  # BasicSR's last validation: the final model
            last_iter = total_iter
        elif 'non-finite' in line and 'update skipped' in line:
            skips += 1
        elif stamp and 'INFO: Validation ' in line:
            val_seconds += now - previous
            end = next((j for j in range(i + 1, len(lines)) if STAMP.match(lines[j])), len(lines))
            metrics = {k: v for k, (v, _) in parse_validation_lines(lines[i:end]).items()}  # this block only
            if metrics and not (vals and vals[-1][0] == last_iter):  # BasicSR validates again after the last iter
                vals.append((last_iter, now, metrics))
        if stamp:
            previous = now
    return {'iters': iters, 'val': vals, 'skips': skips, 'start': start, 'val_seconds': val_seconds}


def newest(pattern_dir, prefix):
    if not osp.isdir(pattern_dir):
        return None
    files = [osp.join(pattern_dir, f) for f in os.listdir(pattern_dir) if f.startswith(prefix) and f.endswith('.log')]
    return max(files, key=osp.getmtime) if files else None


def run_entry(kind, opt_path, log_path, threads, extra=(), timeout=None):
    """``python -m defocusgan_plugin.<kind> -opt opt_path [extra]`` from the repository root; raises on failure."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONPATH=ROOT)
    cmd = [sys.executable, '-m', f'defocusgan_plugin.{kind}', '-opt', opt_path, *extra]
    with open(log_path, 'w') as log:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
    if proc.returncode != 0:
        with open(log_path) as f:
            tail = ''.join(f.readlines()[-25:])
        raise RuntimeError(f'{" ".join(cmd)} exited with {proc.returncode}; log {log_path}:\n{tail}')


def recipe_options(key, args):
    """The recipe's option dict with its override, dataroot and name applied."""
    recipe = RECIPES[key]
    with open(osp.join(ROOT, 'options', 'train', recipe['train'])) as f:
        opt = yaml.safe_load(f)
    for name, value in recipe.get('override', {}).items():
        set_option(opt, name, value)
    opt['name'] += recipe.get('suffix', '')
    for dataset in opt['datasets'].values():
        dataset['dataroot'] = osp.abspath(args.data)
    opt['num_gpu'] = 0
    return opt


def recipe_fingerprint(key):
    """SHA-256 of the recipe's option file and override: a result trained with another recipe is not reused."""
    recipe = RECIPES[key]
    with open(osp.join(ROOT, 'options', 'train', recipe['train']), 'rb') as f:
        digest = hashlib.sha256(f.read())
    digest.update(json.dumps([recipe.get('override', {}), recipe.get('suffix', '')], sort_keys=True).encode())
    return digest.hexdigest()


def stale_reason(key, result, budget_minutes):
    """Why a result in results.json cannot stand for this command (``None`` when it can be reused).

    Args:
        key (str): Recipe key.
        result (dict): Its saved result.
        budget_minutes (float | None): The budget this command gives it (``None``: fixed ``--iters``).
    """
    recipe_sha = recipe_fingerprint(key)
    if result.get('recipe_sha256', recipe_sha) != recipe_sha:
        return f'{result["option_file"]} changed since it was trained'
    saved = result.get('budget_minutes')
    if budget_minutes is not None and saved is not None and float(saved) != float(budget_minutes):
        return f'trained for {saved:g} min, asked for {budget_minutes:g}'
    return None


def write_options(opt, path):
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


def second_part(opt):
    """Share of a recipe's iterations that run at the second speed the probe measures, and the probe's options.

    Two kinds of recipe step at two speeds: a GAN's steps once its critic (or adversarial term) starts are slower,
    a stage-1 recipe's kernel-only steps (``train.phase_schedule``) are cheaper (no backward through the map network).

    Returns:
        tuple[float, tuple]: the share of ``train.total_iter``, and the option keys that, set to ``n``, make the
        probe's second half (iterations ``n + 1`` to ``2 n``) run at that speed; ``(0.0, ())`` for one speed.
    """
    total = int(opt['train']['total_iter'])
    if 'network_d' in opt:
        names = ('train:critic_start_iter', 'train:gan_start_iter')
        keys = tuple(k for k in names if get_option(opt, k) is not None)  # a start of 0 counts
        start = min([int(get_option(opt, k)) for k in keys] + [total])
        return 1 - start / total, keys
    network = int(get_option(opt, 'train:phase_schedule:network_iters') or 0)
    alternate = int(get_option(opt, 'train:phase_schedule:alternate_iters') or 0)
    if alternate > 0:
        kernel = sum(stage1_phase(i, network, alternate) == 'kernel' for i in range(1, total + 1))
        return kernel / total, ('train:phase_schedule:network_iters', 'train:phase_schedule:alternate_iters')
    return 0.0, ()


def probe_speed(key, args):
    """Seconds per iteration of the recipe at its two speeds, from a short run's log stamps, and the second's share.

    See `second_part`.
    """
    opt = recipe_options(key, args)
    opt['name'] = f'lc_probe_{key}'
    n = args.probe_iters
    share, keys = second_part(opt)
    total = 2 * n if keys else n
    opt['train']['total_iter'] = total
    for k in keys:
        set_option(opt, k, n)
    if get_option(opt, 'train:scheduler:periods'):
        set_option(opt, 'train:scheduler:periods', [total])
    opt['val'] = None
    opt['logger'].update(print_freq=1, save_checkpoint_freq=10**9)
    opt_path = write_options(opt, osp.join(args.work, f'{opt["name"]}.yml'))
    run_entry('train', opt_path, osp.join(args.work, f'{opt["name"]}.out'), args.threads)
    log = read_train_log(newest(osp.join(ROOT, 'experiments', opt['name']), f'train_{opt["name"]}'))
    stamps = [t for _, t, _ in log['iters']]
    steps = [b - a for a, b in zip(stamps, stamps[1:])]

    def median(values):
        values = sorted(values)
        return values[len(values) // 2]

    # each part's later half: its first steps run slower (the stage-1 recipe's first 8 by 20 %)
    plain = median(steps[n // 2:n - 1])
    second = median(steps[n + n // 2:]) if keys else plain
    return plain, second, share


def plan_iterations(key, args):
    """Iterations that fit ``args.minutes`` (or ``args.iters``), with the probe's figures."""
    if args.iters:
        return args.iters, {}
    plain, second, share = probe_speed(key, args)
    per_iter = (1 - share) * plain + share * second
    iters = int(args.minutes * 60 * (1 - args.val_share) / per_iter)
    return max(iters, args.points), {
        's_per_iter': plain,
        's_per_iter_second': second,
        'second_share': share,
        'planned_s_per_iter': per_iter
    }


def train_recipe(key, args):
    """Trains one recipe for its budget; returns its curve, health and test figures."""
    iters, probe = plan_iterations(key, args)
    opt = recipe_options(key, args)
    mapping = scale_schedule(opt, iters)
    val_freq = 5 * max(1, iters // (5 * args.points))
    opt['val']['val_freq'] = val_freq
    # an iteration line just before every validation dates it; the checkpoint is written at the end
    opt['logger'].update(print_freq=val_freq // 5, save_checkpoint_freq=iters)
    name = opt['name']
    opt_path = write_options(opt, osp.join(args.work, f'{name}.yml'))
    print(f'[curves] {key}: {iters} iterations ({probe or "fixed"}), validation every {val_freq}', flush=True)
    begin = time.time()
    run_entry('train', opt_path, osp.join(args.work, f'{name}.out'), args.threads)
    seconds = time.time() - begin
    result = {
        'key': key,
        'name': name,
        'label': RECIPES[key]['label'],
        'option_file': f'options/train/{RECIPES[key]["train"]}',
        'override': RECIPES[key].get('override', {}),
        'recipe_sha256': recipe_fingerprint(key),
        'metric': RECIPES[key]['metric'],
        'iters': iters,
        'train_minutes': seconds / 60,
        'probe': probe,
        'schedule': {
            k: list(v)
            for k, v in mapping.items()
        },
        'test': {},
    }
    # the log goes with the results: experiments/ is not committed, and --reuse reads the curve from it again
    log = newest(osp.join(ROOT, 'experiments', name), f'train_{name}')
    if log:
        os.makedirs(osp.join(args.out, 'logs'), exist_ok=True)
        shutil.copyfile(log, osp.join(args.out, 'logs', f'train_{name}.log'))
        result['log'] = osp.relpath(osp.join(args.out, 'logs', f'train_{name}.log'), ROOT)
    read_curve(result)
    network_map = opt.get('network_map')
    if network_map:  # stage 1: scored with the cue options it trained with, and against its own untrained cue
        result['network_map'] = network_map
        result['cue'] = run_test('test_defocus_map_photos.yml', name, args, UNTRAINED, '_untrained', network_map)
    for test_file in RECIPES[key]['tests']:
        result['test'][test_file] = run_test(test_file, name, args, network_map=network_map)
    return result


def read_curve(result):
    """Fills ``curve`` and ``health`` of a recipe's result from its training log.

    The copy kept with the results (``log``) comes first, then the newest log under ``experiments/``; with neither (a
    result of another checkout that kept no copy), the stored curve stands.
    """
    name, metric = result['name'], result['metric']
    copy = osp.join(ROOT, result['log']) if result.get('log') else None
    path = copy if copy and osp.isfile(copy) else newest(osp.join(ROOT, 'experiments', name), f'train_{name}')
    if path is None:
        if 'curve' not in result:
            sys.exit(f'{name}: no training log (experiments/{name}/train_{name}*.log) and no stored curve')
        print(f'[curves] {name}: no training log here, the stored curve stands', flush=True)
        return
    log = read_train_log(path, result['iters'])
    curve = [{'iter': it, 'minutes': (t - log['start']) / 60, **m} for it, t, m in log['val']]
    losses = [v for _, _, ls in log['iters'] for v in ls.values()]
    values = [c[metric] for c in curve if metric in c]
    best = min(values) if metric != 'psnr' else max(values)
    result['curve'] = curve
    result['health'] = {
        'losses_finite': all(math.isfinite(v) for v in losses),
        'logged_losses': len(losses),
        'nan_guard_skips': log['skips'],
        'skip_share': log['skips'] / result['iters'],
        'end_minus_best': values[-1] - best,
        'val_minutes': log['val_seconds'] / 60,
    }


def run_test(test_file, train_name, args, extra=(), tag='', network_map=None, deconv=None):
    """Scores a recipe's checkpoint (or the options' own weights with ``extra``) with its options/test file.

    ``network_map`` replaces the test file's map network options: the cue options are buffers, not weights, so
    strict loading would not catch a test run whose cue differs from the one the checkpoint was trained with.
    ``deconv`` updates the file's ``deconv`` block (written into the options, so the table names what ran).
    """
    with open(osp.join(ROOT, 'options', 'test', test_file)) as f:
        opt = yaml.safe_load(f)
    if network_map and 'network_map' in opt:
        opt['network_map'] = network_map
    if deconv:
        opt['deconv'].update(deconv)
    base = opt['name']
    stage1 = 'network_map' in opt
    # a stage-1 test file serves several recipes (and the references): its run is named after both when they differ
    run = (base if train_name == base else f'{base}_{train_name}') if stage1 else train_name
    opt['name'] = f'lc_{run}{tag}'
    if stage1:
        models = osp.join(ROOT, 'experiments', train_name, 'models')
        opt['path']['pretrain_network_map'] = osp.join(models, 'net_map_latest.pth')
        opt['path']['pretrain_network_kernel'] = osp.join(models, 'net_kernel_latest.pth')
    else:
        opt['path']['pretrain_network_g'] = osp.join(ROOT, 'experiments', train_name, 'models', 'net_g_latest.pth')
    for dataset in opt['datasets'].values():
        dataset['dataroot'] = osp.abspath(args.data)
        dataset['split'] = args.split
    opt['val']['save_img'] = False
    opt_path = write_options(opt, osp.join(args.work, f'{opt["name"]}.yml'))
    run_entry('test', opt_path, osp.join(args.work, f'{opt["name"]}.out'), args.threads, extra)
    log = newest(osp.join(ROOT, 'results', opt['name']), f'test_{opt["name"]}')
    scores = {name: value for name, (value, _) in parse_validation(log).items()}
    if 'deconv' in opt:
        scores['deconv'] = deconv_name(opt['deconv'])
    return scores


def deconv_name(deconv):
    """The deconvolution of a test file's ``deconv`` block, for the table (results without one ran Wiener)."""
    if deconv.get('method', 'wiener') != 'occlusion':
        return {'wiener': 'Wiener', 'rl': 'Richardson-Lucy'}[deconv.get('method', 'wiener')]
    exponent = float(deconv.get('exponent', 2))
    prior = 'quadratic prior' if exponent == 2 else f'sparse prior, exponent {exponent:g}'
    # the model filters the network's maps only
    guided = ', guided map filter' if deconv.get('map_filter') and deconv.get('map_source') != 'gt' else ''
    views = ', both DP views' if deconv.get('views') == 'dp' else ''
    return f'occlusion-aware ({prior}{guided}{views})'


def references(args, results):
    """Rows that need no training of their own, on the test split and the val split (the plot's lines)."""
    refs = {}
    for split in (args.split, 'val'):
        scores = input_scores(osp.abspath(args.data), split)
        refs[f'input_{split}'] = {name: value for name, (value, _) in scores.items()}
        split_args = argparse.Namespace(**{**vars(args), 'split': split})
        refs[f'cue_{split}'] = run_test(
            'test_defocus_map_photos.yml', 'defocus_map_photos', split_args, extra=UNTRAINED, tag=f'_untrained_{split}')
        refs[f'deconv_gt_{split}'] = run_test(
            'test_defocus_deconv_photos.yml',
            'defocus_map_photos',
            split_args,
            extra=['--force_yml', 'path:pretrain_network_map=~'] +
            ([] if 'defocus_map' in results else ['path:pretrain_network_kernel=~']),
            tag=f'_gtmap_{split}',
            deconv={'map_source': 'gt'})
        if 'defocus_map' in results:
            refs[f'deconv_{split}'] = run_test(
                'test_defocus_deconv_photos.yml', 'defocus_map_photos', split_args, tag=f'_learned_{split}')
    return refs


def write_table(args, results, refs, commands):
    split = args.split
    inp = refs[f'input_{split}']
    lines = [
        f'Photo-disjoint `{split}` split of `{args.data}` ({describe_split(args.data, split)}); '
        f'{args.threads} threads on {machine()}.', '', 'Commands (in order):', '', *[f'    {c}' for c in commands], '',
        *([
            f'No training: the checkpoints of `{osp.relpath(args.evaluate, ROOT)}` (trained on their own data, '
            'budgets and iterations as listed), scored on this set.', ''
        ] if args.evaluate else []),
        '| method | iterations | train min (budget; of it validation) | PSNR (dB) | gain over input (dB) | SSIM | '
        'AIWE(1) px | NaN-guard skips | end − best (val) |', '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
        f'| blurred input | | | {inp["psnr"]:.2f} | 0.00 | {inp["ssim"]:.4f} | | | |'
    ]

    def val_part(res):  # results read from a log (older ones without a kept log lack the figure)
        val = res['health'].get('val_minutes')
        return '' if val is None else f'; val {val:.1f}'

    def row(label, test, res=None):
        psnr = test.get('psnr')
        cells = [
            label,
            str(res['iters']) if res else '',
            f'{res["train_minutes"]:.1f} ({res.get("budget_minutes") or "-"}{val_part(res)})' if res else '',
            f'{psnr:.2f}' if psnr is not None else '', f'{psnr - inp["psnr"]:+.2f}' if psnr is not None else '',
            f'{test["ssim"]:.4f}' if 'ssim' in test else '', f'{test["aiwe1"]:.3f}' if 'aiwe1' in test else '',
            f'{res["health"]["nan_guard_skips"]}' if res else '',
            f'{res["health"]["end_minus_best"]:+.3f} {res["metric"]}' if res else ''
        ]
        lines.append('| ' + ' | '.join(cells) + ' |')

    cue = refs[f'cue_{split}']
    row('untrained DP cue of DefocusMapNet (no training)', {'aiwe1': cue['aiwe1']})
    for key, res in results.items():
        for test_file, test in res['test'].items():
            label = res['label'] if 'deconv' not in test_file else \
                f'stage-1 map + {test.get("deconv", "Wiener")} deconvolution'
            row(label, test, res)
    if f'deconv_gt_{split}' in refs:
        gt_map = refs[f'deconv_gt_{split}']
        row(f'GT map + {gt_map.get("deconv", "Wiener")} deconvolution (upper bound of the map path)', gt_map)
    for key, res in results.items():
        if 'test_defocus_map_photos.yml' in res['test']:
            trained = res['test']['test_defocus_map_photos.yml']['aiwe1']
            own = res.get('cue', cue)['aiwe1']  # runs before the per-recipe cue: the reference row's
            lines += [
                '', f'{res["label"]}: AIWE(1) {trained:.3f} px against {own:.3f} px for its untrained cue '
                f'({100 * (1 - trained / own):+.0f} % lower is better: positive = below the cue).'
            ]
    with open(osp.join(args.out, 'table.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print('\n'.join(lines))


def describe_split(data, split):
    path = osp.join(data, 'manifest.json')
    if not osp.isfile(path):
        return 'no manifest'
    with open(path) as f:
        manifest = json.load(f)
    photos = [p for p in manifest.get('photos', []) if p.get('split') == split]
    count = len(os.listdir(osp.join(data, f'{split}_c', 'target')))
    return f'{len(photos) or "?"} photos, {count} images'


def data_fingerprint(data):
    """SHA-256 of every file of the data set (relative paths and contents): a resumed run must train on the same."""
    digest = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(data)):
        dirs.sort()
        for name in sorted(files):
            file_path = osp.join(folder, name)
            digest.update(osp.relpath(file_path, data).encode() + b'\0')
            with open(file_path, 'rb') as f:
                digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()


def machine():
    """The CPU model and core count (the figures' machine)."""
    model = platform.processor() or platform.machine()
    if osp.isfile('/proc/cpuinfo'):
        with open('/proc/cpuinfo') as f:
            model = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), model)
    return f'{model}, {os.cpu_count()} cores'


def write_plot(args, results, refs):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for col, axis_key in enumerate(('iter', 'minutes')):
        ax_psnr, ax_map = axes[0, col], axes[1, col]
        for res in results.values():
            ax = ax_map if res['metric'] == 'aiwe1' else ax_psnr
            xs = [c[axis_key] for c in res['curve']]
            ys = [c[res['metric']] for c in res['curve']]
            ax.plot(xs, ys, marker='o', ms=3, label=res['label'])
        ax_psnr.axhline(refs['input_val']['psnr'], color='k', ls='--', lw=1, label='blurred input')
        if 'deconv_val' in refs:
            ax_psnr.axhline(refs['deconv_val']['psnr'], color='tab:gray', ls='-.', lw=1, label='stage-1 map + deconv.')
        if 'deconv_gt_val' in refs:
            ax_psnr.axhline(refs['deconv_gt_val']['psnr'], color='tab:brown', ls=':', lw=1, label='GT map + deconv.')
        ax_map.axhline(refs['cue_val']['aiwe1'], color='k', ls='--', lw=1, label='untrained DP cue')
        lines = [refs[k]['psnr'] for k in ('input_val', 'deconv_val', 'deconv_gt_val') if k in refs]
        tops = [c['psnr'] for res in results.values() for c in res['curve'] if 'psnr' in c]
        # a generator far below its input starts off-axis; a curve that falls late stays on it
        late = [c['psnr'] for res in results.values() for c in res['curve'][len(res['curve']) // 3:] if 'psnr' in c]
        ax_psnr.set_ylim(min([min(lines) - 1.0] + [v - 0.3 for v in late]), max(tops + lines) + 0.5)
        ax_psnr.set_ylabel('val PSNR (dB)')
        ax_map.set_ylabel('val AIWE(1) (px, lower is better)')
        for ax in (ax_psnr, ax_map):
            ax.set_xlabel('iterations' if axis_key == 'iter' else 'minutes (wall clock, with validation)')
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7)
    fig.suptitle(
        f'Learning curves, photo-disjoint val split of {args.data}; {args.threads} threads on {machine()}', fontsize=9)
    fig.tight_layout()
    fig.savefig(osp.join(args.out, 'curves.png'), dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data', default='datasets/photos_dpdd')
    parser.add_argument('--out', default='docs/results/learning_curves')
    parser.add_argument('--work', default='experiments/learning_curves')
    parser.add_argument('--recipes', nargs='+', choices=list(RECIPES), help='default: all (with --merge: the merged)')
    parser.add_argument('--minutes', type=float, default=60.0, help='training budget per recipe (wall clock)')
    parser.add_argument(
        '--minutes-for', nargs='+', default=[], metavar='RECIPE=MIN', help='another budget for some recipes')
    parser.add_argument('--iters', type=int, default=0, help='fixed iterations per recipe instead of --minutes')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--points', type=int, default=12, help='validations per run')
    parser.add_argument('--probe-iters', type=int, default=16)
    parser.add_argument('--val-share', type=float, default=0.05, help='budget share kept for validation')
    parser.add_argument('--split', default='test')
    parser.add_argument('--reuse', action='store_true', help='keep recipes already in <out>/results.json')
    parser.add_argument(
        '--evaluate',
        metavar='RESULTS_JSON',
        help='train nothing: score the checkpoints of that run (and the reference rows) on --data, into --out')
    parser.add_argument(
        '--merge',
        nargs='+',
        default=[],
        metavar='RESULTS_JSON:KEY[=NEW]',
        help='take a recipe of another run (as recipe NEW: a recipe renamed since, whose label and override it gets) '
        'into --out, as --reuse would: runs made apart, e.g. in parallel, in one table and plot')
    args = parser.parse_args()
    merged = {}
    for item in args.merge:
        path, _, keys = item.rpartition(':')
        key, _, new = keys.partition('=')
        new = new or key
        if not osp.isfile(path) or new not in RECIPES:
            parser.error(f'--merge {item}: needs an existing results.json and a recipe of {", ".join(RECIPES)}')
        with open(path) as f:
            other = json.load(f)
        if key not in other['recipes']:
            parser.error(f'--merge {item}: no recipe {key!r} in {path} (it has {", ".join(other["recipes"])})')
        recipe = RECIPES[new]  # the entry is described as the recipe it is now known as
        described = {'key': new, 'label': recipe['label'], 'metric': recipe['metric'], 'merged_from': f'{path}:{key}'}
        merged[new] = (other, {**other['recipes'][key], **described, 'override': recipe.get('override', {})})
    args.recipes = args.recipes or (list(merged) if merged else list(RECIPES))
    for key in ('out', 'work'):
        setattr(args, key, osp.abspath(getattr(args, key)))
        os.makedirs(getattr(args, key), exist_ok=True)
    if not osp.isdir(osp.join(args.data, 'train_c')):
        sys.exit(f'--data {args.data}: no DPDD layout there (make it with scripts/make_synthetic_dpdd.py --photos)')
    budgets = {}
    for item in args.minutes_for:
        key, _, minutes = item.partition('=')
        if key not in RECIPES:
            parser.error(f'--minutes-for {item}: unknown recipe {key!r} (one of {", ".join(RECIPES)})')
        budgets[key] = float(minutes)
    command = 'python scripts/learning_curves.py ' + ' '.join(sys.argv[1:])
    results_path = osp.join(args.out, 'results.json')
    results, saved, trained = {}, {}, False
    fingerprint = data_fingerprint(args.data)
    if args.reuse and osp.isfile(results_path):
        with open(results_path) as f:
            saved = json.load(f)
        if saved.get('data_sha256', fingerprint) != fingerprint:
            sys.exit(f'--reuse: {results_path} was trained on another --data than {args.data} (its files differ: '
                     'rebuild the set with the commands in its header, or start a new --out)')
        results = {k: v for k, v in saved['recipes'].items() if k in args.recipes}
        for key, result in list(results.items()):
            reason = stale_reason(key, result, None if args.iters else budgets.get(key, args.minutes))
            if reason:
                print(f'[curves] {key}: {reason}; training it again', flush=True)
                del results[key]
        for result in results.values():  # curves read again from the logs (the reader may have changed)
            read_curve(result)
    for key, (other, result) in merged.items():
        results[key] = result
        read_curve(result)
        saved.setdefault('references', other['references'])  # the same data: the reference rows stand
        commands = saved.setdefault('commands', [])
        commands += [c for c in other['commands'] if c not in commands]
    for key in [] if args.evaluate else args.recipes:
        if key in results:
            continue
        budget = argparse.Namespace(**{**vars(args), 'minutes': budgets.get(key, args.minutes)})
        results[key], trained = train_recipe(key, budget), True
        results[key]['budget_minutes'] = None if args.iters else budgets.get(key, args.minutes)
        record = {'commands': saved.get('commands', []) + [command], 'data_sha256': fingerprint, 'recipes': results}
        with open(results_path, 'w') as f:  # after every recipe: an interrupted run keeps what it finished
            json.dump(record, f, indent=2)
    if args.evaluate:  # the trained checkpoints on another set (e.g. another PSF model): what limits them
        with open(args.evaluate) as f:
            results = {k: v for k, v in json.load(f)['recipes'].items() if k in args.recipes}
        for result in results.values():
            result['test'] = {
                test_file:
                run_test(test_file, result['name'], args, tag='_eval', network_map=result.get('network_map'))
                for test_file in RECIPES[result['key']]['tests']
            }
    commands = saved.get('commands', [saved['command']] if 'command' in saved else [])
    if (args.reuse or merged) and not trained and saved.get('references'):
        refs = saved['references']  # nothing new trained: the reference rows stand (only the curves are re-read)
        if merged:
            commands.append(command)
    else:
        refs = references(args, results)
        commands.append(command)
    record = {'commands': commands, 'machine': machine(), 'data_sha256': fingerprint, 'references': refs}
    with open(results_path, 'w') as f:
        json.dump({**record, 'recipes': results}, f, indent=2)
    write_table(args, results, refs, commands)
    if not args.evaluate:  # the curves belong to the training run's val split
        write_plot(args, results, refs)


if __name__ == '__main__':
    main()
