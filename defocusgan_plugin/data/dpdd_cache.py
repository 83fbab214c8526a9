"""A one-time cache of decoded DPDD images: one uncompressed ``.npy`` per file, read through a memory map.

Decoding a 1680x1120 16-bit PNG costs tens of milliseconds, and the training loader needs four of them for every
512x512 patch; the cache stores each file's samples exactly as decoded (uint16 for 16-bit files, alpha dropped), so
a patch is a memory-mapped crop followed by the same normalisation as the PNG path, bit for bit. Whole images are
cached rather than patches because the DPDD patch grid overlaps (stride 204 < 512): the whole images are smaller.

Layout under the cache root: ``<path relative to dataroot>.npy`` per image and ``dpdd_cache.json``, which records
each source file's size and modification time (a changed file makes the cache stale, an error), the array's shape,
dtype and file size, and optionally the sharpness scores of the training patch grid (so that the start-up patch
list needs no full-image reads). Written by ``scripts/cache_dpdd.py``; read by ``DPDDDataset`` with the option
``cache_root``.
"""
import json
import multiprocessing
import numpy as np
import os
import time
from os import path as osp

from defocusgan_plugin.data.dp_transforms import grid_scores
from defocusgan_plugin.utils.img_io import atomic_write_bytes, decode_raw, is_image_file, raw_to_float

MANIFEST = 'dpdd_cache.json'
FORMAT = 'defocusgan_plugin DPDD cache'
VERSION = 1
GT_FOLDER = '{split}_c/target'  # the DPDD folder whose patch scores are stored


def scores_key(size, stride, channels):
    """Manifest key of the patch-grid sharpness scores for gt_size / patch_stride / channel count."""
    return f'{int(size)}/{int(stride)}/{int(channels)}'


def _source_stat(path):
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _rel(path, dataroot):
    return osp.relpath(osp.realpath(path), osp.realpath(dataroot)).replace(os.sep, '/')


def cache_one(path, dataroot, cache_root, score_grids=()):
    """Decodes one image into the cache and returns its manifest entry.

    Args:
        path (str): Source image.
        dataroot (str): Root the cache mirrors.
        cache_root (str): Cache folder.
        score_grids (tuple): (gt_size, patch_stride, channels) triples whose patch scores to store.

    Returns:
        tuple[str, dict]: Path relative to ``dataroot`` and the manifest entry.
    """
    rel = _rel(path, dataroot)
    with open(path, 'rb') as f:
        raw = np.ascontiguousarray(decode_raw(f.read(), path))
    size, mtime_ns = _source_stat(path)
    npy = osp.join(cache_root, rel + '.npy')
    os.makedirs(osp.dirname(npy), exist_ok=True)
    tmp = f'{npy}.{os.getpid()}.tmp'
    try:
        with open(tmp, 'wb') as f:
            np.save(f, raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, npy)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    entry = {
        'size': size,
        'mtime_ns': mtime_ns,
        'shape': list(raw.shape),
        'dtype': raw.dtype.str,
        'npy_size': osp.getsize(npy)
    }
    scores = {}
    for gt_size, stride, channels in score_grids:
        if gt_size <= raw.shape[0] and gt_size <= raw.shape[1]:
            scores[scores_key(gt_size, stride,
                              channels)] = grid_scores(raw_to_float(raw, path, channels), gt_size, stride)
    if scores:
        entry['scores'] = scores
    return rel, entry


def read_manifest(cache_root, option='cache_root'):
    """Loads the manifest of a cache folder; clear errors when it is missing, unreadable or of another version."""
    path = osp.join(cache_root, MANIFEST)
    if not osp.isdir(cache_root):
        raise FileNotFoundError(f'DPDD cache folder not found: {cache_root} (option {option}); write it with '
                                'scripts/cache_dpdd.py.')
    if not osp.isfile(path):
        raise FileNotFoundError(f'DPDD cache manifest not found: {path} (option {option}); the cache was not '
                                'written completely, re-run scripts/cache_dpdd.py.')
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f'Cannot read the DPDD cache manifest {path} (option {option}): {err}; re-run '
                         'scripts/cache_dpdd.py.') from None
    if not isinstance(manifest, dict) or manifest.get('format') != FORMAT or manifest.get('version') != VERSION:
        raise ValueError(f'{path} is not a version-{VERSION} DPDD cache manifest (option {option}); re-run '
                         'scripts/cache_dpdd.py.')
    return manifest


