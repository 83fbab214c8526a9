"""MAE / DPDD PSNR-SSIM / LPIPS metrics as BasicSR calls them."""
import cv2
import numpy as np
import os
import pytest
import torch
import warnings
from basicsr.metrics import calculate_metric

from defocusgan_plugin.metrics import lpips_metric


def test_mae_known_pairs_in_every_bit_depth():
    a8 = np.zeros((4, 4, 3), np.uint8)
    b8 = np.full((4, 4, 3), 51, np.uint8)  # 51 / 255 = 0.2
    assert calculate_metric(dict(img=a8, img2=b8), dict(type='calculate_mae', crop_border=0)) == pytest.approx(0.2)
    b16 = np.full((4, 4, 3), 13107, np.uint16)  # 13107 / 65535 = 0.2
    assert calculate_metric(dict(img=a8, img2=b16), dict(type='calculate_mae')) == pytest.approx(0.2)
    half = np.zeros((4, 4, 3), np.float32)
    half[:2] = 0.5
    assert calculate_metric(dict(img=half, img2=np.zeros_like(half)), dict(type='calculate_mae')) == pytest.approx(0.25)


@pytest.mark.parametrize('crop_border, mae', [(0, 27 / 36), (1, 7 / 16), (2, 0.25)])
def test_crop_border_removes_that_many_pixels_per_edge(crop_border, mae):
    """Errors of 1, 0.5 and 0.25 on the outer, middle and inner rings of a 6 x 6 image: each crop changes the value."""
    err = np.full((6, 6, 3), 1.0)
    err[1:-1, 1:-1] = 0.5
    err[2:-2, 2:-2] = 0.25
    zeros = np.zeros_like(err)
    assert calculate_metric(dict(img=err, img2=zeros), dict(type='calculate_mae', crop_border=crop_border)) == \
        pytest.approx(mae)
    mse = float((err[crop_border:6 - crop_border, crop_border:6 - crop_border]**2).mean())
    psnr = calculate_metric(dict(img=err, img2=zeros), dict(type='calculate_dpdd_psnr', crop_border=crop_border))
    assert psnr == pytest.approx(10 * np.log10(1 / mse))


def test_dpdd_psnr_and_ssim():
    rng = np.random.default_rng(0)
    img = rng.random((32, 32, 3))
    noisy = np.clip(img + 0.01, 0, 1)
    psnr = calculate_metric(dict(img=img, img2=noisy), dict(type='calculate_dpdd_psnr'))
    mse = np.mean((img - noisy)**2)
    assert psnr == pytest.approx(10 * np.log10(1 / mse))
    assert calculate_metric(dict(img=img, img2=img), dict(type='calculate_dpdd_ssim')) == pytest.approx(1.0)
    assert calculate_metric(dict(img=img, img2=noisy * 0.5), dict(type='calculate_dpdd_ssim')) < 0.9


def test_lpips_without_weights_names_the_option(tmp_path, monkeypatch):
    monkeypatch.delenv(lpips_metric.ALEXNET_ENV, raising=False)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    monkeypatch.chdir(tmp_path)
    img = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(FileNotFoundError) as err:
        calculate_metric(dict(img=img, img2=img), dict(type='calculate_lpips'))
    assert 'alexnet_path' in str(err.value) and lpips_metric.ALEXNET_ENV in str(err.value)
    with pytest.raises(FileNotFoundError, match='nowhere.pth'):
        calculate_metric(dict(img=img, img2=img), dict(type='calculate_lpips', alexnet_path='nowhere.pth'))


