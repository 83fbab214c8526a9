"""The defocusgan-dp command and its pair finder: DP pairs found in every layout, outputs at the input's bit depth, a
map whose sign follows the true CoC, raw frames preprocessed as DPRawPixel4Dataset does, clear errors (exit code 2,
the file named, nothing written deleted). Tiny 64x96 pairs and a few solver iterations, on the CPU."""
import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT

from defocusgan_plugin.data.dp_raw_dataset import DPRawPixel4Dataset
from defocusgan_plugin.data.dp_synthesis import embedded_scenes, sample_coc, synthesize_dp
from defocusgan_plugin.data.fake_pixel4 import write_fake_pixel4
from defocusgan_plugin.dp_cli import REAL_SEARCH, PairReader, dp_joint_options, main, parse_args
from defocusgan_plugin.models.map_validation_model import diverging_colormap
from defocusgan_plugin.utils.dp_pairs import DPPair, depth_path, find_dp_pairs
from defocusgan_plugin.utils.options import read_yaml

pytestmark = pytest.mark.usefixtures('one_thread')  # tiny tensors (conftest.one_thread)

FAST = ['--preset', 'fast', '--max-radius', '6', '--iters', '5', '--device', 'cpu']  # a few iterations
RAW_CROP = (48, 64)  # 6x8 cells of 8 px in a 72x96 frame


def _touch(root, *names):
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b'')


# ---------------------------------------------------------------------- finding pairs
def test_find_dp_pairs_reads_every_layout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _touch(tmp_path, 'root/a/b/l.png', 'root/a/b/r.png', 'root/a/b/d.png', 'root/c/left.png', 'root/c/right.png',
           'root/x_left.png', 'root/x_right.png', 'root/y_L.tif', 'root/y_R.tif', 'root/notes.txt', 'root/z.png',
           'one/q.png', 'one/w.png')
    assert find_dp_pairs('root') == [('a_b', 'root/a/b/l.png', 'root/a/b/r.png'),
                                     ('c', 'root/c/left.png', 'root/c/right.png'),
                                     ('x', 'root/x_left.png', 'root/x_right.png'),
                                     ('y', 'root/y_L.tif', 'root/y_R.tif')]
    # the pair's own folder: named after it; a folder reached twice (and its sub-folder) gives its pairs once
    assert find_dp_pairs(['root/a/b', 'root/a',
                          str(tmp_path / 'root/a/b')]) == [DPPair('b', 'root/a/b/l.png', 'root/a/b/r.png')]
    assert find_dp_pairs(['root/x_left.png']) == [('x', 'root/x_left.png', 'root/x_right.png')]  # partner beside
    assert find_dp_pairs(['one/q.png', 'one/w.png']) == [('q', 'one/q.png', 'one/w.png')]  # explicit LEFT RIGHT
    assert find_dp_pairs(['root/x_left.png', 'root/y_L.tif']) == [('x', 'root/x_left.png', 'root/x_right.png'),
                                                                  ('y', 'root/y_L.tif', 'root/y_R.tif')]
    # pairs of one name (two folders '001') are named after as many trailing folders as tell them apart
    _touch(tmp_path, 'p/001/l.png', 'p/001/r.png', 'q/001/s_left.png', 'q/001/s_right.png', 'q/001/l.png',
           'q/001/r.png')
    assert [pair.name for pair in find_dp_pairs(['p/001', 'q/001'])] == ['p_001', 'q_001', 's']
    assert depth_path('root/a/b/l.png') == 'root/a/b/d.png'
    assert depth_path('root/c/left.png') is None and depth_path('root/x_left.png') is None


