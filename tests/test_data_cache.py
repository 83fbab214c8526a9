"""The decoded DPDD cache (option cache_root, scripts/cache_dpdd.py): same samples as the PNG path, clear errors."""
import cv2
import importlib.util
import json
import numpy as np
import os
import pytest
import random
import shutil
import torch
from pathlib import Path

from defocusgan_plugin.data import dpdd_dataset
from defocusgan_plugin.data.dp_transforms import to_sample
from defocusgan_plugin.data.dpdd_cache import write_cache
from defocusgan_plugin.data.dpdd_dataset import DPDDDataset
from defocusgan_plugin.utils.img_io import decode_raw, read_image

SCRIPTS = Path(__file__).resolve().parents[1] / 'scripts'
SIZE, STRIDE = 40, 13


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_tiny_set(root):
    """Two 16-bit colour samples (scripts/make_dpdd_sized.py) and one mixing 8-bit, gray, alpha and 16-bit files,
    with float64 defocus maps."""
    make = load_script('make_dpdd_sized')
    make.write_dpdd_sized(str(root), images=2, width=112, height=72)
    rng = np.random.default_rng(1)
    odd = {
        'train_c/target': rng.integers(0, 256, (72, 112, 3)).astype(np.uint8),
        'train_c/source': rng.integers(0, 65536, (72, 112)).astype(np.uint16),
        'train_l/source': rng.integers(0, 65536, (72, 112, 4)).astype(np.uint16),
        'train_r/source': rng.integers(0, 256, (72, 112)).astype(np.uint8)
    }
    for folder, img in odd.items():
        assert cv2.imwrite(str(root / folder / 'odd.png'), img)
    (root / 'train_defocus').mkdir()
    for name in ('frame_0000', 'frame_0001', 'odd'):
        np.save(root / 'train_defocus' / f'{name}.npy', rng.normal(0, 3, (72, 112)))


@pytest.fixture(scope='module')
def cached_set(tmp_path_factory):
    root = tmp_path_factory.mktemp('dpdd_tiny')
    write_tiny_set(root / 'data')
    counts = write_cache(
        str(root / 'data'), str(root / 'cache'), gt_size=SIZE, patch_stride=STRIDE, log=lambda *_: None)
    assert counts == {'cached': 12, 'unchanged': 0}
    return root


def dataset(root, cache=False, **opt):
    base = dict(phase='train', dataroot=str(root / 'data'), split='train', input='single', load_dp_views=True)
    base.update(opt)
    if cache:
        base['cache_root'] = str(root / 'cache')
    return DPDDDataset(base)


RELEASE = dict(gt_size=SIZE, patch_stride=STRIDE, drop_least_sharp=0.3, use_hflip=True, use_vflip=True)
CASES = {
    'release': RELEASE,
    'random_crop_dual': dict(input='dual', gt_size=SIZE, use_hflip=True, use_vflip=True),
    'gray_scores_computed': dict(RELEASE, color='gray'),  # the cache holds rgb scores only
    'val_full_images': dict(phase='val', split='train'),
}


