"""MCCNet: explicit L/R cross-correlation, the network, MS-SSIM loss, DPDeblurModel through BasicSR's entry points."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY
from conftest import FAST, basicsr_checkout, load_options, run_python, run_train, tiny_options
from expected_outputs import check_test_outputs

from defocusgan_plugin.losses.msssim_loss import ms_ssim, msssim_num_scales
from defocusgan_plugin.ops.correlation import horizontal_correlation

TINY_NET = {'network_g:num_feat': 8}


def loop_correlation(left, right, max_disp, normalize):
    """Direct definition: out[n, d + m, y, x] = <left[n, :, y, x], right[n, :, y, x - d]> (0 outside)."""
    n, c, h, w = left.shape
    out = torch.zeros(n, 2 * max_disp + 1, h, w, dtype=left.dtype)
    for b in range(n):
        for y in range(h):
            for x in range(w):
                for k, d in enumerate(range(-max_disp, max_disp + 1)):
                    if 0 <= x - d < w:
                        a, r = left[b, :, y, x], right[b, :, y, x - d]
                        out[b, k, y, x] = a @ r / (a.norm() * r.norm()) if normalize else a @ r / c
    return out


@pytest.mark.parametrize('normalize', [True, False])
def test_correlation_matches_direct_loop(normalize):
    torch.manual_seed(0)
    left, right = torch.randn(2, 5, 3, 9, dtype=torch.float64), torch.randn(2, 5, 3, 9, dtype=torch.float64)
    got = horizontal_correlation(left, right, 3, normalize=normalize)
    torch.testing.assert_close(got, loop_correlation(left, right, 3, normalize))


@pytest.mark.parametrize('shift', [3, -2, 0])
def test_known_shift_peaks_at_signed_displacement(shift):
    """Left = right moved `shift` px to the right (positive CoC in our convention) -> peak at d = +shift."""
    torch.manual_seed(0)
    right = torch.randn(1, 8, 6, 40)
    left = torch.roll(right, shifts=shift, dims=-1)
    corr = horizontal_correlation(left, right, 4)[..., 4:-4]  # away from the wrapped border
    assert int(corr.mean(dim=(0, 2, 3)).argmax()) - 4 == shift
    assert torch.allclose(corr[:, shift + 4], torch.ones(()))  # cosine similarity 1 where the views agree


@pytest.mark.parametrize('coc', [3.0, -3.0])
def test_rendered_dp_views_peak_with_the_sign_of_the_coc(coc):
    """Ties the sign convention to the data: the dataset's DP renderer, behind (+) / in front of (-) the focus."""
    from defocusgan_plugin.data.dp_synthesis import synthesize_dp
    rng = np.random.default_rng(0)
    image = rng.random((24, 48, 3)).astype(np.float32)
    views = synthesize_dp(image, np.full((24, 48), coc, np.float32))
    left, right = (torch.from_numpy(views[k]).permute(2, 0, 1)[None] for k in ('left', 'right'))
    # high-pass views: the correlation then measures texture alignment, not the common brightness
    left, right = (v - F.avg_pool2d(v, 5, 1, 2, count_include_pad=False) for v in (left, right))
    corr = horizontal_correlation(left, right, 5)[..., 6:-6].mean(dim=(0, 2, 3))
    peak = int(corr.argmax()) - 5
    assert np.sign(peak) == np.sign(coc) and 1 <= abs(peak) <= abs(coc)


def test_swapping_views_mirrors_correlation():
    torch.manual_seed(1)
    left, right = torch.randn(1, 4, 5, 16), torch.randn(1, 4, 5, 16)
    m = 3
    forward, swapped = horizontal_correlation(left, right, m), horizontal_correlation(right, left, m)
    for d in range(-m, m + 1):
        xs = torch.arange(max(0, d), min(16, 16 + d))  # x and x - d inside the image
        torch.testing.assert_close(swapped[:, m + d, :, xs], forward[:, m - d, :, xs - d])
    shifted = torch.roll(right, 2, dims=-1)
    peak = horizontal_correlation(shifted, right, m)[..., m:-m].mean(dim=(0, 2, 3)).argmax() - m
    peak_swapped = horizontal_correlation(right, shifted, m)[..., m:-m].mean(dim=(0, 2, 3)).argmax() - m
    assert int(peak) == 2 and int(peak_swapped) == -2


def test_mccnet_defaults_dual_input_forms_and_errors():
    net = ARCH_REGISTRY.get('MCCNet')()
    assert sum(p.numel() for p in net.parameters()) == 3_236_787  # README: 3.24 M; another layout changes the count
    torch.manual_seed(0)
    left, right = torch.rand(1, 3, 27, 42), torch.rand(1, 3, 27, 42)  # sizes that are not multiples of 8
    with torch.no_grad():
        # the residual starts at zero: an untrained MCCNet returns the mean of the views, at the input size
        out = net(torch.cat([left, right], 1))
        torch.testing.assert_close(out, 0.5 * (left + right))
        torch.nn.init.normal_(net.conv_last.weight, std=0.1)
        torch.testing.assert_close(net(torch.cat([left, right], 1)), net(left, right))
    with pytest.raises(ValueError, match='dual'):
        net(left)
    with pytest.raises(ValueError, match='same shape'):
        net(left, right[..., :40])
    with pytest.raises(ValueError, match='num_in_ch'):
        ARCH_REGISTRY.get('MCCNet')(num_in_ch=6, num_out_ch=6)
    gray = ARCH_REGISTRY.get('MCCNet')(num_in_ch=2, num_out_ch=1, num_feat=8)  # gray DP views (phones)
    assert gray(torch.rand(1, 2, 20, 20)).shape == (1, 1, 20, 20)