@pytest.mark.parametrize('files, inputs, message', [
    (['s/l.png'], ['s'], r'One-sided DP input: s/l.png is a left view, but its right view \(r.png'),
    (['s/a_right.png'], ['s'], 's/a_right.png is a right view, but its left view'),
    (['s/a_left.png'], ['s/a_left.png'], r'its right view \(a_right.png or a_r.png\)'),
    (['s/a_l.png', 's/a_left.png', 's/a_r.png'], ['s'], 'both s/a_l.png and s/a_left.png are the left view'),
    (['s/z.png'], ['s/z.png'], 'Cannot tell which DP view s/z.png is'),
    (['s/a_right.png', 's/a_left.png'], ['s/a_right.png', 's/a_left.png'], 's/a_right.png is named as a right'),
    (['s/notes.txt'], ['s'], 'No DP pairs in s'),
    ([], ['missing'], 'Input not found: missing'),
])
def test_find_dp_pairs_errors_name_the_file(tmp_path, monkeypatch, files, inputs, message):
    monkeypatch.chdir(tmp_path)
    _touch(tmp_path, *files)
    with pytest.raises((FileNotFoundError, ValueError), match=message):
        find_dp_pairs(inputs)


# ---------------------------------------------------------------------- the command on PNG pairs
@pytest.fixture(scope='module')
def synthetic_pair():
    """A 64x96 DP pair rendered by the project's synthetic image formation: views, sharp target and signed CoC
    (-1.8 .. 4 px: both sides of the focal plane)."""
    scene = embedded_scenes(max_side=96)[0]
    image, inv_depth = scene['image'][:64, :96], scene['inv_depth'][:64, :96]
    coc = sample_coc(inv_depth, np.random.default_rng(0), 4.0, fill=(1.0, 1.0))
    return synthesize_dp(image, coc, np.random.default_rng(1))


def _write(path, rgb, peak, dtype):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = rgb[..., ::-1] if rgb.ndim == 3 else rgb
    assert cv2.imwrite(str(path), np.round(img * peak).astype(dtype))


