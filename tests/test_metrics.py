"""MAE / DPDD PSNR-SSIM / LPIPS metrics as BasicSR calls them."""
import numpy as np
import pytest
import torch
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
    assert calculate_metric(dict(img=half, img2=np.zeros_like(half)), dict(type='calculate_mae', crop_border=1)) == \
        pytest.approx(0.25)


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
