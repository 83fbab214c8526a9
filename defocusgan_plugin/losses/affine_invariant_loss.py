import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn as nn


@LOSS_REGISTRY.register()
class AffineInvariantMapLoss(nn.Module):
    """L1 of a defocus map against its target after the least-squares affine fit ``a * pred + b`` per sample.

    DP defocus is known only up to an affine map (focus distance and aperture; here also the PSF family, whose
    disparity per CoC pixel differs), and AIWE(1) scores a map after such a fit. A plain L1 to the GT map spends the
    network's gradient on the global scale and offset that the metric ignores; this loss, the training form of the
    metric (as MiDaS's scale-and-shift-invariant loss), keeps only what the fit cannot explain. Gradients flow through
    the fit. A sample whose target is constant has no affine structure and gives no signal.

    Args:
        loss_weight (float): Loss weight. Default: 1.0.
        reduction (str): 'mean' over the weighted pixels (and samples), or 'sum'. Default: 'mean'.
        eps (float): Floor of the prediction's weighted variance in the fit. Default: 1e-6.
    """

    def __init__(self, loss_weight=1.0, reduction='mean', eps=1e-6):
        super().__init__()
        if reduction not in ('mean', 'sum'):
            raise ValueError(f"AffineInvariantMapLoss: reduction must be 'mean' or 'sum', got {reduction!r}.")
        self.loss_weight, self.reduction, self.eps = loss_weight, reduction, eps

    def forward(self, pred, target, weight=None, **kwargs):
        """
        Args:
            pred (Tensor): (B, C, H, W) predicted map.
            target (Tensor): (B, C, H, W) GT map.
            weight (Tensor | None): (B, C, H, W) per-pixel weights (0 leaves a pixel out of fit and loss).

        Returns:
            Tensor: Scalar loss.
        """
        weight = torch.ones_like(pred) if weight is None else weight.expand_as(pred)
        dims = tuple(range(1, pred.dim()))
        count = weight.sum(dims, keepdim=True).clamp_min(1.0)
        mean_p, mean_t = (weight * pred).sum(
            dims, keepdim=True) / count, (weight * target).sum(
                dims, keepdim=True) / count
        dev_p = pred - mean_p
        var_p = (weight * dev_p**2).sum(dims, keepdim=True) / count
        cov = (weight * dev_p * (target - mean_t)).sum(dims, keepdim=True) / count
        fitted = cov / var_p.clamp_min(self.eps) * dev_p + mean_t
        error = weight * (fitted - target).abs()
        loss = error.sum() / count.sum() if self.reduction == 'mean' else error.sum()
        return self.loss_weight * loss
