"""The DefocusGAN release networks: exact parameter counts and state-dict layout, the forward against an independent
transcription of REFERENCE.md ("Release networks, exact forward"), and the authors' checkpoint format through
defocusgan-deblur and the test pipeline."""
import cv2
import importlib.util
import math
import numpy as np
import pytest
import torch
from basicsr.data import build_dataset
from conftest import run_test, tiny_options
from pathlib import Path
from torch.nn import functional as F

from defocusgan_plugin.archs.defocus_map_release_arch import DefocusMapReleaseNet
from defocusgan_plugin.archs.defocusgan_release_arch import DefocusGANReleaseGenerator
from defocusgan_plugin.deblur import main as deblur_main
from defocusgan_plugin.metrics.protocol import tensor2img16
from defocusgan_plugin.utils.checkpoint import load_state_dict_from
from defocusgan_plugin.utils.options import parse_options

pytestmark = pytest.mark.usefixtures('one_thread')  # tiny tensors (conftest.one_thread)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / 'tests' / 'data' / 'release'


def listed(name):
    """(name, shape) pairs of a release state dict as listed in tests/data/release/<name>.tsv."""
    rows = []
    for line in (DATA / f'{name}.tsv').read_text().splitlines():
        if line.strip():
            key, shape = line.split('\t')
            rows.append((key, tuple(int(v) for v in shape.strip('()').split(',') if v.strip())))
    return rows


