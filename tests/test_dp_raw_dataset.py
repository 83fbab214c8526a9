"""Raw DP captures in the Pixel-4 release layout: DPRawPixel4Dataset's preprocessing, the fake-set generator, the
calibrated kernel grid, and the joint optimiser end to end on a tiny fake set with both presets."""
import cv2
import numpy as np
import pytest
import re
import torch
from conftest import load_options, run_python, tiny_options

from defocusgan_plugin.data.dp_raw_dataset import DPRawPixel4Dataset
from defocusgan_plugin.data.fake_pixel4 import fake_calibration, fake_geometry, write_fake_pixel4
from defocusgan_plugin.ops.dp_joint import DPJointSolver, estimate_radius_range
from defocusgan_plugin.ops.kernel_bank import ResampledKernelBank, kernel_radii
from defocusgan_plugin.ops.psf import centered_grid

TINY_CROP = (96, 128)  # 6x8 cells of 16 px in a 144x192 frame


@pytest.fixture(scope='module')
def fake_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('fake_pixel4')
    write_fake_pixel4(str(root), num_scenes=2, crop=TINY_CROP, seed=0)
    return root


def write_u16(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.asarray(array, np.uint16))


def hand_made_set(root, frame=(6, 8), crop=(2, 4)):
    """Raw views with known values, flat white sheets 2:1, GT at the crop size and a defocus GT with a hole."""
    left = np.arange(frame[0] * frame[1]).reshape(frame) * 100 + 1000  # the first value is below the black level
    right = left // 2 + 1024
    write_u16(root / '007_left.png', left)
    write_u16(root / '007_right.png', right)
    write_u16(root / 'calibration' / 'white_sheet_left.png', np.full(frame, 1024 + 8000))
    write_u16(root / 'calibration' / 'white_sheet_right.png', np.full(frame, 1024 + 4000))
    write_u16(root / 'gt_all_in_focus_im' / '007_gt.png', np.full(crop, 6553))
    defocus = np.full(crop, 30000)
    defocus[0, 0] = 0  # no ground truth there
    write_u16(root / 'gt_defocus_map' / '007_gt.png', defocus)
    return left, right


# ---------------------------------------------------------------------- the dataset
def test_preprocessing_black_white_vignetting_crop_and_joint_max(tmp_path):
    left, right = hand_made_set(tmp_path)
    ds = DPRawPixel4Dataset({'dataroot': str(tmp_path), 'crop': [2, 4], 'vignetting_box': 3})
    sample = ds[0]
    view_l = np.clip(left - 1024, 0, None) / 16383.0  # signed subtraction, clipped, / (2^14 - 1)
    view_r = np.clip(right - 1024, 0, None) / 16383.0 * 2.0  # x box(white_l / white_r) = 2 (right view only)
    top, x0 = (6 - 2) // 2, (8 - 4) // 2  # the release's centre crop offsets
    view_l, view_r = view_l[top:top + 2, x0:x0 + 4], view_r[top:top + 2, x0:x0 + 4]
    peak = max(view_l.max(), view_r.max())  # joint maximum
    assert float(sample['norm_scale']) == pytest.approx(peak, rel=1e-6)
    assert np.allclose(sample['lq_l'][0].numpy(), view_l / peak, atol=1e-6)
    assert np.allclose(sample['lq_r'][0].numpy(), view_r / peak, atol=1e-6)
    assert np.allclose(sample['lq_c'].numpy(), 0.5 * (sample['lq_l'] + sample['lq_r']).numpy())
    assert np.allclose(sample['gt'].numpy(), 6553 / 65535.0)  # GT units: value / 65535, not normalised
    defocus = sample['defocus'][0].numpy()
    assert np.isnan(defocus[0, 0]) and np.allclose(defocus[~np.isnan(defocus)], 30000 / 65535.0)
    assert sample['lq_path'].endswith('007') and sample['bit_depth'] == 16
    whole = DPRawPixel4Dataset({'dataroot': str(tmp_path), 'crop': None, 'vignetting': False, 'normalize': 'none'})
    with pytest.raises(ValueError, match='expected the crop'):  # GT of the crop does not fit the whole frame
        whole[0]
    for folder in ('gt_all_in_focus_im', 'gt_defocus_map'):
        (tmp_path / folder / '007_gt.png').unlink()
    unscaled = whole[0]
    assert np.allclose(unscaled['lq_l'][0].numpy(), np.clip(left - 1024, 0, None) / 16383.0, atol=1e-6)
    assert float(unscaled['norm_scale']) == 1.0 and 'gt' not in unscaled and 'defocus' not in unscaled
    assert 'centre crop 2x4 (rows 2:4, cols 2:6) of the 6x8 frame' in ds.describe()
    assert '(raw - 1024) / 16383' in ds.describe()


