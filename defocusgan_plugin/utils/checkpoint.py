"""Checkpoint I/O: atomic saving, safe loading (``weights_only=True``), one way to pull a network's state dict out of
a checkpoint file (:func:`load_state_dict_from`), RNG state capture for exact resume."""
import collections
import io
import numpy as np
import pickle
import random
import torch
import torch.distributed as dist
from collections import OrderedDict
from os import path as osp

from defocusgan_plugin.utils.img_io import atomic_write_bytes

# BasicSR's MultiStepRestartLR keeps its milestones in a Counter; allow it in weights-only loading.
torch.serialization.add_safe_globals([collections.Counter])


def save_object(obj, path):
    """``torch.save`` through a temporary file and a rename: an interrupted save never corrupts ``path``."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path, map_location='cpu'):
    """Loads a checkpoint with ``weights_only=True``; clear errors for missing or unreadable files."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'Checkpoint not found: {path}')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        if isinstance(err, pickle.UnpicklingError) and 'weights only' in str(err).lower():
            raise ValueError(
                f'Cannot load checkpoint {path} safely: it holds objects other than tensors and plain '
                'containers, which torch.load(weights_only=True) refuses. If you trust the file, load it '
                "once with weights_only=False and save only its weights ({'params': state_dict}).") from None
        raise ValueError(f'Cannot load checkpoint {path} ({type(err).__name__}: {err}). The file may be truncated '
                         'or not a PyTorch checkpoint.') from None


# Where checkpoints keep a network's weights: BasicSR (EMA first), then the DefocusGAN release's {'state_dict': ...}.
STATE_DICT_KEYS = ('params_ema', 'params', 'state_dict')


def load_state_dict_from(path, param_key=None, fallback=True, map_location='cpu'):
    """Loads a network's state dict from a checkpoint file safely (``weights_only=True``).

    Accepts BasicSR checkpoints (``{'params': ..., 'params_ema': ...}``), the DefocusGAN release's
    ``{'state_dict': ...}`` and plain state dicts; the ``module.`` prefix of (Distributed)DataParallel is stripped.

    Args:
        path (str): Checkpoint file.
        param_key (str | None): Entry holding the weights. None: the first of ``STATE_DICT_KEYS`` present.
        fallback (bool): When ``param_key`` is missing, use 'params', then 'state_dict' (BasicSR's behaviour,
            extended to release files) instead of raising.
        map_location: Passed to ``torch.load``.

    Returns:
        tuple[OrderedDict, str | None]: The state dict and the entry it came from (None for a plain state dict).

    Raises:
        FileNotFoundError | ValueError: Missing or unreadable file, or no state dict in it.
        KeyError: ``param_key`` is missing (without ``fallback``, or with nothing to fall back to).
    """
    checkpoint = load_checkpoint(path, map_location)
    if not isinstance(checkpoint, dict):
        raise ValueError(f'{path} holds a {type(checkpoint).__name__}, not a state dict.')
    if checkpoint and all(torch.is_tensor(v) for v in checkpoint.values()):  # a plain state dict
        state, key = checkpoint, None
    else:
        if param_key is None:
            order = STATE_DICT_KEYS
        elif fallback:
            order = (param_key, ) + tuple(k for k in STATE_DICT_KEYS[1:] if k != param_key)
        else:
            order = (param_key, )
        key = next((k for k in order if isinstance(checkpoint.get(k), dict)), None)
        if key is None:
            wanted = f'no {param_key!r} entry' if param_key else 'no weights (' + ', '.join(STATE_DICT_KEYS) + ')'
            raise KeyError(f'{path} has {wanted} (it has: {", ".join(map(str, checkpoint)) or "nothing"}).')
        state = checkpoint[key]
    state = OrderedDict((k[7:] if k.startswith('module.') else k, v) for k, v in state.items())
    return state, key


def state_dict_mismatches(expected, loaded, limit=5):
    """Human-readable differences between two state dicts (missing, unexpected, shape), at most ``limit`` each.

    Args:
        expected (dict): The network's state dict.
        loaded (dict): The checkpoint's state dict.
        limit (int): Names listed per kind of difference.

    Returns:
        list[str]: One line per kind of difference; empty when the two match.
    """
    missing = [k for k in expected if k not in loaded]
    unexpected = [k for k in loaded if k not in expected]
    shapes = [
        f'{k}: checkpoint {tuple(loaded[k].shape)} vs network {tuple(expected[k].shape)}' for k in expected
        if k in loaded and tuple(loaded[k].shape) != tuple(expected[k].shape)
    ]
    lines = []
    for title, items in (('missing in checkpoint', missing), ('not in network', unexpected), ('shape', shapes)):
        if items:
            more = f' (+{len(items) - limit} more)' if len(items) > limit else ''
            lines.append(f'{title}: {", ".join(items[:limit])}{more}')
    return lines


def rng_states():
    """RNG states of Python, NumPy and torch (CPU and CUDA), as weights-only-loadable containers."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        'python': [version, list(mt), gauss],
        'numpy': [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, cached],
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    version, mt, gauss = state['python']
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def gather_rng_states(opt):
    """RNG states of every rank (a collective call in distributed runs); a list indexed by rank."""
    state = rng_states()
    if opt.get('dist') and dist.is_initialized():
        states = [None] * dist.get_world_size()
        dist.all_gather_object(states, state)
        return states
    return [state]


def set_rng_states(states, rank):
    """Restores this rank's RNG states saved by :func:`gather_rng_states` (no-op if that rank was not saved)."""
    if rank < len(states):
        set_rng_state(states[rank])
