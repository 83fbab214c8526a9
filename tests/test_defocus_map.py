"""Stage 1: learnable blur kernel, defocus-map network, reblur loss, phases, map metrics, deconvolution path."""
import cv2
import numpy as np
import pytest
import torch
from basicsr.models import build_model
from conftest import FAST, TINY_DEFOCUS_MAP, load_options, run_python, run_test, run_train, tiny_options

from defocusgan_plugin.archs.blur_kernel_arch import LearnableBlurKernel
from defocusgan_plugin.archs.defocus_map_arch import DefocusMapNet, SoftClip, view_correlation
from defocusgan_plugin.data.dp_synthesis import DEFAULT_PSF, render_layers, synthesize_dp
from defocusgan_plugin.losses.affine_invariant_loss import AffineInvariantMapLoss
from defocusgan_plugin.losses.map_gradient_loss import MapGradientPriorLoss
from defocusgan_plugin.losses.reblur_loss import ReblurGeometricLoss
from defocusgan_plugin.losses.reblur_search_loss import ReblurSearchMapLoss
from defocusgan_plugin.metrics.defocus_map_metric import calculate_aiwe1, calculate_aiwe2, calculate_spearman_error
from defocusgan_plugin.models.defocus_map_model import DefocusMapModel
from defocusgan_plugin.ops.deconv import deconv_layered, deconv_occlusion, occlusion_layers
from defocusgan_plugin.ops.filters import box_mean
from defocusgan_plugin.ops.psf import dp_psf, kernel_size_for
from defocusgan_plugin.ops.reblur_search import reblur_search
from defocusgan_plugin.ops.render import reblur_coc

SYNTH_PSF = {k: v for k, v in DEFAULT_PSF.items() if k in ('order', 'cutoff', 'beta', 'sigma')}


def psnr(a, b):
    return float(10 * torch.log10(1.0 / ((a - b)**2).mean()))


@pytest.fixture(scope='module')
def scene():
    """A 48 px textured crop rendered by the synthesiser with a near (-3 px) left half and a far (+3 px) right half."""
    import skimage.data
    image = cv2.resize(skimage.data.astronaut(), (128, 128), interpolation=cv2.INTER_AREA)[70:118, 60:108]
    xx = np.mgrid[0:48, 0:48][1]
    return rendered_scene(image, np.where(xx < 24, -3.0, 3.0).astype(np.float32), 'scene')


def rendered_scene(image, coc, name):
    """A model's input sample: an 8-bit (H, W, 3) image rendered by the synthesiser with the CoC map ``coc``."""
    views = synthesize_dp(image.astype(np.float32) / 255.0, coc, rng=None)
    t = {k: torch.from_numpy(np.ascontiguousarray(v)).permute(2, 0, 1)[None] for k, v in views.items() if k != 'coc'}
    return dict(
        gt=t['target'],
        lq_c=t['combined'],
        lq_l=t['left'],
        lq_r=t['right'],
        lq=torch.cat([t['left'], t['right']], 1),
        defocus=torch.from_numpy(coc)[None, None],
        lq_path=[f'synthetic/{name}.png'])


def model_options(tmp_path, network_iters=2, alternate_iters=2, lr=2e-3):
    return {
        'name':
        'unit',
        'model_type':
        'DefocusMapModel',
        'num_gpu':
        0,
        'dist':
        False,
        'is_train':
        True,
        'rank':
        0,
        'world_size':
        1,
        'path': {
            'models': str(tmp_path),
            'training_states': str(tmp_path),
            'visualization': str(tmp_path / 'visualization')
        },
        # the cross-convolution cue is off: these tests exercise learning through the reblur loss alone
        'network_map':
        dict(
            type='DefocusMapNet',
            cap=5,
            num_feat=16,
            num_level=2,
            num_block=1,
            corr_disp=3,
            corr_window=7,
            match_step=0),
        'network_kernel':
        dict(type='LearnableBlurKernel', max_radius=5, **SYNTH_PSF),
        'train':
        dict(
            optim_map=dict(type='Adam', lr=lr),
            optim_kernel=dict(type='Adam', lr=1e-2),
            reblur_opt=dict(type='ReblurGeometricLoss', loss_weight=1000.0, crop_border=3),
            prior_opt=dict(type='MapGradientPriorLoss', loss_weight=1e-3),
            phase_schedule=dict(network_iters=network_iters, alternate_iters=alternate_iters)),
    }


# ---------------------------------------------------------------------- kernels
def test_kernel_initialisation_is_a_normalised_symmetric_band_stop_disk():
    kernels = LearnableBlurKernel(max_radius=8)().detach()
    size = kernels.shape[-1]
    c = size // 2
    assert kernels.shape == (9, 17, 17)
    assert kernels[0, c, c] == 1 and kernels[0].sum() == 1  # radius 0: identity
    assert torch.allclose(kernels.sum((-2, -1)), torch.ones(9)) and (kernels >= 0).all()
    for kernel in kernels:
        assert torch.allclose(kernel, kernel.flip(-1)) and torch.allclose(kernel, kernel.flip(-2))
        assert torch.allclose(kernel, kernel.T)
    for r in range(3, 9):  # Butterworth high-pass: darker centre than the ring just inside the rim
        assert kernels[r, c, c] < 0.5 * kernels[r, c, c + r - 1]
    assert kernels[4, c, c + 4 + 3:].max() < 1e-4 * kernels[4].max()  # nothing beyond the smoothed rim


