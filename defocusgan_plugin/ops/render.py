"""Layered defocus rendering: blur depth/CoC layers with per-layer kernels and composite them.

One renderer serves the whole plugin:

* the synthetic DP generator (depth-ordered 'over' compositing with DP kernels),
* stage 1's reblur ``g(AiF, map; kernels)`` (layers by |CoC| at integer radii, 'normalized' compositing), also per
  DP view,
* the joint DP optimiser (multiplane image: per-layer colours and alphas, 'over' compositing).

Layer convention: layer ``i`` sits at the value ``start + i * step`` (a CoC radius); pixels are split between the two
neighbouring layers with linear ('tent') weights, which keeps the result differentiable with respect to the map.
For 'over' compositing, layer 0 is the back-most (largest signed CoC = farthest).

Convolution is a true convolution (the PSF spreads a point), done by FFT for large kernels and by grouped
``conv2d`` for small ones (see ``scripts/benchmark_reblur.py`` for the crossover).
"""
import torch
import torch.nn.functional as F

# Kernel sizes up to this use grouped conv2d; larger ones use FFT. Crossover measured by scripts/benchmark_reblur.py
# (CPU, 2 threads, 26 layers, crops 128-512): conv is faster up to K = 21-25 forward and with gradients to the layers;
# with gradients to the kernels conv's backward is 5-10x slower from K = 5, so callers that train kernels pass
# method='fft'.
CONV_MAX_KERNEL = 21


