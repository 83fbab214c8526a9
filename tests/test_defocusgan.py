"""DefocusGAN: generator, masks, annealing, PatchGAN, defocus adversarial loss, perceptual loss, model and options."""
import logging
import math
import numpy as np
import pytest
import shutil
import torch
from basicsr.data import build_dataset
from basicsr.models import build_model
from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY
from conftest import FAST, basicsr_checkout, load_options, run_python, run_test, run_train, tiny_options
from expected_outputs import check_test_outputs

from defocusgan_plugin.archs.defocusgan_arch import DefocusGANGenerator, defocus_masks
from defocusgan_plugin.archs.patchgan_arch import PatchGANDiscriminator
from defocusgan_plugin.losses.defocus_adversarial_loss import DefocusAdversarialLoss, defocus_weights
from defocusgan_plugin.losses.vgg_perceptual_loss import VGG19PerceptualLoss
from defocusgan_plugin.models.defocusgan_model import ANNEAL_SCHEDULES, DefocusGANModel, guidance_weight
from defocusgan_plugin.utils.options import parse_options

DEMO = 'train_defocusgan_synthetic.yml'
# Tiny networks and crops: every training run below takes seconds on one CPU core.
TINY = dict(
    FAST, **{
        'datasets:train:gt_size': 32,
        'network_g:num_feat': [8, 8, 8],
        'network_d:num_feat': 8,
        'train:gan_start_iter': 0,
    })

pytestmark = pytest.mark.usefixtures('one_thread')  # tiny tensors (conftest.one_thread)


def generator(**kwargs):
    """A generator whose output layer is randomised: the real one starts as the identity (zero-initialised)."""
    net = DefocusGANGenerator(**kwargs)
    torch.nn.init.normal_(net.conv_last.weight, std=0.02)
    return net


def checkpoint(path, net):
    torch.save({'params': net.state_dict()}, path)
    return str(path)


def saved(path):
    return torch.load(path, weights_only=True)['params']


# ---------------------------------------------------------------------------------------------- generator
def test_names_registered():
    assert {'DefocusGANGenerator', 'PatchGANDiscriminator'} <= set(ARCH_REGISTRY.keys())
    assert {'DefocusAdversarialLoss', 'VGG19PerceptualLoss'} <= set(LOSS_REGISTRY.keys())
    assert 'DefocusGANModel' in MODEL_REGISTRY


def test_default_generator_has_its_documented_parameter_count():
    params = sum(p.numel() for p in DefocusGANGenerator().parameters())
    assert params == 4_741_482  # README: 4.74 M (paper: 4.59 M); any other layout changes the count


@pytest.mark.parametrize('shape', [(1, 3, 37, 53), (2, 3, 8, 8), (1, 3, 5, 70)])
def test_any_size_is_padded_and_cropped_back(shape):
    torch.manual_seed(0)
    net = generator(num_feat=(8, 8, 8))
    x = torch.rand(shape)
    dmap = torch.randn(shape[0], 1, *shape[2:]) * 5
    with torch.no_grad():
        assert net(x).shape == shape
        assert net(x, dmap, 0.5).shape == shape


def test_generator_starts_as_identity():
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        assert torch.equal(DefocusGANGenerator(num_feat=(8, 8, 8))(x), x)