def test_kernels_stay_valid_while_learning():
    module = LearnableBlurKernel(max_radius=4)
    optimizer = torch.optim.Adam(module.parameters(), lr=0.5)
    target = torch.rand(5, 9, 9)
    for _ in range(20):
        loss = -(module() * target).sum()  # pushes mass towards random pixels, far from a disk
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    kernels = module().detach()
    assert (kernels >= 0).all() and torch.allclose(kernels.sum((-2, -1)), torch.ones(5))
    assert kernels[0, 4, 4] == 1
    assert list(module.state_dict()) == ['logits']  # what net_kernel_<iter>.pth holds under 'params'


def test_dp_kernels_split_and_swap_with_the_sign():
    module = LearnableBlurKernel(max_radius=5)
    dp = module.dp_kernels().detach()
    radii = module.signed_radii()
    assert dp.shape == (2, 11, 11, 11) and radii.tolist() == list(range(-5, 6))
    assert torch.allclose(dp.sum((-2, -1)), torch.ones(2, 11))
    x = torch.arange(11.0) - 5
    centroid = (dp.sum(-2) * x).sum(-1)  # horizontal centroid of each (view, radius)
    assert (centroid[0, 6:] > 0.3).all() and (centroid[1, 6:] < -0.3).all()  # behind: left view shifted right
    assert torch.allclose(dp[0, 5 - 3], dp[1, 5 + 3]) and torch.allclose(dp[1, 5 - 3], dp[0, 5 + 3])  # swap by sign
    assert torch.allclose(dp[0, 5 + 3], dp[1, 5 + 3].flip(-1), atol=1e-6)  # right view = mirror of the left
    assert dp[0, 5, 5, 5] == 1 and dp[1, 5, 5, 5] == 1


# ---------------------------------------------------------------------- reblur and losses
def test_reblur_with_gt_map_reproduces_the_synthetic_capture(scene):
    module = LearnableBlurKernel(max_radius=4, **SYNTH_PSF)
    with torch.no_grad():
        kernels = module()
        combined, views = reblur_coc(scene['gt'], scene['defocus'], kernels, module.dp_kernels(kernels), True)
    inner = (..., slice(4, -4), slice(4, -4))  # away from the reflect-padded borders
    assert psnr(combined[inner], scene['lq_c'][inner]) > 35
    assert psnr(views[:, 0][inner], scene['lq_l'][inner]) > 33 and psnr(views[:, 1][inner], scene['lq_r'][inner]) > 33
    assert psnr(scene['gt'][inner], scene['lq_c'][inner]) < 27  # the blur is real
    swapped = reblur_coc(scene['gt'], -scene['defocus'], kernels, module.dp_kernels(kernels), True)[1]
    assert psnr(swapped[:, 0][inner], scene['lq_l'][inner]) < 30  # the views do see the sign


def test_gradients_reach_map_and_kernels(scene):
    module = LearnableBlurKernel(max_radius=4)
    coc = (scene['defocus'] * 0.8).requires_grad_()
    kernels = module()
    combined, views = reblur_coc(scene['gt'], coc, kernels, module.dp_kernels(kernels), True)
    loss = ReblurGeometricLoss(view_weight=1.0)(combined, scene['lq_c'], views,
                                                torch.stack([scene['lq_l'], scene['lq_r']], 1))
    loss = loss + MapGradientPriorLoss(edge_weight=5.0)(coc, scene['gt'])
    loss.backward()
    assert coc.grad.abs().sum() > 0 and torch.isfinite(coc.grad).all()
    grad = module.logits.grad.abs().sum((-2, -1))
    assert (grad[1:3] > 0).all() and grad[0] == 0 and grad[3] == 0  # |map| = 2.4 px: radii 2 and 3 only


def test_view_difference_term_removes_the_wrong_sign_minimum(scene):
    """Along the path from the mirrored map (-GT) to the true one the loss must fall monotonically."""
    module = LearnableBlurKernel(max_radius=4, **SYNTH_PSF)
    captured = torch.stack([scene['lq_l'], scene['lq_r']], 1)

    def losses(criterion):
        out = []
        for s in torch.linspace(-1, 1, 9):
            with torch.no_grad():
                kernels = module()
                c, v = reblur_coc(scene['gt'], s * scene['defocus'], kernels, module.dp_kernels(kernels), True)
                out.append(float(criterion(c, scene['lq_c'], v, captured)))
        return np.array(out)

    with_diff = losses(ReblurGeometricLoss(diff_weight=5.0, crop_border=4))  # the plugin's weight (release: 0)
    views_only = losses(ReblurGeometricLoss(view_weight=1.0, diff_weight=0.0, crop_border=4))
    assert (np.diff(with_diff) < 0).all()
    assert views_only[0] < views_only[4]  # per-view L1 alone: the wrong sign beats no blur (a local minimum)


