"""Data layer: 16-bit reading, DPDD pairing, DP-aware augmentation, synthetic DP image formation."""
import cv2
import numpy as np
import pytest
import random
import torch

from defocusgan_plugin.data.dp_synthesis import linear_to_srgb, srgb_to_linear, synthesize_dp
from defocusgan_plugin.data.dpdd_dataset import DPDDDataset
from defocusgan_plugin.data.synthetic_dp_dataset import SyntheticDPDataset


def _write(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


def make_dpdd(root, split='train', n=2, size=(24, 32), dtype=np.uint16, names=None, seed=0):
    """A tiny DPDD-layout folder with random images; returns the arrays written (BGR, as stored)."""
    rng = np.random.default_rng(seed)
    peak = np.iinfo(dtype).max
    names = names or [f'img{i}' for i in range(n)]
    arrays = {}
    for name in names:
        for folder in (f'{split}_c/source', f'{split}_c/target', f'{split}_l/source', f'{split}_r/source'):
            img = rng.integers(0, peak, size=(*size, 3), endpoint=True).astype(dtype)
            _write(root / folder / f'{name}.png', img)
            arrays[(folder, name)] = img
    return arrays


def dpdd(root, **opt):
    base = dict(name='t', type='DPDDDataset', dataroot=str(root), phase='train', split='train', input='single')
    base.update(opt)
    return DPDDDataset(base)


def test_16bit_round_trip_is_exact(tmp_path):
    value = 12345  # not a multiple of 257: an 8-bit decode would lose it
    img = np.full((8, 8, 3), value, np.uint16)
    img[0, 0] = (1, 2, 3)
    for folder in ('val_c/source', 'val_c/target', 'val_l/source', 'val_r/source'):
        _write(tmp_path / folder / 'a.png', img)
    item = dpdd(tmp_path, phase='val', split='val')[0]
    restored = (item['gt'].numpy() * 65535.0).round().astype(np.uint16)
    assert restored[0, 4, 4] == value
    assert tuple(restored[:, 0, 0]) == (3, 2, 1)  # RGB order after BGR files
    assert item['lq'].dtype == torch.float32


def test_8bit_and_16bit_files_mix(tmp_path):
    make_dpdd(tmp_path, n=1, dtype=np.uint16, names=['a'])
    _write(tmp_path / 'train_c/target/a.png', np.full((24, 32, 3), 128, np.uint8))  # 8-bit target
    item = dpdd(tmp_path, phase='val')[0]
    assert torch.allclose(item['gt'], torch.full_like(item['gt'], 128 / 255))


def test_single_and_dual_inputs(tmp_path):
    make_dpdd(tmp_path)
    single = dpdd(tmp_path, phase='val')[0]
    assert single['lq'].shape == (3, 24, 32) and single['lq_l'].shape == (3, 24, 32)
    dual = dpdd(tmp_path, phase='val', input='dual')[0]
    assert dual['lq'].shape == (6, 24, 32)
    assert torch.equal(dual['lq'][:3], dual['lq_l']) and torch.equal(dual['lq'][3:], dual['lq_r'])
    assert torch.equal(dual['lq_c'], single['lq'])


def _chw(bgr):
    """A stored BGR uint16 array as the dataset returns it: RGB CHW float32 in [0, 1]."""
    return torch.from_numpy(bgr[..., ::-1].astype(np.float32) / 65535).permute(2, 0, 1)


@pytest.mark.parametrize('input_mode', ['single', 'dual'])
def test_hflip_swaps_views_and_vflip_keeps_them(tmp_path, monkeypatch, input_mode):
    """Every key of an item flips with the views: gt, lq (combined or concat(L, R)) and the defocus map."""
    arrays = make_dpdd(tmp_path, n=1, names=['a'])
    raw = {
        key: _chw(arrays[(f'train_{folder}', 'a')])
        for key, folder in (('lq', 'c/source'), ('gt', 'c/target'), ('l', 'l/source'), ('r', 'r/source'))
    }
    (tmp_path / 'train_defocus').mkdir()
    coc = np.random.default_rng(1).normal(0, 3, (24, 32)).astype(np.float32)
    np.save(tmp_path / 'train_defocus' / 'a.npy', coc)
    raw['defocus'] = torch.from_numpy(coc)[None]
    monkeypatch.setattr(random, 'random', lambda: 0.0)  # every allowed flip happens

    def check(item, flip, swap):
        left, right = (raw['r'], raw['l']) if swap else (raw['l'], raw['r'])
        expected = {
            'lq_l': left.flip(flip),
            'lq_r': right.flip(flip),
            'gt': raw['gt'].flip(flip),
            'defocus': raw['defocus'].flip(flip)
        }  # the signed CoC keeps its sign: depth does not change
        expected['lq'] = torch.cat([expected['lq_l'], expected['lq_r']
                                    ]) if input_mode == 'dual' else raw['lq'].flip(flip)
        if input_mode == 'dual':
            expected['lq_c'] = raw['lq'].flip(flip)
        assert set(expected) <= set(item)
        for key, value in expected.items():
            assert torch.allclose(item[key], value, atol=1e-6), key

    # the mirrored right view is the new left one
    check(dpdd(tmp_path, gt_size=None, use_hflip=True, use_vflip=False, input=input_mode)[0], -1, swap=True)
    check(dpdd(tmp_path, gt_size=None, use_hflip=False, use_vflip=True, input=input_mode)[0], -2, swap=False)


def test_rotation_refused_for_dual_input(tmp_path):
    make_dpdd(tmp_path)
    with pytest.raises(ValueError, match='use_rot'):
        dpdd(tmp_path, input='dual', use_rot=True)


def _locate(patch, full):
    """All (top, left) where the CHW ``patch`` equals a window of the CHW ``full`` image."""
    size_h, size_w = patch.shape[-2:]
    return [(top, left) for top in range(full.shape[-2] - size_h + 1) for left in range(full.shape[-1] - size_w + 1)
            if torch.equal(full[:, top:top + size_h, left:left + size_w], patch)]


def _window(full, top, left, size):
    return full[:, top:top + size, left:left + size]


def test_random_crop_is_shared_and_checked(tmp_path):
    make_dpdd(tmp_path)
    ds, full = dpdd(tmp_path, gt_size=16), dpdd(tmp_path, phase='val')
    random.seed(0)
    windows = set()
    for index in (0, 1) * 3:
        item, ref = ds[index], full[index]
        assert all(item[k].shape == (3, 16, 16) for k in ('lq', 'gt', 'lq_l', 'lq_r'))
        found = _locate(item['gt'], ref['gt'])
        assert len(found) == 1, found
        windows.add(found[0])
        for key in ('lq', 'lq_l', 'lq_r'):  # the same window of every image of the sample
            assert torch.equal(item[key], _window(ref[key], *found[0], 16)), key
    assert len(windows) > 1  # the window is random, not fixed
    with pytest.raises(ValueError, match='gt_size 64'):
        dpdd(tmp_path, gt_size=64)[0]


def test_pairing_mismatch_names_folders_and_file(tmp_path):
    make_dpdd(tmp_path, n=2)
    _write(tmp_path / 'train_c/source/extra.png', np.zeros((24, 32, 3), np.uint8))
    with pytest.raises(ValueError) as err:
        dpdd(tmp_path)
    msg = str(err.value)
    assert 'extra.png' in msg and 'train_c/source' in msg and 'train_c/target' in msg


def test_pairing_by_sorted_order_when_names_differ(tmp_path):
    make_dpdd(tmp_path, n=2, names=['x1', 'x2'])
    for folder in ('train_l/source', 'train_r/source'):
        for name in ('x1', 'x2'):
            suffix = folder[6].upper()
            (tmp_path / folder / f'{name}.png').rename(tmp_path / folder / f'{name}_{suffix}.png')
    ds = dpdd(tmp_path)
    assert [s['lq_l'].split('/')[-1] for s in ds.samples] == ['x1_L.png', 'x2_L.png']


def test_drop_least_sharp_patches(tmp_path):
    for folder in ('train_c/source', 'train_c/target', 'train_l/source', 'train_r/source'):
        img = np.zeros((16, 64, 3), np.uint8)
        img[:, 32:] = np.random.default_rng(0).integers(0, 255, (16, 32, 3))  # right half textured
        _write(tmp_path / folder / 'a.png', img)
    all_patches = dpdd(tmp_path, gt_size=16, patch_stride=16)
    kept = dpdd(tmp_path, gt_size=16, patch_stride=16, drop_least_sharp=0.5)
    assert len(all_patches) == 4 and len(kept) == 2
    assert sorted(p[2] for p in kept.patches) == [32, 48]  # the flat half was dropped


def test_defocus_maps_follow_crops(synthetic_root):
    ds, full = dpdd(synthetic_root, gt_size=16), dpdd(synthetic_root, phase='val', split='train')
    random.seed(0)
    windows = set()
    for index in (0, 3, 5):
        item, ref = ds[index], full[index]
        assert item['defocus'].shape == (1, 16, 16) and ref['defocus'].shape[-2:] == ref['gt'].shape[-2:]
        found = _locate(item['gt'], ref['gt'])
        assert len(found) == 1, found
        windows.add(found[0])
        assert torch.equal(item['defocus'], _window(ref['defocus'], *found[0], 16))  # the map of those pixels
    assert len(windows) == 3 and (0, 0) not in windows  # a map cropped at the corner would not pass


# ---------------------------------------------------------------------------- synthetic image formation
def _scene(h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.random((h // 4, w // 4, 3)).astype(np.float32)
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_NEAREST)  # blocky texture with sharp edges


def _grad_energy(img):
    return float(np.abs(np.diff(img, axis=1)).mean() + np.abs(np.diff(img, axis=0)).mean())


def _xshift(a, b, max_shift=6):
    """Horizontal shift s maximising the correlation of a(x) with b(x - s) (on x-derivatives: a sharper peak)."""
    a, b = np.diff(a.mean(2), axis=1), np.diff(b.mean(2), axis=1)
    scores = {
        s: float((a[:, max_shift:-max_shift] * np.roll(b, s, axis=1)[:, max_shift:-max_shift]).sum())
        for s in range(-max_shift, max_shift + 1)
    }
    return max(scores, key=scores.get)


def test_zero_coc_leaves_image_unchanged():
    img = _scene()
    out = synthesize_dp(img, np.zeros(img.shape[:2], np.float32), rng=None)
    for key in ('left', 'right', 'combined'):
        assert np.abs(out[key] - img).max() < 1e-4


def test_larger_coc_blurs_more():
    img = _scene()
    energies = [
        _grad_energy(synthesize_dp(img, np.full(img.shape[:2], r, np.float32))['combined'])
        for r in (0.0, 1.0, 2.5, 5.0)
    ]
    assert all(a > b for a, b in zip(energies, energies[1:])), energies


def test_disparity_sign_flips_across_focal_plane():
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.random((64, 96, 3)).astype(np.float32), (0, 0), 1.0)  # texture without a period
    behind = synthesize_dp(img, np.full(img.shape[:2], 4.0, np.float32))
    front = synthesize_dp(img, np.full(img.shape[:2], -4.0, np.float32))
    s_behind, s_front = _xshift(behind['left'], behind['right']), _xshift(front['left'], front['right'])
    assert s_behind > 0 > s_front and s_behind == -s_front


def test_combined_is_mean_of_views_in_linear_light():
    img = _scene()
    coc = np.tile(np.linspace(-4, 4, img.shape[1], dtype=np.float32), (img.shape[0], 1))
    out = synthesize_dp(img, coc, rng=np.random.default_rng(1))
    mean = 0.5 * (srgb_to_linear(out['left']) + srgb_to_linear(out['right']))
    assert np.abs(srgb_to_linear(out['combined']) - mean).max() < 1e-5
    assert np.abs(linear_to_srgb(srgb_to_linear(img)) - img).max() < 1e-5


def test_written_set_keeps_combined_equal_to_mean_of_views(synthetic_root):
    c, l_, r = (
        cv2.imread(str(synthetic_root / f'test_{f}/source/motorcycle_00.png'), cv2.IMREAD_UNCHANGED)
        for f in ('c', 'l', 'r'))
    assert c.dtype == np.uint16
    lin = [srgb_to_linear(x.astype(np.float32) / 65535) for x in (c, l_, r)]
    assert np.abs(lin[0] - 0.5 * (lin[1] + lin[2])).max() < 2e-4  # 16-bit quantisation only


def test_synthetic_dataset_items(tmp_path):
    opt = dict(
        name='s',
        type='SyntheticDPDataset',
        phase='val',
        gt_size=48,
        coc_max=4,
        max_side=96,
        num_samples=3,
        input='dual')
    ds = SyntheticDPDataset(opt)
    a, b = ds[1], ds[1]
    assert a['lq'].shape == (6, 48, 48) and a['gt'].shape == (3, 48, 48) and a['defocus'].shape == (1, 48, 48)
    assert torch.equal(a['lq'], b['lq'])  # val items are deterministic
    assert a['defocus'].abs().max() <= 4.0 + 1e-5
    with pytest.raises(ValueError, match='coc_max'):
        SyntheticDPDataset(dict(opt, coc_max=0))


def test_basicsr_paired_image_dataset_reads_the_written_set(synthetic_root):
    """The single-image path needs no plugin dataset: BasicSR's own PairedImageDataset pairs test_c/source with
    test_c/target by name (at 8 bits, as its imfrombytes decodes; DPDDDataset keeps the 16 bits)."""
    from basicsr.data.paired_image_dataset import PairedImageDataset
    dataset = PairedImageDataset({
        'phase': 'val',
        'io_backend': {
            'type': 'disk'
        },
        'scale': 1,
        'filename_tmpl': '{}',
        'dataroot_gt': str(synthetic_root / 'test_c' / 'target'),
        'dataroot_lq': str(synthetic_root / 'test_c' / 'source')
    })
    ours = DPDDDataset({'name': 'x', 'phase': 'val', 'dataroot': str(synthetic_root), 'split': 'test'})
    assert len(dataset) == len(ours) == 5
    item = dataset[0]  # BasicSR lists the folder unsorted: find the same file among ours
    ref = next(ours[i] for i in range(len(ours))
               if ours[i]['lq_path'].rsplit('/', 1)[-1] == item['lq_path'].rsplit('/', 1)[-1])
    assert item['lq'].shape == ref['lq'].shape
    assert (item['gt'] - ref['gt']).abs().max() < 1 / 255 + 1e-6  # the same image, rounded to 8 bits
