"""Checkpoint I/O: atomic saving, safe loading (``weights_only=True``), RNG state capture for exact resume."""
import collections
import io
import numpy as np
import random
import torch
import torch.distributed as dist
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
        raise ValueError(f'Cannot load checkpoint {path} ({type(err).__name__}: {err}). The file may be truncated '
                         'or not a PyTorch checkpoint.') from None


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