def test_view_highpass_ignores_an_imbalance_no_map_renders(scene):
    """``view_highpass``: a smooth left/right brightness ramp in the captures (as vignetting adds) barely moves the
    high-passed view terms, which still rank the true map's rendering above an unblurred one."""
    module = LearnableBlurKernel(max_radius=4, **SYNTH_PSF)
    captured = torch.stack([scene['lq_l'], scene['lq_r']], 1)
    ramp = 0.05 * torch.linspace(-1, 1, 48).view(1, 1, 1, 1, 48) * torch.tensor([1.0, -1.0]).view(1, 2, 1, 1, 1)
    with torch.no_grad():
        kernels = module()
        true = reblur_coc(scene['gt'], scene['defocus'], kernels, module.dp_kernels(kernels), True)
        sharp = reblur_coc(scene['gt'], torch.zeros_like(scene['defocus']), kernels, module.dp_kernels(kernels), True)

    def loss(criterion, rendering, views):
        return float(criterion(rendering[0], scene['lq_c'], rendering[1], views))

    plain, highpass = (
        ReblurGeometricLoss(view_weight=1.0, diff_weight=5.0, crop_border=4, view_highpass=r) for r in (0, 7))
    cost_plain = loss(plain, true, captured + ramp) - loss(plain, true, captured)
    cost_highpass = loss(highpass, true, captured + ramp) - loss(highpass, true, captured)
    assert cost_highpass < 0.1 * cost_plain, (cost_highpass, cost_plain)
    assert loss(highpass, sharp, captured + ramp) > 2 * loss(highpass, true, captured + ramp)
    with pytest.raises(ValueError, match='view_highpass'):
        ReblurGeometricLoss(view_highpass=-1)


def test_gradient_prior_reductions_and_edge_awareness():
    ramp = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 1, 4, 8)
    assert MapGradientPriorLoss(reduction='sum')(ramp) == 4 * 7
    assert MapGradientPriorLoss()(ramp) == 1.0
    edge = torch.zeros(1, 3, 4, 8)
    edge[..., 4:] = 1.0  # an image edge where the map jumps
    step = (edge[:, :1] * 5.0)
    assert MapGradientPriorLoss(edge_weight=10.0)(step, edge) < 1e-3 * MapGradientPriorLoss()(step, edge)
    with pytest.raises(ValueError, match='reduction'):
        MapGradientPriorLoss(reduction='none')


def test_affine_invariant_map_loss_ignores_scale_and_offset_only():
    """AffineInvariantMapLoss: zero for any affine copy of the target (what AIWE(1) forgives), positive for an error
    the fit cannot explain, with a gradient through the fit; weight-0 pixels (no depth) do not count."""
    torch.manual_seed(0)
    gt = torch.randn(2, 1, 16, 16)
    loss = AffineInvariantMapLoss()
    assert float(loss(-2.5 * gt + 3.0, gt)) < 1e-5 < 1e-5 * float(loss.__class__(loss_weight=1e5)(gt**2, gt))
    noisy = (gt + 0.3 * torch.randn_like(gt)).requires_grad_()
    value = loss(noisy, gt)
    value.backward()
    assert 0.1 < float(value) < 0.4 and noisy.grad.abs().sum() > 0
    weight = torch.ones_like(gt)
    weight[..., :4] = 0
    corrupted = gt.clone()
    corrupted[..., :4] = 100.0
    assert float(loss(corrupted, gt, weight=weight)) < 1e-5 < float(loss(corrupted, gt))
    with pytest.raises(ValueError, match='reduction'):
        AffineInvariantMapLoss(reduction='none')


# ---------------------------------------------------------------------- network
def test_map_network_any_size_bounded_and_small():
    net = DefocusMapNet(cap=25.0)
    assert sum(p.numel() for p in net.parameters()) <= 3_000_000
    out = net(torch.rand(2, 6, 37, 53))
    assert out.shape == (2, 1, 37, 53)
    with torch.no_grad():
        net.conv_last.bias.fill_(1e4)  # far into saturation
    out = net(torch.rand(1, 6, 16, 16))
    assert (out.abs() <= 25).all() and out.min() > 24.9  # float32 rounds the soft clip to the cap itself
    out.sum().backward()
    assert net.conv_last.bias.grad.abs() > 0  # a saturated map can still be pulled back (tanh gives exactly 0)
    t = torch.linspace(-30, 30, 61, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(SoftClip.apply, (t, ))  # the analytic gradient is the true one


def test_view_correlation_peaks_at_the_shift_with_its_sign():
    left = torch.rand(1, 3, 24, 40)
    right = left.roll(-2, dims=-1)  # left(x) = right(x - 2): disparity +2
    corr = view_correlation(left, right, max_disp=4, window=7)[..., 6:-6, 6:-6]
    assert corr.shape[1] == 9
    assert (corr.mean((-2, -1)).argmax(1) == 4 + 2).all()
    assert corr.max() <= 1.0 + 1e-4


# ---------------------------------------------------------------------- metrics
def test_map_metrics_are_affine_invariant_and_robust():
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(32, 32))
    for metric in (calculate_aiwe1, calculate_aiwe2, calculate_spearman_error):
        assert metric(-3.0 * gt + 2.0, gt) < 1e-6  # scale, offset and sign do not matter
        assert metric(torch.from_numpy(gt)[None, None], gt[..., None]) < 1e-6  # tensors and shapes
    assert calculate_aiwe2(np.zeros_like(gt), gt) == pytest.approx(gt.std())
    assert calculate_spearman_error(np.zeros_like(gt), gt) == 1.0
    assert calculate_spearman_error(np.exp(gt), gt) < 1e-9  # rank-based
    # AIWE(1) is the L1-optimal affine fit: compare with a brute-force search on a noisy, outlier-ridden map
    pred = 0.5 * gt + 0.1 * rng.normal(size=gt.shape)
    target = gt.copy()
    target.flat[::10] += 20.0  # 10 % gross errors
    brute = min(
        np.abs(target - a * pred - b).mean() for a in np.linspace(1.6, 2.2, 121) for b in np.linspace(-0.3, 0.3, 121))
    least_squares = np.polyfit(pred.ravel(), target.ravel(), 1)
    assert calculate_aiwe1(pred, target) < 1.02 * brute  # 5 reweighting iterations, as Garg et al.
    assert calculate_aiwe1(pred, target, iterations=30) < 1.002 * brute
    assert calculate_aiwe1(pred, target) < 0.9 * np.abs(target - np.polyval(least_squares, pred)).mean()
    weight = np.ones_like(gt)
    weight.flat[::10] = 0  # zero confidence on the gross errors
    assert calculate_aiwe2(pred, target, weight=weight) < 0.25 < 0.1 * calculate_aiwe2(pred, target)
    with pytest.raises(ValueError, match='sizes differ'):
        calculate_aiwe1(gt, gt[:10])


