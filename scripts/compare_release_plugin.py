"""DefocusGAN stage 2: the release's recipe against this plugin's variant, same CPU budget, embedded synthetic set.

    python scripts/make_synthetic_dpdd.py --out datasets/synthetic_dpdd
    python scripts/compare_release_plugin.py --out demo_output/release_vs_plugin [--iters 1500 --crop 64 --batch 4]

Both sides train from their own DPDD option file, on the same data, crops, batch and number of iterations:

* release: ``options/train/train_defocusgan.yml`` - DefocusGANReleaseGenerator, 0.5 L1 + 0.006 VGG19 (raw input) +
  0.001 adversarial, critic loss with the 0.1 |map| term, one-alpha per-pixel gradient penalty, 2 critic updates,
  the release's critic (padding 2, no affine norms), no flips;
* plugin: ``options/train/train_defocusgan_slim.yml`` - the slim DefocusGANGenerator, L1 + 0.012 VGG19 (ImageNet
  input) + 0.002 adversarial in the paper's Eq. 7 form, per-sample gradient penalty, 1 critic update, flips.

Both use the synthetic set's GT defocus maps (``defocus_map.source: gt``) and a randomly initialised VGG19
(``pretrained: false``: no weights are available offline), and validate on the same images. The epoch-based
schedules of each file (critic / adversarial / annealing starts, annealing length, learning-rate milestones) are
scaled to the budget as fractions of that file's run; the mapping is printed. With ``--side both`` (default) the two
sides run in parallel as two processes of ``--threads`` threads each; ``--side release|plugin`` runs one in this
process. Written into ``--out``: ``<side>.json`` (validation PSNR against iterations, final test metrics, time),
``results.json``, ``results.md`` (table) and ``psnr_curve.png``. LPIPS is not reported: it needs network weights
that are not available offline.
"""
import argparse
import copy
import json
import os
import subprocess
import sys
import time
import torch
import yaml
from basicsr.data import build_dataloader, build_dataset
from os import path as osp
from torch.utils.flop_counter import FlopCounterMode

import defocusgan_plugin  # noqa: F401  (registers the plugin)
from defocusgan_plugin.metrics.dpdd_metric import input_scores
from defocusgan_plugin.models.defocusgan_model import DefocusGANModel
from defocusgan_plugin.train import train_pipeline

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from learning_curves import scale_schedule  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
OPTIONS = osp.join(ROOT, 'options', 'train')
SIDES = {
    'release': ('release recipe, DefocusGANReleaseGenerator', 'train_defocusgan.yml'),
    'plugin': ('plugin variant, slim DefocusGANGenerator', 'train_defocusgan_slim.yml'),
}
VAL_METRICS = {
    'psnr': {
        'type': 'calculate_dpdd_psnr'
    },
    'ssim': {
        'type': 'calculate_dpdd_ssim'
    },
    'mae': {
        'type': 'calculate_mae',
        'better': 'lower'
    }
}


def load(name):
    with open(osp.join(OPTIONS, name)) as f:
        return yaml.safe_load(f)


def scaled_schedule(opt, iters):
    """Rescales the file's iteration-based schedule (in place) to ``iters`` iterations, as fractions of its run.

    The starts and the annealing length that the file leaves to the model's defaults are written out first, so
    that they scale too.

    Returns:
        dict[str, tuple]: option key -> (value in the file or the model's default, scaled value).
    """
    train = opt['train']
    train.setdefault('gan_start_iter', 0)
    train.setdefault('critic_start_iter', train['gan_start_iter'])
    train['guidance'] = dict({'anneal_iters': 20000, 'anneal_start_iter': 0}, **(train.get('guidance') or {}))
    return scale_schedule(opt, iters)


