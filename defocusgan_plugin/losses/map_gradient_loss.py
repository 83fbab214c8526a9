import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn as nn


@LOSS_REGISTRY.register()
class MapGradientPriorLoss(nn.Module):
    """Gradient prior on a defocus map, ``lambda * ||grad I_DM||`` (DefocusGAN Eq. 5): favours smooth maps.

    With ``reduction: sum`` and ``loss_weight: 1e-5`` it is the total variation of the official release (summed
    over pixels, channels and batch; the release switches it on after 3000 steps: ``train.prior_start_iter``).
    ``edge_weight > 0`` makes it edge-aware: the penalty at a pixel is scaled by ``exp(-edge_weight * |grad image|)``,
    so the map may jump where the image has an edge (depth edges usually do).

    Args:
        loss_weight (float): Loss weight lambda. Default: 1.0.
        reduction (str): 'mean' (over pixels) or 'sum'. Default: 'mean'.
        norm (str): 'l1' (total variation) or 'l2' (squared gradients). Default: 'l1'.
        edge_weight (float): Edge-awareness, per unit of image intensity gradient; 0 disables it. Default: 0.
    """

    def __init__(self, loss_weight=1.0, reduction='mean', norm='l1', edge_weight=0.0):
        super().__init__()
        if reduction not in ('mean', 'sum'):
            raise ValueError(f"MapGradientPriorLoss: reduction must be 'mean' or 'sum', got {reduction!r}.")
        if norm not in ('l1', 'l2'):
            raise ValueError(f"MapGradientPriorLoss: norm must be 'l1' or 'l2', got {norm!r}.")
        self.loss_weight = loss_weight
        self.reduction = reduction
        self.norm = norm
        self.edge_weight = edge_weight

    def forward(self, defocus_map, image=None):
        """
        Args:
            defocus_map (Tensor): (B, C, H, W) map (each channel penalised, e.g. the release's 3-channel maps).
            image (Tensor | None): (B, C, H, W) guide image for the edge-aware weights.

        Returns:
            Tensor: Scalar loss.
        """
        loss = 0
        for dim in (-1, -2):
            grad = defocus_map.diff(dim=dim)
            penalty = grad.abs() if self.norm == 'l1' else grad.pow(2)
            if self.edge_weight > 0 and image is not None:
                penalty = penalty * torch.exp(-self.edge_weight * image.diff(dim=dim).abs().mean(1, keepdim=True))
            loss = loss + (penalty.sum() if self.reduction == 'sum' else penalty.mean())
        return self.loss_weight * loss
