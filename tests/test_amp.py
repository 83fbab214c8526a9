"""Speed options: train.amp (bf16 on CPU; fp16's GradScaler simulated), train.channels_last, train.compile."""
import math
import pytest
import torch
from conftest import FAST, TINY_DEFOCUS_MAP, load_options, run_train, tiny_options

from defocusgan_plugin.utils.checkpoint import load_checkpoint

# tiny variants of each trainable model's synthetic option file (as in tests/test_reliability.py and
# tests/test_distributed.py); <= 4 iterations, 32 px crops
CASES = {
    # critic and gradient penalty from iteration 1, guidance annealed over the 4 iterations, EMA
    'train_defocusgan_synthetic.yml': {
        'datasets:train:gt_size': 32,
        'network_g:num_feat': [8, 8, 8],
        'network_d:num_feat': 8,
        'train:gan_start_iter': 0,
        'train:guidance:anneal_iters': 4,
        'train:ema_decay': 0.5
    },
    # the map network then the kernels: both optimisers step
    'train_defocus_map_synthetic.yml': TINY_DEFOCUS_MAP,
    # DPDeblurModel: Charbonnier + MS-SSIM
    'train_mccnet_synthetic.yml': {
        'datasets:train:gt_size': 32,
        'network_g:num_feat': 8
    },
    # BasicSR's own SRModel through the plugin's entry point
    'train_srmodel_single_synthetic.yml': {
        'datasets:train:gt_size': 32,
        'datasets:train:batch_size_per_gpu': 2
    },
}
TRAINED = {
    'train_defocusgan_synthetic.yml': 'net_g',
    'train_defocus_map_synthetic.yml': 'net_map',
    'train_mccnet_synthetic.yml': 'net_g',
    'train_srmodel_single_synthetic.yml': 'net_g'
}
BF16 = {'train:amp': 'bf16'}


def _options(option, work_dir, data_root, **extra):
    over = {**FAST, **CASES[option], 'train:total_iter': 4, 'val': None, **extra}
    return tiny_options(option, work_dir, data_root, over)


class ConvDtypes:
    """Records, per Conv2d module, the dtypes of its outputs (a global forward hook)."""

    def __init__(self):
        self.seen = {}

    def __enter__(self):

        def hook(module, args, output):
            if isinstance(module, torch.nn.Conv2d):
                self.seen.setdefault(module, set()).add(output.dtype)

        self.handle = torch.nn.modules.module.register_module_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()

    def of(self, net):
        return set().union(*(self.seen.get(m, set()) for m in net.modules()))


def _saved(work_dir, option, label, it='latest'):
    name = load_options(option)['name']
    return load_checkpoint(str(work_dir / 'experiments' / name / 'models' / f'{label}_{it}.pth'))


@pytest.mark.parametrize('option', sorted(CASES))
def test_bf16_trains_in_bf16_with_finite_losses_and_resumes_exactly(tmp_path, synthetic_root, option):
    """4 iterations straight == 2 + --auto_resume + 2 with amp: bf16; the trained network's convolutions ran in bf16."""
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    straight.mkdir(), resumed.mkdir()
    with ConvDtypes() as dtypes:
        model = run_train(_options(option, straight, synthetic_root, **BF16), straight)
    net = model.get_bare_model(getattr(model, TRAINED[option]))
    assert torch.bfloat16 in dtypes.of(net)
    assert all(math.isfinite(float(v)) for v in model.log_dict.values()), model.log_dict
    assert all(p.dtype == torch.float32 for p in net.parameters())  # autocast: the weights stay fp32
    run_train(_options(option, resumed, synthetic_root, **BF16, **{'train:total_iter': 2}), resumed)
    model_resumed = run_train(_options(option, resumed, synthetic_root, **BF16), resumed, '--auto_resume')
    assert model_resumed.opt['path']['resume_state'].endswith('2.state')
    labels = [f"net_{k.replace('network_', '')}" for k in load_options(option) if k.startswith('network_')]
    for label in labels:
        a, b = _saved(straight, option, label), _saved(resumed, option, label)
        assert a.keys() == b.keys()
        for param_key in a:
            for key in a[param_key]:
                assert torch.equal(a[param_key][key], b[param_key][key]), f'{label}.{param_key}.{key} differs'


