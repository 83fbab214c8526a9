"""Reliability: exact resume, atomic checkpoints, NaN guard."""
import logging
import math
import os
import pytest
import torch
from conftest import FAST, load_options, run_train, tiny_options
from torch import nn

from defocusgan_plugin.utils.checkpoint import load_checkpoint, save_object

GAN_TINY = {'datasets:train:gt_size': 32, 'network_g:num_feat': [8, 8, 8], 'network_d:num_feat': 8}
# Option files whose models must resume exactly, with overrides that keep them tiny.
RESUME_CASES = {
    'train_srmodel_single_synthetic.yml': {
        'datasets:train:gt_size': 32,
        'datasets:train:batch_size_per_gpu': 2
    },
    # critic, gradient penalty (random interpolation) and EMA from iteration 1; guidance annealed over the 4
    # iterations, so a resume that restarted the annealing would change the generator's input
    'train_defocusgan_synthetic.yml':
    dict(GAN_TINY, **{
        'train:gan_start_iter': 0,
        'train:guidance:anneal_iters': 4,
        'train:ema_decay': 0.5
    }),
    # DPDeblurModel: Charbonnier + MS-SSIM, cosine-restart scheduler
    'train_mccnet_synthetic.yml': {
        'datasets:train:gt_size': 32,
        'network_g:num_feat': 8
    },
}


def _weights(work_dir, name, label='net_g', it='latest'):
    return load_checkpoint(str(work_dir / 'experiments' / name / 'models' / f'{label}_{it}.pth'))


@pytest.mark.parametrize('option', sorted(RESUME_CASES))
def test_resume_is_exact(tmp_path, synthetic_root, option):
    """4 iterations straight == 2 iterations + --auto_resume + 2 more (same seed, CPU, no loader workers)."""
    over = dict(FAST, **RESUME_CASES[option], **{'train:total_iter': 4, 'val': None})  # no validation: faster
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    straight.mkdir(), resumed.mkdir()
    model_straight = run_train(tiny_options(option, straight, synthetic_root, over), straight)
    half = tiny_options(option, resumed, synthetic_root, dict(over, **{'train:total_iter': 2}))
    run_train(half, resumed)
    model = run_train(tiny_options(option, resumed, synthetic_root, over), resumed, '--auto_resume')
    assert model.opt['path']['resume_state'].endswith('2.state')
    if hasattr(model, 'extra_training_state'):  # the plugin's models (not BasicSR's SRModel)
        assert model.extra_training_state() == model_straight.extra_training_state()  # e.g. the annealing step
    name = load_options(half)['name']
    labels = [f"net_{k.replace('network_', '')}" for k in load_options(half) if k.startswith('network_')]
    for label in labels:
        a, b = _weights(straight, name, label), _weights(resumed, name, label)
        assert a.keys() == b.keys()
        for param_key in a:  # params, and params_ema when the EMA is on
            for key in a[param_key]:
                assert torch.equal(a[param_key][key], b[param_key][key]), f'{label}.{param_key}.{key} differs'


