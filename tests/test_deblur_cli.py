"""The defocusgan-deblur command: bit depth in = bit depth out, folders, tiling without seams, --tile auto,
--half, --compile, clear errors. Tests meant for the CPU pass --device cpu (they also run on GPU hosts); the GPU
paths have their own tests, skipped without CUDA."""
import copy
import cv2
import math
import numpy as np
import pytest
import torch
import yaml
from conftest import run_python

from defocusgan_plugin.archs.defocusgan_arch import DefocusGANGenerator
from defocusgan_plugin.deblur import AutoTiler, auto_tile_size, deblur_tensor, half_dtype, main

pytestmark = pytest.mark.usefixtures('one_thread')  # tiny tensors (conftest.one_thread)

NET = {'type': 'DefocusGANGenerator', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': [8, 8, 8]}


def _generator(mean_residual=0.03, image=None):
    """A small generator with random weights whose correction has a trained network's size (the real one starts as
    the identity): the mean |output - input| on ``image`` (default: 48 x 48 noise) is ``mean_residual``."""
    torch.manual_seed(0)
    net = DefocusGANGenerator(**{k: v for k, v in NET.items() if k != 'type'}).eval()
    torch.nn.init.normal_(net.conv_last.weight, std=0.02)
    x = torch.rand(1, 3, 48, 48) if image is None else image
    with torch.no_grad():
        scale = mean_residual / (net(x) - x).abs().mean().item()
        net.conv_last.weight.mul_(scale)
        net.conv_last.bias.mul_(scale)
    return net


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    """(checkpoint, option file, network) of a small generator in BasicSR's checkpoint format."""
    folder = tmp_path_factory.mktemp('weights')
    net = _generator()
    torch.save({'params': net.state_dict()}, folder / 'net_g.pth')
    with open(folder / 'train.yml', 'w') as f:
        yaml.safe_dump({'network_g': NET}, f)
    return str(folder / 'net_g.pth'), str(folder / 'train.yml'), net


@pytest.fixture(scope='module')
def photo(synthetic_root):
    """A blurred test image of the synthetic set (16-bit BGR, 96 px on the longer side)."""
    return cv2.imread(str(sorted((synthetic_root / 'test_c' / 'source').glob('*.png'))[0]), cv2.IMREAD_UNCHANGED)


def _run(args, weights):
    return main([*args, '--weights', weights[0], '--opt', weights[1], '--device', 'cpu'])


@pytest.mark.parametrize('dtype, ext', [(np.uint8, '.png'), (np.uint16, '.png'), (np.uint8, '.jpg')])
def test_round_trip_keeps_bit_depth_size_and_matches_the_network(tmp_path, weights, photo, dtype, ext):
    img = (photo // 257).astype(np.uint8) if dtype == np.uint8 else photo
    src = tmp_path / f'blurred{ext}'
    cv2.imwrite(str(src), img)
    _run([str(src), '-o', str(tmp_path / 'out')], weights)
    out = cv2.imread(str(tmp_path / 'out' / src.name), cv2.IMREAD_UNCHANGED)
    assert out.dtype == dtype and out.shape == img.shape
    # the file holds the network's result for the decoded input, quantised to the input's depth
    peak = 255.0 if dtype == np.uint8 else 65535.0
    decoded = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)[..., ::-1] / peak
    x = torch.from_numpy(decoded.transpose(2, 0, 1).astype(np.float32).copy())[None]
    expected = deblur_tensor(weights[2], x)[0].clamp(0, 1).numpy().transpose(1, 2, 0)[..., ::-1] * peak
    tolerance = 6 if ext == '.jpg' else 1  # JPEG re-encodes lossily
    assert np.abs(out.astype(np.float64) - expected).mean() < tolerance
    assert np.abs(out.astype(np.float64) - img).mean() > 0.015 * peak  # and the network did change the image
    if dtype == np.uint16:
        assert np.any(out % 257)  # real 16-bit values, not 8-bit ones scaled up


def test_gray_stays_gray_and_folders_keep_their_layout(tmp_path, weights, photo):
    (tmp_path / 'in' / 'sub').mkdir(parents=True)
    cv2.imwrite(str(tmp_path / 'in' / 'a.png'), photo)
    cv2.imwrite(str(tmp_path / 'in' / 'sub' / 'gray.png'), cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY))
    (tmp_path / 'in' / 'notes.txt').write_text('not an image')
    _run([str(tmp_path / 'in'), '-o', str(tmp_path / 'out')], weights)
    assert cv2.imread(str(tmp_path / 'out' / 'a.png'), cv2.IMREAD_UNCHANGED).shape == photo.shape
    gray = cv2.imread(str(tmp_path / 'out' / 'sub' / 'gray.png'), cv2.IMREAD_UNCHANGED)
    assert gray.shape == photo.shape[:2] and gray.dtype == np.uint16
    assert not (tmp_path / 'out' / 'notes.txt').exists()