# ---------------------------------------------------------------------- deconvolution
@pytest.mark.parametrize('method,kwargs', [('wiener', dict(reg=1e-2)), ('rl', dict(iterations=30))])
def test_deconvolution_inverts_the_layered_blur(scene, method, kwargs):
    kernels = LearnableBlurKernel(max_radius=4, linear_light=False)().detach()
    coc = torch.full_like(scene['defocus'], 3.0)
    blurred = reblur_coc(scene['gt'], coc, kernels)[0]
    sharp = deconv_layered(blurred, coc, kernels, method, **kwargs)
    inner = (..., slice(6, -6), slice(6, -6))
    assert psnr(sharp[inner], scene['gt'][inner]) > psnr(blurred[inner], scene['gt'][inner]) + 3
    assert torch.equal(deconv_layered(blurred, torch.zeros_like(coc), kernels, method), blurred)  # in focus


def test_deconvolution_has_no_border_artefact():
    """An exact kernel without noise: a 5-px disk is undone across the whole image, borders included (the FFT grid
    once held a reflect pad in zeros, and the step at its edge rang through the image: below the input)."""
    import skimage.data
    image = cv2.resize(skimage.data.astronaut(), (96, 96), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    views = synthesize_dp(image, np.full((96, 96), 5.0, np.float32), rng=None)
    psf = dict(DEFAULT_PSF)
    kernels = dp_psf(torch.arange(0.0, 6.0), kernel_size_for(5.0, psf['sigma']), **psf).mean(0)  # combined view
    blurred, sharp = (torch.from_numpy(views[k]).permute(2, 0, 1)[None] for k in ('combined', 'target'))
    restored = deconv_layered(blurred, torch.full((1, 1, 96, 96), 5.0), kernels, reg=1e-3, linear_light=True)
    assert psnr(restored, sharp) > psnr(blurred, sharp) + 4  # 14.6 -> 19.6 dB (9.6 dB with the zero-filled grid)
    with pytest.raises(ValueError, match='larger than twice the 8x8 image'):
        deconv_layered(blurred[..., :8, :8], torch.full((1, 1, 8, 8), 5.0), dp_psf(torch.tensor([0.0, 9.0]), 19)[0])


def test_occlusion_deconvolution_undoes_a_depth_edge(scene):
    """At a depth edge the lens spreads the near half over the far one: the per-pixel model cannot undo that, the
    renderer's own occlusion model, solved as a whole, can (exact DP kernels, no noise)."""
    gt, blurred, coc = scene['gt'], scene['lq_c'], scene['defocus']
    radii, dp_kernels = render_layers(3.0)  # the synthesiser's layers and left/right kernels of this scene
    restored = deconv_occlusion(blurred, coc, dp_kernels, radii, reg=1e-3, iterations=60, linear_light=True)
    combined = dp_kernels.mean(0)[::2][:4].flip(0)  # the combined view's kernels of |radius| 0, 1, 2, 3
    per_pixel = deconv_layered(blurred, coc, combined, reg=1e-3, linear_light=True)  # the same prior
    edge = (..., slice(None), slice(16, 32))  # the columns the near half spreads over
    assert psnr(restored[edge], gt[edge]) > psnr(per_pixel[edge], gt[edge]) + 3
    assert psnr(restored, gt) > psnr(blurred, gt) + 4
    deltas = torch.zeros(4, 3, 3)
    deltas[:, 1, 1] = 1.0
    radii_4, sharp_kernels = occlusion_layers(deltas)
    assert torch.allclose(deconv_occlusion(blurred, coc, sharp_kernels, radii_4, reg=0.0), blurred, atol=1e-5)
    with pytest.raises(ValueError, match='decreasing radii'):
        deconv_occlusion(blurred, coc, dp_kernels, radii.flip(0))


def test_sparse_prior_beats_the_quadratic_one(scene):
    """The hyper-Laplacian prior (IRLS) restores the depth-edged scene better than the quadratic one, for the same
    number of conjugate-gradient iterations (45) and prior weight."""
    gt, blurred, coc = scene['gt'], scene['lq_c'], scene['defocus']
    radii, dp_kernels = render_layers(3.0)
    common = dict(reg=1e-4, linear_light=True)
    sparse = deconv_occlusion(blurred, coc, dp_kernels, radii, iterations=15, exponent=0.8, reweight=2, **common)
    quadratic = deconv_occlusion(blurred, coc, dp_kernels, radii, iterations=45, **common)
    assert psnr(sparse, gt) > psnr(quadratic, gt) + 2


def test_dp_views_deconvolve_better_than_their_mean(scene):
    """Fitting each DP view by its own half-aperture kernels (a (B, V, C, H, W) image) is better conditioned than
    fitting their mean by the full aperture, whose spectrum has the deeper zeros: the same prior and iterations."""
    gt, coc = scene['gt'], scene['defocus']
    views = torch.stack([scene['lq_l'], scene['lq_r']], 1)
    radii, dp_kernels = render_layers(3.0)
    common = dict(reg=1e-4, iterations=15, exponent=0.8, reweight=2, linear_light=True)
    combined = deconv_occlusion(scene['lq_c'], coc, dp_kernels, radii, **common)
    separate = deconv_occlusion(views, coc, dp_kernels, radii, **common)
    assert psnr(separate, gt) > psnr(combined, gt) + 2  # 27.5 against 24.4 dB
    deltas = torch.zeros(2, radii.numel(), 3, 3)
    deltas[..., 1, 1] = 1.0
    shifted = torch.stack([gt, gt.roll(1, -1)], 1)  # sharp kernels: the views' least-squares image is their mean
    assert torch.allclose(deconv_occlusion(shifted, coc, deltas, radii, reg=0.0), shifted.mean(1), atol=1e-5)
    with pytest.raises(ValueError, match=r'2 views need \(V, M, K, K\) kernels'):
        deconv_occlusion(views, coc, dp_kernels[0], radii)


def test_occlusion_layers_order_the_bank_back_to_front():
    bank = torch.arange(3.0).view(3, 1, 1).expand(3, 3, 3)  # kernel i filled with i
    radii, kernels = occlusion_layers(bank)  # by |radius| 0..2
    assert radii.tolist() == [2, 1, 0, -1, -2] and kernels[:, 0, 0].tolist() == [2, 1, 0, 1, 2]
    signed = torch.arange(5.0).view(5, 1, 1).expand(5, 3, 3)  # the release's signed sets -2..2
    radii, kernels = occlusion_layers(signed, start=-2)
    assert radii.tolist() == [2, 1, 0, -1, -2] and kernels[:, 0, 0].tolist() == [4, 3, 2, 1, 0]


def deconv_model(tmp_path, **deconv):
    """A ``DefocusDeconvModel`` of test_defocus_deconv_synthetic.yml with untrained networks and the given options."""
    opt = load_options('test_defocus_deconv_synthetic.yml')
    opt.update(is_train=False, dist=False, rank=0, world_size=1, deconv=deconv)
    opt['path'] = {'visualization': str(tmp_path / 'visualization'), 'results_root': str(tmp_path)}
    return build_model(opt)


def test_deconv_model_occlusion_method(scene, tmp_path):
    """``deconv.method: occlusion`` through the model (GT maps, the untrained kernel bank), and its option check."""
    model = deconv_model(tmp_path, method='occlusion', map_source='gt', reg=1e-3, iterations=30)
    model.feed_data(scene)
    model.test()
    assert psnr(model.result, scene['gt']) > psnr(scene['lq_c'], scene['gt']) + 2
    with pytest.raises(ValueError, match=r"deconv: unknown option\(s\) \['start'\] for method 'occlusion'"):
        deconv_model(tmp_path, method='occlusion', start=0)
    assert deconv_model(tmp_path, method='wiener', reg=0.1, exponent=None).deconv_opt == {'reg': 0.1}  # ~ is unset


def test_deconv_model_dp_views(scene, tmp_path):
    """``deconv.views: dp`` fits both DP views with the kernel bank's left/right halves; it beats the combined view
    with the same map and kernels, and is refused for the per-pixel methods."""
    results = {}
    for views in ('combined', 'dp'):
        model = deconv_model(tmp_path, method='occlusion', map_source='gt', reg=1e-4, iterations=15, views=views)
        model.feed_data(scene)
        model.test()
        results[views] = psnr(model.result, scene['gt'])
    assert results['dp'] > results['combined'] + 1, results
    with pytest.raises(ValueError, match="deconv.views must be one of .* with method 'wiener'"):
        deconv_model(tmp_path, method='wiener', views='dp')


class FixedMap(torch.nn.Module):
    """A stand-in map network that returns a given map."""

    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, lq):
        return self.value


