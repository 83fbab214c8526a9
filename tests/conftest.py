"""Shared fixtures: a tiny synthetic DPDD set, option-file helpers and in-process / subprocess runners."""
import copy
import os
import pytest
import shutil
import subprocess
import sys
import torch
import yaml
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = ROOT / 'options'

# The plugin must be importable for every test; importing it also installs the torchvision alias.
with __import__('warnings').catch_warnings():
    __import__('warnings').simplefilter('ignore', DeprecationWarning)  # basicsr 1.4.2 uses a deprecated scipy path
    import defocusgan_plugin  # noqa: E402,F401
    from defocusgan_plugin.utils.options import set_option  # noqa: E402


@pytest.fixture(scope='session')
def synthetic_root(tmp_path_factory):
    """A tiny embedded synthetic DP set in DPDD layout (5 scenes, longer side 96 px, |CoC| <= 4 px)."""
    from defocusgan_plugin.data.dp_synthesis import write_synthetic_dpdd
    root = tmp_path_factory.mktemp('synthetic_dpdd')
    write_synthetic_dpdd(str(root), max_side=96, coc_max=4.0, focus_per_scene=(2, 1, 1), seed=0)
    return root


@pytest.fixture(scope='module')
def one_thread():
    """One torch thread for a module of tiny-tensor tests: on a shared CPU the thread pool's synchronisation costs
    more than it gains (``pytestmark = pytest.mark.usefixtures('one_thread')``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def option_path(name):
    """Path of an option file: a path as given, else ``options/train/<name>`` or ``options/test/<name>``."""
    path = Path(name)
    if path.is_file():
        return path
    for folder in ('train', 'test'):
        if (OPTIONS / folder / name).is_file():
            return OPTIONS / folder / name
    raise FileNotFoundError(f'No option file {name} in {OPTIONS}/train or {OPTIONS}/test.')


def load_options(name):
    """Loads an option file (see :func:`option_path`) as a plain nested dict."""
    path = option_path(name)
    with open(path) as f:
        return _plain(yaml.safe_load(f))


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


def tiny_options(name, work_dir, data_root=None, overrides=None, file_name=None):
    """Copies an option file into ``work_dir`` with the datasets pointed at ``data_root`` and overrides applied.

    Returns:
        Path: The written option file.
    """
    opt = copy.deepcopy(load_options(name))
    if data_root is not None:
        for block in opt.get('datasets', {}).values():
            if 'dataroot' in block:
                block['dataroot'] = str(data_root)
    for key, value in (overrides or {}).items():
        set_option(opt, key, value)
    path = Path(work_dir) / (file_name or Path(name).name)
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


# Settings that make any training option file finish in a few seconds on CPU.
FAST = {
    'num_gpu': 0,
    'train:total_iter': 2,
    'logger:print_freq': 1,
    'logger:save_checkpoint_freq': 2,
    'logger:use_tb_logger': False,
    'val:val_freq': 2,
    'datasets:train:num_worker_per_gpu': 0,
    'datasets:train:batch_size_per_gpu': 1,
}

# The smallest stage-1 (train_defocus_map_synthetic.yml) networks and phases: iteration 1 trains the map network,
# iteration 2 the kernels, so both optimisers step in a two-iteration run.
TINY_DEFOCUS_MAP = {
    'datasets:train:gt_size': 32,
    'network_map:cap': 5,
    'network_map:num_feat': 8,
    'network_map:num_level': 2,
    'network_map:corr_disp': 3,
    'network_kernel:max_radius': 5,
    'train:phase_schedule:network_iters': 1,
    'train:phase_schedule:alternate_iters': 1,
    'train:reblur_opt:crop_border': 2,
}


def run_train(option_path, work_dir, *args):
    """Runs the plugin's training pipeline in-process, rooted at ``work_dir``; returns the model."""
    from defocusgan_plugin.train import train_pipeline
    cwd = os.getcwd()
    os.chdir(work_dir)
    try:
        return train_pipeline(str(work_dir), ['-opt', str(option_path), *args])
    finally:
        os.chdir(cwd)


def run_test(option_path, work_dir, *args):
    """Runs the plugin's test pipeline in-process, rooted at ``work_dir``."""
    from defocusgan_plugin.test import test_pipeline
    cwd = os.getcwd()
    os.chdir(work_dir)
    try:
        test_pipeline(str(work_dir), ['-opt', str(option_path), *args])
    finally:
        os.chdir(cwd)


def run_python(args, cwd, env=None, timeout=600):
    """Runs ``python <args>`` in a subprocess; returns the CompletedProcess (output captured as text)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault('OMP_NUM_THREADS', '1')
    return subprocess.run([sys.executable, *args],
                          cwd=str(cwd),
                          env=full_env,
                          capture_output=True,
                          text=True,
                          timeout=timeout)


def basicsr_checkout(folder):
    """Copies the installed BasicSR's ``train.py`` and ``test.py`` to ``folder/BasicSR/basicsr/``, the layout of a
    source checkout, and returns ``folder/BasicSR``.

    ``python <root>/basicsr/train.py -opt X`` then runs BasicSR's unmodified entry point rooted at ``<root>`` (it
    roots itself at its own file's parent folder), while ``import basicsr`` still finds the installed package: the
    script's folder, first on ``sys.path``, holds no ``basicsr`` package. ``python -m basicsr.train`` would root at
    the install folder (site-packages) instead.
    """
    import basicsr
    root = Path(folder) / 'BasicSR'
    (root / 'basicsr').mkdir(parents=True, exist_ok=True)
    for name in ('train.py', 'test.py'):
        shutil.copyfile(Path(basicsr.__file__).parent / name, root / 'basicsr' / name)
    return root


# Folders BasicSR's entry points create under their root; a test must create them only under its tmp paths.
_OUTPUT_FOLDERS = ('experiments', 'results', 'tb_logger')


def _outputs_outside_tmp():
    """What a test could have written outside its tmp paths: the entries of BasicSR's output folders in the
    installed basicsr's parent folder (site-packages) and in the repository, and site-packages' own modification
    time (a folder created and removed again within the test changes it)."""
    import basicsr
    site_root = Path(basicsr.__file__).resolve().parents[1]
    listing = set()
    for root in (site_root, ROOT):
        for folder in _OUTPUT_FOLDERS:
            if (root / folder).is_dir():
                listing |= {str(root / folder / name) for name in os.listdir(root / folder)} | {str(root / folder)}
    return listing, site_root, site_root.stat().st_mtime_ns


@pytest.fixture(autouse=True)
def no_writes_outside_tmp(request):
    """Fails a test that left BasicSR outputs in site-packages or the repository, or created anything directly in
    site-packages (a read-only virtual environment would make it fail anyway)."""
    before, site_root, mtime = _outputs_outside_tmp()
    yield
    after, _, mtime_after = _outputs_outside_tmp()
    if after - before:
        pytest.fail(
            f'{request.node.nodeid} wrote outside its tmp paths (or another process did meanwhile): '
            f'{sorted(after - before)}; root runs at tmp_path (run_train / run_test / basicsr_checkout).',
            pytrace=False)
    if mtime_after != mtime:
        pytest.fail(
            f'{request.node.nodeid} created or removed files in {site_root} (its modification time changed; '
            'or another process did meanwhile); run BasicSR\'s entry points through '
            'basicsr_checkout(tmp_path).',
            pytrace=False)
