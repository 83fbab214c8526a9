"""Locating pretrained weights offline (VGG19 for the perceptual loss, AlexNet for LPIPS).

Nothing is downloaded: a missing file is a clear error naming the option and the environment variable to set.
"""
import os
from os import path as osp

from defocusgan_plugin.utils.checkpoint import load_state_dict_from


def resolve_weights(path, env_var, filename, option_key):
    """Finds a pretrained weight file.

    Search order: the explicit ``path`` option, the environment variable ``env_var``, torchvision's cache
    (``$TORCH_HOME/hub/checkpoints/<filename>``) and BasicSR's ``experiments/pretrained_models/<filename>`` in the
    working directory.

    Args:
        path (str | None): Value of the option (explicit path), or None.
        env_var (str): Environment variable that may hold the path.
        filename (str): File name torchvision uses for these weights.
        option_key (str): Option name shown in the error message.

    Returns:
        str: Existing file path.

    Raises:
        FileNotFoundError: With every place that was searched and how to fix it.
    """
    if path:
        path = osp.expanduser(path)
        if not osp.isfile(path):
            raise FileNotFoundError(f'Pretrained weights not found: {path} (option {option_key}).')
        return path
    torch_home = os.environ.get('TORCH_HOME', osp.join(osp.expanduser('~'), '.cache', 'torch'))
    candidates = [
        os.environ.get(env_var),
        osp.join(torch_home, 'hub', 'checkpoints', filename),
        osp.join('experiments', 'pretrained_models', filename)
    ]
    for cand in candidates:
        if cand and osp.isfile(cand):
            return cand
    searched = ', '.join(c for c in candidates[1:])
    raise FileNotFoundError(f'Pretrained weights {filename} are needed and cannot be downloaded here. Set option '
                            f'{option_key} (or environment variable {env_var}) to a local copy of torchvision\'s '
                            f'file; also searched: {searched}.')


def load_state_dict(path):
    """Loads a state dict safely (``weights_only=True``), unwrapping ``params_ema``/``params``/``state_dict``."""
    return load_state_dict_from(path)[0]
