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


def fast_fft_len(n):
    """Smallest integer >= n whose prime factors are 2, 3 and 5 (fast FFT sizes)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def pad2d(x, pad, mode='reflect'):
    """Pads the last two dims of an any-rank tensor by ``pad`` on each side.

    Args:
        x (Tensor): (..., H, W).
        pad (int): Pixels added on each side.
        mode (str): 'reflect' (replicate when the image is too small to reflect) or 'replicate' (edge values).

    Returns:
        Tensor: (..., H + 2 pad, W + 2 pad).
    """
    if mode not in ('reflect', 'replicate'):
        raise ValueError(f"pad2d mode must be 'reflect' or 'replicate', got {mode!r}.")
    shape = x.shape
    x = x.reshape(-1, 1, shape[-2], shape[-1])
    if mode == 'reflect' and pad >= min(shape[-2], shape[-1]):
        mode = 'replicate'
    x = F.pad(x, (pad, pad, pad, pad), mode=mode)
    return x.reshape(*shape[:-2], x.shape[-2], x.shape[-1])


def blur_layers(layers, kernels, method='auto', pad_mode='reflect', cache=None):
    """Convolves each layer with its kernel ('same' size output, padded borders).

    Leading dims broadcast: e.g. layers (B, 1, N, C, H, W) with kernels (V, N, K, K) give (B, V, N, C, H, W), and the
    FFT of the layers is computed once for all V kernel sets.

    Args:
        layers (Tensor): (..., N, C, H, W).
        kernels (Tensor): (..., N, K, K), K odd.
        method (str): 'fft', 'conv' or 'auto' (conv2d for K <= CONV_MAX_KERNEL).
        pad_mode (str): Border handling, see :func:`pad2d`.
        cache (dict | None): Holds the kernels' spectra between calls with the same constant kernels (e.g. the
            iterations of an optimisation); the caller owns it and drops it when the kernels change.

    Returns:
        Tensor: (broadcast(...), N, C, H, W).
    """
    k = _check_kernels(kernels)
    return _convolve_valid(pad2d(layers, k // 2, pad_mode), kernels, method, cache)


def _check_kernels(kernels):
    k = kernels.shape[-1]
    if k % 2 != 1 or kernels.shape[-2] != k:
        raise ValueError(f'Kernels must be square with odd size, got {tuple(kernels.shape[-2:])}.')
    return k


def _kernel_spectrum(kernels, size, dtype, cache):
    """rfft2 of the kernels on a ``size`` grid, broadcast over channels; cached when the kernels need no gradient."""
    if cache is None or kernels.requires_grad:
        return torch.fft.rfft2(kernels.to(dtype), s=size).unsqueeze(-3)
    key = (tuple(kernels.shape), tuple(size), dtype, kernels.device)
    if key not in cache:
        cache[key] = torch.fft.rfft2(kernels.to(dtype), s=size).unsqueeze(-3)
    return cache[key]


def _convolve_valid(x, kernels, method, cache=None):
    """'Valid' true convolution of padded layers (..., N, C, H + K - 1, W + K - 1) with kernels (..., N, K, K)."""
    k = kernels.shape[-1]
    if method == 'auto':
        method = 'conv' if k <= CONV_MAX_KERNEL else 'fft'
    h, w = x.shape[-2] - k + 1, x.shape[-1] - k + 1
    if method == 'fft':
        # Circular convolution of size >= H + K - 1 is exact on the 'valid' window of the padded input.
        size = (fast_fft_len(h + k - 1), fast_fft_len(w + k - 1))
        xf = torch.fft.rfft2(x, s=size)
        out = torch.fft.irfft2(xf * _kernel_spectrum(kernels, size, x.dtype, cache), s=size)
        return out[..., k - 1:k - 1 + h, k - 1:k - 1 + w]
    if method != 'conv':
        raise ValueError(f"Unknown blur method '{method}'; use 'fft', 'conv' or 'auto'.")
    lead = torch.broadcast_shapes(x.shape[:-3], kernels.shape[:-2])  # (..., N)
    c = x.shape[-3]
    x = x.expand(*lead, c, *x.shape[-2:]).reshape(1, -1, *x.shape[-2:])
    weight = kernels.to(x.dtype).flip(-2, -1).unsqueeze(-3).expand(*lead, c, k, k).reshape(-1, 1, k, k)
    out = F.conv2d(x, weight, groups=weight.shape[0])
    return out.reshape(*lead, c, h, w)


def blur_layers_grid(layers, kernels, grid, method='auto', pad_mode='reflect', cache=None):
    """Spatially varying blur: each cell of a ``(rows, cols)`` grid is blurred with its own kernels, in one call.

    The image is cut into the cells of the grid (rows of ``ceil(H / rows)`` pixels, columns of ``ceil(W / cols)``;
    the last row/column is shorter when the size does not divide), each with a halo of half a kernel taken from its
    neighbours (the image border is padded with ``pad_mode``). All cells are blurred together ('valid' convolution
    of the haloed tiles, one batched FFT) and stitched back, so the result is exact up to the cell boundaries: a
    pixel is blurred with the kernels of the cell it lies in, as in the release of Xin et al.

    Args:
        layers (Tensor): (..., N, C, H, W).
        kernels (Tensor): (G, ..., N, K, K) kernels per cell, G = rows * cols, row-major; the dims between G and N
            broadcast against ``layers``' leading dims (e.g. layers (B, 1, N, C, H, W) with kernels (G, V, N, K, K)
            give (B, V, N, C, H, W)).
        grid (tuple[int, int]): (rows, cols).
        method (str): Convolution method, see :func:`blur_layers`.
        pad_mode (str | None): Border handling of the image, see :func:`pad2d`; None: ``layers`` already carry a
            halo of ``K // 2`` pixels on each side (e.g. the surroundings of a crop), the grid and the output cover
            the interior.
        cache (dict | None): See :func:`blur_layers`.

    Returns:
        Tensor: (broadcast(...), N, C, H, W) (H, W of the interior when ``pad_mode`` is None).
    """
    rows, cols = (int(v) for v in grid)
    if kernels.shape[0] != rows * cols:
        raise ValueError(f'{kernels.shape[0]} kernel sets need a grid of as many cells, got grid={tuple(grid)}.')
    k = _check_kernels(kernels)
    half = k // 2
    height, width = layers.shape[-2:]
    if pad_mode is None:
        height, width = height - 2 * half, width - 2 * half
    if rows > height or cols > width:
        raise ValueError(f'A {rows}x{cols} kernel grid does not fit a {height}x{width} image.')
    if rows * cols == 1:
        if pad_mode is None:
            return _convolve_valid(layers, kernels[0], method, cache)
        return blur_layers(layers, kernels[0], method, pad_mode, cache)
    cell_h, cell_w = -(-height // rows), -(-width // cols)
    x = layers if pad_mode is None else pad2d(layers, half, pad_mode)
    # tiles of a fast FFT length (a few more rows/columns than cell + K - 1) need no zero-padding in the FFT; the
    # outputs of the extra rows/columns are dropped
    tile_h, tile_w = cell_h + 2 * half, cell_w + 2 * half
    if method == 'fft' or (method == 'auto' and k > CONV_MAX_KERNEL):
        tile_h, tile_w = fast_fft_len(tile_h), fast_fft_len(tile_w)
    extra_h = (rows - 1) * cell_h + tile_h - x.shape[-2]
    extra_w = (cols - 1) * cell_w + tile_w - x.shape[-1]
    if extra_h or extra_w:  # the missing part of the last cells only feeds outputs that are cropped away
        shape = x.shape
        x = F.pad(x.reshape(-1, 1, *shape[-2:]), (0, extra_w, 0, extra_h), mode='replicate')
        x = x.reshape(*shape[:-2], *x.shape[-2:])
    # (..., N, C, rows, cols, tile_h, tile_w) -> (G, ..., N, C, tile_h, tile_w)
    tiles = x.unfold(-2, tile_h, cell_h).unfold(-2, tile_w, cell_w)
    tiles = tiles.flatten(-4, -3).movedim(-3, 0)
    # align the leading dims of tiles (G, ..., N, C, th, tw) and kernels (G, ..., N, K, K) right after G
    lead_x, lead_k = tiles.dim() - 5, kernels.dim() - 4
    if lead_x > lead_k:
        kernels = kernels.reshape(kernels.shape[0], *([1] * (lead_x - lead_k)), *kernels.shape[1:])
    elif lead_k > lead_x:
        tiles = tiles.reshape(tiles.shape[0], *([1] * (lead_k - lead_x)), *tiles.shape[1:])
    out = _convolve_valid(tiles, kernels, method, cache)[..., :cell_h, :cell_w]  # (G, ..., N, C, cell_h, cell_w)
    lead = out.shape[1:-2]
    out = out.reshape(rows, cols, *lead, cell_h, cell_w).movedim((0, 1), (-4, -2))  # (..., rows, ch, cols, cw)
    out = out.reshape(*lead, rows * cell_h, cols * cell_w)
    return out[..., :height, :width]


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


def exclusive_front_transmittance(alphas):
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
    trans = exclusive_front_transmittance(alpha)
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


def _gather_blur(x, values, kernels, start, method, padding):
    """``sum_i w_i(values) (K_i * x)``: every output pixel blurred by the kernel(s) of its own layer value.

    x (B, C, H, W); values (B, 1 or C, H, W); kernels (N, K, K) or (V, N, K, K). Returns (B, C, H, W) or
    (B, V, C, H, W).
    """
    weights = tent_weights(values, start, 1.0, kernels.shape[-3])  # (B, N, 1 or C, H, W)
    used = weights.detach().amax(dim=(0, 2, 3, 4)) > 0  # unused layers would cost a full FFT each
    if not bool(used.all()):
        index = used.nonzero().squeeze(1)
        weights, kernels = weights.index_select(1, index), kernels.index_select(kernels.dim() - 3, index)
    layers = x.unsqueeze(1) if kernels.dim() == 3 else x[:, None, None]  # (B, [1,] 1, C, H, W)
    if padding == 'zeros':
        half = kernels.shape[-1] // 2
        blurred = _convolve_valid(F.pad(layers, (half, half, half, half)), kernels, method)
    else:
        blurred = blur_layers(layers, kernels, method)
    if kernels.dim() == 4:
        weights = weights.unsqueeze(1)
    return (weights * blurred).sum(-4)


def reblur_coc(image,
               coc,
               kernels,
               dp_kernels=None,
               linear_light=False,
               method='auto',
               signed=False,
               composite='normalized',
               padding='reflect'):
    """Stage-1 reblur ``g(AiF, CoC; kernels)``: layers at integer radii, blended by the map.

    Two image-formation models (``composite``):

    * 'normalized' (scatter): the sharp image is split into layers by the map, each layer and its weight blurred by
      its kernel, and the sum of blurred colours divided by the sum of blurred weights;
    * 'gather' (DefocusGAN release): each output pixel is the image blurred by the kernel of its own radius,
      ``sum_i w_i(map(p)) (K_i * image)(p)``, with the tent weights ``w_i`` of :func:`tent_weights`.

    A map with one channel per colour channel blurs each colour channel by its own map channel (the release's
    3-channel maps).

    Args:
        image (Tensor): (B, C, H, W) sharp image in [0, 1] (sRGB-encoded when ``linear_light``).
        coc (Tensor): (B, 1, H, W) or (B, C, H, W) signed CoC radius in pixels (positive behind the focal plane).
        kernels (Tensor): (R + 1, K, K) full-aperture kernels of the radii 0..R, or (2R + 1, K, K) of the signed
            radii -R..R when ``signed``.
        dp_kernels (Tensor | None): (2, 2R + 1, K, K) left/right kernels of the signed radii -R..R (e.g. from
            :func:`defocusgan_plugin.ops.dp_split`); None skips the DP views.
        linear_light (bool): Blur in linear light (decode sRGB before, encode after), as a lens does.
        method (str): Convolution method, see :func:`blur_layers`.
        signed (bool): ``kernels`` are indexed by the signed CoC (separate kernels in front of / behind the focal
            plane) rather than by |CoC|.
        composite (str): 'normalized' or 'gather', see above.
        padding (str): Image border: 'reflect', or 'zeros' (the release's zero-padded convolutions; 'gather' only).

    Returns:
        tuple[Tensor, Tensor | None]: The reblurred combined image (B, C, H, W) and the DP views (B, 2, C, H, W).
    """
    if composite not in ('normalized', 'gather'):
        raise ValueError(f"Unknown reblur composite {composite!r}; use 'normalized' or 'gather'.")
    if padding not in ('reflect', 'zeros') or (padding == 'zeros' and composite != 'gather'):
        raise ValueError(f"Reblur padding must be 'reflect' or 'zeros' (the latter with composite 'gather'), got "
                         f'{padding!r} with {composite!r}.')
    if coc.dim() != 4 or coc.shape[1] not in (1, image.shape[1]):
        raise ValueError(f'The CoC map must have 1 channel or one per image channel ({image.shape[1]}), got shape '
                         f'{tuple(coc.shape)}.')
    x = srgb_to_linear(image) if linear_light else image

    def render(values, kernel_stack, start):
        if composite == 'gather':
            return _gather_blur(x, values, kernel_stack, start, method, padding)
        if values.shape[1] == 1:
            return render_layered(x, values, kernel_stack, start=start, step=1.0, mode='normalized', method=method)
        b, c = x.shape[:2]  # per-channel map: each channel is an image of its own
        out = render_layered(
            x.reshape(b * c, 1, *x.shape[-2:]),
            values.reshape(b * c, 1, *values.shape[-2:]),
            kernel_stack,
            start=start,
            step=1.0,
            mode='normalized',
            method=method)
        if out.dim() == 4:  # (B C, 1, H, W)
            return out.reshape(b, c, *out.shape[-2:])
        return out.reshape(b, c, out.shape[1], *out.shape[-2:]).transpose(1, 2)  # (B C, V, 1, H, W) -> (B, V, C, H, W)

    if signed:
        combined = render(coc, kernels, -float((kernels.shape[-3] - 1) // 2))
    else:
        combined = render(coc.abs(), kernels, 0.0)
    views = None
    if dp_kernels is not None:
        views = render(coc, dp_kernels, -float((dp_kernels.shape[-3] - 1) // 2))
    if linear_light:
        combined = linear_to_srgb(combined)
        views = None if views is None else linear_to_srgb(views)
    return combined, views
