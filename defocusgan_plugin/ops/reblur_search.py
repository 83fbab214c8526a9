"""Exhaustive search of the stage-1 reblur objective: the signed CoC radius whose rendered DP views of the sharp image
best match the captured views in a window around each pixel.

The stage-1 network minimises the reblur loss by gradient descent through a layered renderer, whose per-pixel
objective has a minimum at every radius that renders a similar blur; started from the DP cue it stays near the cue.
Trying every candidate radius finds the global minimum of the same objective in each window (a local fronto-parallel
assumption instead of the network's smoothness), from the same data: the sharp image and the two captured views.
"""
import torch

from defocusgan_plugin.ops.filters import box_highpass, box_mean
from defocusgan_plugin.ops.render import blur_layers, linear_to_srgb, srgb_to_linear


def check_search_options(step, window, highpass):
    """Refuses search options :func:`reblur_search` cannot use; returns the candidates per pixel of radius."""
    sub = round(1 / step) if step > 0 else 0
    if sub < 1 or abs(sub * step - 1) > 1e-6 or int(window) != window or window % 2 != 1 or highpass < 0:
        raise ValueError(f'reblur search: step must be 1 / n (n >= 1), window odd and highpass >= 0; got step {step}, '
                         f'window {window}, highpass {highpass}.')
    return sub


def reblur_search(sharp, views, dp_kernels, step=0.5, window=15, highpass=7, linear_light=True):
    """Per-pixel signed CoC radius that best re-renders the captured DP views from the sharp image.

    Each candidate radius renders both views of the whole image with the kernels of :meth:`LearnableBlurKernel.
    dp_kernels` (between integer radii, the views of the two neighbouring radii blended linearly, as the reblur's
    tent weights do); the cost of a radius at a pixel is the mean over a ``window`` of the absolute difference
    between the rendered and the captured views (the mean of the colour channels, both views summed), after a
    ``highpass`` that removes the captures' left/right gain differences (vignetting) which no radius renders.

    Args:
        sharp (Tensor): (B, C, H, W) sharp (all-in-focus) image in [0, 1].
        views (Tensor): (B, 2, C, H, W) captured left/right views.
        dp_kernels (Tensor): (2, 2R + 1, K, K) left/right kernels of the signed radii -R..R.
        step (float): Candidate radius step in pixels (1 / step must be an integer). Default: 0.5.
        window (int): Odd side of the cost window. Default: 15.
        highpass (int): Radius of the box mean subtracted from rendered and captured views; 0 off. Default: 7.
        linear_light (bool): Blur in linear light (sRGB-decode before, encode after). Default: True.

    Returns:
        tuple[Tensor, Tensor]: (B, 1, H, W) signed radius of the lowest cost, and (B, M, H, W) costs of the M
        candidate radii ``-R, -R + step, ..., R``.
    """
    if sharp.dim() != 4 or views.dim() != 5 or views.shape[1] != 2 or views.shape[2:] != sharp.shape[1:]:
        raise ValueError(f'reblur_search needs a (B, C, H, W) sharp image and (B, 2, C, H, W) views of its size, got '
                         f'{tuple(sharp.shape)} and {tuple(views.shape)}.')
    if dp_kernels.dim() != 4 or dp_kernels.shape[0] != 2 or dp_kernels.shape[1] % 2 != 1:
        raise ValueError(f'reblur_search needs (2, 2R + 1, K, K) left/right kernels, got {tuple(dp_kernels.shape)}.')
    sub = check_search_options(step, window, highpass)
    x = srgb_to_linear(sharp) if linear_light else sharp
    rendered = blur_layers(x[:, None, None], dp_kernels)  # (B, 2, 2R + 1, C, H, W)
    if linear_light:
        rendered = linear_to_srgb(rendered)
    rendered = box_highpass(rendered.mean(3), highpass)  # (B, 2, 2R + 1, H, W)
    captured = box_highpass(views.mean(2), highpass)[:, :, None]  # (B, 2, 1, H, W)
    # candidates between integer radii: linear blends of the renders of the two neighbours
    lo, hi = rendered[:, :, :-1], rendered[:, :, 1:]
    frac = torch.arange(sub, dtype=sharp.dtype, device=sharp.device).view(1, 1, 1, sub, 1, 1) / sub
    blends = lo.unsqueeze(3) * (1 - frac) + hi.unsqueeze(3) * frac  # (B, 2, 2R, sub, H, W)
    blends = torch.cat([blends.flatten(2, 3), rendered[:, :, -1:]], dim=2)  # (B, 2, M, H, W)
    cost = box_mean((blends - captured).abs().sum(1), window // 2)  # (B, M, H, W)
    radius_max = (dp_kernels.shape[1] - 1) // 2
    radii = torch.arange(cost.shape[1], dtype=sharp.dtype, device=sharp.device) * step - radius_max
    return radii[cost.argmin(1, keepdim=True)], cost


def search_confidence(cost):
    """Confidence of each pixel's search: ``1 - min / mean`` of its (B, M, H, W) costs over the candidates, (B, 1, H,
    W) in [0, 1]; 0 where every radius fits alike (no texture in the sharp image)."""
    return 1 - cost.amin(1, keepdim=True) / cost.mean(1, keepdim=True).clamp_min(1e-12)
