"""Reliability: exact resume, atomic checkpoints, NaN guard."""
import os

import pytest
import torch

from conftest import FAST, load_options, run_train, tiny_options
from defocusgan_plugin.utils.checkpoint import load_checkpoint, save_object

# Option files whose models must resume exactly, with overrides that keep them tiny.
RESUME_CASES = {
    'train_srmodel_single_synthetic.yml': {'datasets:train:gt_size': 32, 'datasets:train:batch_size_per_gpu': 2},
}


def _weights(work_dir, name, label='net_g', it='latest'):
    return load_checkpoint(str(work_dir / 'experiments' / name / 'models' / f'{label}_{it}.pth'))


@pytest.mark.parametrize('option', sorted(RESUME_CASES))
def test_resume_is_exact(tmp_path, synthetic_root, option):
    """4 iterations straight == 2 iterations + --auto_resume + 2 more (same seed, CPU, no loader workers)."""
    over = dict(FAST, **RESUME_CASES[option], **{'train:total_iter': 4, 'val:val_freq': 1000})
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    straight.mkdir(), resumed.mkdir()
    run_train(tiny_options(option, straight, synthetic_root, over), straight)
    half = tiny_options(option, resumed, synthetic_root, dict(over, **{'train:total_iter': 2}))
    run_train(half, resumed)
    run_train(tiny_options(option, resumed, synthetic_root, over), resumed, '--auto_resume')
    name = load_options(half)['name']
    labels = [f"net_{k.replace('network_', '')}" for k in load_options(half) if k.startswith('network_')]
    for label in labels:
        a, b = _weights(straight, name, label), _weights(resumed, name, label)
        for key in a['params']:
            assert torch.equal(a['params'][key], b['params'][key]), f'{label}.{key} differs after resume'


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
    model = run_train(tiny_options('train_srmodel_single_synthetic.yml', tmp_path, synthetic_root,
                                   dict(over, **{'train:total_iter': 3})), tmp_path, '--auto_resume')
    assert model.opt['path']['resume_state'].endswith('1.state')