def test_deconv_model_map_filter_puts_a_blurred_depth_edge_back_on_the_image_edge(tmp_path):
    """``deconv.map_filter``: a map whose depth edge is smeared (as a DP matching window smears it) deconvolves
    better once the guided filter has pulled it onto the image's edge, where a real occlusion edge lies."""
    import skimage.data
    near = cv2.resize(skimage.data.astronaut(), (128, 128), interpolation=cv2.INTER_AREA)[70:118, 60:108]
    far = 0.4 * cv2.resize(skimage.data.coffee(), (128, 128), interpolation=cv2.INTER_AREA)[40:88, 40:88]
    xx = np.mgrid[0:48, 0:48][1]
    coc = np.where(xx < 24, -3.0, 3.0).astype(np.float32)
    data = rendered_scene(np.where(xx[..., None] < 24, near, far), coc, 'edge')
    smeared = box_mean(torch.from_numpy(coc)[None, None], 4)
    common = dict(method='occlusion', reg=1e-3, iterations=30)
    results = {}
    for name, map_filter in (('smeared', None), ('filtered', {'radius': 2, 'eps': 1e-2})):
        model = deconv_model(tmp_path, map_filter=map_filter, **common)
        model.net_map = FixedMap(smeared)
        model.feed_data(data)
        model.test()
        results[name] = psnr(model.result, data['gt'])
    assert results['filtered'] > results['smeared'] + 0.3, results
    with pytest.raises(ValueError, match='deconv.map_filter takes radius and eps'):
        deconv_model(tmp_path, map_filter={'radius': 2, 'sigma': 1}, **common)