def _fast_len(n):
    """Smallest integer >= n whose prime factors are 2, 3 and 5 (fast FFT sizes)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _pad2d(x, pad):
    """Reflect-pads the last two dims of any-rank tensor (replicate when the image is too small to reflect)."""
    shape = x.shape
    x = x.reshape(-1, 1, shape[-2], shape[-1])
    mode = 'reflect' if pad < min(shape[-2], shape[-1]) else 'replicate'
    x = F.pad(x, (pad, pad, pad, pad), mode=mode)
    return x.reshape(*shape[:-2], x.shape[-2], x.shape[-1])


def blur_layers(layers, kernels, method='auto'):
    """Convolves each layer with its kernel ('same' size output, reflected borders).

    Leading dims broadcast: e.g. layers (B, 1, N, C, H, W) with kernels (V, N, K, K) give (B, V, N, C, H, W), and the
    FFT of the layers is computed once for all V kernel sets.

    Args:
        layers (Tensor): (..., N, C, H, W).
        kernels (Tensor): (..., N, K, K), K odd.
        method (str): 'fft', 'conv' or 'auto' (conv2d for K <= CONV_MAX_KERNEL).

    Returns:
        Tensor: (broadcast(...), N, C, H, W).
    """
    k = kernels.shape[-1]
    if k % 2 != 1 or kernels.shape[-2] != k:
        raise ValueError(f'Kernels must be square with odd size, got {tuple(kernels.shape[-2:])}.')
    if method == 'auto':
        method = 'conv' if k <= CONV_MAX_KERNEL else 'fft'
    h, w = layers.shape[-2:]
    pad = k // 2
    x = _pad2d(layers, pad)
    if method == 'fft':
        # Circular convolution of size >= H + K - 1 is exact on the 'valid' window of the padded input.
        size = (_fast_len(h + k - 1), _fast_len(w + k - 1))
        xf = torch.fft.rfft2(x, s=size)
        kf = torch.fft.rfft2(kernels.to(x.dtype), s=size).unsqueeze(-3)  # broadcast over C
        out = torch.fft.irfft2(xf * kf, s=size)
        return out[..., k - 1:k - 1 + h, k - 1:k - 1 + w]
    if method != 'conv':
        raise ValueError(f"Unknown blur method '{method}'; use 'fft', 'conv' or 'auto'.")
    lead = torch.broadcast_shapes(layers.shape[:-3], kernels.shape[:-2])  # (..., N)
    c = layers.shape[-3]
    x = x.expand(*lead, c, *x.shape[-2:]).reshape(1, -1, *x.shape[-2:])
    weight = kernels.to(x.dtype).flip(-2, -1).unsqueeze(-3).expand(*lead, c, k, k).reshape(-1, 1, k, k)
    out = F.conv2d(x, weight, groups=weight.shape[0])
    return out.reshape(*lead, c, h, w)


def tent_weights(values, start, step, num):
    """Soft assignment of per-pixel values to ``num`` layers at ``start + i * step``.

    Each pixel is split linearly between its two neighbouring layers (values outside the range go to the end
    layers), so the weights sum to 1 and are differentiable with respect to ``values``.

    Args:
        values (Tensor): (B, 1, H, W), e.g. |CoC| or signed CoC in pixels.
        start (float): Value of layer 0.
        step (float): Spacing between layers (non-zero; negative for decreasing layer values).
        num (int): Number of layers.

    Returns:
        Tensor: (B, num, 1, H, W).
    """
    pos = ((values - start) / step).clamp(0, num - 1)
    idx = torch.arange(num, dtype=values.dtype, device=values.device).view(1, num, 1, 1, 1)
    return (1.0 - (pos.unsqueeze(1) - idx).abs()).clamp_min(0.0)


def weights_to_alphas(weights):
    """Converts a partition of unity over back-to-front layers into 'over' alphas.

    ``a_i = w_i / sum_{j <= i} w_j`` so that compositing the un-blurred layers back to front reproduces the
    weights exactly (0 where a layer and everything behind it is empty).
    """
    cum = weights.cumsum(dim=1)
    return torch.where(cum > 0, weights / cum.clamp_min(1e-12), torch.zeros_like(weights))


def _exclusive_front_transmittance(alphas):
    """T_i = prod_{j > i} (1 - a_j): how much of layer i shows through the layers in front of it (dim 1 = layers)."""
    keep = (1.0 - alphas).flip(1)
    trans = torch.cumprod(keep, dim=1)
    trans = torch.cat([torch.ones_like(trans[:, :1]), trans[:, :-1]], dim=1)
    return trans.flip(1)


def composite_layers(colors, alphas, kernels=None, mode='over', normalize=True, method='auto', eps=1e-6):
    """Blurs premultiplied layers with their kernels and composites them.

    Args:
        colors (Tensor): (B, N, C, H, W) layer colours, NOT premultiplied; or (B, C, H, W) shared by all layers.
        alphas (Tensor): (B, N, 1, H, W) layer alphas ('over') or weights ('normalized'); layer 0 = back.
        kernels (Tensor | None): (N, K, K), or (V, N, K, K) for V views (e.g. left/right DP kernels). None: no blur.
        mode (str): 'over' (back-to-front over operator) or 'normalized' (sum of blurred colour / sum of blurred
            weight).
        normalize (bool): For 'over', divide by the composited alpha, which removes dark halos at occlusion
            boundaries where the back layer has holes. Default: True.
        method (str): Convolution method, see :func:`blur_layers`.
        eps (float): Floor of the normaliser.

    Returns:
        Tensor: (B, C, H, W), or (B, V, C, H, W) when kernels have a view dim.
    """
    if colors.dim() == 4:
        colors = colors.unsqueeze(1)
    layers = torch.cat([colors * alphas, alphas.expand(-1, -1, 1, -1, -1)], dim=2)  # (B, N, C+1, H, W)
    if kernels is not None:
        if kernels.dim() == 4:
            layers = layers.unsqueeze(1)  # (B, 1, N, C+1, H, W) against (V, N, K, K)
        layers = blur_layers(layers, kernels, method)
    premult, alpha = layers[..., :-1, :, :], layers[..., -1:, :, :]
    layer_dim = premult.dim() - 4  # N sits before (C, H, W)
    if mode == 'normalized':
        return premult.sum(layer_dim) / alpha.sum(layer_dim).clamp_min(eps)
    if mode != 'over':
        raise ValueError(f"Unknown composite mode '{mode}'; use 'over' or 'normalized'.")
    alpha = alpha.clamp(0.0, 1.0)
    if layer_dim != 1:  # move N to dim 1 for the transmittance scan
        premult, alpha = premult.movedim(layer_dim, 1), alpha.movedim(layer_dim, 1)
    trans = _exclusive_front_transmittance(alpha)
    out = (premult * trans).sum(1)
    if normalize:
        out = out / (alpha * trans).sum(1).clamp_min(eps)
    return out


def render_layered(image, values, kernels, start, step, mode='normalized', normalize=True, method='auto'):
    """Renders a defocused image from a sharp image and a per-pixel layer value (CoC map).

    Args:
        image (Tensor): (B, C, H, W) sharp (all-in-focus) image, linear or not as the caller decides.
        values (Tensor): (B, 1, H, W) per-pixel layer coordinate (|CoC| for stage-1 reblur, signed CoC for DP).
        kernels (Tensor): (N, K, K) or (V, N, K, K): kernel of each layer value ``start + i * step``.
        start (float): Value of layer 0.
        step (float): Layer spacing. For 'over' mode, layer 0 must be the back-most (largest signed CoC), i.e. use
            ``start = max`` and ``step < 0``.
        mode (str): 'normalized' (stage-1 reblur) or 'over' (depth-ordered, with occlusion).
        normalize (bool): See :func:`composite_layers`.
        method (str): Convolution method, see :func:`blur_layers`.

    Returns:
        Tensor: (B, C, H, W), or (B, V, C, H, W) for kernels with a view dim.
    """
    num = kernels.shape[-3]
    weights = tent_weights(values, start, step, num)
    # Layers no pixel of the batch uses cost a full FFT each: drop them (with their kernels).
    used = weights.detach().amax(dim=(0, 2, 3, 4)) > 0
    if not bool(used.all()):
        index = used.nonzero().squeeze(1)
        weights = weights.index_select(1, index)
        kernels = kernels.index_select(kernels.dim() - 3, index)
    alphas = weights_to_alphas(weights) if mode == 'over' else weights
    return composite_layers(image, alphas, kernels, mode=mode, normalize=normalize, method=method)


def srgb_to_linear(x):
    """sRGB-encoded values in [0, 1] to linear light (IEC 61966-2-1), differentiable."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055)**2.4)