def test_masks_partition_every_pixel_once():
    edges = (1.9, 4.2, 6.2)
    dmap = torch.linspace(-9, 9, 2 * 32 * 32).view(2, 1, 32, 32)
    dmap[0, 0, 0, :4] = torch.tensor([1.9, -4.2, 6.2, 0.0])  # exactly on the edges
    for size in (None, (8, 8), (4, 4)):
        masks = defocus_masks(dmap, edges, size)
        assert masks.shape[1] == 4
        assert set(masks.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(masks.sum(dim=1), torch.ones_like(masks[:, 0]))
    masks = defocus_masks(dmap, edges)
    assert masks[0, :, 0, :4].argmax(dim=0).tolist() == [1, 2, 3, 0]  # ranges are [e_k, e_k+1)
    magnitude = dmap.abs()[:, 0]
    assert torch.equal(masks[:, 3].bool(), magnitude >= 6.2)
    assert torch.equal(masks[:, 0].bool(), magnitude < 1.9)
    # the magnitude is the max over channels (e.g. a two-channel map)
    two = torch.stack([torch.zeros(1, 4, 4), torch.full((1, 4, 4), -5.0)], dim=1)
    assert defocus_masks(two, edges)[:, 2].all()


@pytest.mark.parametrize('schedule', sorted(ANNEAL_SCHEDULES))
def test_annealing_schedule_endpoints(schedule):
    total = 1000
    values = [guidance_weight(t, total, schedule) for t in range(0, total + 200, 10)]
    assert values[0] == 1.0
    assert guidance_weight(total, total, schedule) == 0.0 and values[-1] == 0.0
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert 0.0 < guidance_weight(total // 2, total, schedule) < 1.0


def test_annealing_gaussian_follows_official_release_and_rejects_unknown_names():
    # exp(-(2t/T)^2) rescaled to end at 0: within 2 % of the official curve everywhere
    for t in range(0, 2000, 50):
        assert abs(guidance_weight(t, 2000, 'gaussian') - math.exp(-(2 * t / 2000)**2)) < 0.02
    assert guidance_weight(0, 0, 'cosine') == 0.0  # anneal_iters 0: no guidance at all
    with pytest.raises(ValueError, match='train.guidance.schedule'):
        guidance_weight(0, 10, 'exponentially')


def test_map_free_forward_equals_zero_guidance():
    torch.manual_seed(0)
    net = generator(num_feat=(8, 8, 8)).eval()
    x = torch.rand(2, 3, 40, 48)
    dmap = torch.randn(2, 1, 40, 48) * 5
    with torch.no_grad():
        free = net(x)
        assert torch.equal(free, net(x, dmap, 0.0))
        guided = net(x, dmap, 1.0)
        assert (guided - free).abs().max() > 1e-3  # the masks do change the result while guidance is on
        assert (net(x, dmap * 0, 1.0) - guided).abs().max() > 1e-3  # ... and depend on the map


def test_map_of_wrong_size_is_refused():
    with pytest.raises(ValueError, match='Defocus map size'):
        DefocusGANGenerator(num_feat=(8, 8, 8))(torch.rand(1, 3, 16, 16), torch.rand(1, 1, 8, 8))


def test_bad_mask_edges_are_refused():
    with pytest.raises(ValueError, match='mask_edges'):
        DefocusGANGenerator(mask_edges=(4.2, 1.9, 6.2))


# ---------------------------------------------------------------------------------------------- critic and losses
def test_patchgan_gives_unbounded_patch_score_map():
    net = PatchGANDiscriminator(num_feat=8, padding=1, norm_affine=True)  # pix2pix's geometry (release: padding 2)
    strided = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == 3
    scores = net(torch.rand(2, 3, 64, 64) * 4 - 2)
    assert scores.shape == (2, 1, 6, 6)  # N x N patch scores of 70 px receptive fields
    assert (scores < 0).any() or (scores > 1).any()  # no sigmoid: a WGAN critic


@pytest.mark.parametrize('kwargs, minimum', [({}, 24), ({'num_layers': 2, 'norm': 'none'}, 12)])
def test_patchgan_refuses_too_small_input_naming_sizes(kwargs, minimum):
    net = PatchGANDiscriminator(num_feat=8, padding=1, **kwargs)
    assert net.min_size == minimum
    assert net(torch.rand(1, 3, minimum, minimum)).shape[-2:] == (1, 1)  # the minimum itself works
    for h, w in ((minimum - 1, 64), (64, minimum - 1), (8, 8)):
        with pytest.raises(ValueError, match=rf'input of {h}x{w} pixels is too small.*at least {minimum}x{minimum}'):
            net(torch.rand(1, 3, h, w))


def test_adversarial_weighting_puts_more_weight_on_high_coc():
    dmap = torch.zeros(1, 1, 64, 64)
    dmap[..., 32:] = -8.0  # right half strongly defocused (sign does not matter)
    phi = defocus_weights(dmap, (8, 8))
    assert phi.mean().item() == pytest.approx(1.0)
    assert phi[..., 4:].min() > 4 * phi[..., :4].max()

    loss = DefocusAdversarialLoss(loss_weight=1.0, weighting='paper')  # Eq. 7 (the release weights the critic only)
    pred = torch.zeros(1, 1, 8, 8, requires_grad=True)
    loss(pred, True, is_disc=False, defocus=dmap).backward()
    grad = -pred.grad[0, 0]  # the generator is pushed hardest where the image is blurred
    assert grad[:, 4:].min() > 4 * grad[:, :4].max()
    # without a map: plain WGAN terms; the generator term carries loss_weight, the critic terms do not
    scores = torch.randn(2, 1, 8, 8)
    weighted = DefocusAdversarialLoss(loss_weight=0.002)
    assert weighted(scores, True).item() == pytest.approx(-0.002 * scores.mean().item())
    assert weighted(scores, False, is_disc=True).item() == pytest.approx(scores.mean().item())
    assert weighted(scores, True, is_disc=True).item() == pytest.approx(-scores.mean().item())


def test_gradient_penalty_matches_wgan_gp_and_is_differentiable():
    # a linear critic: score map = a . x per pixel; the gradient of its mean has norm |a| / sqrt(H W) per sample
    critic = torch.nn.Conv2d(3, 1, 1, bias=False)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([3.0, 4.0, 0.0]).view(1, 3, 1, 1))
    real, fake = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    gp = DefocusAdversarialLoss(gp_weight=10.0, gp_norm='sample').gradient_penalty(critic, real, fake)
    assert gp.item() == pytest.approx(10.0 * (5.0 / 4.0 - 1.0)**2, rel=1e-5)

    torch.manual_seed(0)
    net = PatchGANDiscriminator(num_feat=8)
    gp = DefocusAdversarialLoss().gradient_penalty(net, torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    assert gp.item() > 0
    gp.backward()
    weights = [p.grad for name, p in net.named_parameters() if name.endswith('weight')]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in weights)


def test_perceptual_loss_without_and_with_local_weights(tmp_path, monkeypatch):
    torch.manual_seed(0)
    loss = VGG19PerceptualLoss(loss_weight=1.0, pretrained=False)
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    value, style = loss(x, y)
    assert style is None and value.item() > 0 and loss(x, x)[0].item() == 0
    assert len(loss.features) == 15  # conv1_1 ... conv3_3 (pre-activation)
    # torchvision's file format: features.<index>.weight/bias plus the classifier
    state = {f'features.{k}': v for k, v in loss.features.state_dict().items()}
    state['classifier.0.weight'] = torch.zeros(1)
    torch.save(state, tmp_path / 'vgg19.pth')
    loaded = VGG19PerceptualLoss(loss_weight=1.0, vgg_path=str(tmp_path / 'vgg19.pth'))
    assert loaded(x, y)[0].item() == pytest.approx(value.item())
    torch.save({'features.0.weight': torch.zeros(1)}, tmp_path / 'other.pth')
    with pytest.raises(ValueError, match='not a torchvision VGG19'):
        VGG19PerceptualLoss(vgg_path=str(tmp_path / 'other.pth'))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'empty'))
    monkeypatch.delenv('DEFOCUSGAN_VGG19_WEIGHTS', raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r'vgg_path.*pretrained: false'):
        VGG19PerceptualLoss()