# ---------------------------------------------------------------------- model
def test_phase_schedule_and_frozen_parts_stay_bit_identical(tmp_path, scene):
    model = build_model(model_options(tmp_path))
    assert [model.phase_at(i) for i in range(1, 8)] == ['network'] * 2 + ['kernel'] * 2 + ['network'] * 2 + ['kernel']
    model.feed_data(scene)

    def snapshot():
        return ({
            k: v.clone()
            for k, v in model.net_map.state_dict().items()
        }, {
            k: v.clone()
            for k, v in model.net_kernel.state_dict().items()
        })

    for it, trained in ((1, 'map'), (3, 'kernel'), (4, 'kernel'), (5, 'map')):
        before_map, before_kernel = snapshot()
        model.optimize_parameters(it)
        after_map, after_kernel = snapshot()
        frozen, changed = ((before_kernel, after_kernel), (before_map, after_map)) if trained == 'map' else \
            ((before_map, after_map), (before_kernel, after_kernel))
        assert all(torch.equal(frozen[0][k], frozen[1][k]) for k in frozen[0]), f'iteration {it}'
        assert any(not torch.equal(changed[0][k], changed[1][k]) for k in changed[0]), f'iteration {it}'
    assert 'l_prior' in model.get_current_log()
    model.load_extra_training_state({'phase': 'kernel', 'phase_schedule': [2, 2]})
    assert model.phase == 'kernel'


def test_short_training_reduces_loss_and_finds_the_sign(tmp_path, scene):
    torch.manual_seed(0)
    model = build_model(model_options(tmp_path, network_iters=1000, alternate_iters=0, lr=3e-3))
    model.feed_data(scene)
    losses = []
    for it in range(1, 61):
        model.optimize_parameters(it)
        losses.append(model.get_current_log()['l_reblur'])
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    model.test()
    gt = scene['defocus']
    confident = gt.abs() > 1.5
    agree = (torch.sign(model.output) == torch.sign(gt))[confident].float().mean()
    assert agree > 0.85, f'sign agrees on {agree:.0%} of the pixels'


def test_supervised_map_option_learns_the_gt_map_and_skips_missing_depth(tmp_path, scene):
    opt = model_options(tmp_path, network_iters=1000, alternate_iters=0, lr=3e-3)
    opt['train']['map_opt'] = dict(type='L1Loss', loss_weight=1000.0)  # leads the reblur term (1000 L1)
    torch.manual_seed(0)
    model = build_model(opt)
    data = dict(scene, defocus=scene['defocus'].clone())
    data['defocus'][..., :8] = float('nan')  # no depth there: left out of the loss, not a NaN loss
    model.feed_data(data)
    errors = []
    for it in range(1, 41):
        model.optimize_parameters(it)
        errors.append(model.get_current_log()['l_map'] / 1000.0)
    assert all(np.isfinite(errors)) and errors[-1] < 0.6 * errors[0]
    model.test()
    valid = torch.isfinite(data['defocus'])
    assert float((model.output - data['defocus'])[valid].abs().mean()) < 0.6 * errors[0]  # in CoC pixels
    model.feed_data({k: v for k, v in scene.items() if k != 'defocus'})
    with pytest.raises(KeyError, match='train.map_opt'):
        model.optimize_parameters(41)