def test_tiled_equals_whole_image_above_45_db(tmp_path):
    # a 300 x 400 photo (neither side a multiple of the tile stride), defocused, as 16-bit PNG
    import skimage.data
    rgb = cv2.GaussianBlur(skimage.data.chelsea()[:, :400].astype(np.float32) / 255.0, (0, 0), 2.0)
    src = tmp_path / 'big.png'
    cv2.imwrite(str(src), np.round(rgb[..., ::-1] * 65535).astype(np.uint16))
    # a correction of a trained network's size on this very image: 0.2 mean |change|, not tiny by construction
    net = _generator(0.2, torch.from_numpy(rgb.transpose(2, 0, 1).copy())[None])
    torch.save({'params': net.state_dict()}, tmp_path / 'net_g.pth')
    with open(tmp_path / 'train.yml', 'w') as f:
        yaml.safe_dump({'network_g': NET}, f)
    weights = (str(tmp_path / 'net_g.pth'), str(tmp_path / 'train.yml'))

    def deblurred(name, *args):
        _run([str(src), '-o', str(tmp_path / name), *args], weights)
        return cv2.imread(str(tmp_path / name / 'big.png'), cv2.IMREAD_UNCHANGED) / 65535.0

    def psnr(a, b):
        return 10 * math.log10(1.0 / np.mean((a - b)**2))

    whole = deblurred('whole')
    assert np.abs(whole - rgb[..., ::-1]).mean() > 0.1  # the network really changes the image
    tiled = psnr(whole, deblurred('tiled', '--tile', '128', '--tile-overlap', '32'))
    assert 45 < tiled < 200, tiled  # close, yet really computed in tiles
    # without overlap the seams show
    assert psnr(whole, deblurred('seams', '--tile', '128', '--tile-overlap', '0')) < tiled - 6