def test_defocusgan_bf16_keeps_the_gradient_penalty_and_pixel_loss_in_fp32(tmp_path, synthetic_root, monkeypatch):
    """The critic runs in bf16 for its scores and in fp32 for the WGAN-GP double backward; L1 sees fp32."""
    from basicsr.losses.basic_loss import L1Loss

    from defocusgan_plugin.losses.defocus_adversarial_loss import DefocusAdversarialLoss
    seen = {'gp': [], 'l1': []}
    real_gp, real_l1 = DefocusAdversarialLoss.gradient_penalty, L1Loss.forward

    def gradient_penalty(self, *args, **kwargs):
        out = real_gp(self, *args, **kwargs)
        seen['gp'].append((torch.is_autocast_enabled('cpu'), out.dtype))
        return out

    def l1(self, pred, target, *args, **kwargs):
        seen['l1'].append(pred.dtype)
        return real_l1(self, pred, target, *args, **kwargs)

    monkeypatch.setattr(DefocusAdversarialLoss, 'gradient_penalty', gradient_penalty)
    monkeypatch.setattr(L1Loss, 'forward', l1)
    with ConvDtypes() as dtypes:
        model = run_train(
            _options('train_defocusgan_synthetic.yml', tmp_path, synthetic_root, **BF16, **{'train:total_iter': 1}),
            tmp_path)
    assert seen['gp'] and all(state == (False, torch.float32) for state in seen['gp'])
    assert seen['l1'] == [torch.float32]
    assert dtypes.of(model.get_bare_model(model.net_d)) == {torch.bfloat16, torch.float32}
    assert model.output.dtype == torch.float32


def test_defocus_map_bf16_reblurs_in_fp32(tmp_path, synthetic_root, monkeypatch):
    """Only the map network runs under autocast: the reblur (FFT) gets fp32 maps and kernels, outside autocast."""
    import defocusgan_plugin.models.defocus_map_model as map_model
    calls = []
    real = map_model.reblur_coc

    def reblur_coc(image, coc, kernels, *args, **kwargs):
        calls.append((coc.dtype, kernels.dtype, torch.is_autocast_enabled('cpu')))
        return real(image, coc, kernels, *args, **kwargs)

    monkeypatch.setattr(map_model, 'reblur_coc', reblur_coc)
    model = run_train(
        _options('train_defocus_map_synthetic.yml', tmp_path, synthetic_root, **BF16, **{'train:total_iter': 2}),
        tmp_path)
    assert calls and set(calls) == {(torch.float32, torch.float32, False)}
    assert model.reblurred.dtype == torch.float32


def _is_channels_last(net):
    weights = [p for p in net.parameters() if p.dim() == 4]
    return (bool(weights) and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
            and any(not p.is_contiguous() for p in weights))


@pytest.mark.parametrize(
    'option, labels',
    [
        ('train_defocusgan_synthetic.yml', ('net_g', 'net_d', 'net_g_ema')),
        ('train_srmodel_single_synthetic.yml', ('net_g', )),  # BasicSR's model: converted by the entry point
    ])
def test_channels_last_converts_the_networks(tmp_path, synthetic_root, option, labels):
    model = run_train(
        _options(option, tmp_path, synthetic_root, **BF16, **{
            'train:channels_last': True,
            'train:total_iter': 1
        }), tmp_path)
    for label in labels:
        assert _is_channels_last(model.get_bare_model(getattr(model, label))), label
    assert all(math.isfinite(float(v)) for v in model.log_dict.values())
    saved = _saved(tmp_path, option, 'net_g')['params']
    assert all(v.is_contiguous() or v.is_contiguous(memory_format=torch.channels_last) for v in saved.values())


def test_compile_trains_and_saves_plain_key_names(tmp_path, synthetic_root):
    """torch.compile (the fast 'eager' backend) around the generator; validation runs on the bare network."""
    opt = _options('train_mccnet_synthetic.yml', tmp_path, synthetic_root, **{
        'train:compile': {
            'backend': 'eager'
        },
        'train:total_iter': 2,
        'train:ema_decay': 0.5
    })
    opt_dict = load_options(opt)
    opt_dict['val'] = load_options('train_mccnet_synthetic.yml')['val']
    opt_dict['val']['val_freq'] = 2
    import yaml
    opt.write_text(yaml.safe_dump(opt_dict, sort_keys=False))
    model = run_train(opt, tmp_path)
    assert hasattr(model.net_g, '_orig_mod')  # compiled
    assert model.get_bare_model(model.net_g).__class__.__name__ == 'MCCNet'
    saved = _saved(tmp_path, 'train_mccnet_synthetic.yml', 'net_g')
    assert set(saved) == {'params', 'params_ema'}
    for param_key, state in saved.items():
        assert state and not any('_orig_mod' in k or k.startswith('module.') for k in state), param_key
        assert state.keys() == model.get_bare_model(model.net_g).state_dict().keys()
    assert 'psnr' in model.metric_results  # validated


