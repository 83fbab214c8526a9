"""Parity with the DefocusGAN release's training recipe (shared/REFERENCE.md, "DefocusGAN official release").

Each release formula is computed here from its written definition on small fixed tensors and compared with what the
plugin's classes return; the release option files are checked for the release's values.
"""
import math
import numpy as np
import pytest
import torch
import torchvision
from basicsr.models import build_model
from conftest import ROOT, load_options, tiny_options
from torch.nn import functional as F

from defocusgan_plugin.archs.blur_kernel_arch import LearnableBlurKernel
from defocusgan_plugin.archs.patchgan_arch import PatchGANDiscriminator
from defocusgan_plugin.losses.defocus_adversarial_loss import DefocusAdversarialLoss
from defocusgan_plugin.losses.vgg_perceptual_loss import VGG19PerceptualLoss
from defocusgan_plugin.models.defocusgan_model import guidance_weight
from defocusgan_plugin.ops.render import reblur_coc
from defocusgan_plugin.utils.options import parse_options

# DPDD's training set cut into the release's patch list: 350 images of 1680 x 1120, 512 px patches with stride 204
PATCHES_PER_IMAGE = len(range(0, 1120 - 512 + 1, 204)) + 1, len(range(0, 1680 - 512 + 1, 204)) + 1  # + flush one
EPOCH = round(350 * PATCHES_PER_IMAGE[0] * PATCHES_PER_IMAGE[1] * 0.7) // 4  # 30 % dropped, batch 4

pytestmark = pytest.mark.usefixtures('one_thread')  # tiny tensors (conftest.one_thread)