def linear_to_srgb(x):
    """Linear light in [0, 1] to sRGB encoding; the power branch is clamped so its gradient stays finite at 0."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp_min(0.0031308)**(1 / 2.4) - 0.055)


def reblur_coc(image, coc, kernels, dp_kernels=None, linear_light=False, method='auto'):
    """Stage-1 reblur ``g(AiF, CoC; kernels)``: layers by |CoC| at integer radii, 'normalized' compositing.

    Args:
        image (Tensor): (B, C, H, W) sharp image in [0, 1] (sRGB-encoded when ``linear_light``).
        coc (Tensor): (B, 1, H, W) signed CoC radius in pixels (positive behind the focal plane).
        kernels (Tensor): (R + 1, K, K) full-aperture kernels of the radii 0..R.
        dp_kernels (Tensor | None): (2, 2R + 1, K, K) left/right kernels of the signed radii -R..R (e.g. from
            :func:`defocusgan_plugin.ops.dp_split`); None skips the DP views.
        linear_light (bool): Blur in linear light (decode sRGB before, encode after), as a lens does.
        method (str): Convolution method, see :func:`blur_layers`.

    Returns:
        tuple[Tensor, Tensor | None]: The reblurred combined image (B, C, H, W) and the DP views (B, 2, C, H, W).
    """
    x = srgb_to_linear(image) if linear_light else image
    combined = render_layered(x, coc.abs(), kernels, start=0.0, step=1.0, mode='normalized', method=method)
    views = None
    if dp_kernels is not None:
        radius = (dp_kernels.shape[-3] - 1) // 2
        views = render_layered(x, coc, dp_kernels, start=-float(radius), step=1.0, mode='normalized', method=method)
    if linear_light:
        combined = linear_to_srgb(combined)
        views = None if views is None else linear_to_srgb(views)
    return combined, views