def write_manifest(cache_root, files):
    content = json.dumps({'format': FORMAT, 'version': VERSION, 'files': files}, indent=0, sort_keys=True)
    atomic_write_bytes(osp.join(cache_root, MANIFEST), content.encode())


def entry_is_current(entry, path, cache_root, rel, score_grids=()):
    """Whether a manifest entry still matches its source file and its ``.npy`` (and holds the wanted scores)."""
    npy = osp.join(cache_root, rel + '.npy')
    if entry is None or not osp.isfile(npy) or osp.getsize(npy) != entry.get('npy_size'):
        return False
    if _source_stat(path) != (entry.get('size'), entry.get('mtime_ns')):
        return False
    h, w = entry['shape'][:2]
    wanted = {scores_key(*g) for g in score_grids if g[0] <= h and g[0] <= w}
    return wanted <= set(entry.get('scores', {}))


class DPDDCache:
    """Read access to a cache written by ``scripts/cache_dpdd.py``.

    Args:
        cache_root (str): The cache folder (option ``cache_root``).
        dataroot (str): The dataset root the cache mirrors (option ``dataroot``).
    """

    def __init__(self, cache_root, dataroot):
        self.cache_root, self.dataroot = cache_root, dataroot
        self.files = read_manifest(cache_root)['files']

    def entry(self, path):
        """Checks that ``path`` is cached and current (source size and time, ``.npy`` size); returns its entry."""
        rel = _rel(path, self.dataroot)
        hint = f'run python scripts/cache_dpdd.py --dataroot {self.dataroot} --out {self.cache_root}'
        if rel.startswith('../'):
            raise ValueError(f'{path} is not under dataroot {self.dataroot}; option cache_root needs every data '
                             'folder under dataroot.')
        entry = self.files.get(rel)
        if entry is None:
            raise FileNotFoundError(f'{path} is not in the DPDD cache {self.cache_root} (option cache_root); {hint}.')
        if _source_stat(path) != (entry['size'], entry['mtime_ns']):
            raise ValueError(f'Stale DPDD cache (option cache_root): {path} changed (size or modification time) '
                             f'since it was cached in {self.cache_root}; {hint}.')
        npy = osp.join(self.cache_root, rel + '.npy')
        if not osp.isfile(npy):
            raise FileNotFoundError(f'DPDD cache file missing: {npy} (option cache_root); {hint}.')
        if osp.getsize(npy) != entry['npy_size']:
            raise ValueError(f'Corrupt DPDD cache file {npy} (option cache_root): {osp.getsize(npy)} bytes, the '
                             f'manifest says {entry["npy_size"]}; {hint}.')
        return entry

    def open(self, path):
        """The cached samples of image ``path`` as a read-only memory map (HWC, the file's dtype)."""
        rel = _rel(path, self.dataroot)
        entry, npy = self.files[rel], osp.join(self.cache_root, rel + '.npy')
        try:
            arr = np.load(npy, mmap_mode='r')
        except Exception as err:  # truncated or overwritten after the start-up check
            raise ValueError(f'Corrupt DPDD cache file {npy} (option cache_root): {err}; re-run '
                             'scripts/cache_dpdd.py.') from None
        if list(arr.shape) != entry['shape'] or arr.dtype.str != entry['dtype']:
            raise ValueError(f'Corrupt DPDD cache file {npy} (option cache_root): {arr.dtype.str} {list(arr.shape)}, '
                             f'the manifest says {entry["dtype"]} {entry["shape"]}; re-run scripts/cache_dpdd.py.')
        return arr


