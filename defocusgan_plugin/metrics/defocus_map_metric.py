"""Defocus-map metrics of the dual-pixel depth literature (Garg et al., ICCV 2019), as BasicSR metrics.

DP defocus is only known up to an affine ambiguity (unknown focus distance and aperture), so the prediction is first
fitted to the ground truth with a scale and an offset, ``gt ~ a * pred + b``, and the residual is scored:

* AIWE(1): the fit minimises the weighted absolute error (iteratively reweighted least squares, 5 iterations);
  reported as the weighted mean absolute error.
* AIWE(2): weighted least-squares fit; reported as the weighted RMS error.
* 1 - |Spearman rho|: rank correlation, invariant to any monotonic mapping.
* the constant-map floor: AIWE(1) (or AIWE(2)) of a map without information (a constant), on the pixels the
  prediction is scored on; a map is only informative where its AIWE is below this.

Errors are in the units of the ground truth (CoC pixels for the plugin's maps); lower is better for all three. The
functions take ``img`` (prediction) and ``img2`` (ground truth) as ndarrays or tensors of any shape with the same
number of elements (e.g. HxW, HxWx1, 1x1xHxW), and an optional per-pixel confidence ``weight``.
"""
import numpy as np
import torch
from basicsr.utils.registry import METRIC_REGISTRY
from scipy.stats import rankdata

# Metrics that compare defocus maps (not images): models route their inputs by these names.
DEFOCUS_MAP_METRICS = ('calculate_aiwe1', 'calculate_aiwe2', 'calculate_spearman_error', 'calculate_constant_floor')


def _flat(x, crop_border, name):
    if torch.is_tensor(x):
        x = x.detach().cpu().numpy()
    x = np.squeeze(np.asarray(x, dtype=np.float64))  # HxW, HxWx1, 1x1xHxW -> HxW
    if x.ndim != 2:
        raise ValueError(f'Defocus-map metric: {name} must be a 2-D map, got shape {x.shape}.')
    if crop_border:
        x = x[crop_border:-crop_border, crop_border:-crop_border]
    return x.ravel()


def _inputs(img, img2, weight, crop_border):
    pred, gt = _flat(img, crop_border, 'img'), _flat(img2, crop_border, 'img2')
    if pred.shape != gt.shape:
        raise ValueError(f'Defocus-map metric: map sizes differ ({pred.size} vs {gt.size} pixels).')
    w = np.ones_like(gt) if weight is None else _flat(weight, crop_border, 'weight')
    valid = np.isfinite(pred) & np.isfinite(gt) & (w > 0)
    if not valid.any():
        raise ValueError('Defocus-map metric: no valid pixel (all weights are 0 or values non-finite).')
    return pred[valid], gt[valid], w[valid]


def affine_fit(pred, gt, weight):
    """Weighted least-squares ``a, b`` minimising ``sum w (gt - a pred - b)^2`` (a constant pred gives a = 0)."""
    sw = np.sqrt(weight)
    design = np.stack([pred * sw, sw], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, gt * sw, rcond=None)
    return a, b


@METRIC_REGISTRY.register()
def calculate_aiwe2(img, img2, crop_border=0, weight=None, **kwargs):
    """AIWE(2): weighted RMS error after the weighted least-squares affine fit of ``img`` to ``img2``.

    Args:
        img (ndarray | Tensor): Predicted defocus map.
        img2 (ndarray | Tensor): Ground-truth defocus map.
        crop_border (int): Pixels ignored at each border. Default: 0.
        weight (ndarray | Tensor | None): Per-pixel confidence (default: all 1).

    Returns:
        float: AIWE(2).
    """
    pred, gt, w = _inputs(img, img2, weight, crop_border)
    a, b = affine_fit(pred, gt, w)
    return float(np.sqrt(np.sum(w * (gt - a * pred - b)**2) / np.sum(w)))


@METRIC_REGISTRY.register()
def calculate_aiwe1(img, img2, crop_border=0, weight=None, iterations=5, eps=1e-6, **kwargs):
    """AIWE(1): weighted mean absolute error after an L1 affine fit (iteratively reweighted least squares).

    Args:
        img (ndarray | Tensor): Predicted defocus map.
        img2 (ndarray | Tensor): Ground-truth defocus map.
        crop_border (int): Pixels ignored at each border. Default: 0.
        weight (ndarray | Tensor | None): Per-pixel confidence (default: all 1).
        iterations (int): Reweighting iterations after the initial least-squares fit. Default: 5 (Garg et al.).
        eps (float): Floor of |residual| in the reweighting.

    Returns:
        float: AIWE(1).
    """
    pred, gt, w = _inputs(img, img2, weight, crop_border)
    a, b = affine_fit(pred, gt, w)
    for _ in range(int(iterations)):
        a, b = affine_fit(pred, gt, w / np.maximum(np.abs(gt - a * pred - b), eps))
    return float(np.sum(w * np.abs(gt - a * pred - b)) / np.sum(w))


@METRIC_REGISTRY.register()
def calculate_spearman_error(img, img2, crop_border=0, weight=None, **kwargs):
    """1 - |Spearman rank correlation| between the maps (pixels with zero weight are left out; 1 for a constant map).

    Args:
        img (ndarray | Tensor): Predicted defocus map.
        img2 (ndarray | Tensor): Ground-truth defocus map.
        crop_border (int): Pixels ignored at each border. Default: 0.
        weight (ndarray | Tensor | None): Pixels with weight 0 are ignored.

    Returns:
        float: 1 - |rho| in [0, 1].
    """
    pred, gt, _ = _inputs(img, img2, weight, crop_border)
    rank_pred, rank_gt = rankdata(pred), rankdata(gt)
    if rank_pred.std() == 0 or rank_gt.std() == 0:
        return 1.0
    rho = np.corrcoef(rank_pred, rank_gt)[0, 1]
    return float(1.0 - abs(rho))


@METRIC_REGISTRY.register()
def calculate_constant_floor(img, img2, crop_border=0, weight=None, order=1, **kwargs):
    """AIWE(``order``) of a constant map against ``img2``: the score of a map that carries no information.

    The constant takes ``img``'s place on the same pixels (its non-finite ones stay excluded), so the ratio of a
    prediction's AIWE to this floor is on equal terms; the fit makes the constant's value irrelevant.

    Args:
        img (ndarray | Tensor): Predicted defocus map (only its shape and finite pixels are used).
        img2 (ndarray | Tensor): Ground-truth defocus map.
        crop_border (int): Pixels ignored at each border. Default: 0.
        weight (ndarray | Tensor | None): Per-pixel confidence (default: all 1).
        order (int): 1 for AIWE(1) (default), 2 for AIWE(2).

    Returns:
        float: The floor, in the ground truth's units.
    """
    if order not in (1, 2):
        raise ValueError(f'calculate_constant_floor: order must be 1 or 2, got {order}.')
    constant = img * 0  # NaN / inf stay non-finite, so the same pixels are scored
    if order == 1:
        return calculate_aiwe1(constant, img2, crop_border, weight, **kwargs)
    return calculate_aiwe2(constant, img2, crop_border, weight, **kwargs)
