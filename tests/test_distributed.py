"""Distributed training on CPU: 2 processes through torchrun with gloo."""
import sys

import pytest
import torch

from conftest import FAST, load_options, run_python, tiny_options

# Each rank runs the plugin's training pipeline, then dumps its own networks (only rank 0 writes checkpoints).
_RANK_SCRIPT = r'''
import os, sys, torch
from defocusgan_plugin.train import train_pipeline
model = train_pipeline(os.getcwd(), sys.argv[1:])
nets = {k: model.get_bare_model(v).state_dict() for k, v in vars(model).items()
        if k.startswith('net_') and isinstance(v, torch.nn.Module)}
torch.save({k: {n: t.cpu() for n, t in v.items()} for k, v in nets.items()}, f"rank{os.environ['RANK']}.pt")
'''

DDP_CASES = {}  # option file -> overrides; filled by the models' issues (see below)


def _ddp_cases():
    cases = dict(DDP_CASES)
    from basicsr.utils.registry import MODEL_REGISTRY
    if 'DefocusGANModel' in MODEL_REGISTRY:
        cases['train_defocusgan_synthetic.yml'] = {'datasets:train:gt_size': 32}
    return cases


@pytest.mark.parametrize('option', sorted(_ddp_cases()) or [pytest.param(None, marks=pytest.mark.skip('no model'))])
def test_two_process_gloo_training(tmp_path, synthetic_root, option):
    over = dict(FAST, **_ddp_cases()[option], **{'train:total_iter': 2, 'dist_params': {'backend': 'gloo'}})
    opt = tiny_options(option, tmp_path, synthetic_root, over)
    (tmp_path / 'rank_main.py').write_text(_RANK_SCRIPT)
    proc = run_python(['-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_port=29517', 'rank_main.py',
                       '-opt', str(opt), '--launcher', 'pytorch'], tmp_path, env={'OMP_NUM_THREADS': '1'})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = torch.load(tmp_path / 'rank0.pt'), torch.load(tmp_path / 'rank1.pt')
    assert r0.keys() == r1.keys() and r0
    for net in r0:
        for key in r0[net]:
            assert torch.equal(r0[net][key], r1[net][key]), f'{net}.{key} differs between ranks'
    exp = tmp_path / 'experiments' / load_options(opt)['name']
    assert len(list(exp.glob('train_*.log'))) == 1  # only rank 0 logs
    ckpt = torch.load(exp / 'models' / 'net_g_latest.pth', weights_only=True)['params']
    assert not any(k.startswith('module.') for k in ckpt)  # saved unwrapped from DDP
    assert all(torch.equal(ckpt[k], r0['net_g'][k]) for k in ckpt)