def make_options(side, args):
    """Option dict of one side: its DPDD recipe on the synthetic set, the budget of ``args``."""
    opt = load(SIDES[side][1])
    synthetic = load('train_defocusgan_synthetic.yml')
    opt['name'] = f'compare_{side}'
    opt['num_gpu'] = 0
    opt['manual_seed'] = args.seed
    train_set = dict(
        synthetic['datasets']['train'],
        dataroot=osp.abspath(args.dataroot),
        gt_size=args.crop,
        batch_size_per_gpu=args.batch,
        num_worker_per_gpu=0)
    for key in ('use_hflip', 'use_vflip', 'use_rot'):  # augmentation is part of each recipe
        train_set[key] = opt['datasets']['train'].get(key, False)
    val_set = dict(synthetic['datasets']['val'], dataroot=osp.abspath(args.dataroot))
    opt['datasets'] = {'train': train_set, 'val': val_set}
    mapping = scaled_schedule(opt, args.iters)
    train = opt['train']
    train['defocus_map'] = {'source': 'gt'}
    train['perceptual_opt']['pretrained'] = False
    opt['path'] = {'pretrain_network_g': None, 'strict_load_g': True, 'pretrain_network_d': None, 'resume_state': None}
    opt['val'] = {'val_freq': args.val_every, 'save_img': False, 'metrics': copy.deepcopy(VAL_METRICS)}
    opt['logger'] = {
        'print_freq': max(1, args.val_every // 5),
        'save_checkpoint_freq': args.iters,
        'use_tb_logger': False,
        'wandb': {
            'project': None,
            'resume_id': None
        }
    }
    opt['dist_params'] = {'backend': 'gloo', 'port': 29500}
    return opt, mapping


def gmac_per_megapixel(net, size=128):
    net = net.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.rand(1, 3, size, size))
    net.train()
    return counter.get_total_flops() / 2 / size**2 / 1e3  # MAC = 2 FLOPs; per pixel * 1e6 / 1e9


def test_loader(dataroot, split='test'):
    dataset_opt = {
        'name': f'SyntheticDPDD_{split}',
        'type': 'DPDDDataset',
        'dataroot': osp.abspath(dataroot),
        'split': split,
        'input': 'single',
        'load_dp_views': False,
        'phase': 'test'
    }
    return build_dataloader(build_dataset(dataset_opt), dataset_opt, num_gpu=0, dist=False, sampler=None)