# ---------------------------------------------------------------------------------------------- model
def _model(tmp_path, data_root, overrides=None):
    """Builds a DefocusGANModel in-process from the demo options (tiny networks)."""
    opt_path = tiny_options(DEMO, tmp_path, data_root, dict(TINY, **(overrides or {})))
    opt, _ = parse_options(str(tmp_path), is_train=True, argv=['-opt', str(opt_path)])
    return build_model(opt), opt


def _batch(opt):
    """The first training sample of the options' dataset as a batch of one."""
    item = build_dataset(dict(opt['datasets']['train'], phase='train'))[0]
    return {k: v[None] if torch.is_tensor(v) else [v] for k, v in item.items()}


def test_three_iterations_update_generator_and_critic(tmp_path, synthetic_root):
    torch.manual_seed(1)
    g0 = generator(num_feat=(8, 8, 8))
    d0 = PatchGANDiscriminator(num_feat=8, padding=1, norm_affine=True)  # the demo's critic
    over = dict(
        TINY, **{
            'train:total_iter': 3,
            'logger:save_checkpoint_freq': 3,
            'val:val_freq': 3,
            'train:ema_decay': 0.9,
            'path:pretrain_network_g': checkpoint(tmp_path / 'g0.pth', g0),
            'path:pretrain_network_d': checkpoint(tmp_path / 'd0.pth', d0)
        })
    model = run_train(tiny_options(DEMO, tmp_path, synthetic_root, over), tmp_path)
    models = tmp_path / 'experiments' / 'defocusgan_synthetic' / 'models'
    g3, d3 = saved(models / 'net_g_3.pth'), saved(models / 'net_d_3.pth')
    assert 'params_ema' in torch.load(models / 'net_g_3.pth', weights_only=True)  # optional EMA generator saved
    for start, end in ((g0.state_dict(), g3), (d0.state_dict(), d3)):
        # every conv weight moved (channel attention squeezed to 1 channel may sit behind a dead ReLU this early)
        weights = [k for k in start if k.endswith('weight') and '.attention.' not in k]
        assert weights and all(not torch.equal(start[k], end[k]) for k in weights)
    assert model.extra_training_state() == {'anneal_step': 3}
    assert set(model.log_dict) >= {'l_g_pix', 'l_g_percep', 'l_g_gan', 'l_d_real', 'l_d_fake', 'l_d_gp', 'guidance'}