def random_state(rows, gain, seed=0):
    """Random weights in exactly the listed names and shapes; conv weights ~ N(0, gain^2 / fan_in), biases small.
    ``gain`` keeps activations of order 1 through the deep residual paths (outputs neither constant nor clipped)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in rows:
        std = gain / math.sqrt(shape[1] * shape[2] * shape[3]) if len(shape) == 4 else 0.05
        state[key] = torch.randn(shape, generator=gen) * std
    return state


GEN_ROWS, MAP_ROWS = listed('defocusgan_generator_state_dict'), listed('defocusgan_map_net_state_dict')


# ------------------------------------------------------------------------------ transcription of REFERENCE.md
def _conv(sd, name, x, padding=1):
    return F.conv2d(x, sd[f'{name}.weight'], sd.get(f'{name}.bias'), padding=padding)


def _rcab(sd, name, x):
    y = _conv(sd, f'{name}.body.2', F.relu(_conv(sd, f'{name}.body.0', x)))
    att = F.relu(_conv(sd, f'{name}.body.3.conv_du.0', y.mean(dim=(2, 3), keepdim=True), 0))
    return y * torch.sigmoid(_conv(sd, f'{name}.body.3.conv_du.2', att, 0)) + x


def _body(sd, layer, branch, setting, x):
    """body(k): k <= 1: 1x1 conv + ReLU only; else floor(k / 3) RCABs + conv3x3 with a skip, then max-pool 2 (layers
    1-4) or nearest x2 (layers 5-8)."""
    name = f'layer{layer}.{branch}'
    if setting <= 1:
        return F.relu(_conv(sd, f'{name}.0', x, 0))
    y = x
    for j in range(setting // 3):
        y = _rcab(sd, f'{name}.0.body.{j}', y)
    y = _conv(sd, f'{name}.0.body.{setting // 3}', y) + x
    if layer <= 4:
        return F.max_pool2d(y, 2)
    return y.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


def _pool(x, like):
    return F.adaptive_avg_pool2d(x, like.shape[-2:])


def _double_conv(sd, name, x):
    return F.relu(F.conv2d(F.relu(F.conv2d(x, sd[f'{name}.0.weight'], padding=1)), sd[f'{name}.2.weight'], padding=1))


def reference_generator(sd, img, dmap=None, w=0.0, settings=(1, 4, 7, 10), edges=(0.0, 1.9, 4.2, 6.2)):
    """The release generator written from the text (no module of the plugin); returns the output and the
    intermediate tensors t1, d4, t4, d8, t8, u2, u4."""

    def layer(n, i, x):
        return _body(sd, n, i, settings[i], x)

    def gate(i, step):  # masks at 1/step by nearest neighbour: every step-th pixel
        if dmap is None:
            return 1.0
        mag = dmap.abs().max(dim=1, keepdim=True)[0][..., ::step, ::step]
        upper = edges[i + 1] if i + 1 < len(edges) else float('inf')
        mask = ((mag >= edges[i]) & (mag < upper)).float()
        return w * mask + (1 - w)

    h = F.relu(_conv(sd, 'head.0', img))
    t1 = 0
    for i in range(len(settings)):
        o1 = layer(1, i, h)
        o2 = layer(2, i, _pool(h, o1) + o1)
        o3 = layer(3, i, _pool(h, o2) + o2)
        o4 = layer(4, i, _pool(h, o3) + o3)
        o5 = layer(5, i, _pool(h, o4) + o4)
        o6 = layer(6, i, _pool(h, o3) + o5)
        o7 = layer(7, i, _pool(h, o6) + o6 + o2)
        o8 = layer(8, i, _pool(h, o7) + o7 + o1)
        t1 = t1 + gate(i, 1) * o8
    d4 = _double_conv(sd, 'unetdown4.maxpool_conv.1.double_conv', F.max_pool2d(t1, 4))
    t4 = 0
    for i in range(len(settings)):
        p1 = layer(1, i, d4)
        p2 = layer(2, i, _pool(d4, p1) + p1)
        p7 = layer(7, i, _pool(d4, p2) + p2)
        p8 = layer(8, i, _pool(d4, p7) + p7 + p1)
        t4 = t4 + gate(i, 4) * p8
    d8 = _double_conv(sd, 'unetdown2.maxpool_conv.1.double_conv', F.max_pool2d(t4, 2))
    t8 = d8
    for i in range(len(settings)):
        q1 = layer(1, i, d8)
        t8 = t8 + gate(i, 8) * layer(7, i, _pool(d8, q1) + q1)
    up = F.interpolate(t8, size=d4.shape[-2:], mode='bilinear', align_corners=True)  # x2: sizes are multiples
    u2 = _double_conv(sd, 'unetup2.conv.double_conv', torch.cat([d4, up], dim=1))
    u4 = F.conv_transpose2d(t4 + u2, sd['unetup4.up.0.weight'], sd['unetup4.up.0.bias'], stride=2)
    u4 = _double_conv(sd, 'unetup4.up.1.double_conv', u4)
    u4 = F.conv_transpose2d(u4, sd['unetup4.up.2.weight'], sd['unetup4.up.2.bias'], stride=2)
    inter = dict(t1=t1, d4=d4, t4=t4, d8=d8, t8=t8, u2=u2, u4=u4)
    return torch.sigmoid(_conv(sd, 'tail_hard.0', h + u4 + t1)), inter


def module_intermediates(net):
    """Forward hooks collecting the module's t1, d4, t4, d8, t8, u2, u4 (the inputs and outputs of the U-Net parts;
    their random-weight magnitudes differ by orders, so the output alone would hide errors in the small ones)."""
    found = {}

    def hook(names):

        def store(module, inputs, output):
            found.update(zip(names, (*inputs, output)))

        return store

    net.unetdown4.register_forward_hook(hook(('t1', 'd4')))
    net.unetdown2.register_forward_hook(hook(('t4', 'd8')))
    net.unetup2.register_forward_hook(hook(('t8', 'd4_skip', 'u2')))
    net.unetup4.register_forward_hook(hook(('t4_plus_u2', 'u4')))
    return found


def reference_map_net(sd, views, settings=(1, 4, 4, 7), clamp=24.0):
    """The release map network written from the text."""
    h = F.relu(_conv(sd, 'head.0', views))
    total = h
    for i, k in enumerate(settings):
        o1 = _body(sd, 1, i, k, h)
        o2 = _body(sd, 2, i, k, _pool(h, o1) + o1)
        o3 = _body(sd, 3, i, k, _pool(h, o2) + o2)
        o4 = _body(sd, 4, i, k, _pool(h, o3) + o3)
        o5 = _body(sd, 5, i, k, _pool(h, o4) + o4)
        o6 = _body(sd, 6, i, k, _pool(h, o5) + o5 + o3)
        o7 = _body(sd, 7, i, k, _pool(h, o6) + o6 + o2)
        total = total + _body(sd, 8, i, k, _pool(h, o7) + o7 + o1)
    return _conv(sd, 'tail_hard.0', total).clamp(-clamp, clamp)


# ------------------------------------------------------------------------------------------------------ tests
def test_parameter_counts_match_the_release():
    gen, mapnet = DefocusGANReleaseGenerator(), DefocusMapReleaseNet()
    assert sum(p.numel() for p in gen.parameters()) == 4_934_531
    assert sum(p.numel() for p in mapnet.parameters()) == 3_306_755
    # every parameter but connect / connect2 (two 3x3 64->64 convs) takes part in the forward
    gen.requires_grad_(True)
    gen(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32) * 8, 0.5).mean().backward()
    unused = {name: p.numel() for name, p in gen.named_parameters() if p.grad is None}
    assert set(unused) == {'connect.weight', 'connect.bias', 'connect2.weight', 'connect2.bias'}
    assert sum(unused.values()) == 73_856
    assert not any(p.requires_grad for n, p in DefocusGANReleaseGenerator().named_parameters() if 'connect' in n)


@pytest.mark.parametrize('net, rows', [(DefocusGANReleaseGenerator, GEN_ROWS), (DefocusMapReleaseNet, MAP_ROWS)])
def test_state_dict_names_and_shapes_equal_the_release_listing(net, rows):
    assert len(rows) == (468 if net is DefocusGANReleaseGenerator else 324)
    assert [(k, tuple(v.shape)) for k, v in net().state_dict().items()] == rows  # same names, shapes and order


@pytest.mark.parametrize('case', ['guided', 'no_map', 'guided_w0'])
def test_generator_equals_the_transcribed_release_forward(case):
    torch.manual_seed(0)
    sd = random_state(GEN_ROWS, gain=0.3)
    net = DefocusGANReleaseGenerator().eval()
    net.load_state_dict(sd, strict=True)
    img = torch.rand(1, 3, 64, 64)
    dmap = (torch.rand(1, 3, 64, 64) * 2 - 1) * 9  # every |CoC| range present at every scale
    with torch.no_grad():
        if case == 'guided':
            assert (net(img, dmap, 0.3) - net(img)).abs().max() > 1e-2  # the masks really change the output
            args = (dmap, 0.3)
        elif case == 'no_map':
            args = ()
        else:  # w = 0: the gates are all 1, as without a map
            args = (dmap, 0.0)
        found = module_intermediates(net)
        out = net(img, *args)
        # the release's layers see BGR (OpenCV reads): the transcription runs on the swapped image
        ref, inter = reference_generator(sd, img.flip(1), *args)
        out_rgb_order = DefocusGANReleaseGenerator(channel_order='rgb').eval()
        out_rgb_order.load_state_dict(sd)
        direct = out_rgb_order(img, *args)
    assert out.shape == (1, 3, 64, 64) and 0.15 < out.std() < 0.45  # neither constant nor saturated
    assert (out - ref.flip(1)).abs().max() < 1e-5
    assert (direct - reference_generator(sd, img, *args)[0]).abs().max() < 1e-5
    for name, value in inter.items():
        assert (found[name] - value).abs().max() <= 1e-5 * value.abs().max(), name


def test_map_network_equals_the_transcribed_release_forward():
    torch.manual_seed(0)
    sd = random_state(MAP_ROWS, gain=0.7)
    net = DefocusMapReleaseNet().eval()
    net.load_state_dict(sd, strict=True)
    assert net.cap == 24.0
    views = torch.rand(1, 6, 64, 64)
    with torch.no_grad():
        bgr_views = views.unflatten(1, (2, 3)).flip(2).flatten(1, 2)  # what the release's layers see
        out, ref = net(views), reference_map_net(sd, bgr_views).flip(1)
        rgb_net = DefocusMapReleaseNet(channel_order='rgb').eval()
        rgb_net.load_state_dict(sd)
        assert (rgb_net(views) - reference_map_net(sd, views)).abs().max() < 1e-5 * 24
    assert out.shape == (1, 3, 64, 64)
    clamped = (out.abs() == 24).float().mean()
    assert 0 < clamped < 0.5  # the clamp is exercised, most values are not clipped
    assert (out - ref).abs().max() < 1e-5 * 24


def test_any_size_is_padded_to_multiples_of_16_and_cropped():
    torch.manual_seed(0)
    net = DefocusGANReleaseGenerator().eval()
    net.load_state_dict(random_state(GEN_ROWS, gain=0.3))
    assert net.pad_multiple == 16
    img, dmap = torch.rand(1, 3, 40, 52), torch.rand(1, 3, 40, 52) * 8
    with torch.no_grad():
        out = net(img, dmap, 0.5)
        padded = net(F.pad(img, (0, 12, 0, 8), mode='replicate'), F.pad(dmap, (0, 12, 0, 8), mode='replicate'), 0.5)
    assert out.shape == (1, 3, 40, 52) and torch.allclose(out, padded[..., :40, :52], atol=1e-6)
    with torch.no_grad():
        assert DefocusMapReleaseNet()(torch.rand(2, 6, 20, 36)).shape == (2, 3, 20, 36)
    with pytest.raises(ValueError, match='mask_edges'):
        DefocusGANReleaseGenerator(mask_edges=[0, 1.9, 4.2])
    with pytest.raises(ValueError, match='channel_order'):
        DefocusGANReleaseGenerator(channel_order='BGR')
    with pytest.raises(ValueError, match='channel_order'):
        DefocusMapReleaseNet(num_in_ch=2, channel_order='bgr')


@pytest.fixture(scope='module')
def release_checkpoint(tmp_path_factory):
    """A random-weights generator checkpoint in the release's format ({'state_dict': ...}) and its network."""
    folder = tmp_path_factory.mktemp('release')
    sd = random_state(GEN_ROWS, gain=0.3, seed=1)
    torch.save({'state_dict': sd}, folder / '90_models.pth')
    net = DefocusGANReleaseGenerator().eval()
    net.load_state_dict(sd)
    return folder / '90_models.pth', net


