"""Image filters shared by the matching costs, the joint DP optimiser and the data code: box mean, guided filter,
bilateral filter and nearest-valid filling of missing values."""
import numpy as np
import torch
import torch.nn.functional as F


def box_mean(x, radius):
    """Mean over a ``(2 radius + 1)^2`` window, windows clipped at the border (count-normalised).

    Args:
        x (Tensor): (B, C, H, W).
        radius (int): Window radius in pixels (0 returns ``x``).

    Returns:
        Tensor: (B, C, H, W).
    """
    if radius < 1:
        return x
    return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


def box_highpass(x, radius):
    """``x`` minus its :func:`box_mean`: what a smooth gain or offset field does not explain.

    Args:
        x (Tensor): (..., H, W), each plane filtered alone.
        radius (int): Window radius in pixels (0 returns ``x``).

    Returns:
        Tensor: Shaped as ``x``.
    """
    if radius < 1:
        return x
    planes = x.reshape(-1, 1, *x.shape[-2:])
    return x - box_mean(planes, radius).view_as(x)


def guided_filter(guide, src, radius=8, eps=1e-3):
    """Edge-aware smoothing of ``src`` following the edges of ``guide`` (He et al., guided image filter).

    Args:
        guide (Tensor): (B, C, H, W) guide image (its channel mean is used).
        src (Tensor): (B, C', H, W) image to filter (e.g. a defocus map).
        radius (int): Window radius in pixels.
        eps (float): Regularisation; edges with a local guide variance well above ``eps`` are kept.

    Returns:
        Tensor: (B, C', H, W) filtered ``src``.
    """
    if radius < 1:
        return src
    g = guide.mean(1, keepdim=True)
    mean_g, mean_s = box_mean(g, radius), box_mean(src, radius)
    cov = box_mean(g * src, radius) - mean_g * mean_s
    var = box_mean(g * g, radius) - mean_g * mean_g
    a = cov / (var + eps)
    b = mean_s - a * mean_g
    return box_mean(a, radius) * g + box_mean(b, radius)


def guided_filter_options(value, key):
    """Checks a ``map_filter``-style option: a dict of :func:`guided_filter`'s ``radius`` and ``eps``, or None (off).

    Args:
        value (dict | None): The option's value.
        key (str): The option's name, for the error message (e.g. 'deconv.map_filter').

    Returns:
        dict | None: ``value``.
    """
    if value is not None and (not isinstance(value, dict) or set(value) - {'radius', 'eps'}):
        raise ValueError(f'{key} takes radius and eps (or ~ for none), got {value}.')
    return value


def bilateral_filter(image, sigma_s=3.0, sigma_v=0.05, quantized=True, eps=1e-8):
    """Brute-force bilateral filter over a ``(2 w + 1)^2`` window, ``w = int(3 sigma_s + 1)``.

    Weight of a neighbour at offset ``d`` with value difference ``v``: ``g(|d|^2, sigma_s) * g(v^2, sigma_v)`` with
    ``g(r2, s) = exp(-r2 / (2 s^2))``; ``quantized`` rounds each factor down to a multiple of 1/3
    (``floor(3 g) / 3``), as the official release of Xin et al. does. Borders are replicated (the release wraps them
    around).

    Args:
        image (Tensor): (B, C, H, W), each channel filtered on its own.
        sigma_s (float): Spatial standard deviation in pixels.
        sigma_v (float): Value standard deviation, in the image's units.
        quantized (bool): Quantise the weights as the release.
        eps (float): Weight of the centre pixel added to every sum (keeps isolated pixels defined).

    Returns:
        Tensor: (B, C, H, W).
    """

    def weight(r2, sigma):
        g = torch.exp(-0.5 * r2 / sigma**2)
        return torch.floor(3.0 * g) / 3.0 if quantized else g

    half = int(3 * sigma_s + 1)
    height, width = image.shape[-2:]
    padded = F.pad(image, (half, half, half, half), mode='replicate')
    total, norm = image * eps, torch.full_like(image, eps)
    for dy in range(-half, half + 1):
        for dx in range(-half, half + 1):
            spatial = float(weight(torch.tensor(float(dy * dy + dx * dx)), sigma_s))
            if spatial == 0:
                continue
            shifted = padded[..., half + dy:half + dy + height, half + dx:half + dx + width]
            w = spatial * weight((shifted - image)**2, sigma_v)
            total = total + w * shifted
            norm = norm + w
    return total / norm


def fill_invalid(values):
    """Replaces the non-finite entries of an array by their nearest finite neighbour (Euclidean distance).

    Args:
        values (ndarray): N-D array with NaN/Inf holes and at least one finite entry.

    Returns:
        ndarray: Same shape and dtype; ``values`` itself when nothing is missing.
    """
    from scipy import ndimage
    invalid = ~np.isfinite(values)
    if not invalid.any():
        return values
    if invalid.all():
        raise ValueError('fill_invalid: the array has no finite entry to fill from.')
    idx = ndimage.distance_transform_edt(invalid, return_distances=False, return_indices=True)
    return values[tuple(idx)]