def test_resume_restores_annealing_state(tmp_path, synthetic_root, monkeypatch):
    """The resumed run trains iterations 3 and 4 only, from the annealing step stored in the training state (set to
    5 here, so that neither a restart from scratch nor a step recounted from the iteration passes)."""
    over = dict(
        TINY, **{
            'train:total_iter': 2,
            'train:guidance:anneal_iters': 8,
            'train:guidance:anneal_start_iter': 0,
            'val:val_freq': 100
        })
    run_train(tiny_options(DEMO, tmp_path, synthetic_root, over), tmp_path)
    state_path = tmp_path / 'experiments' / 'defocusgan_synthetic' / 'training_states' / '2.state'
    state = torch.load(state_path, weights_only=True)
    assert state['iter'] == 2 and state['extra'] == {'anneal_step': 2}  # one step per generator update
    state['extra']['anneal_step'] = 5
    torch.save(state, state_path)

    seen = []  # (iteration, annealing step before it) for every iteration the resumed run trains
    train_step = DefocusGANModel.optimize_parameters

    def recording(self, current_iter):
        seen.append((current_iter, self.anneal_step))
        return train_step(self, current_iter)

    monkeypatch.setattr(DefocusGANModel, 'optimize_parameters', recording)
    over['train:total_iter'] = 4
    model = run_train(tiny_options(DEMO, tmp_path, synthetic_root, over), tmp_path, '--auto_resume')
    assert seen == [(3, 5), (4, 6)]
    assert model.anneal_step == 7
    schedule = load_options(DEMO)['train']['guidance']['schedule']
    assert model.current_guidance() == guidance_weight(7, 8, schedule) > 0
    assert model.log_dict['guidance'] == pytest.approx(guidance_weight(6, 8, schedule))


def test_overfitting_one_crop_drops_l1(tmp_path, synthetic_root):
    torch.manual_seed(0)
    model, opt = _model(
        tmp_path, synthetic_root, {
            'network_g:num_feat': [16, 16, 16],
            'train:optim_g:lr': 1e-3,
            'train:gan_start_iter': 1000,
            'train:perceptual_opt': None,
            'datasets:train:gt_size': 24
        })
    batch = _batch(opt)
    losses = []
    for it in range(1, 41):
        model.feed_data(batch)
        model.optimize_parameters(it)
        losses.append(model.log_dict['l_g_pix'])
    assert 'l_g_gan' not in model.log_dict  # adversarial warm-up
    # the generator starts as the identity, so the first loss is the blur itself
    assert losses[0] == pytest.approx((batch['lq'] - batch['gt']).abs().mean().item(), rel=1e-4)
    assert sum(losses[-5:]) / 5 < 0.75 * losses[0], losses


