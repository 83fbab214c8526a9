"""Multi-scale structural similarity (MS-SSIM, Wang, Simoncelli & Bovik 2003) and the loss ``1 - MS-SSIM``.

Standard settings: 11x11 Gaussian window of std 1.5, K1 = 0.01, K2 = 0.03, 2x2 average pooling between scales,
contrast-structure terms at the first scales and the full SSIM at the coarsest, weights
(0.0448, 0.2856, 0.3001, 0.2363, 0.1333).

Small crops: the coarsest scale must still hold one whole window, so an image whose smaller side is ``s`` uses
``min(5, 1 + floor(log2(s / win_size)))`` scales (5 from 176 px on with the 11-px window; 96-px crops get 4) with the
first weights renormalised to sum 1, so that one scale is exactly SSIM; an image smaller than the window uses one
scale and the largest odd window that fits. With 5 scales the published weights are used as they are (they sum to
1.0001), as in the reference implementations.
"""
import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn as nn
from torch.nn import functional as F

from defocusgan_plugin.ops.psf import gaussian_kernel2d

MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def msssim_num_scales(min_side, win_size=11, max_scales=len(MSSSIM_WEIGHTS)):
    """Number of scales for an image whose smaller side is ``min_side``: the coarsest must hold one whole window."""
    scales = 1
    while scales < max_scales and min_side // 2**scales >= win_size:
        scales += 1
    return scales


def _ssim_and_cs(x, y, window, c1, c2):
    """Mean SSIM and mean contrast-structure term per image and channel, over the valid (unpadded) window area."""
    channels = x.shape[1]

    def filt(img):
        return F.conv2d(img, window.expand(channels, 1, -1, -1), groups=channels)

    mu_x, mu_y = filt(x), filt(y)
    var_x = filt(x * x) - mu_x**2
    var_y = filt(y * y) - mu_y**2
    cov = filt(x * y) - mu_x * mu_y
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return (luminance * cs).mean(dim=(-2, -1)), cs.mean(dim=(-2, -1))


def ms_ssim(x, y, data_range=1.0, win_size=11, sigma=1.5, eps=1e-6):
    """MS-SSIM of each image of a batch (averaged over channels).

    Args:
        x (Tensor): (N, C, H, W) images.
        y (Tensor): (N, C, H, W) reference images.
        data_range (float): Value range of the images (1 for [0, 1]). Default: 1.0.
        win_size (int): Gaussian window size (odd). Default: 11.
        sigma (float): Gaussian window std. Default: 1.5.
        eps (float): Lower clamp of each scale's term before the weighted product; negative correlations would
            make the fractional powers undefined and their gradient infinite at 0. Default: 1e-6.

    Returns:
        Tensor: (N,) MS-SSIM values in [eps, 1].
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f'MS-SSIM needs two (N, C, H, W) tensors of the same shape, got {tuple(x.shape)} and '
                         f'{tuple(y.shape)}.')
    min_side = min(x.shape[-2:])
    scales = msssim_num_scales(min_side, win_size)
    win_size = min(win_size, min_side if min_side % 2 else min_side - 1)
    x, y = x.float(), y.float()  # the variance terms lose too much precision in half precision
    window = gaussian_kernel2d(sigma, win_size, x.dtype, x.device)[None, None]
    c1, c2 = (0.01 * data_range)**2, (0.03 * data_range)**2
    weights = torch.tensor(MSSSIM_WEIGHTS[:scales], dtype=x.dtype, device=x.device)
    if scales < len(MSSSIM_WEIGHTS):
        weights = weights / weights.sum()
    terms = []
    for scale in range(scales):
        ssim, cs = _ssim_and_cs(x, y, window, c1, c2)
        if scale == scales - 1:
            terms.append(ssim)
        else:
            terms.append(cs)
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    terms = torch.stack(terms, dim=-1).clamp(min=eps)  # (N, C, scales)
    return terms.pow(weights).prod(dim=-1).mean(dim=1)


@LOSS_REGISTRY.register()
class MSSSIMLoss(nn.Module):
    """MS-SSIM loss: ``loss_weight * (1 - MS-SSIM)``, 5 scales with the standard weights (fewer on small crops).

    Args:
        loss_weight (float): Loss weight. Default: 1.0.
        reduction (str): 'mean' | 'sum' over the batch, or 'none' for one value per image. Default: 'mean'.
        data_range (float): Value range of the images. Default: 1.0.
        win_size (int): Gaussian window size. Default: 11.
        sigma (float): Gaussian window std. Default: 1.5.
    """

    def __init__(self, loss_weight=1.0, reduction='mean', data_range=1.0, win_size=11, sigma=1.5):
        super().__init__()
        if reduction not in ('none', 'mean', 'sum'):
            raise ValueError(f"MSSSIMLoss option reduction must be 'none', 'mean' or 'sum', got {reduction!r}.")
        if win_size < 1 or win_size % 2 == 0:
            raise ValueError(f'MSSSIMLoss option win_size must be odd and positive, got {win_size}.')
        self.loss_weight = loss_weight
        self.reduction = reduction
        self.data_range = data_range
        self.win_size = win_size
        self.sigma = sigma

    def forward(self, pred, target, **kwargs):
        """
        Args:
            pred (Tensor): (N, C, H, W) predicted images.
            target (Tensor): (N, C, H, W) ground-truth images.
        """
        loss = 1 - ms_ssim(pred, target, self.data_range, self.win_size, self.sigma)
        if self.reduction == 'mean':
            loss = loss.mean()
        elif self.reduction == 'sum':
            loss = loss.sum()
        return self.loss_weight * loss