def test_reblur_search_finds_the_signed_radius_and_mirrors_with_the_views(scene):
    """The exhaustive search of the reblur objective recovers both signed halves of the depth-edge scene, in CoC
    pixels; swapping the views negates it (symmetric kernels); bad inputs and options are refused."""
    dp = LearnableBlurKernel(max_radius=5, **SYNTH_PSF).dp_kernels().detach()
    views = torch.stack([scene['lq_l'], scene['lq_r']], 1)
    radius, cost = reblur_search(scene['gt'], views, dp, step=0.5, window=7, highpass=3)
    assert cost.shape[1] == 21 and radius.shape == scene['defocus'].shape  # -5..5 every 0.5 px
    gt = scene['defocus']
    inner = (slice(None), slice(None), slice(6, -6), np.r_[6:18, 30:42])  # away from the border and the edge
    assert (radius - gt)[inner].abs().mean() < 0.1, float((radius - gt)[inner].abs().mean())
    swapped, _ = reblur_search(scene['gt'], views.flip(1), dp, step=0.5, window=7, highpass=3)
    assert (swapped == -radius)[inner].float().mean() > 0.95
    with pytest.raises(ValueError, match='step must be 1 / n'):
        reblur_search(scene['gt'], views, dp, step=0.3)
    with pytest.raises(ValueError, match='views of its size'):
        reblur_search(scene['gt'], views[:, :1], dp)
    with pytest.raises(ValueError, match='window odd'):
        ReblurSearchMapLoss(window=8)


def test_search_loss_ignores_what_the_search_cannot_see():
    """Confidence weighting: where the sharp image is flat every radius renders the same views, so a map error there
    costs nothing; the same error on texture does."""
    torch.manual_seed(0)
    sharp = torch.rand(1, 3, 32, 48)
    sharp[..., :24] = 0.5  # flat left half
    kernels = LearnableBlurKernel(max_radius=3, **SYNTH_PSF)
    dp = kernels.dp_kernels().detach()
    exact = torch.full((1, 1, 32, 48), 2.0)
    views = reblur_coc(sharp, exact, kernels().detach(), dp, linear_light=True)[1]
    loss = ReblurSearchMapLoss(window=5, highpass=0, criterion='l1')
    wrong_flat, wrong_texture = exact.clone(), exact.clone()
    wrong_flat[..., 4:-4, 2:18] = -2.0
    wrong_texture[..., 4:-4, 30:46] = -2.0
    assert float(loss(exact, sharp, views, dp)) == 0  # the search finds the rendered radius
    assert float(loss(wrong_flat, sharp, views, dp)) < 1e-6 < 1.0 < float(loss(wrong_texture, sharp, views, dp))
    with pytest.raises(ValueError, match="criterion must be 'affine' or 'l1'"):
        ReblurSearchMapLoss(criterion='l2')


def test_search_option_trains_the_map_without_gt_maps(tmp_path, scene):
    """train.search_opt (ReblurSearchMapLoss) learns from sharp image and views only (no 'defocus' key): with the L1
    criterion the map ends closer to the GT map in pixels than the reblur loss alone gets in the same iterations,
    with the affine one (the default) closer up to the affine map that AIWE(1) forgives."""
    data = {k: v for k, v in scene.items() if k != 'defocus'}
    inner = torch.zeros_like(scene['defocus'])
    inner[..., 6:-6, 6:18] = inner[..., 6:-6, 30:42] = 1  # away from the border and the depth edge
    scores = {}
    for label, criterion in (('reblur', None), ('l1', 'l1'), ('affine', 'affine')):
        opt = model_options(tmp_path, network_iters=1000, alternate_iters=0, lr=3e-3)
        if criterion:
            opt['train']['search_opt'] = dict(
                type='ReblurSearchMapLoss', loss_weight=300.0, window=7, highpass=3, criterion=criterion)
        torch.manual_seed(0)
        model = build_model(opt)
        model.feed_data(data)
        for it in range(1, 31):
            model.optimize_parameters(it)
        assert ('l_search' in model.get_current_log()) == bool(criterion)
        model.test()
        pixels = float(((model.output - scene['defocus']).abs() * inner).sum() / inner.sum())
        scores[label] = pixels, calculate_aiwe1(model.output, scene['defocus'], weight=inner)
    assert scores['l1'][0] < 0.7 * scores['reblur'][0], scores
    assert scores['affine'][1] < 0.7 * scores['reblur'][1], scores


def test_cross_convolution_cue_starts_at_the_right_signed_map(scene):
    net = DefocusMapNet(
        cap=5,
        num_feat=8,
        num_level=2,
        num_block=1,
        match_step=0.5,
        match_window=7,
        psf=dict(SYNTH_PSF, profile='butterworth', ramp_width=1.0))
    assert not any(k.startswith('match_') for k in net.state_dict())  # derived from options, not saved
    with torch.no_grad():
        out = net(scene['lq'])
    gt = scene['defocus']
    inner = (slice(None), slice(None), slice(6, -6), slice(6, -6))  # away from the crop border
    agree = (torch.sign(out) == torch.sign(gt))[inner].float().mean()
    assert agree > 0.9, f'sign agrees on {agree:.0%} of the pixels'
    assert (out - gt)[inner].abs().median() < 0.75  # in CoC pixels, not only up to an affine map
    swapped = net(torch.cat(scene['lq'].chunk(2, dim=1)[::-1], dim=1)).detach()  # L <-> R: the sign flips
    assert (torch.sign(swapped) == -torch.sign(gt))[inner].float().mean() > 0.9