def test_map_sources_gt_and_folder(tmp_path, synthetic_root):
    model, opt = _model(tmp_path, synthetic_root)
    batch = _batch(opt)
    model.feed_data(batch)
    assert torch.equal(model.defocus_map().cpu(), batch['defocus'])
    holed = batch['defocus'].clone()
    holed[..., :3, :] = float('nan')  # GT maps with holes (no depth there) train as in focus, never as NaN
    model.feed_data(dict(batch, defocus=holed))
    model.optimize_parameters(1)
    assert torch.isfinite(model.defocus_map()).all() and (model.defocus_map()[..., :3, :] == 0).all()
    assert all(math.isfinite(v) for v in model.log_dict.values())
    model.feed_data({k: v for k, v in batch.items() if k != 'defocus'})
    with pytest.raises(KeyError, match="no 'defocus' key"):
        model.defocus_map()
    with pytest.raises(KeyError, match='datasets.train.dataroot_defocus'):
        _model(tmp_path, synthetic_root, {'train:defocus_map:source': 'folder'})
    # precomputed maps from an explicit folder (here: a copy of the GT maps, negated)
    folder = tmp_path / 'maps'
    shutil.copytree(synthetic_root / 'train_defocus', folder)
    for f in folder.glob('*.npy'):
        np.save(f, -np.load(f))
    model, opt = _model(tmp_path, synthetic_root, {
        'train:defocus_map:source': 'folder',
        'datasets:train:dataroot_defocus': str(folder)
    })
    batch = _batch(opt)
    model.feed_data(batch)
    model.optimize_parameters(1)
    assert batch['defocus'].min() < 0 and torch.equal(model.defocus_map().cpu(), batch['defocus'])


def test_map_source_network_uses_frozen_stage1_net(tmp_path, synthetic_root):
    from defocusgan_plugin.archs.defocus_map_arch import DefocusMapNet
    net_opt = {'type': 'DefocusMapNet', 'in_ch': 6, 'cap': 10.0, 'num_feat': 8, 'num_level': 1, 'num_block': 1}
    torch.manual_seed(0)
    map_net = DefocusMapNet(**{k: v for k, v in net_opt.items() if k != 'type'})
    over = dict(
        TINY, **{
            'train:total_iter': 2,
            'datasets:train:load_dp_views': True,
            'train:defocus_map': {
                'source': 'network',
                'network': net_opt,
                'pretrain': checkpoint(tmp_path / 'net_map_9.pth', map_net)
            }
        })
    model = run_train(tiny_options(DEMO, tmp_path, synthetic_root, over), tmp_path)
    assert not model.net_map.training
    for k, v in map_net.state_dict().items():
        assert torch.equal(model.net_map.state_dict()[k].cpu(), v)  # frozen: unchanged by training
    models = tmp_path / 'experiments' / 'defocusgan_synthetic' / 'models'
    assert not list(models.glob('net_map*'))  # a frozen helper is not saved
    model.feed_data(_batch(model.opt))
    views = torch.cat([model.map_inputs['lq_l'], model.map_inputs['lq_r']], dim=1)
    with torch.no_grad():
        assert torch.allclose(model.defocus_map(), map_net(views))
    # a missing checkpoint is named
    over['train:defocus_map']['pretrain'] = str(tmp_path / 'missing.pth')
    with pytest.raises(FileNotFoundError, match='train.defocus_map.pretrain'):
        _model(tmp_path, synthetic_root, over)


def test_missing_lpips_weights_fail_at_start_not_at_validation(tmp_path, synthetic_root, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'empty'))
    monkeypatch.delenv('DEFOCUSGAN_ALEXNET_WEIGHTS', raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match='val.metrics.lpips.alexnet_path'):
        _model(tmp_path, synthetic_root, {'val:metrics:lpips': {'type': 'calculate_lpips', 'better': 'lower'}})


