"""The plugin's train/test entry points with BasicSR's flags, rooted at the working directory."""
import pytest
from conftest import FAST, run_python, run_test, run_train, tiny_options

from defocusgan_plugin.utils.options import normalize_argv


def test_local_rank_spellings():
    assert normalize_argv(['-opt', 'x', '--local-rank=1']) == ['-opt', 'x', '--local_rank=1']
    assert normalize_argv(['--local-rank', '2']) == ['--local_rank', '2']


@pytest.mark.parametrize('option', ['train_srmodel_single_synthetic.yml', 'train_srmodel_dual_synthetic.yml'])
def test_train_two_iterations_with_basicsr_archs(tmp_path, synthetic_root, option):
    opt = tiny_options(option, tmp_path, synthetic_root, dict(FAST, **{'datasets:train:gt_size': 32}))
    run_train(opt, tmp_path)
    name = tiny_options.__globals__['load_options'](opt)['name']
    models = tmp_path / 'experiments' / name / 'models'
    assert (models / 'net_g_2.pth').is_file() and (models / 'net_g_latest.pth').is_file()
    assert (tmp_path / 'experiments' / name / 'training_states' / '2.loop').is_file()


def test_test_entry_writes_results_and_keeps_old_ones(tmp_path, synthetic_root):
    train = tiny_options('train_srmodel_single_synthetic.yml', tmp_path, synthetic_root,
                         dict(FAST, **{'datasets:train:gt_size': 32}))
    run_train(train, tmp_path)
    test = tiny_options('test_srmodel_single_synthetic.yml', tmp_path, synthetic_root)
    run_test(test, tmp_path)
    vis = tmp_path / 'results' / 'srmodel_edsr_single_synthetic' / 'visualization' / 'SyntheticDPDD_test'
    assert len(list(vis.glob('*.png'))) == 5
    run_test(test, tmp_path)  # a second run renames the first results folder instead of deleting it
    assert len(list((tmp_path / 'results').glob('srmodel_edsr_single_synthetic_archived_*'))) == 1


def test_console_entry_accepts_basicsr_flags(tmp_path, synthetic_root):
    opt = tiny_options('train_srmodel_single_synthetic.yml', tmp_path, synthetic_root,
                       dict(FAST, **{'datasets:train:gt_size': 32}))
    proc = run_python(['-m', 'defocusgan_plugin.train', '-opt', str(opt), '--debug', '--local-rank=0'], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / 'experiments' / 'debug_srmodel_edsr_single_synthetic').is_dir()
