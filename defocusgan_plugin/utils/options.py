"""Option parsing for the plugin's entry points: BasicSR's parser plus CPU-capable distributed set-up and checks.

The YAML file stays the only configuration: BasicSR's ``parse_options`` does the parsing (``--force_yml``, paths,
debug mode); this module wraps it to accept ``--local-rank`` (what ``torch.distributed.launch`` passes), to start
the process group with gloo on CPU, and to turn common mistakes into errors that name the option.
"""
import argparse
import basicsr.utils.options as basicsr_options
import copy
import sys
import yaml
from basicsr.models.base_model import BaseModel
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY
from contextlib import contextmanager
from os import path as osp

from defocusgan_plugin.utils.dist_util import init_dist
from defocusgan_plugin.utils.registry_util import close_names_hint, unknown_type_message

NON_LOSS_TRAIN_BLOCKS = ('scheduler', )  # train.<x>_opt blocks are losses; optim_* blocks are optimisers
# What basicsr 1.4.2 builds: BaseModel.get_optimizer knows Adam only, BaseModel.setup_schedulers these three.
BASICSR_OPTIMIZERS = ('Adam', )
BASICSR_SCHEDULERS = ('MultiStepLR', 'MultiStepRestartLR', 'CosineAnnealingRestartLR')
# How archs (ours and BasicSR's) name their input width.
IN_CHANNEL_KEYS = ('num_in_ch', 'in_ch', 'in_chans', 'in_nc', 'in_channels')


def normalize_argv(argv):
    """Rewrites ``--local-rank`` (torch.distributed.launch) to BasicSR's ``--local_rank``."""
    out = []
    for arg in argv:
        if arg == '--local-rank':
            out.append('--local_rank')
        elif arg.startswith('--local-rank='):
            out.append('--local_rank=' + arg.split('=', 1)[1])
        else:
            out.append(arg)
    return out


def _option_file(argv):
    for i, arg in enumerate(argv):
        if arg == '-opt' and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith('-opt='):
            return arg.split('=', 1)[1]
    return None


def apply_force_yml(opt, argv):
    """A copy of ``opt`` with the ``--force_yml key=value`` overrides of ``argv`` applied as BasicSR applies them.

    The checks must see the options the run will use: an override that fixes a path (``path:pretrain_network_map=~``)
    must not be refused because of the value it replaces.
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('--force_yml', nargs='+', default=None)
    entries = parser.parse_known_args(argv)[0].force_yml or []
    opt = copy.deepcopy(opt)
    for entry in entries:
        if '=' not in entry:
            raise ValueError(f'--force_yml entries are key=value (e.g. train:total_iter=100); got {entry!r}.')
        key, value = (part.strip() for part in entry.split('=', 1))
        set_option(opt, key, basicsr_options._postprocess_yml_value(value))
    return opt


def read_yaml(path):
    """Reads an option file with BasicSR's ordered loader; errors name the file (and the line for syntax errors)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'Option file not found: {path}')
    try:
        with open(path) as f:
            opt = yaml.load(f, Loader=basicsr_options.ordered_yaml()[0])
    except yaml.YAMLError as err:
        raise ValueError(f'Option file {path} is not valid YAML: {err}') from None
    if not isinstance(opt, dict):
        raise ValueError(f'Option file {path} must hold a mapping of options at the top level.')
    return opt


def get_option(opt, key, default=None):
    """A nested option by its ``--force_yml`` key (``'train:scheduler:milestones'``), or ``default`` if absent."""
    node = opt
    for part in key.split(':'):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def set_option(opt, key, value):
    """Sets a nested option by its ``--force_yml`` key (``set_option(opt, 'train:total_iter', 2)``), making the
    blocks on the way."""
    *parents, last = key.split(':')
    node = opt
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _registered(registry, name):
    return name in registry or f'{name}_basicsr' in registry


def check_options(opt, is_train, source='options', resuming=False):
    """Validates the option dict before anything is built; every error names the offending key.

    Args:
        opt (dict): Options as read from the YAML file.
        is_train (bool): Training (needs ``train`` and ``logger`` blocks) or testing.
        source (str): Option file name for messages.
        resuming (bool): ``--auto_resume`` given (pretrain paths are then replaced, not checked).
    """
    required = ['name', 'model_type', 'datasets'] + (['train', 'logger'] if is_train else [])
    for key in required:
        if key not in opt:
            raise KeyError(f"{source}: missing top-level option '{key}'.")
    if 'num_gpu' not in opt:
        raise KeyError(f"{source}: missing top-level option 'num_gpu' (0 for CPU, 'auto' for all GPUs).")
    if not _registered(MODEL_REGISTRY, opt['model_type']):
        raise KeyError(f'{source}: ' + unknown_type_message('model_type', opt['model_type'], MODEL_REGISTRY))
    for key, block in opt.items():
        if key.startswith('network_') and isinstance(block, dict):
            if 'type' not in block:
                raise KeyError(f"{source}: option block {key} has no 'type'.")
            if not _registered(ARCH_REGISTRY, block['type']):
                raise KeyError(f'{source}: ' + unknown_type_message(key, block['type'], ARCH_REGISTRY))
    if not isinstance(opt['datasets'], dict) or not opt['datasets']:
        raise ValueError(f'{source}: option datasets must map phases (train, val, test_1, ...) to dataset blocks.')
    for phase, block in opt['datasets'].items():
        if not isinstance(block, dict) or 'type' not in block:
            raise KeyError(f"{source}: option block datasets.{phase} has no 'type'.")
        if not _registered(DATASET_REGISTRY, block['type']):
            raise KeyError(f'{source}: ' + unknown_type_message(f'datasets.{phase}', block['type'], DATASET_REGISTRY))
    for key, block in (opt.get('train') or {}).items():
        if key.endswith('_opt') and isinstance(block, dict) and key not in NON_LOSS_TRAIN_BLOCKS:
            if 'type' not in block:
                raise KeyError(f"{source}: option block train.{key} has no 'type'.")
            if not _registered(LOSS_REGISTRY, block['type']):
                raise KeyError(f'{source}: ' + unknown_type_message(f'train.{key}', block['type'], LOSS_REGISTRY))
    _check_optimizers_and_schedulers(opt, source)
    _check_input_channels(opt, source)
    metrics = (opt.get('val') or {}).get('metrics') or {}
    for key, block in metrics.items():
        if not isinstance(block, dict) or 'type' not in block:
            raise KeyError(f"{source}: option block val.metrics.{key} has no 'type'.")
        if not _registered(METRIC_REGISTRY, block['type']):
            raise KeyError(f'{source}: ' + unknown_type_message(f'val.metrics.{key}', block['type'], METRIC_REGISTRY))
    path_opt = opt.get('path') or {}
    if not (resuming or path_opt.get('resume_state')):  # resuming replaces the pretrain paths
        for key, value in path_opt.items():
            if key.startswith('pretrain_network') and value is not None and not osp.isfile(osp.expanduser(value)):
                raise FileNotFoundError(f'{source}: path.{key} points to a missing file: {value}')