@pytest.mark.parametrize('depth', [8, 16])
def test_deblur_cli_recognises_and_runs_release_weights(tmp_path, release_checkpoint, depth):
    path, net = release_checkpoint
    rng = np.random.default_rng(0)
    peak, dtype = (255, np.uint8) if depth == 8 else (65535, np.uint16)
    img = cv2.GaussianBlur(rng.random((64, 48, 3)), (0, 0), 2)
    cv2.imwrite(str(tmp_path / 'x.png'), np.round(img * peak).astype(dtype))
    assert deblur_main(
        [str(tmp_path / 'x.png'), '-o',
         str(tmp_path / 'out'), '--weights',
         str(path), '--device', 'cpu']) == 0
    out = cv2.imread(str(tmp_path / 'out' / 'x.png'), cv2.IMREAD_UNCHANGED)
    decoded = cv2.imread(str(tmp_path / 'x.png'), cv2.IMREAD_UNCHANGED)[..., ::-1] / peak
    with torch.no_grad():
        expected = net(torch.from_numpy(decoded.transpose(2, 0, 1).astype(np.float32).copy())[None])
    expected = expected[0].numpy().transpose(1, 2, 0)[..., ::-1] * peak
    assert out.dtype == dtype and out.shape == (64, 48, 3)
    assert np.abs(out - expected).max() <= 0.5 + 1e-3 * peak / 255  # the module's output, rounded