class SquareCritic(torch.nn.Module):
    """D(x) = (w . x)^2 per pixel: its input gradient depends on x, so the interpolation weight matters."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w).view(1, -1, 1, 1))

    def forward(self, x):
        return (x * self.w).sum(1, keepdim=True)**2


# ---------------------------------------------------------------------------------------------- stage 2 losses
def test_gradient_penalty_one_alpha_and_per_pixel_channel_norm(monkeypatch):
    torch.manual_seed(0)
    w = np.array([0.6, -0.3, 0.9])
    real, fake = torch.rand(2, 3, 5, 6, dtype=torch.float64), torch.rand(2, 3, 5, 6, dtype=torch.float64)
    critic = SquareCritic(w).double()
    alpha = 0.3
    # written definition: x = a real + (1 - a) fake; g = d(sum D)/dx = 2 (w . x) w per pixel; norm over channels
    x = alpha * real.numpy() + (1 - alpha) * fake.numpy()
    norm = 2 * np.abs(np.einsum('c,bchw->bhw', w, x)) * np.linalg.norm(w)
    expected = 10 * np.mean((norm - 1)**2)
    loss = DefocusAdversarialLoss()
    assert loss.gradient_penalty(critic, real, fake, alpha=alpha).item() == pytest.approx(expected, rel=1e-10)
    sample = DefocusAdversarialLoss(gp_norm='sample').gradient_penalty(critic, real, fake, alpha=alpha).item()
    assert abs(sample - expected) > 0.1 * expected  # the Gulrajani form is another number

    shapes = []
    rand = torch.rand
    monkeypatch.setattr(
        torch, 'rand', lambda *size, **kw: shapes.append(tuple(size[0]
                                                               if len(size) == 1 else size)) or rand(*size, **kw))
    drawn = loss.gradient_penalty(critic, real, fake)
    assert shapes == [(1, 1, 1, 1)]  # one alpha for the whole batch
    DefocusAdversarialLoss(gp_alpha='sample').gradient_penalty(critic, real, fake)
    assert shapes[-1] == (2, 1, 1, 1)
    drawn.backward()
    assert critic.w.grad is not None and torch.isfinite(critic.w.grad).all()


def test_critic_loss_adds_0_1_mean_of_d_times_map_magnitude_and_generator_term_is_unweighted():
    torch.manual_seed(1)
    d_real, d_fake = torch.randn(2, 1, 7, 9, dtype=torch.float64), torch.randn(2, 1, 7, 9, dtype=torch.float64)
    dmap = torch.randn(2, 3, 20, 28, dtype=torch.float64) * 6
    # written definition: d = D(fake) - D(real) per pixel; m = max over channels of |map|, nearest-resized
    rows, cols = np.floor(np.arange(7) * 20 / 7).astype(int), np.floor(np.arange(9) * 28 / 9).astype(int)
    m = np.abs(dmap.numpy()).max(axis=1)[:, rows][:, :, cols][:, None]
    d = d_fake.numpy() - d_real.numpy()
    expected = d.mean() + 0.1 * (d * m).mean()
    loss = DefocusAdversarialLoss(loss_weight=0.001)
    critic = loss(d_real, True, is_disc=True, defocus=dmap) + loss(d_fake, False, is_disc=True, defocus=dmap)
    assert critic.item() == pytest.approx(expected, rel=1e-12)
    assert loss(d_fake, True, is_disc=False, defocus=dmap).item() == pytest.approx(-0.001 * d_fake.mean().item())
    assert not loss.uses_map(is_disc=False) and loss.uses_map(is_disc=True)


def test_perceptual_features_are_pre_relu_conv3_3_of_the_unnormalised_input():
    torch.manual_seed(2)
    loss = VGG19PerceptualLoss(loss_weight=1.0, pretrained=False)
    vgg = torchvision.models.vgg19().features[:15].eval()
    vgg.load_state_dict(loss.features.state_dict())
    assert isinstance(vgg[14], torch.nn.Conv2d)  # conv3_3, before its ReLU
    x, y = torch.rand(1, 3, 24, 24), torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        expected = ((vgg(x) - vgg(y))**2).mean().item()
        assert loss(x, y)[0].item() == pytest.approx(expected, rel=1e-5)
        normalised = VGG19PerceptualLoss(loss_weight=1.0, pretrained=False, use_input_norm=True)
        normalised.features.load_state_dict(loss.features.state_dict())
        assert normalised(x, y)[0].item() > 5 * expected  # ImageNet mean/std inflates the differences
        bgr = VGG19PerceptualLoss(loss_weight=1.0, pretrained=False, channel_order='bgr')
        bgr.features.load_state_dict(loss.features.state_dict())
        # the release feeds VGG19 its OpenCV (BGR) images: the loss of RGB inputs is that of the swapped images
        assert bgr(x, y)[0].item() == pytest.approx(((vgg(x.flip(1)) - vgg(y.flip(1)))**2).mean().item(), rel=1e-5)
        assert bgr(x, y)[0].item() != pytest.approx(expected, rel=1e-3)


# ---------------------------------------------------------------------------------------------- annealing
def test_annealing_weight_is_the_release_curve_counted_from_its_start():
    T = 20000
    for t in (0, 1, 5000, 10000, 19999):
        assert guidance_weight(t, T, 'gaussian') == math.exp(-(2 * t / T)**2)
    assert guidance_weight(T, T, 'gaussian') == 0.0  # masks dropped once t >= T
    assert guidance_weight(19999, T, 'gaussian') > 0.018
    assert guidance_weight(19999, T, 'gaussian_rescaled') < 1e-4  # the plugin's rescaled curve is another option


def _stage2_model(tmp_path, data_root, overrides):
    """The release option file, shrunk to tiny networks and crops on the synthetic set."""
    over = {
        'num_gpu': 0,
        'datasets:train:gt_size': 32,
        'datasets:train:patch_stride': None,
        'datasets:train:drop_least_sharp': 0,
        'datasets:train:load_dp_views': False,
        'datasets:train:num_worker_per_gpu': 0,
        'datasets:train:batch_size_per_gpu': 1,
        'network_g:num_feat': 16,
        'network_d:num_feat': 8,
        'train:defocus_map': {
            'source': 'gt'
        },
        'train:perceptual_opt:pretrained': False,
        'val': None,
        'logger:use_tb_logger': False
    }
    over.update(overrides)
    path = tiny_options('train_defocusgan.yml', tmp_path, data_root, over)
    opt, _ = parse_options(str(tmp_path), is_train=True, argv=['-opt', str(path)])
    model = build_model(opt)
    from basicsr.data import build_dataset
    item = build_dataset(dict(opt['datasets']['train'], phase='train'))[0]
    return model, {k: v[None] if torch.is_tensor(v) else [v] for k, v in item.items()}


def _adam_steps(optimizer):
    return int(next(iter(optimizer.state.values()))['step']) if optimizer.state else 0


def test_release_schedule_critic_steps_generator_term_and_annealing_start(tmp_path, synthetic_root):
    torch.manual_seed(3)
    model, batch = _stage2_model(
        tmp_path, synthetic_root, {
            'train:critic_start_iter': 1,
            'train:gan_start_iter': 3,
            'train:guidance:anneal_start_iter': 2,
            'train:guidance:anneal_iters': 100
        })
    seen = []
    for it in range(1, 5):
        weight = model.current_guidance()
        model.feed_data(batch)
        model.optimize_parameters(it)
        seen.append((weight, model.anneal_step, _adam_steps(model.optimizer_d), 'l_g_gan' in model.log_dict, 'l_d_gp'
                     in model.log_dict))
    w = guidance_weight
    assert seen == [
        (1.0, 0, 0, False, False),  # iteration 1: content losses only, counter at rest
        (1.0, 0, 2, False, True),  # critic from iteration 2, two updates per iteration
        (1.0, 1, 4, False, True),  # the counter moves after anneal_start_iter
        (w(1, 100), 2, 6, True, True)
    ]  # generator adversarial term after gan_start_iter


@pytest.mark.parametrize('critic_first', [True, False])
def test_generator_term_is_scored_by_the_critic_after_its_updates(tmp_path, synthetic_root, critic_first):
    torch.manual_seed(4)
    over = {'train:critic_start_iter': 0, 'train:gan_start_iter': 0, 'train:critic_first': critic_first}
    model, batch = _stage2_model(tmp_path, synthetic_root, over)
    model.feed_data(batch)
    model.optimize_parameters(1)
    with torch.no_grad():  # net_d now holds the updated critic; model.output is the generator's output of the step
        rescored = -0.001 * model.net_d(model.output).mean().item()
    assert (model.log_dict['l_g_gan'] == pytest.approx(rescored, rel=1e-5)) == critic_first


def test_release_critic_is_padded_by_2_without_affine_norms_and_with_biases():
    net = PatchGANDiscriminator()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in net.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    assert [c.padding for c in convs] == [(2, 2)] * 5 and all(c.bias is not None for c in convs)
    assert len(norms) == 3 and not any(n.affine or n.track_running_stats for n in norms)
    assert net(torch.rand(1, 3, 64, 64)).shape == (1, 1, 11, 11)


# ---------------------------------------------------------------------------------------------- stage 1
def release_kernel_by_definition(radius):
    """The release's initial kernel of one radius, written out with numpy only."""
    k = 2 * radius + 1
    d0 = (k - 1) / 2.5
    y, x = np.mgrid[0:k, 0:k] - k // 2
    q = ((x**2 + y**2) / d0**2)**3
    b = q / (1 + q)
    b = 0.1 + 0.9 * (b - b.min()) / (b.max() - b.min())
    kernel = b * (x**2 + y**2 <= (k // 2)**2)
    g = round(k / 7) + 1
    g += 1 - g % 2
    sigma = 0.3 * ((g - 1) / 2 - 1) + 0.8
    half = g // 2
    kernel = np.pad(kernel, half)
    taps = np.exp(-(np.arange(g) - half)**2 / (2 * sigma**2))
    window = np.outer(taps, taps) / taps.sum()**2
    padded = np.pad(kernel, half, mode='reflect')  # OpenCV's default border, reflect-101
    out = np.zeros_like(kernel)
    for i in range(kernel.shape[0]):
        for j in range(kernel.shape[1]):
            out[i, j] = (padded[i:i + g, j:j + g] * window).sum()
    return out / out.sum()


def test_release_butterworth_kernels_match_their_definition():
    module = LearnableBlurKernel(max_radius=12, init='release', signed=True, param='raw')
    kernels = module().detach().double().numpy()
    radii = module.radii().tolist()
    size = kernels.shape[-1]
    for r in (1, 5, 12):
        expected = release_kernel_by_definition(r)
        lo = (size - expected.shape[0]) // 2
        for layer in (radii.index(r), radii.index(-r)):  # both sign sets start from the same kernel
            kernel = kernels[layer]
            assert np.abs(kernel[lo:lo + expected.shape[0], lo:lo + expected.shape[0]] - expected).max() < 1e-7
            assert kernel.sum() == pytest.approx(1.0, abs=1e-6)
            assert np.abs(kernel).sum() == pytest.approx(np.abs(expected).sum(), abs=1e-6)  # zero outside
    assert kernels[radii.index(0)].sum() == 1.0 and kernels[radii.index(0)].max() == 1.0  # radius 0: a delta


def test_release_kernel_sets_are_raw_separate_per_sign_and_radius_0_trains():
    module = LearnableBlurKernel(max_radius=3, init='release', signed=True, param='raw')
    radii = module.radii().tolist()
    assert radii == [-3, -2, -1, 0, 1, 2, 3]
    kernels = module()
    (kernels[radii.index(2)].sum() * 3 + kernels[radii.index(0)].sum()).backward()
    grad = module.weight.grad
    assert grad[radii.index(-2)].abs().sum() == 0 and grad[radii.index(2)].abs().sum() > 0
    assert grad[radii.index(0)].abs().sum() > 0  # radius 0 is trainable
    with torch.no_grad():
        module.weight.mul_(2.0)
    assert torch.allclose(module().sum(dim=(-2, -1)), torch.full((7, ), 2.0))  # raw weights: not renormalised


def test_gather_reblur_per_channel_signed_kernels_and_zero_padding():
    torch.manual_seed(5)
    image = torch.rand(1, 3, 12, 13, dtype=torch.float64)
    cmap = (torch.rand(1, 3, 12, 13, dtype=torch.float64) * 6 - 3)
    kernels = torch.rand(7, 9, 9, dtype=torch.float64)  # signed radii -3..3, arbitrary (learned) kernels
    out = reblur_coc(image, cmap, kernels, signed=True, composite='gather', padding='zeros', method='fft')[0]
    # written definition: out_c(p) = sum_r max(0, 1 - |m_c(p) - r|) (K_r * image_c)(p), zero-padded true convolution
    expected = torch.zeros_like(image)
    for i, r in enumerate(range(-3, 4)):
        blurred = F.conv2d(image.transpose(0, 1), kernels[i].flip(-2, -1)[None, None], padding=4).transpose(0, 1)
        expected += (1 - (cmap - r).abs()).clamp_min(0) * blurred
    assert torch.allclose(out, expected, atol=1e-10)


def _stage1_model(tmp_path, data_root):
    over = {
        'num_gpu': 0,
        'datasets:train:gt_size': 32,
        'datasets:train:patch_stride': None,
        'datasets:train:drop_least_sharp': 0,
        'datasets:train:num_worker_per_gpu': 0,
        'datasets:train:batch_size_per_gpu': 1,
        'network_map:num_feat': 16,
        'network_kernel:max_radius': 24,
        'train:prior_start_iter': 1,
        'val': None,
        'logger:use_tb_logger': False
    }
    path = tiny_options('train_defocus_map.yml', tmp_path, data_root, over)
    opt, _ = parse_options(str(tmp_path), is_train=True, argv=['-opt', str(path)])
    from basicsr.data import build_dataset
    item = build_dataset(dict(opt['datasets']['train'], phase='train'))[0]
    return build_model(opt), {k: v[None] if torch.is_tensor(v) else [v] for k, v in item.items()}


def test_release_stage1_loss_is_1000_l1_of_the_combined_view_plus_tv_after_its_start(tmp_path, synthetic_root):
    torch.manual_seed(6)
    model, batch = _stage1_model(tmp_path, synthetic_root)
    model.feed_data(batch)
    model.optimize_parameters(1)
    assert 'l_prior' not in model.log_dict  # TV after prior_start_iter only
    model.feed_data(batch)
    model.optimize_parameters(2)
    with torch.no_grad():
        dmap, kernels = model.net_map(model.lq), model.net_kernel()
    assert dmap.shape[1] == 3 and dmap.abs().max() <= 24
    expected = torch.zeros_like(model.gt)  # gather reblur by its definition, in the files' values
    radii = model.kernel_module.radii().tolist()
    for i, r in enumerate(radii):
        blurred = F.conv2d(
            model.gt.transpose(0, 1), kernels[i].flip(-2, -1)[None, None],
            padding=kernels.shape[-1] // 2).transpose(0, 1)
        expected += (1 - (dmap - r).abs()).clamp_min(0) * blurred
    # the logged loss is the release's 1000 * L1 of the step's reblur against the captured combined view
    assert model.log_dict['l_reblur'] == pytest.approx(
        1000 * (model.reblurred - model.blurred).abs().mean().item(), rel=1e-5)
    assert torch.allclose(model.reblur(dmap, kernels)[0], expected, atol=1e-5)
    tv = (dmap.diff(dim=-1).abs().sum() + dmap.diff(dim=-2).abs().sum()).item()
    assert 'l_prior' in model.log_dict and model.log_dict['l_prior'] > 0
    assert 1e-5 * tv == pytest.approx(model.cri_prior(dmap).item(), rel=1e-5)


# ---------------------------------------------------------------------------------------------- option files
def test_release_option_files_hold_the_release_recipe():
    assert EPOCH == 1715
    gan, stage1 = load_options('train_defocusgan.yml'), load_options('train_defocus_map.yml')
    train = gan['train']
    assert train['critic_start_iter'] == 5 * EPOCH and train['gan_start_iter'] == 10 * EPOCH
    assert train['critic_steps'] == 2 and train['critic_first'] is True
    assert train['guidance'] == {'anneal_iters': 20000, 'schedule': 'gaussian', 'anneal_start_iter': 9 * EPOCH}
    assert train['total_iter'] == 91 * EPOCH
    assert train['scheduler']['milestones'] == [30 * EPOCH, 60 * EPOCH, 90 * EPOCH]
    assert (train['pixel_opt']['loss_weight'], train['perceptual_opt']['loss_weight'],
            train['gan_opt']['loss_weight']) == (0.5, 0.006, 0.001)
    assert train['perceptual_opt']['use_input_norm'] is False and train['perceptual_opt']['layer'] == 'conv3_3'
    assert {k: train['gan_opt'][k] for k in ('weighting', 'critic_map_weight', 'gp_norm', 'gp_alpha', 'gp_weight')} \
        == {'weighting': 'release', 'critic_map_weight': 0.1, 'gp_norm': 'pixel', 'gp_alpha': 'batch', 'gp_weight': 10}
    assert gan['network_d']['padding'] == 2 and gan['network_d']['norm_affine'] is False
    assert gan['network_g']['type'] == 'DefocusGANReleaseGenerator'
    for opt in (gan, stage1):
        data = opt['datasets']['train']
        assert (data['gt_size'], data['patch_stride'], data['drop_least_sharp'],
                data['batch_size_per_gpu']) == (512, 204, 0.3, 4)
        assert not (data['use_hflip'] or data['use_vflip'] or data['use_rot'])
    s1 = stage1['train']
    assert s1['optim_map']['lr'] == s1['optim_kernel']['lr'] == 2e-5
    assert (s1['total_iter'], s1['phase_schedule']['network_iters'],
            s1['phase_schedule']['alternate_iters']) == (30 * EPOCH, 10 * EPOCH, 5 * EPOCH)
    assert s1['prior_start_iter'] == 3000 and s1['prior_opt']['reduction'] == 'sum'
    assert (s1['reblur_opt']['loss_weight'], s1['reblur_opt']['view_weight'], s1['reblur_opt']['diff_weight'],
            s1['reblur_opt']['crop_border']) == (1000, 0, 0, 0)
    kernel = stage1['network_kernel']
    assert {k: kernel[k] for k in ('max_radius', 'init', 'signed', 'param', 'composite', 'padding', 'linear_light')} \
        == {'max_radius': 24, 'init': 'release', 'signed': True, 'param': 'raw', 'composite': 'gather',
            'padding': 'zeros', 'linear_light': False}
    assert stage1['network_map']['type'] == 'DefocusMapReleaseNet' and stage1['network_map']['clamp'] == 24


def test_comparison_script_scales_each_recipe_to_the_same_budget():
    import argparse
    import importlib.util
    spec = importlib.util.spec_from_file_location('compare', str(ROOT / 'scripts' / 'compare_release_plugin.py'))
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    args = argparse.Namespace(iters=1500, crop=64, batch=4, val_every=150, seed=10, dataroot='data')
    release, mapping = compare.make_options('release', args)
    plugin, _ = compare.make_options('plugin', args)
    for opt in (release, plugin):
        data = opt['datasets']['train']
        assert (opt['train']['total_iter'], data['gt_size'], data['batch_size_per_gpu']) == (1500, 64, 4)
        assert opt['train']['defocus_map'] == {'source': 'gt'} and not opt['train']['perceptual_opt']['pretrained']
    assert release['network_g']['type'] == 'DefocusGANReleaseGenerator' and release['train']['critic_steps'] == 2
    assert plugin['network_g']['type'] == 'DefocusGANGenerator' and plugin['train']['critic_steps'] == 1
    assert not release['datasets']['train']['use_hflip'] and plugin['datasets']['train']['use_hflip']
    assert mapping['train:critic_start_iter'] == (5 * EPOCH, round(5 * EPOCH * 1500 / (91 * EPOCH)))
    assert release['train']['gan_start_iter'] == round(10 * 1500 / 91)
    assert release['train']['guidance']['anneal_start_iter'] == round(9 * 1500 / 91)
    assert release['train']['scheduler']['milestones'] == [round(e * 1500 / 91) for e in (30, 60, 90)]


def test_deconvolution_picks_signed_kernel_sets_by_the_signed_map_per_channel():
    from defocusgan_plugin.ops.deconv import deconv_layered, wiener_deconv
    torch.manual_seed(0)
    image = torch.rand(1, 3, 24, 24)
    kernels = torch.rand(3, 5, 5)  # radii -1, 0, 1: the two signs get different kernels
    kernels = kernels / kernels.sum(dim=(-2, -1), keepdim=True)
    coc = torch.ones(1, 3, 24, 24)
    coc[:, 1] = -1  # the green channel lies in front of the focal plane
    out = deconv_layered(image, coc, kernels, reg=0.05, start=-1)
    for channel, radius_index in ((0, 2), (1, 0), (2, 2)):
        expected = wiener_deconv(image, kernels[radius_index], reg=0.05).clamp(0, 1)
        assert torch.allclose(out[:, channel], expected[:, channel], atol=1e-5), channel
    by_magnitude = deconv_layered(image, coc, kernels[1:], reg=0.05)  # unsigned sets 0..R ignore the sign
    positive = wiener_deconv(image, kernels[2], reg=0.05).clamp(0, 1)
    assert torch.allclose(by_magnitude, positive, atol=1e-5)