def test_model_rejects_inconsistent_options(tmp_path):
    opt = model_options(tmp_path)
    opt['network_map']['cap'] = 8  # larger than the kernels' max_radius 5
    with pytest.raises(ValueError, match='max_radius'):
        build_model(opt)
    opt = model_options(tmp_path)
    del opt['train']['reblur_opt']
    with pytest.raises(KeyError, match='reblur_opt'):
        build_model(opt)


# ---------------------------------------------------------------------- entry points
TINY = dict(FAST, **TINY_DEFOCUS_MAP, **{'train:prior_start_iter': 0})
TEST_NETS = {k: v for k, v in TINY.items() if k.startswith('network_')}


def test_train_resume_test_and_deconvolve_through_basicsr(tmp_path, synthetic_root, monkeypatch):
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    straight.mkdir(), resumed.mkdir()
    over = dict(TINY, **{'train:total_iter': 4, 'val:val_freq': 2})
    model = run_train(tiny_options('train_defocus_map_synthetic.yml', straight, synthetic_root, over), straight)
    exp = straight / 'experiments' / 'defocus_map_synthetic'
    for label in ('net_map', 'net_kernel'):
        assert (exp / 'models' / f'{label}_4.pth').is_file() and (exp / 'models' / f'{label}_latest.pth').is_file()
    vis = exp / 'visualization'
    assert len(list(vis.glob('*/*_2_map.png'))) == 5 and len(list(vis.glob('*/*_2_reblur.png'))) == 5
    kernels = np.load(vis / 'kernels' / 'kernels_2.npy')
    assert kernels.shape == (6, 11, 11) and (vis / 'kernels' / 'kernels_2.png').is_file()
    assert set(model.metric_results) == {'reblur_psnr', 'aiwe1', 'aiwe2', 'spearman'}
    assert model.phase == 'kernel'  # iterations 1 network, 2 kernel, 3 network, 4 kernel

    # 2 iterations + resume + 2 more == 4 straight (both networks, and the phase comes back)
    half = tiny_options('train_defocus_map_synthetic.yml', resumed, synthetic_root,
                        dict(over, **{'train:total_iter': 2}))
    run_train(half, resumed)
    state = torch.load(
        resumed / 'experiments' / 'defocus_map_synthetic' / 'training_states' / '2.state', weights_only=True)
    assert state['iter'] == 2 and state['extra']['phase'] == 'kernel'
    seen = []  # (iteration, phase before it) for every iteration the resumed run trains
    train_step = DefocusMapModel.optimize_parameters

    def recording(self, current_iter):
        seen.append((current_iter, self.phase))
        return train_step(self, current_iter)

    monkeypatch.setattr(DefocusMapModel, 'optimize_parameters', recording)
    model = run_train(
        tiny_options('train_defocus_map_synthetic.yml', resumed, synthetic_root, over), resumed, '--auto_resume')
    # iterations 1-2 are not trained again, and the model starts from the stored phase (a fresh model has none);
    # the equal weights below need the stored optimiser states and RNG states as well
    assert seen == [(3, 'kernel'), (4, 'network')]
    assert model.phase == 'kernel'
    for label in ('net_map', 'net_kernel'):
        a = torch.load(exp / 'models' / f'{label}_4.pth', weights_only=True)['params']
        b = torch.load(
            resumed / 'experiments' / 'defocus_map_synthetic' / 'models' / f'{label}_4.pth',
            weights_only=True)['params']
        assert all(torch.equal(a[k], b[k]) for k in a), label

    # test: maps (PNG + .npy usable as dataroot_defocus) and map metrics
    weights = {
        'path:pretrain_network_map': str(exp / 'models' / 'net_map_latest.pth'),
        'path:pretrain_network_kernel': str(exp / 'models' / 'net_kernel_latest.pth')
    }
    test_opt = tiny_options('test_defocus_map_synthetic.yml', straight, synthetic_root, dict(TEST_NETS, **weights))
    run_test(test_opt, straight)
    results = straight / 'results' / 'defocus_map_synthetic'
    assert len(list((results / 'visualization' / 'SyntheticDPDD_test').glob('*_map.png'))) == 5
    maps = sorted((results / 'defocus_maps' / 'SyntheticDPDD_test').glob('*.npy'))
    assert [p.name for p in maps] == sorted(p.name for p in (synthetic_root / 'test_defocus').glob('*.npy'))

    # deconvolution through BasicSR's own test pipeline (the plugin is found by the start-up hook)
    deconv_opt = tiny_options('test_defocus_deconv_synthetic.yml', straight, synthetic_root, dict(TEST_NETS, **weights))
    code = ('import sys; from basicsr.test import test_pipeline; '
            f'sys.argv[1:] = ["-opt", {str(deconv_opt)!r}]; test_pipeline({str(straight)!r})')
    proc = run_python(['-c', code], straight)
    assert proc.returncode == 0, proc.stderr[-3000:]
    name = load_options(deconv_opt)['name']
    deblurred = list((straight / 'results' / name / 'visualization' / 'SyntheticDPDD_test').glob('*.png'))
    assert len([p for p in deblurred if not p.name.endswith('_map.png')]) == 5
    log = next((straight / 'results' / name).glob('test_*.log')).read_text()
    assert all(f'# {metric}:' in log for metric in ('psnr', 'ssim', 'mae'))
