"""Distributed training on CPU: 2 processes through torchrun with gloo."""
import os
import pytest
import signal
import subprocess
import sys
import torch
from conftest import FAST, TINY_DEFOCUS_MAP, load_options, tiny_options

# Each rank runs the plugin's training pipeline and records, in its own process: every file saved (the plugin's
# atomic writer ends in os.replace, BasicSR's own in torch.save to a path) and every log file opened, the networks
# right after DDP wrapping (rank 0's broadcast weights) and at the end, and the NaN guard's decision for a loss that
# is NaN on rank 1 only.
_RANK_SCRIPT = r'''
import logging, math, os, sys, torch
from defocusgan_plugin.models.robust_base_model import RobustBaseModel
from defocusgan_plugin.train import train_pipeline

saves, log_files, initial = [], [], {}
real_save, real_replace = torch.save, os.replace
real_file_handler, real_to_device = logging.FileHandler.__init__, RobustBaseModel.model_to_device

def counting_save(obj, f, *args, **kwargs):
    if isinstance(f, (str, os.PathLike)):  # in-memory saves (torch.distributed pickling objects) write nothing
        saves.append(str(f))
    return real_save(obj, f, *args, **kwargs)

def counting_replace(src, dst, *args, **kwargs):
    saves.append(str(dst))
    return real_replace(src, dst, *args, **kwargs)

def counting_file_handler(self, filename, *args, **kwargs):
    log_files.append(str(filename))
    real_file_handler(self, filename, *args, **kwargs)

def recording_to_device(self, net):
    net = real_to_device(self, net)
    bare = self.get_bare_model(net)
    initial[type(bare).__name__] = {k: v.detach().cpu().clone() for k, v in bare.state_dict().items()}
    return net

torch.save, os.replace = counting_save, counting_replace
logging.FileHandler.__init__, RobustBaseModel.model_to_device = counting_file_handler, recording_to_device
model = train_pipeline(os.getcwd(), sys.argv[1:])
torch.save, os.replace = real_save, real_replace
rank = int(os.environ['RANK'])
skipped = not model.step_is_finite({'l_probe': torch.tensor(math.nan if rank == 1 else 1.0)}, [], 99)
finite = model.step_is_finite({'l_probe': torch.tensor(1.0)}, [], 100)
bare = {k: model.get_bare_model(v) for k, v in vars(model).items()
        if k.startswith('net_') and isinstance(v, torch.nn.Module)}
nets = {k: (type(v).__name__, {n: t.cpu() for n, t in v.state_dict().items()}) for k, v in bare.items()}
torch.save({'nets': nets, 'initial': initial, 'saves': saves, 'log_files': log_files, 'skipped': skipped,
            'finite': finite, 'backend': torch.distributed.get_backend(),
            'devices': sorted({str(p.device) for n in bare.values() for p in n.parameters()})}, f'rank{rank}.pt')
'''

# option file -> (overrides, networks that must train)
DDP_CASES = {
    # gan_start_iter 0: the critic trains from iteration 1 (the demo's 100 would leave it idle)
    'train_defocusgan_synthetic.yml': ({
        'datasets:train:gt_size': 32,
        'network_g:num_feat': [8, 8, 8],
        'network_d:num_feat': 8,
        'train:gan_start_iter': 0
    }, ('net_g', 'net_d')),
    # two networks, two optimisers: iteration 1 trains the map, iteration 2 the kernels
    'train_defocus_map_synthetic.yml': (dict(TINY_DEFOCUS_MAP, **{'val:save_img': False}), ('net_map', 'net_kernel')),
}


def _torchrun(args, cwd, timeout=300, env=None):
    """Runs torchrun in its own process group, so that a hang (a collective one rank never joins) kills the ranks
    too, not just the launcher."""
    env = dict(os.environ, OMP_NUM_THREADS='1', **(env or {}))
    proc = subprocess.Popen([sys.executable, '-m', 'torch.distributed.run', *args],
                            cwd=str(cwd),
                            env=env,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f'torchrun did not finish in {timeout} s (a hang?):\n{err[-3000:]}')
    return proc.returncode, out + err


