"""Real DP pairs with depth (DPPairsDataset, the Sdirt layouts), NaN ground truth, the constant floor, the cue's
(and the joint optimiser's search) options for real captures, and test_dp_maps_sdirt.yml end to end."""
import cv2
import numpy as np
import pytest
import torch
from conftest import run_test, tiny_options

from defocusgan_plugin.archs.defocus_map_arch import DEFAULT_MATCH_PSF, DefocusMapNet
from defocusgan_plugin.data.dp_pairs_dataset import DPPairsDataset, read_depth
from defocusgan_plugin.data.dp_synthesis import synthesize_dp
from defocusgan_plugin.data.dpdd_dataset import DPDDDataset
from defocusgan_plugin.metrics.defocus_map_metric import (calculate_aiwe1, calculate_aiwe2, calculate_constant_floor,
                                                          calculate_spearman_error)
from defocusgan_plugin.models.map_validation_model import MapValidationModel
from defocusgan_plugin.ops.dp_joint import DEFAULT_SEARCH, DPJointSolver, cross_defocus
from defocusgan_plugin.ops.kernel_bank import ParametricKernelBank

pytestmark = pytest.mark.usefixtures('one_thread')

H, W = 16, 24


def _views(folder, rng, h=H, w=W):
    folder.mkdir(parents=True, exist_ok=True)
    for side in 'lr':
        cv2.imwrite(str(folder / f'{side}.png'), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _grey_rgba(grey):
    return np.dstack([grey, grey, grey, np.full_like(grey, 255)])


@pytest.fixture
def sdirt(tmp_path):
    """The three Sdirt layouts and a flat pair, 24x16 views; returns (root, depth in metres per scene)."""
    rng = np.random.default_rng(0)
    root = tmp_path / 'sdirt'
    # box: 3x the views' size (the real one is 6000x4000 for 768x512); left half 0.8 m, right half 2 m
    box = np.where(np.arange(3 * W)[None] < 3 * W // 2, 20, 51) * np.ones((3 * H, 1), int)  # 20/255*10 = 0.78 m
    _views(root / 'box' / '001', rng)
    cv2.imwrite(str(root / 'box' / '001' / 'd.png'), _grey_rgba(box.astype(np.uint8)))
    # iphone: views' size, grey 255 (= 10 m: no measurement) in the top row
    iphone = np.full((H, W), 40, np.uint8)
    iphone[0] = 255
    _views(root / 'casual' / 'iphone' / '001', rng)
    cv2.imwrite(str(root / 'casual' / 'iphone' / '001' / 'd.png'), _grey_rgba(iphone))
    # orbbec: 16-bit millimetres, 0 = no measurement
    orbbec = np.full((H, W), 1500, np.uint16)
    orbbec[5, 7] = 0
    _views(root / 'casual' / 'orbbec' / '001', rng)
    cv2.imwrite(str(root / 'casual' / 'orbbec' / '001' / 'd.png'), orbbec)
    _views(root / 'flat' / '001' / '0600' / 'f4', rng)
    return root, {'box': box * 10 / 255, 'iphone': 400 / 255, 'orbbec': 1.5}


def test_sdirt_layouts_give_the_signed_inverse_depth_target(sdirt):
    root, depth = sdirt
    ds = DPPairsDataset(dict(dataroot=str(root), depth_format='sdirt'))
    items = {s['lq_path'].split('/')[-1]: s for s in (ds[i] for i in range(len(ds)))}
    assert sorted(items) == ['box_001', 'casual_iphone_001', 'casual_orbbec_001', 'flat_001_0600_f4']
    assert 'defocus' not in items['flat_001_0600_f4']  # a pair without d.png is still an item
    box = items['box_001']
    assert box['lq'].shape == (6, H, W) and box['bit_depth'] == 8 and box['defocus'].shape == (1, H, W)
    assert torch.allclose(box['lq_c'], 0.5 * (box['lq_l'] + box['lq_r']))
    assert torch.equal(box['lq'], torch.cat([box['lq_l'], box['lq_r']]))
    swapped = DPPairsDataset(dict(dataroot=str(root / 'box'), swap_views=True))[0]
    assert torch.equal(swapped['lq_l'], box['lq_r']) and torch.equal(swapped['lq_r'], box['lq_l'])
    # behind the 1 m focal plane positive, in front negative: 1/z_f - 1/z, each half one depth after area resizing
    target = box['defocus'][0].numpy()
    near, far = 1 - 255 / 200, 1 - 255 / 510
    np.testing.assert_allclose(target[:, :W // 2], near, rtol=1e-5)
    np.testing.assert_allclose(target[:, W // 2:], far, rtol=1e-5)
    assert near < 0 < far
    iphone = items['casual_iphone_001']['defocus'][0].numpy()
    assert np.isnan(iphone[0]).all()  # grey 255 = 10 m: excluded
    np.testing.assert_allclose(iphone[1:], 1 - 1 / depth['iphone'], rtol=1e-5)
    orbbec = items['casual_orbbec_001']['defocus'][0].numpy()
    assert np.isnan(orbbec[5, 7]) and np.isfinite(orbbec).sum() == H * W - 1
    np.testing.assert_allclose(orbbec[np.isfinite(orbbec)], 1 - 1 / 1.5, rtol=1e-5)


def test_options_focus_range_border_scale_and_depthless_pairs(sdirt):
    root, _ = sdirt
    opt = dict(dataroot=[str(root / 'box'), str(root / 'casual')], focus_distance=2.0, depth_min=1.0, border=2)
    ds = DPPairsDataset(dict(opt, require_depth=True))
    assert len(ds) == 3  # no flat pair under these roots
    box = ds[0]['defocus'][0].numpy()
    assert np.isnan(box[:2]).all() and np.isnan(box[-2:]).all() and np.isnan(box[:, :2]).all()
    inner = box[2:-2, 2:-2]
    assert np.isnan(inner[:, :W // 2 - 2]).all()  # 0.78 m <= depth_min
    np.testing.assert_allclose(inner[:, W // 2 - 2:], 0.5 - 255 / 510, rtol=1e-5)  # 1/2 m - 1/2 m: in focus
    half = DPPairsDataset(dict(dataroot=str(root), require_depth=True, scale=0.5, border=2))
    assert len(half) == 3  # the flat pair has no depth
    sample = half[0]
    assert sample['lq'].shape == (6, H // 2, W // 2) and sample['defocus'].shape == (1, H // 2, W // 2)
    assert np.isnan(sample['defocus'][0, 0].numpy()).all() and np.isfinite(sample['defocus'][0, 1, 1:-1].numpy()).all()
    hole = half[2]['defocus'][0].numpy()  # orbbec: the 2x2 footprint holding the 0-mm pixel is excluded, not mixed
    assert np.isnan(hole[2, 3]) and np.isfinite(hole[1:-1, 1:-1]).sum() == (H // 2 - 2) * (W // 2 - 2) - 1


def test_depth_reading_and_pairing_errors(sdirt, tmp_path):
    root, _ = sdirt
    metres = np.array([[0.5, np.nan], [3.0, 12.0]], np.float32)
    np.save(tmp_path / 'd.npy', metres)
    np.testing.assert_array_equal(read_depth(str(tmp_path / 'd.npy')), metres)
    with pytest.raises(ValueError, match='sdirt'):
        read_depth(str(tmp_path / 'd.npy'), 'sdirt')
    cv2.imwrite(str(tmp_path / 'rgb16.png'), np.zeros((4, 4, 3), np.uint16))
    with pytest.raises(ValueError, match='single-channel 16-bit'):
        read_depth(str(tmp_path / 'rgb16.png'))
    with pytest.raises(ValueError, match='depth_format'):
        DPPairsDataset(dict(dataroot=str(root), depth_format='kinect'))
    (root / 'box' / '001' / 'r.png').unlink()  # a one-sided pair is an error naming the file
    with pytest.raises(FileNotFoundError, match='l.png'):
        DPPairsDataset(dict(dataroot=str(root)))
    odd = tmp_path / 'odd'
    _views(odd, np.random.default_rng(1))
    cv2.imwrite(str(odd / 'r.png'), np.zeros((H, W + 2, 3), np.uint8))
    with pytest.raises(ValueError, match='differ in size'):
        DPPairsDataset(dict(dataroot=str(odd)))[0]
    with pytest.raises(ValueError, match='dataroot'):
        DPPairsDataset({})


def test_dpdd_reader_accepts_nan_as_missing_ground_truth(tmp_path):
    rng = np.random.default_rng(0)
    for folder in ('test_c/source', 'test_c/target', 'test_l/source', 'test_r/source', 'test_defocus'):
        (tmp_path / folder).mkdir(parents=True)
    for folder in ('test_c/source', 'test_c/target', 'test_l/source', 'test_r/source'):
        cv2.imwrite(str(tmp_path / folder / '0.png'), rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    dmap = np.ones((8, 8), np.float32)
    dmap[2, 3] = np.nan
    np.save(tmp_path / 'test_defocus' / '0.npy', dmap)
    ds = DPDDDataset(dict(dataroot=str(tmp_path), split='test', phase='test', input='dual'))
    got = ds[0]['defocus'][0].numpy()
    assert np.isnan(got[2, 3]) and np.isfinite(got).sum() == 63
    dmap[2, 3] = np.inf  # corrupt, not missing
    np.save(tmp_path / 'test_defocus' / '0.npy', dmap)
    with pytest.raises(ValueError, match='infinities'):
        ds[0]


def test_constant_floor_and_map_metrics_skip_missing_ground_truth():
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(12, 12))
    gt[0, :5] = np.nan
    pred = 3.0 - 2.0 * gt + 0.05 * rng.normal(size=gt.shape)  # affine (sign flipped) + noise
    floor, floor2 = calculate_constant_floor(pred, gt), calculate_constant_floor(pred, gt, order=2)
    valid = gt[np.isfinite(gt)]
    assert floor == pytest.approx(calculate_aiwe1(np.full_like(gt, 7.0), gt))
    assert floor2 == pytest.approx(valid.std(), rel=1e-6)  # the best constant's RMS error is the std
    assert calculate_aiwe1(pred, gt) < 0.1 * floor and calculate_aiwe2(pred, gt) < 0.1 * floor2
    assert calculate_spearman_error(pred, gt) < 0.05
    with pytest.raises(ValueError, match='order'):
        calculate_constant_floor(pred, gt, order=3)


def _real_like_pair(radius, gain=0.0, size=96):
    """A textured DP pair at a sub-pixel signed radius; the right view darkened by a horizontal gain ramp, as the
    vignetting of real captures."""
    rng = np.random.default_rng(3)
    image = cv2.GaussianBlur(rng.random((size, size, 3)).astype(np.float32), (0, 0), 1.0)
    image = (image - image.min()) / (image.max() - image.min())
    views = synthesize_dp(image, np.full((size, size), radius, np.float32))
    ramp = (1.0 - gain * np.linspace(0, 1, size, dtype=np.float32))[None, :, None]
    left, right = views['left'], views['right'] * ramp
    return torch.from_numpy(np.concatenate([left, right], 2).transpose(2, 0, 1))[None]


def test_cue_options_for_real_captures_recover_subpixel_radii_under_vignetting():
    """The default cue cannot tell radii between its steps or see past a gain difference between the views; the
    high-pass and sub-pixel options can (on a synthetic pair with a known radius)."""
    kw = dict(cap=2.0, num_feat=8, num_level=1, num_block=1, match_step=0.25, match_window=31)
    plain = DefocusMapNet(**kw).eval()
    real = DefocusMapNet(**kw, match_channel='green', match_highpass=7, match_subpixel=True).eval()
    inner = (slice(20, -20), slice(20, -20))
    errors = {}
    with torch.no_grad():
        for radius in (-0.8, 0.3, 1.3):
            x = _real_like_pair(radius, gain=0.3)
            for name, net in (('plain', plain), ('real', real)):
                errors.setdefault(name, []).append(abs(float(net(x)[0, 0][inner].median()) - radius))
    # the gain ramp alone drives the default cue to 0 everywhere; the options recover every radius
    assert max(errors['real']) < 0.25 and min(errors['plain']) > 0.25, errors
    with pytest.raises(ValueError, match='match_channel'):
        DefocusMapNet(in_ch=2, match_channel='green')


def test_joint_solver_search_options_for_real_captures():
    """The joint optimiser's range search and start (``search``) take the cue's real-capture options: on the
    gain-ramped sub-pixel pair they find the radius that the default search (mean channel, 0.5-px steps) misses."""
    bank = ParametricKernelBank(**DEFAULT_MATCH_PSF)  # the cue's kernel model, as test_dp_joint.yml's kernels
    real = dict(step=0.25, window=31, channel=1, highpass=7, subpixel=True)  # 1: green
    inner = (slice(20, -20), slice(20, -20))
    errors = {}
    for radius in (-0.8, 0.3, 1.3):
        x = _real_like_pair(radius, gain=0.3)
        for name, search in (('default', {}), ('real', real)):
            found, _ = cross_defocus(x[:, :3], x[:, 3:], bank, 2.0, **search)
            errors.setdefault(name, []).append(abs(float(found[0, 0][inner].median()) - radius))
    assert max(errors['real']) < 0.25 and max(errors['default']) > 0.25, errors
    solver = DPJointSolver(bank, preset='fast', search=dict(real, channel='green'))
    assert solver.search == real  # what the solver hands to cross_defocus
    assert DPJointSolver(bank).search == dict(DEFAULT_SEARCH, channel=None)
    for bad in ({'step': 0}, {'window': 8}, {'channel': 'grey'}, {'radius': 1}):
        with pytest.raises(ValueError, match='search takes'):
            DPJointSolver(bank, search=bad)


def test_sdirt_option_file_scores_maps_without_gt_end_to_end(tmp_path, monkeypatch):
    """test_dp_maps_sdirt.yml through the plugin's test entry point on two synthetic scenes in the Sdirt layout:
    maps saved per scene, map metrics and the floor logged, no image metric without gt."""
    rng = np.random.default_rng(0)
    root = tmp_path / 'sdirt'
    size = 64
    depth = np.where(np.arange(size)[None] < size // 2, 0.7, 2.5) * np.ones((size, 1))
    coc = 2.0 * (1.0 - 1.0 / depth)  # signed radius (px) proportional to the target
    for scene in ('001', '002'):
        image = cv2.GaussianBlur(rng.random((size, size, 3)).astype(np.float32), (0, 0), 1.0)
        image = (image - image.min()) / (image.max() - image.min())
        views = synthesize_dp(image, coc.astype(np.float32))
        folder = root / 'casual' / 'iphone' / scene
        folder.mkdir(parents=True)
        for side, key in (('l', 'left'), ('r', 'right')):
            cv2.imwrite(str(folder / f'{side}.png'), (views[key][..., ::-1] * 255 + 0.5).astype(np.uint8))
        cv2.imwrite(str(folder / 'd.png'), _grey_rgba(np.round(depth * 25.5).astype(np.uint8)))
    over = {
        'network_map:num_feat': 8,
        'network_map:num_level': 1,
        'network_map:num_block': 1,
        'network_map:match_window': 15,
        'datasets:test_1:border': 4
    }
    scored = []
    validate = MapValidationModel.nondist_validation

    def recording(self, *args, **kwargs):
        validate(self, *args, **kwargs)
        scored.append(dict(self.metric_results))

    monkeypatch.setattr(MapValidationModel, 'nondist_validation', recording)
    run_test(tiny_options('test_dp_maps_sdirt.yml', tmp_path, root, over), tmp_path)
    results = tmp_path / 'results' / 'dp_maps_sdirt'
    maps = sorted((results / 'defocus_maps' / 'Sdirt_real_dp').glob('*.npy'))
    assert [p.name for p in maps] == ['casual_iphone_001.npy', 'casual_iphone_002.npy']
    assert np.load(maps[0]).shape == (size // 2, size // 2)  # scale: 0.5
    values, = scored
    assert set(values) == {'aiwe1', 'aiwe2', 'spearman', 'floor_aiwe1', 'floor_aiwe2'}  # no image metric without gt
    assert values['aiwe1'] < 0.5 * values['floor_aiwe1'] and values['spearman'] < 0.3, values