def test_vignetting_ratio_is_a_box_average_of_the_white_sheets(tmp_path):
    hand_made_set(tmp_path)
    white_r = np.full((6, 8), 1024 + 4000)
    white_r[:, 4:] = 1024 + 8000  # ratio 2 on the left half, 1 on the right half
    write_u16(tmp_path / 'calibration' / 'white_sheet_right.png', white_r)
    ratio = DPRawPixel4Dataset({'dataroot': str(tmp_path), 'crop': None, 'vignetting_box': 3}).vignetting
    assert ratio[0, 0] == pytest.approx(2.0) and ratio[0, 7] == pytest.approx(1.0)
    assert ratio[3, 3] == pytest.approx((2 * 2 + 1) / 3)  # columns 2, 3, 4 of the 3x3 box


@pytest.mark.parametrize('case, message', [
    ('eight_bit', '16-bit'),
    ('no_right', '007_right.png is missing'),
    ('big_crop', 'larger than the 6x8 frame'),
    ('gt_size', 'expected the crop'),
    ('no_white', 'white sheet'),
])
def test_bad_raw_data_gives_clear_errors(tmp_path, case, message):
    hand_made_set(tmp_path)
    opt = {'dataroot': str(tmp_path), 'crop': [2, 4]}
    if case == 'eight_bit':
        cv2.imwrite(str(tmp_path / '007_left.png'), np.zeros((6, 8), np.uint8))
    elif case == 'no_right':
        (tmp_path / '007_right.png').unlink()
    elif case == 'big_crop':
        opt['crop'] = [8, 8]
    elif case == 'gt_size':
        write_u16(tmp_path / 'gt_all_in_focus_im' / '007_gt.png', np.zeros((3, 3)))
    elif case == 'no_white':
        (tmp_path / 'calibration' / 'white_sheet_left.png').unlink()
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        DPRawPixel4Dataset(opt)[0]


# ---------------------------------------------------------------------- the fake set
def test_fake_set_has_the_release_layout_and_a_pixel4_like_calibration(fake_root):
    geometry = fake_geometry(TINY_CROP)
    assert geometry['frame'] == (144, 192) and geometry['top'] == 24 and geometry['left'] == 32
    assert fake_geometry()['frame'] == (1512, 2016) and fake_geometry()['kernel_size'] == 61  # the default
    for name in ('001_left.png', '001_right.png', '002_left.png', 'calibration/white_sheet_left.png',
                 'calibration/white_sheet_right.png'):
        img = cv2.imread(str(fake_root / name), cv2.IMREAD_UNCHANGED)
        assert img.dtype == np.uint16 and img.shape == (144, 192) and img.max() <= 16383, name
    for name in ('gt_all_in_focus_im/001_gt.png', 'gt_defocus_map/002_gt.png'):
        img = cv2.imread(str(fake_root / name), cv2.IMREAD_UNCHANGED)
        assert img.dtype == np.uint16 and img.shape == TINY_CROP, name
    left, right = (np.load(fake_root / 'calibration' / f'blur_kernels_{side}.npy') for side in ('left', 'right'))
    size = geometry['kernel_size']
    assert left.shape == right.shape == (48, size, size) and np.allclose(left.sum((1, 2)), 1, atol=1e-5)
    x, _ = centered_grid(size, torch.float64)
    centroid = [float((torch.tensor(k, dtype=torch.float64) * x).sum(-1).sum(-1).mean()) for k in (left, right)]
    assert centroid[0] < centroid[1]  # the left kernel's mass lies left of the right one's, as in the release
    white_l, white_r = (
        cv2.imread(str(fake_root / 'calibration' / f'white_sheet_{s}.png'), -1).astype(float) - 1024
        for s in ('left', 'right'))
    ratio = white_l / white_r
    assert 1.0 < ratio.min() < 1.1 and 1.3 < ratio.max() < 1.45
    full = kernel_radii(fake_calibration(fake_geometry()).sum(0))  # the default, full-size calibration
    assert 11 < float(full.min()) and float(full.max()) < 14.5 and float(full.max() - full.min()) > 1
    sample = DPRawPixel4Dataset({'dataroot': str(fake_root), 'crop': list(TINY_CROP)})[0]
    assert sample['lq_l'].shape == (1, 96, 128) and float(sample['lq_l'].max()) <= 1.0
    assert np.isnan(sample['defocus'].numpy()).any() and not np.isnan(sample['defocus'].numpy()).all()