@pytest.mark.parametrize('option', sorted(DDP_CASES))
def test_two_process_gloo_training(tmp_path, synthetic_root, option):
    overrides, trained = DDP_CASES[option]
    over = dict(FAST, **overrides, **{'train:total_iter': 2, 'val:val_freq': 1000, 'dist_params': {'backend': 'gloo'}})
    opt = tiny_options(option, tmp_path, synthetic_root, over)
    (tmp_path / 'rank_main.py').write_text(_RANK_SCRIPT)
    code, output = _torchrun(
        ['--standalone', '--nproc_per_node=2', 'rank_main.py', '-opt',
         str(opt), '--launcher', 'pytorch'], tmp_path)
    assert code == 0, output[-6000:]
    r0, r1 = torch.load(tmp_path / 'rank0.pt'), torch.load(tmp_path / 'rank1.pt')

    # identical replicas, trained away from the (broadcast) initial weights
    assert set(trained) <= set(r0['nets']) and r0['nets'].keys() == r1['nets'].keys()
    for net, (cls, state) in r0['nets'].items():
        for key in state:
            assert torch.equal(state[key], r1['nets'][net][1][key]), f'{net}.{key} differs between ranks'
    for net in trained:
        cls, state = r0['nets'][net]
        assert any(not torch.equal(state[k], r0['initial'][cls][k]) for k in state), f'{net} did not train'

    # the pinned backend and num_gpu: 0 hold on a GPU host too (else nccl with 2 ranks on one GPU)
    assert r0['backend'] == r1['backend'] == 'gloo' and r0['devices'] == r1['devices'] == ['cpu']

    # a loss that is NaN on rank 1 only makes both ranks skip; the next finite step goes through on both
    assert r0['skipped'] and r1['skipped'] and r0['finite'] and r1['finite']

    # only rank 0 writes checkpoints and opens the log file
    assert r1['saves'] == [] and r1['log_files'] == []
    assert any(p.endswith('_latest.pth') for p in r0['saves']) and any(p.endswith('2.state') for p in r0['saves'])
    assert len(r0['log_files']) == 1
    exp = tmp_path / 'experiments' / load_options(opt)['name']
    assert [p.name for p in exp.glob('train_*.log')] == [r0['log_files'][0].rsplit('/', 1)[-1]]
    for net in trained:  # saved unwrapped from DDP, with the trained weights
        ckpt = torch.load(exp / 'models' / f'{net}_latest.pth', weights_only=True)['params']
        assert not any(k.startswith('module.') for k in ckpt)
        assert ckpt.keys() == r0['nets'][net][1].keys()
        assert all(torch.equal(ckpt[k], r0['nets'][net][1][k]) for k in ckpt)


def test_basicsr_own_train_entry_runs_distributed_on_cpu(tmp_path, synthetic_root):
    """``torchrun basicsr/train.py --launcher pytorch`` on CPU: BasicSR's init_dist would ask for CUDA/nccl; the
    plugin rebinds it to its gloo-capable one when it is imported (by the start-up hook).

    BasicSR's own option parser ignores ``dist_params`` for this launcher, so the backend follows CUDA: the ranks see
    no GPU (else a GPU host would pick nccl for 2 ranks on one GPU). The entry point is BasicSR's file copied into a
    checkout-like folder under tmp_path, so that it roots there rather than in site-packages.
    """
    from conftest import basicsr_checkout
    overrides, _ = DDP_CASES['train_defocusgan_synthetic.yml']
    over = dict(FAST, **overrides, **{'name': 'ddp_basicsr_entry_test', 'train:total_iter': 2, 'val:val_freq': 1000})
    opt = tiny_options('train_defocusgan_synthetic.yml', tmp_path, synthetic_root, over)
    checkout = basicsr_checkout(tmp_path)
    args = ['--standalone', '--nproc_per_node=2', str(checkout / 'basicsr' / 'train.py'), '-opt', str(opt)]
    code, output = _torchrun(args + ['--launcher', 'pytorch'], tmp_path, env={'CUDA_VISIBLE_DEVICES': ''})
    assert code == 0, output[-6000:]
    assert 'iter:       2' in output and 'l_d_gp' in output
    ckpt = torch.load(
        checkout / 'experiments' / 'ddp_basicsr_entry_test' / 'models' / 'net_g_latest.pth',
        weights_only=True)['params']
    assert ckpt and not any(k.startswith('module.') for k in ckpt)