def test_lpips_with_local_alexnet_file(tmp_path):
    import torchvision
    torch.manual_seed(0)
    path = tmp_path / lpips_metric.ALEXNET_FILE
    torch.save(torchvision.models.alexnet().state_dict(), path)  # same format as torchvision's download
    rng = np.random.default_rng(0)
    img = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    other = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    opt = dict(type='calculate_lpips', alexnet_path=str(path), device='cpu')
    assert calculate_metric(dict(img=img, img2=img), opt) == pytest.approx(0.0, abs=1e-6)
    d = calculate_metric(dict(img=img, img2=other), opt)
    assert d > 0 and d == pytest.approx(calculate_metric(dict(img=other, img2=img), opt), rel=1e-5)
    assert len(lpips_metric._CACHE) >= 1  # cached, not rebuilt per image
    model = lpips_metric.build_lpips(str(path), 'cpu')
    assert model is lpips_metric.build_lpips(str(path), 'cpu')
    trunk = torchvision.models.alexnet()
    trunk.load_state_dict(torch.load(path, weights_only=True))
    assert torch.equal(model.net.slice1[0].weight, trunk.features[0].weight)


def test_lpips_equals_the_lpips_package_on_a_known_pair(tmp_path, monkeypatch):
    """Our metric on BGR uint8 arrays = ``lpips.LPIPS(net='alex', pretrained=True)`` fed as its README says, both with
    the same local AlexNet trunk and the linear layers that ship inside the lpips package."""
    import lpips
    import torchvision
    torch.manual_seed(0)
    cache = tmp_path / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    path = cache / lpips_metric.ALEXNET_FILE
    trunk = torchvision.models.alexnet()
    torch.save(trunk.state_dict(), path)
    # the reference builds its trunk through torchvision, which loads a cached file and must not download
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    monkeypatch.setattr(torch.hub, 'download_url_to_file', lambda *a, **k: pytest.fail('tried to download'))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # torchvision's deprecated 'pretrained' argument
        reference = lpips.LPIPS(net='alex', pretrained=True, verbose=False).eval()
    # the reference runs our random trunk, not ImageNet's
    assert torch.equal(reference.net.slice5.get_submodule('10').weight, trunk.features[10].weight)
    shipped = torch.load(
        os.path.join(os.path.dirname(lpips.__file__), 'weights', 'v0.1', 'alex.pth'),
        map_location='cpu',
        weights_only=True)
    ours = lpips_metric.build_lpips(str(path), 'cpu')
    for model in (reference, ours):
        assert torch.equal(model.lin0.model[1].weight, shipped['lin0.model.1.weight'])
        assert torch.equal(model.lin4.model[1].weight, shipped['lin4.model.1.weight'])

    # a known pair: a colour ramp and a blurred, noisier copy (asymmetric in the channels, so BGR/RGB order counts)
    yy, xx = np.mgrid[0:48, 0:64]
    rgb = np.stack([xx * 4, yy * 5, (xx + yy) * 2 % 256], axis=2).astype(np.uint8)
    rng = np.random.default_rng(0)
    other = np.clip(cv2.GaussianBlur(rgb, (7, 7), 2.0) + rng.normal(0, 8, rgb.shape), 0, 255).astype(np.uint8)
    with torch.no_grad():
        expected = reference(lpips.im2tensor(rgb), lpips.im2tensor(other)).item()  # im2tensor: RGB uint8 -> [-1, 1]
    opt = dict(type='calculate_lpips', alexnet_path=str(path), device='cpu')
    value = calculate_metric(dict(img=rgb[..., ::-1], img2=other[..., ::-1]), opt)  # BasicSR passes BGR arrays
    assert expected > 1e-3 and value == pytest.approx(expected, rel=1e-5)  # a random trunk gives small values
    swapped = calculate_metric(dict(img=rgb, img2=other), opt)
    assert swapped != pytest.approx(expected, rel=1e-3)  # about 2 % apart: the check tells channel orders apart


