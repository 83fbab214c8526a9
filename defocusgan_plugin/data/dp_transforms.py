"""Augmentations that respect dual-pixel geometry.

DP disparity is horizontal. Mirroring an image left-right turns the left sub-aperture view into a right view, so a
horizontal flip must also **swap** the two views (the signed CoC keeps its sign: depth does not change). A vertical
flip keeps the views. A 90-degree rotation would turn horizontal disparity into vertical disparity, which no DP
sensor produces, so it is refused for DP input.
"""
import numpy as np
import random
import torch
from basicsr.utils import img2tensor

DP_KEYS = ('lq_l', 'lq_r')


def random_crop(images, size, name='image'):
    """Crops all HWC arrays of a dict at the same random location.

    Args:
        images (dict[str, ndarray]): Arrays with equal height and width.
        size (int): Square patch size.
        name (str): Shown in the error message (e.g. the file path).

    Returns:
        dict[str, ndarray]: Cropped arrays.
    """
    h, w = next(iter(images.values())).shape[:2]
    top, left = random_window(h, w, size, name)
    return crop(images, top, left, size)


def random_window(h, w, size, name='image'):
    """Top-left corner of a random ``size`` square in an ``h`` x ``w`` image (the draw :func:`random_crop` makes).

    Returns:
        tuple[int, int]: top, left.
    """
    if size > h or size > w:
        raise ValueError(f'gt_size {size} is larger than the image ({h}x{w}) of {name}; lower gt_size.')
    return random.randint(0, h - size), random.randint(0, w - size)


def crop(images, top, left, size):
    return {k: v[top:top + size, left:left + size, ...] for k, v in images.items()}


def patch_grid(h, w, size, stride):
    """Top-left corners of the ``size`` patch grid with ``stride`` (the last row/column flush with the border).

    Returns:
        list[tuple[int, int]]: (top, left) pairs, row by row.
    """
    tops = sorted(set(list(range(0, h - size + 1, stride)) + [h - size]))
    lefts = sorted(set(list(range(0, w - size + 1, stride)) + [w - size]))
    return [(top, left) for top in tops for left in lefts]


def grid_scores(img, size, stride):
    """:func:`sharpness_energy` of every patch of :func:`patch_grid` of an HWC image, in grid order."""
    h, w = img.shape[:2]
    return [sharpness_energy(img[top:top + size, left:left + size]) for top, left in patch_grid(h, w, size, stride)]


def dp_augment(images, hflip=False, vflip=False, rot90=False):
    """Random flips (and rotation for single-image data) applied identically to all arrays, DP-aware.

    Args:
        images (dict[str, ndarray]): HWC (or HW) arrays; 'lq_l' and 'lq_r' are the DP views if present.
        hflip (bool): Allow a random horizontal flip (swaps the DP views).
        vflip (bool): Allow a random vertical flip.
        rot90 (bool): Allow a random transpose (90-degree rotation with the flips). Refused with DP views.

    Returns:
        dict[str, ndarray]: Augmented arrays (contiguous copies).
    """
    if rot90 and any(k in images for k in DP_KEYS):
        raise ValueError('Rotation (use_rot) breaks dual-pixel disparity, which is horizontal; set use_rot: false '
                         'for dual-pixel data.')
    out = dict(images)
    if hflip and random.random() < 0.5:
        out = {k: v[:, ::-1, ...] for k, v in out.items()}
        if 'lq_l' in out and 'lq_r' in out:
            out['lq_l'], out['lq_r'] = out['lq_r'], out['lq_l']
    if vflip and random.random() < 0.5:
        out = {k: v[::-1, ...] for k, v in out.items()}
    if rot90 and random.random() < 0.5:
        out = {k: v.transpose(1, 0, *range(2, v.ndim)) for k, v in out.items()}
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def sharpness_energy(img):
    """Mean gradient magnitude of an HWC image in [0, 1] (the patch score used to drop flat, textureless patches)."""
    gray = img.mean(axis=2) if img.ndim == 3 else img
    gy, gx = np.gradient(gray.astype(np.float32))
    return float(np.sqrt(gx * gx + gy * gy).mean())


def to_sample(arrays, input_mode='single'):
    """HWC BGR arrays -> CHW RGB tensors; 'defocus' maps stay single-channel; ``lq`` becomes concat(L, R) in dual
    mode (the combined view, if any, moves to ``lq_c``)."""
    out = {}
    for key, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        if key == 'defocus':
            out[key] = torch.from_numpy(arr.transpose(2, 0, 1).copy())
        else:
            out[key] = img2tensor(arr, bgr2rgb=arr.shape[2] == 3, float32=True)
    if input_mode == 'dual':
        if 'lq' in out:
            out['lq_c'] = out.pop('lq')
        out['lq'] = torch.cat([out['lq_l'], out['lq_r']], dim=0)
    return out