def test_mccnet_output_depends_on_the_disparity_sign():
    """The correlation branch reaches the output: the same pair with the views swapped (disparity mirrored, same
    mean) gives a different result, and the correlation guidance receives gradients."""
    torch.manual_seed(0)
    net = ARCH_REGISTRY.get('MCCNet')(num_feat=8)
    torch.nn.init.normal_(net.conv_last.weight, std=0.1)
    right = torch.rand(1, 3, 32, 32)
    left = torch.roll(right, 2, dims=-1)
    out = net(left, right)
    assert not torch.allclose(out, net(right, left), atol=1e-5)
    out.mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.guides.parameters())


def test_msssim_scale_rule_and_single_scale_equals_ssim():
    from skimage.metrics import structural_similarity
    assert [msssim_num_scales(s) for s in (8, 21, 22, 64, 96, 175, 176, 512)] == [1, 1, 2, 3, 4, 4, 5, 5]
    torch.manual_seed(0)
    x = torch.rand(1, 3, 20, 20, dtype=torch.float64)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    ref = structural_similarity(
        x[0].permute(1, 2, 0).numpy(),
        y[0].permute(1, 2, 0).numpy(),
        data_range=1,
        channel_axis=2,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False)
    assert ms_ssim(x, y).item() == pytest.approx(ref, abs=1e-5)
    assert 0 < ms_ssim(x[..., :8, :8], y[..., :8, :8]).item() < 1  # smaller than the window: the window shrinks


def test_msssim_loss_identity_blur_and_gradient():
    loss = LOSS_REGISTRY.get('MSSSIMLoss')()
    from defocusgan_plugin.ops.psf import gaussian_kernel2d
    torch.manual_seed(0)
    sharp = F.avg_pool2d(torch.rand(2, 3, 66, 66), 3, 1)  # 64 px: 3 scales
    assert loss(sharp, sharp).item() == pytest.approx(0.0, abs=1e-6)
    values = []
    for sigma in (0.5, 1.0, 2.0, 4.0):
        k = gaussian_kernel2d(sigma, 13)[None, None].expand(3, 1, 13, 13)
        values.append(loss(F.conv2d(F.pad(sharp, (6, ) * 4, mode='reflect'), k, groups=3), sharp).item())
    assert all(a < b for a, b in zip(values, values[1:])) and values[0] > 0

    unrelated = torch.rand(2, 3, 64, 64, requires_grad=True)  # correlations near or below 0 at coarse scales
    for pred in (sharp.clone().requires_grad_(), unrelated):
        loss(pred, sharp).backward()
        assert torch.isfinite(pred.grad).all()
    assert unrelated.grad.abs().sum() > 0
    per_image = LOSS_REGISTRY.get('MSSSIMLoss')(reduction='none')(unrelated, sharp)
    assert per_image.shape == (2, )


def test_dp_deblur_model_needs_a_loss(tmp_path, synthetic_root):
    opt = tiny_options('train_mccnet_synthetic.yml', tmp_path, synthetic_root,
                       dict(FAST, **TINY_NET, **{
                           'train:pixel_opt': None,
                           'train:ssim_opt': None
                       }))
    with pytest.raises(ValueError, match='needs at least one loss'):
        run_train(opt, tmp_path)


def test_three_iterations_train_and_test_through_basicsr(tmp_path, synthetic_root):
    """BasicSR's unmodified train.py then test.py on the demo options (copied into a checkout-like folder under
    tmp_path, so that they root there instead of in site-packages); the test run's images and metrics are those of
    the trained checkpoint."""
    name = 'pytest_mccnet'
    overrides = dict(
        FAST,
        name=name,
        **TINY_NET,
        **{
            'train:total_iter': 3,
            'val:val_freq': 100,  # validation at the end only
            'logger:save_checkpoint_freq': 3,
            'datasets:train:gt_size': 32,
            'train:scheduler:periods': [3]
        })
    train = tiny_options('train_mccnet_synthetic.yml', tmp_path, synthetic_root, overrides)
    checkout = basicsr_checkout(tmp_path)
    checkpoint = checkout / 'experiments' / name / 'models' / 'net_g_latest.pth'
    test = tiny_options('test_mccnet_synthetic.yml', tmp_path, synthetic_root, {
        'name': name,
        'path:pretrain_network_g': str(checkpoint),
        **TINY_NET
    })
    proc = run_python([str(checkout / 'basicsr' / 'train.py'), '-opt', str(train)], tmp_path)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert 'l_pix' in log and 'l_ssim' in log and '# psnr' in log
    assert checkpoint.is_file() and (checkpoint.parent / 'net_g_3.pth').is_file()

    proc = run_python([str(checkout / 'basicsr' / 'test.py'), '-opt', str(test)], tmp_path)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    vis = checkout / 'results' / name / 'visualization' / 'SyntheticDPDD_test'
    assert len(list(vis.glob('*_mccnet.png'))) == 5  # the 5 test images of the tiny set
    check_test_outputs(load_options(test), checkpoint, log, vis, 'mccnet')
