"""Patches/s of the DPDD training loader: decoding the PNGs against reading the decoded cache.

    python scripts/make_dpdd_sized.py --out datasets/dpdd_sized
    python scripts/cache_dpdd.py --dataroot datasets/dpdd_sized --out datasets/dpdd_sized_cache
    python scripts/benchmark_data.py --dataroot datasets/dpdd_sized --cache-root datasets/dpdd_sized_cache \\
        --workers 0 2 4

The dataset options are the training block of --opt (default: the DefocusGAN release list: gt_size 512,
patch_stride 204, drop_least_sharp 0.3, single input with the DP views, flips). For every worker count both modes
are measured back to back (interleaved), so a load that other processes put on the machine hits both alike; the
load average is printed with the table. Modes: "before" is the loader as it was (decode each PNG, normalise the
whole image, crop), "png" decodes and crops before normalising, "cache" crops the memory-mapped decoded samples
(option cache_root). Workers 0 means loading in the main process; "per worker" divides by max(workers, 1).
``--tiny`` runs the whole chain on a small temporary set in a few seconds.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import torch
import yaml
from os import path as osp

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from make_dpdd_sized import write_dpdd_sized  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_OPT = osp.join(ROOT, 'options', 'train', 'train_defocusgan.yml')


def dataset_options(opt_file, dataroot, cache_root=None, overrides=None):
    """The ``datasets.train`` block of an option file, pointed at ``dataroot`` (and the cache)."""
    with open(opt_file) as f:
        block = dict(yaml.safe_load(f)['datasets']['train'])
    block.update(phase='train', dataroot=dataroot, **(overrides or {}))
    if cache_root:
        block['cache_root'] = cache_root
    return block


def build(mode, opt):
    """Builds the dataset of one mode; returns it and its start-up time (pairing, cache check, patch list)."""
    from defocusgan_plugin.data.dpdd_dataset import DPDDDataset

    class BeforeDPDDDataset(DPDDDataset):
        """The loader before the cache: every file normalised whole, then cropped."""

        def _to_float(self, sample, raws, window=None):
            arrays = super()._to_float(sample, raws)
            return arrays if window is None else {
                k: v[window[0]:window[0] + window[2], window[1]:window[1] + window[2]]
                for k, v in arrays.items()
            }

    start = time.perf_counter()
    dataset = (BeforeDPDDDataset if mode == 'before' else DPDDDataset)(opt)
    return dataset, time.perf_counter() - start


def measure(dataset, workers, batch_size, batches, seed=0):
    """Patches/s over ``batches`` batches after a first (warm-up, worker start-up) batch."""
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed))
    it = iter(loader)
    next(it)
    start, count = time.perf_counter(), 0
    for _ in range(batches):
        try:
            batch = next(it)
        except StopIteration:  # a small set: start another epoch
            it = iter(loader)
            batch = next(it)
        count += batch['gt'].shape[0]
    elapsed = time.perf_counter() - start
    del it
    return count / elapsed


def run(opt_file, dataroot, cache_root, modes, workers, batches, batch_size=None, overrides=None, log=print):
    """Measures every (workers, mode) pair, interleaved; returns a list of result dicts."""
    datasets, results = {}, []
    for mode in modes:
        opt = dataset_options(opt_file, dataroot, cache_root if mode == 'cache' else None, overrides)
        datasets[mode], startup = build(mode, opt)
        bs = batch_size or int(opt.get('batch_size_per_gpu', 4))
        log(f'{mode}: {len(datasets[mode])} patches, start-up {startup:.2f} s')
        results.append({'mode': mode, 'workers': 'start-up', 'seconds': startup})
    load_start = os.getloadavg()
    for w in workers:
        for mode in modes:
            rate = measure(datasets[mode], w, bs, batches)
            results.append({'mode': mode, 'workers': w, 'patches_per_s': rate, 'per_worker': rate / max(w, 1)})
            log(f'  workers {w}, {mode}: {rate:.1f} patches/s ({rate / max(w, 1):.1f} per worker)')
    load_end = os.getloadavg()
    ratio = len(modes) > 1 and modes[-1] != modes[0]
    table = [
        '| workers | ' + ' | '.join(f'{m} patches/s (per worker)'
                                    for m in modes) + (f' | {modes[-1]} / {modes[0]} |' if ratio else ' |'),
        '|---' * (len(modes) + 1 + ratio) + '|'
    ]
    for w in workers:
        rows = {r['mode']: r for r in results if r['workers'] == w}
        cells = [f"{rows[m]['patches_per_s']:.1f} ({rows[m]['per_worker']:.1f})" for m in modes]
        if ratio:
            cells.append(f"{rows[modes[-1]]['patches_per_s'] / rows[modes[0]]['patches_per_s']:.1f}x")
        table.append(f'| {w} | ' + ' | '.join(cells) + ' |')
    starts = {r['mode']: r['seconds'] for r in results if r['workers'] == 'start-up'}
    table.append('| start-up s | ' + ' | '.join(f'{starts[m]:.2f}' for m in modes) + (' | |' if ratio else ' |'))
    log('\n'.join(table))
    log(f'load average (1 min) before / after: {load_start[0]:.2f} / {load_end[0]:.2f} on {os.cpu_count()} CPUs')
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--opt', default=DEFAULT_OPT, help='option file whose datasets.train block is measured')
    parser.add_argument('--dataroot', default='datasets/dpdd_sized', help='made by scripts/make_dpdd_sized.py')
    parser.add_argument('--cache-root', default='datasets/dpdd_sized_cache', help='made by scripts/cache_dpdd.py')
    parser.add_argument('--modes', nargs='+', choices=['before', 'png', 'cache'], default=['before', 'png', 'cache'])
    parser.add_argument('--workers', nargs='+', type=int, default=[0, 2, 4])
    parser.add_argument('--batches', type=int, default=10, help='timed batches per measurement')
    parser.add_argument('--batch-size', type=int, help='default: batch_size_per_gpu of --opt')
    parser.add_argument('--json', help='also write the results here')
    parser.add_argument('--tiny', action='store_true', help='a few seconds on a small temporary set (smoke test)')
    args = parser.parse_args(argv)
    tmp, overrides = None, None
    try:
        if args.tiny:
            tmp = tempfile.mkdtemp(prefix='benchmark_data_')
            args.dataroot, args.cache_root = osp.join(tmp, 'data'), osp.join(tmp, 'cache')
            write_dpdd_sized(args.dataroot, images=2, width=160, height=96)
            overrides = {'gt_size': 48, 'patch_stride': 24}
            args.workers, args.batches = [w for w in args.workers if w == 0] or [0], min(args.batches, 2)
        if not osp.isdir(args.dataroot):
            sys.exit(f'error: --dataroot {args.dataroot} not found; write it with python scripts/make_dpdd_sized.py '
                     f'--out {args.dataroot}')
        if 'cache' in args.modes:
            from defocusgan_plugin.data.dpdd_cache import write_cache
            opt = dataset_options(args.opt, args.dataroot, None, overrides)
            start = time.perf_counter()
            counts = write_cache(
                args.dataroot,
                args.cache_root,
                splits=(opt.get('split', 'train'), ),
                gt_size=int(opt['gt_size']),
                patch_stride=int(opt.get('patch_stride') or 1),
                color=opt.get('color', 'rgb'),
                scores=bool(opt.get('patch_stride')),
                workers=max(1, (os.cpu_count() or 1) // 2),
                log=lambda *_: None)
            print(f'cache {args.cache_root}: {counts["cached"]} files written, {counts["unchanged"]} unchanged '
                  f'({time.perf_counter() - start:.1f} s)')
        results = run(args.opt, args.dataroot, args.cache_root, args.modes, args.workers, args.batches, args.batch_size,
                      overrides)
        if args.json:
            with open(args.json, 'w') as f:
                json.dump(results, f, indent=1)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