def _model_class(model_type):
    return MODEL_REGISTRY.get(model_type if model_type in MODEL_REGISTRY else f'{model_type}_basicsr')


def _unsupported_message(key, kind, name, supported, model_type):
    hint = close_names_hint(name, supported, n=3)
    return f"{key}: {kind} type '{name}' is not supported by {model_type} (supported: {', '.join(supported)}).{hint}"


def _check_optimizers_and_schedulers(opt, source):
    """``train.optim_*`` and ``train.scheduler`` types against what the model will really build.

    Checked where the names are known: a model class listing ``supported_optimizers`` (the plugin's models) and
    BaseModel's ``get_optimizer`` / ``setup_schedulers`` (BasicSR's own models, e.g. SRModel: Adam only). A model
    with its own builder is left to report its errors itself.
    """
    train_opt = opt.get('train') or {}
    model_type = opt['model_type']
    model_cls = _model_class(model_type)
    optimizers = getattr(model_cls, 'supported_optimizers', None)
    if optimizers is None and getattr(model_cls, 'get_optimizer', None) is BaseModel.get_optimizer:
        optimizers = list(BASICSR_OPTIMIZERS)
    for key, block in train_opt.items():
        if not (key.startswith('optim_') and isinstance(block, dict)):
            continue
        if 'type' not in block:
            raise KeyError(f"{source}: option block train.{key} has no 'type' (e.g. Adam).")
        if optimizers is not None and block['type'] not in optimizers:
            raise KeyError(f'{source}: ' +
                           _unsupported_message(f'train.{key}', 'optimizer', block['type'], optimizers, model_type))
    block = train_opt.get('scheduler')
    if isinstance(block, dict):
        if 'type' not in block:
            raise KeyError(f"{source}: option block train.scheduler has no 'type' (e.g. MultiStepLR).")
        if (getattr(model_cls, 'setup_schedulers', None) is BaseModel.setup_schedulers
                and block['type'] not in BASICSR_SCHEDULERS):
            raise KeyError(f'{source}: ' + _unsupported_message('train.scheduler', 'scheduler', block['type'],
                                                                list(BASICSR_SCHEDULERS), model_type))


def _check_input_channels(opt, source):
    """``input: dual`` datasets give 6 channels (3 for gray views): the generator's input width must agree."""
    net = opt.get('network_g')
    if not isinstance(net, dict):
        return
    key = next((k for k in IN_CHANNEL_KEYS if k in net), None)
    if key is None:
        return
    for phase, block in opt['datasets'].items():
        if block.get('type') not in ('DPDDDataset', 'SyntheticDPDataset'):
            continue
        per_view = 1 if block.get('color') == 'gray' else 3
        channels = per_view * (2 if block.get('input', 'single') == 'dual' else 1)
        if net[key] != channels:
            raise ValueError(f"{source}: datasets.{phase}.input is '{block.get('input', 'single')}' ({channels} "
                             f'channels per image) but network_g.{key} is {net[key]} ({net["type"]}); set '
                             f'network_g.{key}: {channels} or change the dataset input.')


@contextmanager
def patched(obj, name, value):
    """Temporarily replaces attribute ``name`` of ``obj``."""
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def parse_options(root_path, is_train=True, argv=None):
    """BasicSR's ``parse_options`` with the plugin's distributed set-up and option checks.

    Args:
        root_path (str): Folder under which ``experiments/``, ``results/`` and ``tb_logger/`` are created.
        is_train (bool): Training or testing.
        argv (list[str] | None): Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        tuple[dict, argparse.Namespace]: Options and parsed arguments.
    """
    argv = normalize_argv(sys.argv[1:] if argv is None else list(argv))
    opt_file = _option_file(argv)
    if opt_file:  # without -opt, BasicSR's parser prints its usage
        raw = apply_force_yml(read_yaml(opt_file), argv)
        check_options(raw, is_train, source=opt_file, resuming='--auto_resume' in argv)
        backend = (raw.get('dist_params') or {}).get('backend')
    else:
        backend = None

    def _init(launcher, **kwargs):
        kwargs.setdefault('backend', backend)
        init_dist(launcher, **kwargs)

    with patched(basicsr_options, 'init_dist', _init), patched(sys, 'argv', [sys.argv[0]] + argv):
        opt, args = basicsr_options.parse_options(root_path, is_train=is_train)
    return opt, args
