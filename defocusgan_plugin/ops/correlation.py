"""Matching costs between the two dual-pixel (DP) views: explicit cross-correlation of features over signed
horizontal displacements, and the DP cross-convolution identity over candidate blur kernels.

DP disparity is horizontal and its sign tells the side of the focal plane. In the plugin's convention a positive CoC
(behind the focal plane) shifts the left view to the right relative to the right view, so a correlation indexed by
``d`` with ``left(x) <-> right(x - d)`` peaks at a positive ``d`` behind the focal plane and a negative ``d`` in front.
"""
import torch
import torch.nn.functional as F

from defocusgan_plugin.ops.filters import box_highpass, box_mean
from defocusgan_plugin.ops.render import blur_layers


def horizontal_correlation(left, right, max_disp, normalize=True, eps=1e-6):
    """Correlation volume of two feature maps over the displacements ``d = -max_disp .. max_disp``.

    ``out[:, d + max_disp, y, x] = <left[:, y, x], right[:, y, x - d]>``, with each feature vector L2-normalised over
    its channels (``normalize=True``: cosine similarity in [-1, 1], independent of the feature scale and of the crop
    size) or the plain dot product divided by the channel count (``normalize=False``, FlowNet's normalisation).
    Displacements that leave the image give 0.

    Swapping the views mirrors the displacement axis:
    ``horizontal_correlation(right, left)[:, m + d, y, x] == horizontal_correlation(left, right)[:, m - d, y, x - d]``.

    Args:
        left (Tensor): (N, C, H, W) features of the left view.
        right (Tensor): (N, C, H, W) features of the right view.
        max_disp (int): Largest |displacement| in pixels of this feature map (>= 0).
        normalize (bool): Cosine similarity (True) or channel-mean dot product (False). Default: True.
        eps (float): Guards the normalisation of zero vectors. Default: 1e-6.

    Returns:
        Tensor: (N, 2 * max_disp + 1, H, W); channel ``k`` holds displacement ``k - max_disp``.
    """
    if left.shape != right.shape or left.dim() != 4:
        raise ValueError(f'horizontal_correlation needs two (N, C, H, W) tensors of the same shape, got '
                         f'{tuple(left.shape)} and {tuple(right.shape)}.')
    max_disp = int(max_disp)
    if max_disp < 0:
        raise ValueError(f'max_disp must be >= 0, got {max_disp}.')
    if normalize:
        left, right = F.normalize(left, dim=1, eps=eps), F.normalize(right, dim=1, eps=eps)
    else:
        left = left / left.shape[1]
    width = left.shape[-1]
    # right[x - d] sits at column x - d + max_disp of the padded map: one pad, then a view per displacement
    padded = F.pad(right, (max_disp, max_disp))
    volume = [(left * padded[..., max_disp - d:max_disp - d + width]).sum(dim=1)
              for d in range(-max_disp, max_disp + 1)]
    return torch.stack(volume, dim=1)


def cross_convolution_costs(left, right, kernels, window=7):
    """Costs of the DP cross-convolution identity ``L * k_R = R * k_L`` for candidate left/right kernel pairs.

    A fronto-parallel patch blurred by the kernels ``k_L, k_R`` of its radius satisfies the identity, so the right
    candidate has the lowest cost. The local mean of ``|L * k_R - R * k_L|`` is divided by the local gradient energy
    of both sides: larger kernels smooth both sides and would otherwise always win.

    Args:
        left, right (Tensor): (B, 1, H, W) single-channel views.
        kernels (Tensor): (2, M, K, K) left and right kernels of M candidate radii.
        window (int): Odd side of the local averaging window. Default: 7.

    Returns:
        tuple[Tensor, Tensor]: (B, M, H, W) normalised costs and (B, M, H, W) gradient energies (texture).
    """
    if left.dim() != 4 or left.shape[1] != 1 or left.shape != right.shape:
        raise ValueError(f'cross_convolution_costs needs two (B, 1, H, W) views, got {tuple(left.shape)} and '
                         f'{tuple(right.shape)}.')
    if window % 2 != 1:
        raise ValueError(f'window must be odd, got {window}.')
    a = blur_layers(left[:, None], kernels[1])[:, :, 0]  # L * k_R: (B, M, H, W)
    b = blur_layers(right[:, None], kernels[0])[:, :, 0]  # R * k_L
    grad = (a[..., :, 1:] - a[..., :, :-1]).abs() + (b[..., :, 1:] - b[..., :, :-1]).abs()
    texture = box_mean(F.pad(grad, (0, 1, 0, 0), mode='replicate'), window // 2) + 1e-4
    return box_mean((a - b).abs(), window // 2) / texture, texture


# views' channel the cross-convolution identity is matched on (None: the mean of the channels)
MATCH_CHANNELS = {'mean': None, 'red': 0, 'green': 1, 'blue': 2}


def match_planes(left, right, channel=None, highpass=0):
    """The single-channel planes of two views that the cross-convolution identity is matched on.

    Args:
        left, right (Tensor): (B, C, H, W) views.
        channel (int | None): Channel index to match on; None: the mean of the channels.
        highpass (int): Radius of a box mean subtracted from both planes (0: none). A linear filter keeps the
            identity and removes what it cannot explain: left/right gain and offset differences of real captures.

    Returns:
        tuple[Tensor, Tensor]: (B, 1, H, W) planes.
    """
    if channel is not None and channel >= left.shape[1]:
        raise ValueError(f'Cannot match on channel {channel} of {left.shape[1]}-channel views (grey views: use the '
                         "'mean' channel).")
    if channel is None:
        left, right = left.mean(1, keepdim=True), right.mean(1, keepdim=True)
    else:
        left, right = left[:, channel:channel + 1], right[:, channel:channel + 1]
    return box_highpass(left, highpass), box_highpass(right, highpass)


def best_radius(cost, radii, subpixel=False):
    """Radius of the lowest cost at each pixel, optionally refined between the candidates.

    Args:
        cost (Tensor): (B, M, H, W) costs of the M candidate radii.
        radii (Tensor): (M,) evenly spaced candidate radii.
        subpixel (bool): Refine by the vertex of a parabola through the best cost and its two neighbours (shifted by
            at most one step): DP radii of real captures are often below one step.

    Returns:
        Tensor: (B, 1, H, W) radii.
    """
    best = cost.argmin(1, keepdim=True)
    if not subpixel or len(radii) < 3:
        return radii[best]
    mid = best.clamp(1, len(radii) - 2)
    c0, c1, c2 = (cost.gather(1, mid + k) for k in (-1, 0, 1))
    shift = (0.5 * (c0 - c2) / (c0 - 2 * c1 + c2).clamp_min(1e-12)).clamp(-1.0, 1.0)
    return radii[mid] + shift * (radii[1] - radii[0])