def test_grad_scaler_state_is_saved_and_restored(tmp_path, synthetic_root):
    """fp16 needs CUDA; its GradScaler's state goes through the training state like any other (an enabled CPU scaler
    stands in for it)."""
    model = run_train(
        _options('train_mccnet_synthetic.yml', tmp_path, synthetic_root, **{'train:total_iter': 1}), tmp_path)
    model.grad_scaler = torch.amp.GradScaler('cpu', init_scale=1024.0, growth_interval=7)
    model.save_training_state(0, 9)
    state = load_checkpoint(str(tmp_path / 'experiments' / 'mccnet_synthetic' / 'training_states' / '9.state'))
    assert state['grad_scaler']['scale'] == 1024.0
    model.grad_scaler = torch.amp.GradScaler('cpu')  # a fresh one, as a resumed run builds
    model.resume_training(state)
    assert model.grad_scaler.get_scale() == 1024.0 and model.grad_scaler.get_growth_interval() == 7


def test_fp16_step_skipped_by_the_scaler_is_reported_but_not_counted_as_bad():
    """guarded_step with an enabled GradScaler: an overflowing gradient makes the scaler skip the step (and halve
    its scale); the caller learns that nothing stepped (no EMA update), the NaN guard counts nothing."""
    from defocusgan_plugin.models.robust_base_model import RobustBaseModel
    model = RobustBaseModel(
        dict(num_gpu=0, is_train=True, dist=False, path={'models': 'models'}, train={'nan_max_consecutive': 1}))
    model.grad_scaler = torch.amp.GradScaler('cpu', init_scale=2.0**16)
    net = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    before = [p.detach().clone() for p in net.parameters()]

    def update(scale, it):
        optimizer.zero_grad()
        loss = net(torch.ones(1, 2)).sum() * scale
        model.backward(loss)
        return model.guarded_step({'l_pix': loss.detach()}, [(net, optimizer)], it)

    assert not update(1e35, 1)  # finite loss, scaled gradients overflow; max_consecutive 1: a bad iteration raises
    assert model.grad_scaler.get_scale() == 2.0**15
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert update(1.0, 2)
    assert not all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


@pytest.mark.parametrize('option, train, match', [
    ('train_mccnet_synthetic.yml', {
        'amp': 'fp16'
    }, 'train.amp: fp16 needs a CUDA device'),
    ('train_mccnet_synthetic.yml', {
        'amp': 'fp8'
    }, 'train.amp must be false, bf16 or fp16'),
    ('train_mccnet_synthetic.yml', {
        'channels_last': 'yes'
    }, 'train.channels_last must be true or false'),
    ('train_mccnet_synthetic.yml', {
        'compile': {
            'modes': 'max-autotune'
        }
    }, r"train.compile: unknown .*'modes'"),
    ('train_defocus_map_synthetic.yml', {
        'compile': 'fast'
    }, 'train.compile must be false, true or a dict'),
    ('train_srmodel_single_synthetic.yml', {
        'amp': 'fp16'
    }, "GradScaler, which BasicSR's SRModel .*DPDeblurModel"),
    ('train_srmodel_single_synthetic.yml', {
        'compile': True
    }, "_orig_mod.* key names.*DPDeblurModel"),
    ('train_srmodel_single_synthetic.yml', {
        'amp': 'float16'
    }, 'train.amp must be false, bf16 or fp16'),
])
def test_bad_speed_options_are_refused_naming_the_option(tmp_path, synthetic_root, option, train, match):
    with pytest.raises(ValueError, match=match):
        run_train(_options(option, tmp_path, synthetic_root, **{f'train:{k}': v for k, v in train.items()}), tmp_path)