def test_png_pairs_keep_their_bit_depth_and_the_map_follows_the_coc(tmp_path, synthetic_pair):
    views = synthetic_pair
    _write(tmp_path / 'in' / 'scene' / 'l.png', views['left'], 255, np.uint8)
    _write(tmp_path / 'in' / 'scene' / 'r.png', views['right'], 255, np.uint8)
    _write(tmp_path / 'in' / 'deep_left.png', views['left'], 65535, np.uint16)
    _write(tmp_path / 'in' / 'deep_right.png', views['right'], 65535, np.uint16)
    out = tmp_path / 'out'
    assert main([str(tmp_path / 'in'), '-o', str(out), '--threads', '1', *FAST]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(f'{n}_{s}' for n in ('scene', 'deep')
                                                           for s in ('aif.png', 'map.npy', 'map.png'))
    combined = views['combined'][..., ::-1]
    for name, dtype, peak in (('scene', np.uint8, 255), ('deep', np.uint16, 65535)):
        aif = cv2.imread(str(out / f'{name}_aif.png'), cv2.IMREAD_UNCHANGED)
        assert aif.dtype == dtype and aif.shape == (64, 96, 3)
        assert np.abs(aif / peak - combined).mean() < 0.05  # the scene's image, in the files' encoding
        defocus = np.load(out / f'{name}_map.npy')
        assert defocus.dtype == np.float32 and defocus.shape == (64, 96) and np.isfinite(defocus).all()
        # further behind the focal plane = larger signed radius, as the true CoC
        assert np.corrcoef(defocus.ravel(), views['coc'].ravel())[0, 1] > 0.5
        colored = cv2.imread(str(out / f'{name}_map.png'), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(colored, diverging_colormap(defocus, np.abs(defocus).max()))  # saturated at its max
    deep = cv2.imread(str(out / 'deep_aif.png'), cv2.IMREAD_UNCHANGED)
    assert np.any(deep % 257)  # real 16-bit values, not 8-bit ones scaled up


def test_explicit_gray_left_right_files_stay_gray(tmp_path, synthetic_pair):
    for number, side in enumerate(('left', 'right')):
        gray = cv2.cvtColor(synthetic_pair[side], cv2.COLOR_RGB2GRAY)
        _write(tmp_path / f'view{number}.png', gray, 255, np.uint8)
    out = tmp_path / 'out'
    main([str(tmp_path / 'view0.png'), str(tmp_path / 'view1.png'), '-o', str(out), '--map-range', '3', *FAST])
    aif = cv2.imread(str(out / 'view0_aif.png'), cv2.IMREAD_UNCHANGED)  # named after the left file
    assert aif.dtype == np.uint8 and aif.shape == (64, 96)
    defocus = np.load(out / 'view0_map.npy')
    assert defocus.shape == (64, 96)
    assert np.array_equal(cv2.imread(str(out / 'view0_map.png')), diverging_colormap(defocus, 3.0))


# ---------------------------------------------------------------------- raw frames
@pytest.fixture(scope='module')
def raw_root(tmp_path_factory):
    """A fake one-scene set in the Pixel-4 release layout: 72x96 frames, a 6x8 calibration of 3x3 kernels."""
    root = tmp_path_factory.mktemp('fake_pixel4')
    write_fake_pixel4(str(root), num_scenes=1, crop=RAW_CROP, seed=0)
    return root


def _raw_args(root, *extra):
    calib = root / 'calibration'
    return [
        '--raw', '--calib',
        str(calib / 'blur_kernels_left.npy'),
        str(calib / 'blur_kernels_right.npy'), '--grid', '6', '8', '--white-sheets',
        str(calib / 'white_sheet_left.png'),
        str(calib / 'white_sheet_right.png'), '--crop', *map(str, RAW_CROP), *extra
    ]


def test_raw_frames_are_preprocessed_as_the_dataset_does(raw_root):
    _, args = parse_args([str(raw_root), '-o', 'unused', *_raw_args(raw_root)])
    left, right, scale, depth = PairReader(args)(find_dp_pairs([str(raw_root)])[0])
    sample = DPRawPixel4Dataset({'dataroot': str(raw_root), 'crop': list(RAW_CROP)})[0]
    assert torch.equal(left[0], sample['lq_l']) and torch.equal(right[0], sample['lq_r'])
    assert scale == float(sample['norm_scale']) and depth == 16
    _, args = parse_args([str(raw_root), '-o', 'unused', '--raw', '--crop', *map(str, RAW_CROP)])  # no sheets
    left, right, scale, _ = PairReader(args)(find_dp_pairs([str(raw_root)])[0])
    plain = DPRawPixel4Dataset({'dataroot': str(raw_root), 'crop': list(RAW_CROP), 'vignetting': False})[0]
    assert torch.equal(left[0], plain['lq_l']) and torch.equal(right[0], plain['lq_r'])
    assert not torch.equal(right[0], sample['lq_r'])  # the sheets did correct the right view
    _, args = parse_args([str(raw_root), '-o', 'unused', '--raw', '--crop', '0', '0'])  # the whole frame
    left, right, _, _ = PairReader(args)(find_dp_pairs([str(raw_root)])[0])
    assert left.shape == (1, 1, 72, 96) and max(float(left.max()), float(right.max())) == 1.0


def test_raw_folder_with_calibration_end_to_end(tmp_path, raw_root):
    out = tmp_path / 'out'
    main([str(raw_root), '-o', str(out), *_raw_args(raw_root, '--max-radius', '2', '--iters', '3', '--device', 'cpu')])
    # the release layout's white sheets are calibration frames, not a scene
    assert sorted(p.name for p in out.iterdir()) == ['001_aif.png', '001_map.npy', '001_map.png']
    aif = cv2.imread(str(out / '001_aif.png'), cv2.IMREAD_UNCHANGED)
    gt = cv2.imread(str(raw_root / 'gt_all_in_focus_im' / '001_gt.png'), cv2.IMREAD_UNCHANGED)
    assert aif.dtype == np.uint16 and aif.shape == gt.shape == RAW_CROP
    assert abs(aif.mean() / gt.mean() - 1) < 0.1  # in the GT's units: the normalisation was multiplied back
    assert np.isfinite(np.load(out / '001_map.npy')).all()


# ---------------------------------------------------------------------- errors
def test_real_search_sets_the_solvers_search_for_png_views_only(capsys):
    _, args = parse_args(['l.png', 'r.png', '-o', 'out', '--real-search', '--preset', 'fast'])
    solver = dp_joint_options(args)['solver']
    assert solver['search'] == REAL_SEARCH and solver['search_scale'] == 0.5 and solver['preset'] == 'fast'
    assert 'search' not in dp_joint_options(parse_args(['l.png', 'r.png', '-o', 'out'])[1])['solver']
    # REAL_SEARCH is test_dp_maps_sdirt.yml's cue at that file's scale, its step in full-resolution pixels
    sdirt = read_yaml(ROOT / 'options' / 'test' / 'test_dp_maps_sdirt.yml')
    cue, scale = sdirt['network_map'], sdirt['datasets']['test_1']['scale']
    assert scale == solver['search_scale'] and REAL_SEARCH == {
        'step': cue['match_step'] / scale,
        'window': cue['match_window'],
        'channel': cue['match_channel'],
        'highpass': cue['match_highpass'],
        'subpixel': cue['match_subpixel']
    }
    with pytest.raises(SystemExit) as exc:
        parse_args(['frames', '-o', 'out', '--raw', '--real-search'])
    assert exc.value.code == 2 and '--real-search matches RGB PNG views' in capsys.readouterr().err


def test_bad_inputs_exit_2_naming_the_file_and_keep_what_was_written(tmp_path, synthetic_pair, raw_root, capsys):
    good = tmp_path / 'good'
    _write(good / 'l.png', synthetic_pair['left'], 255, np.uint8)
    _write(good / 'r.png', synthetic_pair['right'], 255, np.uint8)
    out = tmp_path / 'out'
    main([str(good), '-o', str(out), *FAST])
    written = sorted(p.name for p in out.iterdir())
    assert written == ['good_aif.png', 'good_map.npy', 'good_map.png']

    def error(*args):
        with pytest.raises(SystemExit) as exc:
            main([*args, '-o', str(out), *FAST])
        assert exc.value.code == 2
        return capsys.readouterr().err

    _write(tmp_path / 'small' / 'l.png', synthetic_pair['left'], 255, np.uint8)
    _write(tmp_path / 'small' / 'r.png', synthetic_pair['right'][:60], 255, np.uint8)
    assert 'differ in size' in error(str(tmp_path / 'small')) and str(tmp_path / 'small' / 'r.png') in error(
        str(tmp_path / 'small'))
    (tmp_path / 'lone').mkdir()
    _write(tmp_path / 'lone' / 'a_left.png', synthetic_pair['left'], 255, np.uint8)
    assert f"{tmp_path / 'lone' / 'a_left.png'} is a left view" in error(str(tmp_path / 'lone'))
    (tmp_path / 'broken').mkdir()
    (tmp_path / 'broken' / 'l.png').write_bytes(b'not a png')
    (tmp_path / 'broken' / 'r.png').write_bytes(b'not a png')
    assert f"Cannot decode image (corrupt or unsupported format): {tmp_path / 'broken' / 'l.png'}" in error(
        str(tmp_path / 'broken'))
    (tmp_path / 'empty').mkdir()
    assert f"No DP pairs in {tmp_path / 'empty'}" in error(str(tmp_path / 'empty'))
    # the views (cropped to 48x64) against a calibration measured on another frame
    msg = error(str(raw_root), *_raw_args(raw_root, '--frame-size', '96', '128'))
    assert 'are 48x64' in msg and '96x128' in msg and str(raw_root / '001_left.png') in msg
    calib = [str(raw_root / 'calibration' / f'blur_kernels_{s}.npy') for s in ('left', 'right')]
    assert f'{calib[0]} holds 48 kernels per view; give their grid with --grid' in error(str(good), '--calib', *calib)
    assert 'larger than the 72x96 frame of' in error(str(raw_root), '--raw', '--crop', '96', '128')
    assert sorted(p.name for p in out.iterdir()) == written  # nothing deleted
