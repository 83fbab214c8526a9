"""Dual-pixel MCCNet vs single-image DefocusGANGenerator on the embedded synthetic set, same training budget.

    python scripts/make_synthetic_dpdd.py --out datasets/synthetic_dpdd
    python scripts/compare_mccnet_defocusgan.py [--iters 400] [--work-dir demo_output/compare_mccnet]

Both networks are trained by the plugin's trainer from ``options/train/train_mccnet_synthetic.yml``: same crops, batch,
iterations, optimiser and schedule. Only these differ:

* MCCNet: ``input: dual`` (6-channel concat(L, R)), Charbonnier + MS-SSIM, as in the option file;
* DefocusGANGenerator: ``input: single`` (the combined view), L1 only, no defocus map (``forward(x)``).

Then both are tested on the test split (PSNR / SSIM / MAE on [0, 1], BasicSR's validation path) and the script
prints, per network, parameters, GMAC per megapixel (convolutions and matmuls, counted by ``FlopCounterMode``;
MCCNet's correlation adds about 0.5 GMAC/MP more), training time and the metrics, next to the blurred input's scores.
"""
import argparse
import copy
import os
import time
import torch
import yaml
from basicsr.data import build_dataloader, build_dataset
from os import path as osp
from torch.utils.flop_counter import FlopCounterMode

import defocusgan_plugin  # noqa: F401  (registers the plugin)
from defocusgan_plugin.metrics.dpdd_metric import input_scores
from defocusgan_plugin.train import train_pipeline

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def make_options(base, iters, dataroot, defocusgan_feat):
    """The two option dicts: MCCNet as in ``base``; DefocusGANGenerator with single input and L1 only."""
    base = copy.deepcopy(base)
    base['train']['total_iter'] = iters
    if base['train'].get('scheduler', {}).get('type') == 'CosineAnnealingRestartLR':
        base['train']['scheduler']['periods'] = [iters]
    base['val']['val_freq'] = iters + 1  # validate once, at the end of training
    base['logger']['save_checkpoint_freq'] = iters
    base['logger']['print_freq'] = max(1, iters // 10)
    for block in base['datasets'].values():
        block['dataroot'] = dataroot
    mccnet = copy.deepcopy(base)
    mccnet['name'] = 'compare_mccnet_dual'

    single = copy.deepcopy(base)
    single['name'] = 'compare_defocusgan_single_l1'
    for block in single['datasets'].values():
        block.update(input='single', load_dp_views=False)
    single['network_g'] = {'type': 'DefocusGANGenerator', 'num_in_ch': 3, 'num_out_ch': 3}
    if defocusgan_feat:
        single['network_g']['num_feat'] = defocusgan_feat
    single['train'] = {k: v for k, v in single['train'].items() if not k.endswith('_opt')}
    single['train']['pixel_opt'] = {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}
    return [('MCCNet (dual, Charbonnier + MS-SSIM)', mccnet), ('DefocusGANGenerator (single, L1)', single)]


def gmac_per_megapixel(net, channels, size=128):
    net = net.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.rand(1, channels, size, size))
    net.train()
    return counter.get_total_flops() / 2 / size**2 / 1e3  # MAC = 2 FLOPs; per pixel * 1e6 / 1e9


def make_test_loader(opt, dataroot):
    dataset_opt = dict(opt['datasets']['val'], name='SyntheticDPDD_test', split='test', phase='test', dataroot=dataroot)
    return build_dataloader(build_dataset(dataset_opt), dataset_opt, num_gpu=0, dist=False, sampler=None)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        '--opt',
        default=osp.join(ROOT, 'options', 'train', 'train_mccnet_synthetic.yml'),
        help='MCCNet training options whose budget both networks get')
    parser.add_argument('--dataroot', default=osp.join(ROOT, 'datasets', 'synthetic_dpdd'))
    parser.add_argument(
        '--iters',
        type=int,
        default=None,
        help='iterations for each network (default: the option '
        "file's total_iter)")
    parser.add_argument(
        '--defocusgan-feat',
        type=int,
        nargs=3,
        default=None,
        help='num_feat of DefocusGANGenerator (default: its constructor default)')
    parser.add_argument(
        '--work-dir',
        default=osp.join(ROOT, 'demo_output', 'compare_mccnet'),
        help='experiments/ of both runs are written here')
    args = parser.parse_args()
    if not osp.isdir(args.dataroot):
        raise SystemExit(f'{args.dataroot} not found: run python scripts/make_synthetic_dpdd.py --out {args.dataroot}')
    with open(args.opt) as f:
        base = yaml.safe_load(f)
    iters = args.iters or int(base['train']['total_iter'])
    dataroot = osp.abspath(args.dataroot)
    work_dir = osp.abspath(args.work_dir)
    os.makedirs(work_dir, exist_ok=True)

    rows = []
    options = make_options(base, iters, dataroot, args.defocusgan_feat)
    for label, opt in options:
        opt_path = osp.join(work_dir, f"{opt['name']}.yml")
        with open(opt_path, 'w') as f:
            yaml.safe_dump(opt, f, sort_keys=False)
        cwd = os.getcwd()
        os.chdir(work_dir)  # train_pipeline roots experiments/ at the working directory
        try:
            start = time.time()
            model = train_pipeline(work_dir, ['-opt', opt_path])
            seconds = time.time() - start
        finally:
            os.chdir(cwd)
        loader = make_test_loader(opt, dataroot)
        model.validation(loader, current_iter=iters, tb_logger=None, save_img=False)
        net = model.get_bare_model(model.net_g)
        rows.append(
            dict(
                label=label,
                params=sum(p.numel() for p in net.parameters()) / 1e6,
                gmac=gmac_per_megapixel(net, 6 if opt['datasets']['train']['input'] == 'dual' else 3),
                seconds=seconds,
                **model.metric_results))
    test_loader = make_test_loader(options[1][1], dataroot)  # single input: lq is the combined view
    blurred = input_scores(test_loader)

    print(f'\nSynthetic DP test split ({len(test_loader.dataset)} images), '
          f'{iters} iterations each, batch {base["datasets"]["train"]["batch_size_per_gpu"]}, '
          f'{base["datasets"]["train"]["gt_size"]}-px crops')
    print(f'{"":40s} {"params":>8s} {"GMAC/MP":>8s} {"train s":>8s} {"PSNR":>7s} {"SSIM":>6s} {"MAE":>7s}')
    print(f'{"blurred input (combined view)":40s} {"":>8s} {"":>8s} {"":>8s} {blurred["psnr"]:7.2f} '
          f'{blurred["ssim"]:6.4f} {blurred["mae"]:7.4f}')
    for r in rows:
        print(f'{r["label"]:40s} {r["params"]:7.2f}M {r["gmac"]:8.0f} {r["seconds"]:8.0f} {r["psnr"]:7.2f} '
              f'{r["ssim"]:6.4f} {r["mae"]:7.4f}')
    mcc, dgan = rows
    verdict = 'MCCNet wins' if mcc['psnr'] > dgan['psnr'] else 'DefocusGANGenerator wins'
    print(f'{verdict} by {abs(mcc["psnr"] - dgan["psnr"]):.2f} dB PSNR.')


if __name__ == '__main__':
    main()