def assert_same_items(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if torch.is_tensor(a[key]):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def test_make_dpdd_sized_writes_16bit_dpdd_layout(cached_set):
    for folder in ('train_c/source', 'train_c/target', 'train_l/source', 'train_r/source'):
        raw = decode_raw((cached_set / 'data' / folder / 'frame_0001.png').read_bytes())
        assert raw.dtype == np.uint16 and raw.shape == (72, 112, 3)
        assert len(np.unique(raw)) > 1000  # noisy 16-bit samples, not 8-bit data scaled up


@pytest.mark.parametrize('case', sorted(CASES))
def test_cache_gives_the_png_samples_bit_for_bit(cached_set, case):
    png, cache = dataset(cached_set, **CASES[case]), dataset(cached_set, cache=True, **CASES[case])
    assert png.patches == cache.patches and len(png) == len(cache) > 0
    for index in range(len(png)):
        for seed in (0, 1):  # the same random crop and flips from the same seed
            random.seed(seed)
            a = png[index]
            random.seed(seed)
            assert_same_items(a, cache[index])


@pytest.mark.parametrize('size', [SIZE, 7])  # OpenCV converts colour to gray differently in a 7 x 7 image
@pytest.mark.parametrize('color', ['rgb', 'gray'])
@pytest.mark.parametrize('cache', [False, True])
def test_patches_are_the_crops_of_the_full_decoded_images(cached_set, cache, color, size):
    """Both paths crop before normalising where that is exact; the result must equal the full image read as
    before, then cropped."""
    ds = dataset(cached_set, cache=cache, gt_size=size, patch_stride=STRIDE, color=color)
    channels = 3 if color == 'rgb' else 1
    assert len(ds) == 3 * {SIZE: 4 * 7, 7: 6 * 10}[size]  # 3 images; the last row / column is flush
    for index in range(len(ds)):
        idx, top, left = ds.patches[index]
        item = ds[index]
        for key in ('lq', 'gt', 'lq_l', 'lq_r'):
            full, _ = read_image(ds.samples[idx][key], channels=channels)
            expected = to_sample({key: full[top:top + size, left:left + size]})[key]
            assert torch.equal(item[key], expected), (index, key)
        dmap = np.load(ds.samples[idx]['defocus']).astype(np.float32)[top:top + size, left:left + size]
        assert torch.equal(item['defocus'][0], torch.from_numpy(dmap))


def test_stored_scores_skip_the_start_up_pass(cached_set, monkeypatch):
    expected = dataset(cached_set, **RELEASE).patches

    def no_scoring(*args):
        raise AssertionError('scores recomputed')

    monkeypatch.setattr(dpdd_dataset, 'grid_scores', no_scoring)
    assert dataset(cached_set, cache=True, **RELEASE).patches == expected
    with pytest.raises(AssertionError, match='recomputed'):  # png path, or a grid the cache has no scores for
        dataset(cached_set, cache=True, **dict(RELEASE, patch_stride=STRIDE + 1))


def test_cache_script_caches_exact_samples_and_redoes_only_changed_files(tmp_path):
    write_tiny_set(tmp_path / 'data')
    data, out = tmp_path / 'data', tmp_path / 'cache'
    load_script('cache_dpdd').main(['--dataroot', str(data), '--out', str(out), '--workers', '2', '--gt-size', '40'])
    for src in data.glob('train_*/*/*.png'):
        npy = np.load(out / src.relative_to(data).parent / (src.name + '.npy'))
        raw = decode_raw(src.read_bytes())
        assert npy.dtype == raw.dtype and np.array_equal(npy, raw), src
    manifest = json.loads((out / 'dpdd_cache.json').read_text())['files']
    scored = sorted(k for k, v in manifest.items() if 'scores' in v)
    assert scored == [f'train_c/target/{n}.png' for n in ('frame_0000', 'frame_0001', 'odd')]
    assert write_cache(str(data), str(out), gt_size=40) == {'cached': 0, 'unchanged': 12}
    target = data / 'train_c' / 'target' / 'odd.png'
    cv2.imwrite(str(target), np.full((72, 112, 3), 7, np.uint8))
    assert write_cache(str(data), str(out), gt_size=40) == {'cached': 1, 'unchanged': 11}
    assert np.load(out / 'train_c' / 'target' / 'odd.png.npy').max() == 7
    # another score grid is added to the stored one, not put in its place
    assert write_cache(str(data), str(out), gt_size=32)['cached'] == 3
    scores = json.loads((out / 'dpdd_cache.json').read_text())['files']['train_c/target/odd.png']['scores']
    assert sorted(scores) == ['32/204/3', '40/204/3']


def _copy(cached_set, tmp_path):
    shutil.copytree(cached_set / 'data', tmp_path / 'data')  # copy2 keeps the times the manifest recorded
    shutil.copytree(cached_set / 'cache', tmp_path / 'cache')
    return tmp_path


def test_missing_cache_names_the_option(cached_set, tmp_path):
    root = _copy(cached_set, tmp_path)
    shutil.rmtree(root / 'cache')
    with pytest.raises(FileNotFoundError, match=r'cache folder not found: .*cache \(option cache_root\)'):
        dataset(root, cache=True, **RELEASE)
    (root / 'cache').mkdir()
    with pytest.raises(FileNotFoundError, match=r'manifest not found: .*dpdd_cache.json \(option cache_root\)'):
        dataset(root, cache=True, **RELEASE)


def test_uncached_stale_or_corrupt_files_are_named(cached_set, tmp_path):
    root = _copy(cached_set, tmp_path)
    dataset(root, cache=True, **RELEASE)  # the copy is valid
    # a file the cache does not know
    folders = ('train_c/source', 'train_c/target', 'train_l/source', 'train_r/source')
    new = [root / 'data' / f / 'zz_new.png' for f in folders] + [root / 'data/train_defocus/zz_new.npy']
    for path in new:
        shutil.copy2(path.parent / ('odd' + path.suffix), path)
    with pytest.raises(FileNotFoundError, match=r'train_c/source/zz_new.png is not in the DPDD cache'):
        dataset(root, cache=True, **RELEASE)
    for path in new:
        path.unlink()
    # a source file changed after caching
    target = root / 'data' / 'train_l' / 'source' / 'odd.png'
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    with pytest.raises(ValueError, match=r'Stale DPDD cache \(option cache_root\): .*train_l/source/odd.png changed'):
        dataset(root, cache=True, **RELEASE)
    shutil.copy2(cached_set / 'data' / 'train_l' / 'source' / 'odd.png', target)
    # a truncated or missing .npy
    npy = root / 'cache' / 'train_r' / 'source' / 'frame_0001.png.npy'
    npy.write_bytes(npy.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r'Corrupt DPDD cache file .*train_r/source/frame_0001.png.npy'):
        dataset(root, cache=True, **RELEASE)
    npy.unlink()
    with pytest.raises(FileNotFoundError, match=r'cache file missing: .*train_r/source/frame_0001.png.npy'):
        dataset(root, cache=True, **RELEASE)
    # overwritten with garbage of the same size after the start-up check: the read names the file
    shutil.copy2(cached_set / 'cache' / 'train_r' / 'source' / 'frame_0001.png.npy', npy)
    ds = dataset(root, cache=True, **RELEASE)
    npy.write_bytes(b'\0' * npy.stat().st_size)
    index = next(i for i, p in enumerate(ds.patches) if ds.samples[p[0]]['lq_r'].endswith('frame_0001.png'))
    with pytest.raises(ValueError, match=r'Corrupt DPDD cache file .*frame_0001.png.npy'):
        ds[index]
    # an unreadable manifest
    (root / 'cache' / 'dpdd_cache.json').write_text('{"files": ')
    with pytest.raises(
            ValueError, match=r'Cannot read the DPDD cache manifest .*dpdd_cache.json \(option '
            r'cache_root\)'):
        dataset(root, cache=True, **RELEASE)


def test_cache_needs_dataroot_and_disk_backend(cached_set):
    with pytest.raises(ValueError, match='cache_root needs option dataroot'):
        DPDDDataset(
            dict(
                phase='train',
                dataroot_lq=str(cached_set / 'data/train_c/source'),
                dataroot_gt=str(cached_set / 'data/train_c/target'),
                cache_root=str(cached_set / 'cache')))
    with pytest.raises(ValueError, match="io_backend type 'lmdb'"):
        dataset(cached_set, cache=True, io_backend={'type': 'lmdb', 'db_paths': ['x']})