def test_demo_train_then_single_image_test(tmp_path, synthetic_root):
    over = dict(TINY, **{'train:total_iter': 2})
    run_train(tiny_options(DEMO, tmp_path, synthetic_root, over), tmp_path)
    test_opt = tiny_options('test_defocusgan_synthetic.yml', tmp_path, synthetic_root,
                            {'network_g:num_feat': TINY['network_g:num_feat']})
    records, logger = [], logging.getLogger('basicsr')  # BasicSR sets its logger up once per process
    handler, level = logging.Handler(), logger.level
    handler.emit = lambda record: records.append(record.getMessage())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        run_test(test_opt, tmp_path)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    results = tmp_path / 'results' / 'defocusgan_synthetic'
    assert len(list((results / 'visualization' / 'SyntheticDPDD_test').glob('*_defocusgan.png'))) == 5
    report = next(r for r in records if r.startswith('Validation SyntheticDPDD_test'))
    assert all(f'# {m}:' in report for m in ('psnr', 'ssim', 'mae'))


def test_demo_train_then_test_through_basicsr_entry_points(tmp_path, synthetic_root):
    """BasicSR's unmodified train.py then test.py on the demo option pair (copied into a checkout-like folder under
    tmp_path, so that they root there instead of in site-packages)."""
    name = 'pytest_defocusgan'
    checkout = basicsr_checkout(tmp_path)
    models = checkout / 'experiments' / name / 'models'
    train = tiny_options(DEMO, tmp_path, synthetic_root, dict(TINY, name=name))
    test = tiny_options(
        'test_defocusgan_synthetic.yml', tmp_path, synthetic_root, {
            'name': name,
            'path:pretrain_network_g': str(models / 'net_g_latest.pth'),
            'network_g:num_feat': TINY['network_g:num_feat']
        })
    proc = run_python([str(checkout / 'basicsr' / 'train.py'), '-opt', str(train)], tmp_path)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert all(k in log for k in ('l_g_gan', 'l_d_real', 'l_d_gp'))  # gan_start_iter 0: the critic trained
    assert '# psnr' in log and (models / 'net_g_2.pth').is_file() and (models / 'net_d_2.pth').is_file()

    proc = run_python([str(checkout / 'basicsr' / 'test.py'), '-opt', str(test)], tmp_path)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    vis = checkout / 'results' / name / 'visualization' / 'SyntheticDPDD_test'
    assert len(list(vis.glob('*_defocusgan.png'))) == 5  # the 5 test images of the tiny set
    # the images and metrics are the trained checkpoint's (a range of plausible PSNRs would accept the identity)
    logged, _ = check_test_outputs(load_options(test), models / 'net_g_latest.pth', log, vis, 'defocusgan')
    assert set(logged) == {'psnr', 'ssim', 'mae'}


@pytest.mark.parametrize('option, overrides', [
    ('train_srmodel_defocusgan_synthetic.yml', {
        'network_g:num_feat': [8, 8, 8]
    }),
    ('train_defocusgan_rcan_synthetic.yml', {
        'network_d:num_feat': 8,
        'train:gan_start_iter': 0
    }),
    ('train_srgan_patchgan_synthetic.yml', {
        'network_g:num_feat': [8, 8, 8],
        'network_d:num_feat': 8
    }),
])
def test_mixing_with_basicsr_models_trains_two_iterations(tmp_path, synthetic_root, option, overrides):
    opt = tiny_options(option, tmp_path, synthetic_root, dict(FAST, **{'datasets:train:gt_size': 32}, **overrides))
    model = run_train(opt, tmp_path)
    models = tmp_path / 'experiments' / load_options(opt)['name'] / 'models'
    assert (models / 'net_g_2.pth').is_file()
    if 'network_d' in load_options(opt):
        assert (models / 'net_d_2.pth').is_file()
        assert any(k.startswith('l_d_') for k in model.log_dict)