def test_defocusgan_resume_covers_annealing_and_ema(tmp_path, synthetic_root):
    """What the DefocusGAN resume case above relies on: it anneals, keeps an EMA and trains the critic."""
    over = dict(FAST, **RESUME_CASES['train_defocusgan_synthetic.yml'], **{'train:total_iter': 1, 'val': None})
    model = run_train(tiny_options('train_defocusgan_synthetic.yml', tmp_path, synthetic_root, over), tmp_path)
    assert model.anneal_step == 1 and 0 < model.current_guidance() < 1
    assert {'l_d_gp', 'l_g_gan'} <= set(model.log_dict)
    saved = _weights(tmp_path, 'defocusgan_synthetic')
    assert set(saved) == {'params', 'params_ema'}


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / 'net_g_latest.pth'
    save_object({'params': {'w': torch.ones(4)}}, str(path))

    def crash(fd):
        raise KeyboardInterrupt  # the process is killed while the new file is being flushed

    monkeypatch.setattr(os, 'fsync', crash)
    with pytest.raises(KeyboardInterrupt):
        save_object({'params': {'w': torch.zeros(4)}}, str(path))
    assert torch.equal(load_checkpoint(str(path))['params']['w'], torch.ones(4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['net_g_latest.pth']  # no temporary left behind


def test_auto_resume_skips_state_whose_networks_are_missing(tmp_path, synthetic_root):
    over = dict(FAST, **{'datasets:train:gt_size': 32, 'train:total_iter': 2, 'logger:save_checkpoint_freq': 1})
    opt = tiny_options('train_srmodel_single_synthetic.yml', tmp_path, synthetic_root, over)
    run_train(opt, tmp_path)
    name = load_options(opt)['name']
    (tmp_path / 'experiments' / name / 'models' / 'net_g_2.pth').unlink()  # as if killed between the two saves
    model = run_train(
        tiny_options('train_srmodel_single_synthetic.yml', tmp_path, synthetic_root,
                     dict(over, **{'train:total_iter': 3})), tmp_path, '--auto_resume')
    assert model.opt['path']['resume_state'].endswith('1.state')


# ----------------------------------------------------------------------------------------------- NaN guard
class _Records(logging.Handler):
    """Collects the messages of BasicSR's logger (it does not propagate, so caplog does not see them)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def basicsr_warnings():
    handler = _Records()
    logger = logging.getLogger('basicsr')
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def test_nan_loss_skips_steps_then_stops_keeping_the_last_good_checkpoint(tmp_path, synthetic_root, monkeypatch,
                                                                          basicsr_warnings):
    """Iteration 1 is good, 2 and 3 have a NaN pixel loss: both are skipped (G, D and EMA untouched), the log names
    iteration and term, and with nan_max_consecutive 2 training stops at iteration 3 with the checkpoints kept."""
    from basicsr.losses.basic_loss import L1Loss
    calls = []
    real_forward = L1Loss.forward

    def forward(self, *args, **kwargs):
        calls.append(1)  # the pixel loss runs once per iteration
        loss = real_forward(self, *args, **kwargs)
        return loss if len(calls) == 1 else loss * math.nan

    monkeypatch.setattr(L1Loss, 'forward', forward)
    over = dict(
        FAST, **GAN_TINY, **{
            'train:gan_start_iter': 0,
            'train:ema_decay': 0.5,
            'train:total_iter': 5,
            'train:nan_max_consecutive': 2,
            'logger:save_checkpoint_freq': 1,
            'val': None
        })
    with pytest.raises(FloatingPointError) as err:
        run_train(tiny_options('train_defocusgan_synthetic.yml', tmp_path, synthetic_root, over), tmp_path)
    assert 'iteration 3' in str(err.value) and 'l_g_pix' in str(err.value) and 'last good checkpoint' in str(err.value)
    bad = [m for m in basicsr_warnings if 'non-finite' in m]
    assert len(bad) == 2 and all('l_g_pix' in m for m in bad), basicsr_warnings
    assert bad[0].startswith('Iteration 2:') and bad[1].startswith('Iteration 3:')
    models = tmp_path / 'experiments' / 'defocusgan_synthetic' / 'models'
    assert sorted(p.name for p in models.iterdir()) == ['net_d_1.pth', 'net_d_2.pth', 'net_g_1.pth', 'net_g_2.pth']
    for label in ('net_g', 'net_d'):  # the checkpoint after the skipped iteration 2 equals the one before it
        good, skipped = _weights(tmp_path, 'defocusgan_synthetic', label,
                                 1), _weights(tmp_path, 'defocusgan_synthetic', label, 2)
        for param_key in good:
            assert all(torch.equal(good[param_key][k], skipped[param_key][k]) for k in good[param_key]), param_key
    assert set(_weights(tmp_path, 'defocusgan_synthetic', 'net_g', 1)) == {'params', 'params_ema'}


def test_nan_guard_checks_gradients_and_counts_only_consecutive_bad_steps():
    from defocusgan_plugin.models.robust_base_model import RobustBaseModel
    model = RobustBaseModel(
        dict(num_gpu=0, is_train=True, dist=False, path={'models': 'models'}, train={'nan_max_consecutive': 2}))
    net = nn.Linear(2, 1)
    finite = {'l_pix': torch.tensor(1.0)}

    def backward(scale):
        net.zero_grad()
        (net(torch.ones(1, 2)).sum() * scale).backward()

    backward(math.inf)  # finite loss terms, non-finite gradients
    assert not model.step_is_finite(finite, [net], 1)
    assert all(p.grad is None for p in net.parameters())  # cleared: nothing can step on them
    backward(1.0)
    assert model.step_is_finite(finite, [net], 2)  # resets the count ...
    assert not model.step_is_finite({'l_pix': torch.tensor(math.nan)}, [net], 3)
    with pytest.raises(FloatingPointError, match='iteration 4: 2 consecutive'):  # ... so this is the 2nd in a row
        model.step_is_finite({'l_pix': torch.tensor(math.inf)}, [net], 4)


def test_nan_guard_counts_an_iteration_once_whatever_its_number_of_updates():
    """Several updates per iteration (e.g. DefocusGAN's critic and generator): any bad one makes the iteration bad,
    counted once; an iteration whose updates are all good resets the count; gradients=False checks losses only."""
    from defocusgan_plugin.utils.nan_guard import NonFiniteGuard
    guard = NonFiniteGuard(max_consecutive=2)
    good, bad = {'l_d': torch.tensor(1.0)}, {'l_g': torch.tensor(math.nan)}
    assert not guard.check(bad, [], 1) and guard.check(good, [], 1)  # a good update does not clear its iteration
    assert guard.consecutive == 1
    assert guard.check(good, [], 2) and guard.check(good, [], 2) and guard.consecutive == 0
    assert guard.check(good, [], 3) and not guard.check(bad, [], 3) and not guard.check(bad, [], 3)
    assert guard.consecutive == 1  # two bad updates, one bad iteration
    net = nn.Linear(2, 1)
    (net(torch.ones(1, 2)).sum() * math.inf).backward()
    assert guard.check(good, [net], 4, gradients=False)  # e.g. fp16: the GradScaler handles the gradients
    assert not guard.check(good, [net], 5)
    with pytest.raises(FloatingPointError, match='iteration 6: 2 consecutive iterations'):
        guard.check(bad, [], 6)