def test_deblur_cli_rejects_the_release_map_network(tmp_path, capsys):
    torch.save({'state_dict': random_state(MAP_ROWS, 0.7)}, tmp_path / 'map.pth')
    cv2.imwrite(str(tmp_path / 'x.png'), np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(SystemExit):
        deblur_main([
            str(tmp_path / 'x.png'), '-o',
            str(tmp_path / 'out'), '--weights',
            str(tmp_path / 'map.pth'), '--device', 'cpu'
        ])
    assert 'defocus-map network' in capsys.readouterr().err


def test_state_dict_loader_accepts_every_format(tmp_path):
    sd = {'a.weight': torch.ones(2), 'b': torch.zeros(1)}
    torch.save({'state_dict': sd, 'epoch': 90}, tmp_path / 'release.pth')
    torch.save({'params': {f'module.{k}': v for k, v in sd.items()}, 'params_ema': sd}, tmp_path / 'basicsr.pth')
    torch.save(sd, tmp_path / 'plain.pth')
    assert load_state_dict_from(str(tmp_path / 'release.pth'))[1] == 'state_dict'
    assert load_state_dict_from(str(tmp_path / 'release.pth'), 'params')[1] == 'state_dict'  # BasicSR's default key
    with pytest.raises(KeyError, match="no 'params'"):
        load_state_dict_from(str(tmp_path / 'release.pth'), 'params', fallback=False)
    assert load_state_dict_from(str(tmp_path / 'basicsr.pth'))[1] == 'params_ema'
    state, key = load_state_dict_from(str(tmp_path / 'basicsr.pth'), 'params')
    assert key == 'params' and list(state) == ['a.weight', 'b']  # 'module.' stripped
    state, key = load_state_dict_from(str(tmp_path / 'plain.pth'), 'params')
    assert key is None and torch.equal(state['a.weight'], sd['a.weight'])


@pytest.mark.parametrize('param_key', ['state_dict', 'params'])
def test_test_pipeline_loads_the_release_checkpoint(tmp_path, synthetic_root, release_checkpoint, param_key):
    path, net = release_checkpoint
    opt_path = tiny_options(
        'test_defocusgan_release.yml', tmp_path, synthetic_root, {
            'num_gpu': 0,
            'path:pretrain_network_g': str(path),
            'path:param_key_g': param_key,
            'val:metrics': {
                'psnr': {
                    'type': 'calculate_dpdd_psnr'
                }
            }
        })
    run_test(opt_path, tmp_path)  # 'params' (BasicSR's default) falls back to the release's 'state_dict'
    opt, _ = parse_options(str(tmp_path), is_train=False, argv=['-opt', str(opt_path)])
    dataset = build_dataset(dict(opt['datasets']['test_1'], phase='test'))
    folder = tmp_path / 'results' / opt['name'] / 'visualization' / 'DPDD_test'
    assert len(dataset) == 5
    for item in dataset:
        name = Path(item['lq_path']).stem
        saved = cv2.imread(str(folder / f'{name}_defocusgan_release.png'), cv2.IMREAD_UNCHANGED)
        with torch.no_grad():  # the file's val block scores (and saves) 16-bit outputs, as the release's test script
            expected = tensor2img16(net(item['lq'][None]))
        assert saved.dtype == np.uint16 and saved.shape == expected.shape
        assert np.abs(saved.astype(int) - expected).max() <= 1


def test_benchmark_script_times_both_generators_interleaved(capsys):
    spec = importlib.util.spec_from_file_location('benchmark_generator', ROOT / 'scripts' / 'benchmark_generator.py')
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(['--size', '32x32', '--repeats', '2', '--warmup', '0']) == 0
    table = capsys.readouterr().out
    assert '2 interleaved rounds' in table and 'CPU, 1 thread(s); input 32x32' in table
    release = next(line for line in table.splitlines() if line.startswith('| DefocusGANReleaseGenerator |'))
    cells = [c.strip() for c in release.strip('|').split('|')]
    assert cells[2] == '4,934,531' and cells[3] == '1056'  # params and GMAC / megapixel of the release
    assert float(cells[4]) > 0 and 'paired' in cells[5]