# ---------------------------------------------------------------------- LPIPS backbones (net: alex | squeeze | vgg)
def _random_trunk_file(tmp_path, net):
    """Random ImageNet-architecture weights saved in torchvision's key layout (``features.<idx>...``)."""
    import torchvision
    from torchvision.models.vgg import cfgs, make_layers
    torch.manual_seed(0)
    features = {
        'alex': lambda: torchvision.models.alexnet().features,
        'squeeze': lambda: torchvision.models.squeezenet1_1().features,
        'vgg': lambda: make_layers(cfgs['D'])
    }[net]()  # vgg16.features without the large classifier
    path = tmp_path / lpips_metric.BACKBONES[net][0]
    torch.save({f'features.{k}': v for k, v in features.state_dict().items()}, path)
    return path, features


@pytest.mark.parametrize('net', ['alex', 'squeeze', 'vgg'])
def test_lpips_backbones_load_local_trunk_weights(tmp_path, net):
    path, features = _random_trunk_file(tmp_path, net)
    option = lpips_metric.BACKBONES[net][1]  # alexnet_path / squeezenet_path / vgg16_path
    opt = {'type': 'calculate_lpips', 'net': net, option: str(path), 'device': 'cpu'}
    rng = np.random.default_rng(0)
    img = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    other = cv2.GaussianBlur(img, (5, 5), 1.5)
    assert calculate_metric(dict(img=img, img2=img), opt) == pytest.approx(0.0, abs=1e-7)
    d = calculate_metric(dict(img=img, img2=other), opt)
    assert np.isfinite(d) and d > 0
    model = lpips_metric.build_lpips(str(path), 'cpu', net)
    assert model is lpips_metric.build_lpips(str(path), 'cpu', net)  # cached per (net, weights, device)
    loaded = dict(model.net.named_parameters())
    for key, value in features.state_dict().items():  # every trunk tensor came from the file
        name = next(n for n in loaded if n.split('.', 1)[1] == key)
        assert torch.equal(loaded[name], value), key
    import lpips
    shipped = torch.load(
        os.path.join(os.path.dirname(lpips.__file__), 'weights', 'v0.1', f'{net}.pth'),
        map_location='cpu',
        weights_only=True)
    assert torch.equal(model.lin0.model[1].weight, shipped['lin0.model.1.weight'])  # linear layers: the package's


@pytest.mark.parametrize('net', ['alex', 'squeeze', 'vgg'])
def test_lpips_missing_trunk_names_the_option_and_variable(tmp_path, monkeypatch, net):
    _, option, env, _ = lpips_metric.BACKBONES[net]
    monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    monkeypatch.chdir(tmp_path)
    img = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(FileNotFoundError) as err:
        calculate_metric(dict(img=img, img2=img), dict(type='calculate_lpips', net=net))
    assert option in str(err.value) and env in str(err.value)
    with pytest.raises(FileNotFoundError, match=f'val.metrics.lp.{option}'):  # the start-up check of the models
        lpips_metric.check_lpips_weights({'type': 'calculate_lpips', 'net': net}, 'lp')


def test_lpips_bad_backbone_options_are_clear_errors(tmp_path):
    img = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="net must be one of alex, squeeze, vgg, got 'resnet'"):
        calculate_metric(dict(img=img, img2=img), dict(type='calculate_lpips', net='resnet'))
    with pytest.raises(ValueError, match='val.metrics.lpips.net'):
        lpips_metric.check_lpips_weights({'type': 'calculate_lpips', 'net': 'squeezenet'}, 'lpips')
    alex, _ = _random_trunk_file(tmp_path, 'alex')
    with pytest.raises(ValueError, match='alexnet_path is set but net is .squeeze.'):  # a path for another backbone
        calculate_metric(dict(img=img, img2=img), dict(type='calculate_lpips', net='squeeze', alexnet_path=str(alex)))
    with pytest.raises(ValueError, match=f'{alex.name}.*squeezenet1_1'):  # AlexNet weights given as SqueezeNet's
        calculate_metric(
            dict(img=img, img2=img), dict(type='calculate_lpips', net='squeeze', squeezenet_path=str(alex)))