def list_images(dataroot, folders=None):
    """Image files under ``dataroot`` (all sub-folders, or only those given relative to it), sorted."""
    roots = [dataroot] if not folders else [osp.join(dataroot, f) for f in folders]
    found = []
    for root in roots:
        if not osp.isdir(root):
            raise FileNotFoundError(f'Folder not found: {root}')
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            found += [osp.join(dirpath, f) for f in sorted(filenames) if is_image_file(f)]
    return found


def _cache_job(args):
    return cache_one(*args)


def write_cache(dataroot,
                out,
                splits=('train', ),
                all_folders=False,
                gt_size=512,
                patch_stride=204,
                color='rgb',
                scores=True,
                workers=1,
                log=print):
    """Caches the images of ``dataroot`` into ``out`` (the work of ``scripts/cache_dpdd.py``).

    Args:
        dataroot (str): Dataset root in the DPDD layout.
        out (str): Cache folder (created).
        splits (tuple[str]): Splits whose ``{split}_c``, ``{split}_l`` and ``{split}_r`` folders are cached.
        all_folders (bool): Cache every image under ``dataroot`` instead.
        gt_size (int): Patch size of the stored patch scores.
        patch_stride (int): Patch stride of the stored patch scores.
        color (str): 'rgb' or 'gray', the dataset's ``color`` option the scores are for.
        scores (bool): Store patch scores for the ``{split}_c/target`` images.
        workers (int): Decoding processes.
        log (callable): Progress output.

    Returns:
        dict[str, int]: Numbers of files ``cached`` and ``unchanged``.
    """
    if not osp.isdir(dataroot):
        raise FileNotFoundError(f'--dataroot not found: {dataroot}')
    if all_folders:
        folders = None
    else:
        folders = [f'{s}_{v}' for s in splits for v in 'clr' if osp.isdir(osp.join(dataroot, f'{s}_{v}'))]
        if not folders:
            raise FileNotFoundError(f'No {{split}}_c / _l / _r folder of splits {list(splits)} in {dataroot}.')
    paths = list_images(dataroot, folders)
    if not paths:
        raise FileNotFoundError(f'No images found under {dataroot} (folders {folders or "all"}).')
    os.makedirs(out, exist_ok=True)
    try:
        files = read_manifest(out, option='--out')['files']
    except FileNotFoundError:
        files = {}
    except ValueError as err:
        log(f'{err} Rebuilding the whole cache.')
        files = {}
    channels = {'rgb': 3, 'gray': 1}[color]
    gt_folders = {osp.realpath(osp.join(dataroot, GT_FOLDER.format(split=s))) for s in splits}
    jobs, unchanged = [], 0
    for path in paths:
        grids = {(gt_size, patch_stride, channels)} if scores and osp.realpath(osp.dirname(path)) in gt_folders \
            else set()
        rel = _rel(path, dataroot)
        old = files.get(rel)
        if entry_is_current(old, path, out, rel, grids):
            unchanged += 1
            continue
        if old and entry_is_current(old, path, out, rel):  # only new scores wanted: keep the stored grids too
            grids |= {tuple(int(v) for v in key.split('/')) for key in old.get('scores', {})}
        jobs.append((path, dataroot, out, tuple(sorted(grids))))
    log(f'{len(paths)} images under {dataroot}: {unchanged} cached already, {len(jobs)} to decode.')
    start = time.time()
    pool = multiprocessing.Pool(workers) if workers > 1 and len(jobs) > 1 else None
    results = pool.imap_unordered(_cache_job, jobs) if pool else map(_cache_job, jobs)
    try:
        for done, (rel, entry) in enumerate(results, 1):
            files[rel] = entry
            if done % 50 == 0 or done == len(jobs):  # an interrupted run keeps what it finished
                write_manifest(out, files)
                log(f'  {done}/{len(jobs)} decoded ({time.time() - start:.0f} s)')
    finally:
        if pool:
            pool.terminate()
    if not jobs:
        write_manifest(out, files)
    return {'cached': len(jobs), 'unchanged': unchanged}