def test_calibrated_grid_refuses_views_of_another_size(fake_root):
    bank = ResampledKernelBank.from_npy(
        str(fake_root / 'calibration' / 'blur_kernels_left.npy'),
        str(fake_root / 'calibration' / 'blur_kernels_right.npy'),
        grid=[6, 8],
        frame_size=list(TINY_CROP))
    assert bank.grid == (6, 8) and bank.frame_size == TINY_CROP and bank.radii[0] > 0  # estimated radius
    solver = DPJointSolver(bank, preset='fast')
    frame = DPRawPixel4Dataset({'dataroot': str(fake_root), 'crop': None, 'vignetting': False})
    left, right = (torch.from_numpy(frame.read_view(frame.scenes[0], side))[None, None] for side in ('left', 'right'))
    with pytest.raises(ValueError, match='96x128 .*views are 144x192'):
        solver(left, right)


def test_one_sided_scenes_spend_no_layers_across_zero():
    radius = torch.cat([torch.linspace(2, 20, 960), torch.linspace(-6, -2, 40)])[None, None, None]
    confident = torch.ones_like(radius, dtype=torch.bool)
    low, high = estimate_radius_range(radius, confident, one_sided=0.1)
    assert low == 0.0 and high > 19
    assert estimate_radius_range(radius, confident)[0] < -3  # without the option: across zero
    two_sided = torch.cat([torch.linspace(2, 20, 700), torch.linspace(-6, -2, 300)])[None, None, None]
    assert estimate_radius_range(two_sided, confident, one_sided=0.1)[0] < -5


# ---------------------------------------------------------------------- end to end
TINY_SOLVER = {
    'dp_joint:solver:max_radius': 3.0,
    'dp_joint:kernels:frame_size': list(TINY_CROP),
    'datasets:test_1:crop': list(TINY_CROP)
}


@pytest.mark.parametrize('preset, levels', [('fast', [{
    'scale': 0.5,
    'iters': 20
}, {
    'scale': 1.0,
    'iters': 5
}]), ('release', [{
    'scale': 1.0,
    'iters': 10
}])])
def test_pixel4_option_file_runs_end_to_end(tmp_path, fake_root, preset, levels):
    overrides = dict(
        TINY_SOLVER, **{
            'dp_joint:solver:preset': preset,
            'dp_joint:solver:levels': levels,
            'dp_joint:kernels:left': str(fake_root / 'calibration/blur_kernels_left.npy'),
            'dp_joint:kernels:right': str(fake_root / 'calibration/blur_kernels_right.npy')
        })
    opt_path = tiny_options('test_dp_joint_pixel4.yml', tmp_path, fake_root, overrides)
    proc = run_python(['-m', 'defocusgan_plugin.test', '-opt', str(opt_path)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    name = load_options(opt_path)['name']
    vis = tmp_path / 'results' / name / 'visualization' / 'Pixel4'
    aif = cv2.imread(str(vis / f'001_{name}.png'), cv2.IMREAD_UNCHANGED)
    assert aif.dtype == np.uint16 and aif.shape == TINY_CROP
    gt = cv2.imread(str(fake_root / 'gt_all_in_focus_im' / '001_gt.png'), cv2.IMREAD_UNCHANGED)
    assert abs(aif.mean() / gt.mean() - 1) < 0.1  # the GT's units: multiplied back from the normalised views
    maps = tmp_path / 'results' / name / 'defocus_maps' / 'Pixel4'
    assert sorted(p.name for p in maps.glob('*.npy')) == ['001.npy', '002.npy']
    assert np.load(maps / '001.npy').shape == TINY_CROP
    log = proc.stdout + proc.stderr
    lines = [line for line in log.splitlines() if re.search(r'# (psnr|aiwe1|input_psnr): ', line)]
    assert len(lines) == 3, log[-3000:]
    for line in lines:
        assert f'preset {preset}' in line or 'input_psnr' in line
        assert 'centre crop 96x128' in line and '(raw - 1024) / 16383' in line
    assert 'reference radius' in log