def test_default_architecture_and_console_entry(tmp_path, photo):
    torch.manual_seed(0)
    torch.save({'params_ema': DefocusGANGenerator().state_dict(), 'params': {}}, tmp_path / 'net_g.pth')
    cv2.imwrite(str(tmp_path / 'x.png'), photo[:40, :48])
    proc = run_python([
        '-m', 'defocusgan_plugin.deblur',
        str(tmp_path / 'x.png'), '-o',
        str(tmp_path / 'out'), '--weights',
        str(tmp_path / 'net_g.pth'), '--half', '--device', 'cpu'
    ], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '--half needs a CUDA device' in proc.stderr  # said, then run in fp32
    out = cv2.imread(str(tmp_path / 'out' / 'x.png'), cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint16 and np.array_equal(out, photo[:40, :48])  # params_ema used: an identity at init


def test_clear_errors(tmp_path, weights, photo, capsys):
    cv2.imwrite(str(tmp_path / 'x.png'), photo)

    def error(args):
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 2
        return capsys.readouterr().err

    assert 'Input not found' in error([str(tmp_path / 'nope.png'), '-o', str(tmp_path), '--weights', weights[0]])
    assert 'overwrite an input' in error(
        [str(tmp_path / 'x.png'), '-o',
         str(tmp_path), '--weights', weights[0], '--opt', weights[1]])
    msg = error([str(tmp_path / 'x.png'), '-o', str(tmp_path / 'o'), '--weights', weights[0]])
    assert 'does not match DefocusGANGenerator' in msg and '--opt' in msg  # small weights, default arch
    assert 'Checkpoint not found' in error(
        [str(tmp_path / 'x.png'), '-o',
         str(tmp_path / 'o'), '--weights',
         str(tmp_path / 'none.pth')])
    assert 'tile-overlap' in error([
        str(tmp_path / 'x.png'), '-o',
        str(tmp_path / 'o'), '--weights', weights[0], '--opt', weights[1], '--tile', '32', '--tile-overlap', '32'
    ])
    assert "no 'params_ema' entry" in error([
        str(tmp_path / 'x.png'), '-o',
        str(tmp_path / 'o'), '--weights', weights[0], '--opt', weights[1], '--param-key', 'params_ema'
    ])
    assert "or 'auto'" in error(
        [str(tmp_path / 'x.png'), '-o',
         str(tmp_path / 'o'), '--weights', weights[0], '--tile', 'big'])


def test_half_picks_bf16_where_supported(monkeypatch):
    assert half_dtype(torch.device('cpu')) is None  # the CLI then says so and runs in fp32 (tested above)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: True)
    assert half_dtype(torch.device('cuda')) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: False)
    assert half_dtype(torch.device('cuda:1')) == torch.float16


def test_auto_tile_size_fits_the_free_memory():
    mib = 2**20
    assert auto_tile_size(100, 100, 1000, 100 * mib) == 0  # 10 MB needed, 70 MB usable: whole image
    side = auto_tile_size(2000, 3000, 1000, 100 * mib, align=16, overlap=64)
    assert side % 16 == 0 and side**2 * 1000 <= 0.7 * 100 * mib < (side + 16)**2 * 1000
    with pytest.raises(ValueError, match='tile-overlap'):
        auto_tile_size(2000, 3000, 1000, mib, align=16, overlap=64)  # 27 px tiles cannot hold the overlap


def test_tile_auto_on_the_cpu(tmp_path, weights, photo):
    tiler = AutoTiler(weights[2], torch.device('cpu'), 64)
    assert tiler(1024, 700) == 0 and tiler(1120, 1680) == 1024
    cv2.imwrite(str(tmp_path / 'x.png'), photo)
    _run([str(tmp_path / 'x.png'), '-o', str(tmp_path / 'auto'), '--tile', 'auto'], weights)
    _run([str(tmp_path / 'x.png'), '-o', str(tmp_path / 'whole')], weights)
    assert np.array_equal(
        cv2.imread(str(tmp_path / 'auto' / 'x.png'), cv2.IMREAD_UNCHANGED),
        cv2.imread(str(tmp_path / 'whole' / 'x.png'), cv2.IMREAD_UNCHANGED))


def test_compile_flag(tmp_path, weights, photo, monkeypatch, capsys):
    # torch.compile's default (inductor) backend needs minutes of C++ compilation on a CPU: the dynamo trace with the
    # 'eager' backend checks the wiring; a failing compilation must end with a clear error
    calls, real_compile = [], torch.compile

    def traced(net, **kwargs):
        calls.append(net)
        return real_compile(net, backend='eager', **kwargs)

    monkeypatch.setattr(torch, 'compile', traced)
    cv2.imwrite(str(tmp_path / 'x.png'), photo[:32, :32])
    tiny = {
        'type': 'EDSR',
        'num_in_ch': 3,
        'num_out_ch': 3,
        'num_feat': 4,
        'num_block': 1,
        'upscale': 1,
        'img_range': 1.0
    }
    from basicsr.archs import build_network
    torch.manual_seed(0)
    torch.save({'params': build_network(dict(tiny)).state_dict()}, tmp_path / 'tiny.pth')
    with open(tmp_path / 'tiny.yml', 'w') as f:
        yaml.safe_dump({'network_g': tiny}, f)
    tiny_weights = (str(tmp_path / 'tiny.pth'), str(tmp_path / 'tiny.yml'))
    _run([str(tmp_path / 'x.png'), '-o', str(tmp_path / 'compiled'), '--compile'], tiny_weights)
    _run([str(tmp_path / 'x.png'), '-o', str(tmp_path / 'eager')], tiny_weights)
    assert len(calls) == 1
    compiled, eager = (cv2.imread(str(tmp_path / d / 'x.png'), cv2.IMREAD_UNCHANGED) for d in ('compiled', 'eager'))
    assert np.abs(compiled.astype(int) - eager).max() <= 1

    def broken(net, **kwargs):

        def fail(x):
            raise RuntimeError('backend exploded')

        return fail

    monkeypatch.setattr(torch, 'compile', broken)
    with pytest.raises(SystemExit):
        _run([str(tmp_path / 'x.png'), '-o', str(tmp_path / 'broken'), '--compile'], tiny_weights)
    err = capsys.readouterr().err
    assert '--compile' in err and 'backend exploded' in err and 'without --compile' in err


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')


@needs_cuda
@pytest.mark.parametrize('extra', [['--half'], ['--tile', 'auto'], ['--half', '--tile', 'auto']])
def test_gpu_paths_match_the_cpu_result(tmp_path, weights, photo, extra):
    cv2.imwrite(str(tmp_path / 'x.png'), photo)
    _run([str(tmp_path / 'x.png'), '-o', str(tmp_path / 'cpu')], weights)
    main([
        str(tmp_path / 'x.png'), '-o',
        str(tmp_path / 'gpu'), '--weights', weights[0], '--opt', weights[1], '--device', 'cuda', *extra
    ])
    cpu, gpu = (cv2.imread(str(tmp_path / d / 'x.png'), cv2.IMREAD_UNCHANGED) / 65535.0 for d in ('cpu', 'gpu'))
    tolerance = 2e-2 if '--half' in extra else 1e-3  # bf16 keeps ~3 significant digits; TF32 convolutions
    assert np.abs(cpu - gpu).mean() < tolerance / 4 and np.abs(cpu - gpu).max() < 4 * tolerance


@needs_cuda
def test_auto_tile_measures_gpu_memory(weights):
    tiler = AutoTiler(copy.deepcopy(weights[2]).cuda(), torch.device('cuda'), 64)
    assert tiler(64, 64) == 0
    assert tiler.bytes_per_pixel > 0
    free, _ = torch.cuda.mem_get_info()
    huge = int(math.sqrt(free / tiler.bytes_per_pixel)) * 2  # needs ~4x the free memory whole
    side = tiler(huge, huge)
    assert 0 < side < huge and side % weights[2].pad_multiple == 0