def run_side(side, args):
    """Trains one side in this process and writes ``<out>/<side>.json``."""
    torch.set_num_threads(args.threads)
    opt, mapping = make_options(side, args)
    work = osp.join(osp.abspath(args.out), side)
    os.makedirs(work, exist_ok=True)
    opt_path = osp.join(work, f'{opt["name"]}.yml')
    with open(opt_path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    print(f'[{side}] {SIDES[side][0]}: schedule of {SIDES[side][1]} scaled to {args.iters} iterations:')
    for key, (orig, new) in mapping.items():
        print(f'[{side}]   {key}: {orig} -> {new}')

    curve, original, val_seconds = [], DefocusGANModel.validation, [0.0]

    def recording_validation(model, dataloader, current_iter, tb_logger, save_img=False):
        begin = time.time()
        original(model, dataloader, current_iter, tb_logger, save_img)
        val_seconds[0] += time.time() - begin
        if curve and curve[-1]['iter'] >= min(current_iter, args.iters):
            return  # BasicSR validates once more after the last iteration
        curve.append({
            'iter': min(int(current_iter), args.iters),
            'seconds': time.time() - start,
            **model.metric_results
        })
        elapsed = time.time() - start
        print(
            f'[{side}] iter {current_iter}: ' + ', '.join(f'{k} {v:.4f}' for k, v in model.metric_results.items()) +
            f' ({elapsed / 60:.1f} min, about {elapsed * args.iters / max(current_iter, 1) / 60:.0f} min in all)',
            flush=True)

    DefocusGANModel.validation = recording_validation
    cwd = os.getcwd()
    os.chdir(work)  # train_pipeline roots experiments/ at the working directory
    try:
        start = time.time()
        model = train_pipeline(work, ['-opt', opt_path])
        seconds = time.time() - start
    finally:
        os.chdir(cwd)
        DefocusGANModel.validation = original
    model.validation(test_loader(args.dataroot), current_iter=args.iters, tb_logger=None, save_img=False)
    final = dict(model.metric_results)
    net = model.get_bare_model(model.net_g)
    result = {
        'side': side,
        'label': SIDES[side][0],
        'option_file': f'options/train/{SIDES[side][1]}',
        'params_m': sum(p.numel() for p in net.parameters()) / 1e6,
        'gmac_per_mp': gmac_per_megapixel(net),
        'train_seconds': seconds - val_seconds[0],
        'validation_seconds': val_seconds[0],
        'seconds_per_iter': (seconds - val_seconds[0]) / args.iters,
        'val_curve': curve,
        'test': final,
        'schedule': {
            k: list(v)
            for k, v in mapping.items()
        },
        'threads': args.threads
    }
    with open(osp.join(osp.abspath(args.out), f'{side}.json'), 'w') as f:
        json.dump(result, f, indent=2)
    return result


def write_report(args, results):
    """results.json, results.md and psnr_curve.png from both sides' JSON."""
    out = osp.abspath(args.out)
    blurred_test = input_scores(test_loader(args.dataroot))
    blurred_val = input_scores(test_loader(args.dataroot, 'val'))
    budget = {
        'iters': args.iters,
        'crop': args.crop,
        'batch': args.batch,
        'threads_per_side': args.threads,
        'val_every': args.val_every,
        'dataroot': args.dataroot,
        'seed': args.seed
    }
    summary = {'budget': budget, 'blurred_input': {'test': blurred_test, 'val': blurred_val}, 'sides': results}
    with open(osp.join(out, 'results.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    command = ('python scripts/compare_release_plugin.py ' +
               ' '.join(f'--{k.replace("_", "-")} {v}' for k, v in vars(args).items() if k not in ('side', )))
    lines = [
        f'Synthetic DP test split ({len(test_loader(args.dataroot).dataset)} images), {args.iters} iterations '
        f'each, batch {args.batch}, {args.crop}-px crops, {args.threads} CPU thread(s) per side, 2-core CPU.',
        f'Command: `{command}`', '',
        '| | params (M) | GMAC/MP | train s (no validation) | s/iter | PSNR | SSIM | MAE |',
        '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
        f'| blurred input | | | | | {blurred_test["psnr"]:.2f} | {blurred_test["ssim"]:.4f} | '
        f'{blurred_test["mae"]:.4f} |'
    ]
    for r in results:
        t = r['test']
        lines.append(f'| {r["label"]} (`{r["option_file"]}`) | {r["params_m"]:.2f} | {r["gmac_per_mp"]:.0f} | '
                     f'{r["train_seconds"]:.0f} | {r["seconds_per_iter"]:.2f} | {t["psnr"]:.2f} | {t["ssim"]:.4f} | '
                     f'{t["mae"]:.4f} |')
    lines += [
        '', 'LPIPS: not measured (AlexNet/SqueezeNet weights are not available offline).',
        'Schedules scaled to the budget (value in the option file -> value used):'
    ]
    for r in results:
        lines += [f'- {r["side"]}: ' + '; '.join(f'{k} {v[0]} -> {v[1]}' for k, v in r['schedule'].items())]
    with open(osp.join(out, 'results.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print('\n'.join(lines))

    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for r in results:
        ax.plot([c['iter'] for c in r['val_curve']], [c['psnr'] for c in r['val_curve']],
                marker='o',
                ms=3,
                label=f'{r["label"]} ({r["params_m"]:.2f} M)')
    ax.axhline(blurred_val['psnr'], color='gray', ls='--', lw=1, label='blurred input')
    ax.set_xlabel('iteration')
    ax.set_ylabel('validation PSNR (dB)')
    ax.set_title(f'Synthetic DP set: {args.crop}-px crops, batch {args.batch}, {args.threads} CPU thread(s) each')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(osp.join(out, 'psnr_curve.png'))
    print(f'Wrote {out}/results.md, results.json, psnr_curve.png')


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', required=True, help='folder for the results (and the runs, in <out>/<side>)')
    parser.add_argument('--dataroot', default=osp.join(ROOT, 'datasets', 'synthetic_dpdd'))
    parser.add_argument('--iters', type=int, default=1500, help='training iterations of each side')
    parser.add_argument('--crop', type=int, default=64, help='training crop size')
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--val-every', type=int, default=150, help='validation interval (iterations)')
    parser.add_argument('--threads', type=int, default=1, help='CPU threads of each side')
    parser.add_argument('--seed', type=int, default=10)
    parser.add_argument('--side', choices=('both', 'release', 'plugin'), default='both')
    args = parser.parse_args()
    if not osp.isdir(args.dataroot):
        raise SystemExit(f'{args.dataroot} not found: run python scripts/make_synthetic_dpdd.py --out {args.dataroot}')
    if args.val_every < 1 or args.iters < 1:
        raise SystemExit('--iters and --val-every must be >= 1.')
    os.makedirs(args.out, exist_ok=True)
    if args.side != 'both':
        run_side(args.side, args)
        return
    procs = []
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    for side in SIDES:
        argv = [sys.executable, osp.abspath(__file__), '--side', side
                ] + [a for k, v in vars(args).items() if k != 'side' for a in (f'--{k.replace("_", "-")}', str(v))]
        log = open(osp.join(args.out, f'{side}.log'), 'w')
        procs.append((side, subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT), log))
        print(f'[{side}] started (pid {procs[-1][1].pid}), log {osp.join(args.out, side + ".log")}')
    failed = []
    for side, proc, log in procs:
        if proc.wait() != 0:
            failed.append(side)
        log.close()
    if failed:
        raise SystemExit(f'Side(s) {", ".join(failed)} failed; see their logs in {args.out}.')
    results = []
    for side in SIDES:
        with open(osp.join(args.out, f'{side}.json')) as f:
            results.append(json.load(f))
    write_report(args, results)


if __name__ == '__main__':
    main()
