"""Multiplane-image (MPI) scene model of the joint DP optimiser (Xin et al., ICCV 2021): rendering and priors.

The scene is ``N`` fronto-parallel layers, layer 0 the back-most (largest signed CoC = farthest), each with a signed
defocus radius, an alpha map and a colour (per layer, or one colour shared by all layers). A DP view is rendered by
blurring every layer's premultiplied colour and alpha with that view's kernel for the layer's radius and compositing
back to front (:func:`defocusgan_plugin.ops.render.composite_layers`, both views and all layers in one FFT call).

Without blur, layer ``i`` shows through with the visibility weight ``w_i = a_i * prod_{j > i} (1 - a_j)``; the
all-in-focus image is ``sum_i w_i c_i`` and the defocus map ``sum_i w_i r_i`` (the expected radius per pixel).
"""
import torch
import torch.nn.functional as F

from defocusgan_plugin.ops.render import (blur_layers, blur_layers_grid, exclusive_front_transmittance, fast_fft_len,
                                          pad2d)


def layer_radii(low, high, num, dtype=torch.float32, device=None):
    """Signed radii of ``num`` layers evenly spaced over ``[low, high]``, back (``high``, farthest) first."""
    if num < 1:
        raise ValueError(f'An MPI needs at least one layer, got {num}.')
    if num == 1:
        return torch.full((1, ), 0.5 * (float(low) + float(high)), dtype=dtype, device=device)
    return torch.linspace(float(high), float(low), num, dtype=dtype, device=device)


def visibility_weights(alphas):
    """``w_i = a_i * prod_{j > i} (1 - a_j)`` for alphas (B, N, 1, H, W), layer 0 = back; sums to 1 if a_0 = 1."""
    return alphas * exclusive_front_transmittance(alphas)


def expected_value(weights, values):
    """``sum_i w_i v_i`` over the layer dim 1: values (B, N, C, H, W), (B, C, H, W) shared, or (N,) per layer."""
    if values.dim() == 1:
        values = values.view(1, -1, 1, 1, 1)
    elif values.dim() == 4:
        values = values.unsqueeze(1)
    return (weights * values).sum(1)


def grid_cells(height, width, grid):
    """Pixel bounds of the cells of a ``(rows, cols)`` kernel grid laid over an image, row-major.

    Cells are ``ceil(height / rows)`` x ``ceil(width / cols)`` pixels; the last row/column is shorter when the size
    does not divide (as :func:`defocusgan_plugin.ops.render.blur_layers_grid` cuts them).

    Returns:
        list[tuple[int, int, int, int]]: ``(top, bottom, left, right)`` per cell (bottom/right exclusive).
    """
    rows, cols = grid
    if rows > height or cols > width:
        raise ValueError(f'A {rows}x{cols} kernel grid does not fit a {height}x{width} image.')
    cell_h, cell_w = -(-height // rows), -(-width // cols)
    return [(i * cell_h, min((i + 1) * cell_h, height), j * cell_w, min((j + 1) * cell_w, width)) for i in range(rows)
            for j in range(cols)]


class _TiledConvolution(torch.autograd.Function):
    """'Valid' convolution of the padded MPI with per-cell kernel spectra, one grid row of cells at a time, with a
    hand-written adjoint (see :func:`blur_layers_tiled`)."""

    @staticmethod
    def forward(ctx, x, spectra, geometry):
        rows, cols, cell_h, cell_w, tile_h, tile_w, k = geometry
        views = spectra.shape[3]
        lead = x.shape[:-2]  # (B, 1, N, P)
        out = x.new_empty(lead[0], views, *lead[2:], rows, cell_h, cols, cell_w)
        for r in range(rows):
            # (cols, B, 1, N, P, tile_h, tile_w): the row's haloed tiles (views of x)
            tiles = x[..., r * cell_h:r * cell_h + tile_h, :].unfold(-1, tile_w, cell_w).movedim(-2, 0)
            blurred = torch.fft.irfft2(torch.fft.rfft2(tiles) * spectra[r], s=(tile_h, tile_w))
            blurred = blurred[..., k - 1:k - 1 + cell_h, k - 1:k - 1 + cell_w]  # (cols, B, V, N, P, cell_h, cell_w)
            out[..., r, :, :, :] = blurred.movedim(0, -2)
        ctx.save_for_backward(spectra)
        ctx.geometry, ctx.x_shape = geometry, x.shape
        return out.reshape(lead[0], views, *lead[2:], rows * cell_h, cols * cell_w)

    @staticmethod
    def backward(ctx, grad):
        (spectra, ), (rows, cols, cell_h, cell_w, tile_h, tile_w, k) = ctx.saved_tensors, ctx.geometry
        grad = grad.reshape(*grad.shape[:-2], rows, cell_h, cols, cell_w)
        out = grad.new_zeros(ctx.x_shape)
        for r in range(rows):
            # the adjoint of the crop (zero halo), of the circular convolution (correlation: the conjugate spectrum,
            # summed over the views that share the layer) and of the tiling (overlap-add)
            tiles = grad.new_zeros(cols, *grad.shape[:-4], tile_h, tile_w)
            tiles[..., k - 1:k - 1 + cell_h, k - 1:k - 1 + cell_w] = grad[..., r, :, :, :].movedim(-2, 0)
            back = (torch.fft.rfft2(tiles) * spectra[r].conj()).sum(2, keepdim=True)
            back = torch.fft.irfft2(back, s=(tile_h, tile_w))  # (cols, B, 1, N, P, tile_h, tile_w)
            for c in range(cols):
                out[..., r * cell_h:r * cell_h + tile_h, c * cell_w:c * cell_w + tile_w] += back[c]
        return out, None, None


def blur_layers_tiled(layers, kernels, grid, pad_mode='reflect', cache=None):
    """:func:`defocusgan_plugin.ops.render.blur_layers_grid` (FFT) for an MPI stack, faster and leaner on a CPU.

    The same result: each cell of the grid blurred with its own kernels ('valid' convolution of the cell with a halo
    of half a kernel, tiles of a fast FFT length), but computed one row of cells at a time (the tiles of a row stay
    in cache) with a hand-written backward pass (no zero-filled slice gradients or unfold adjoints of the whole
    tile stack), which roughly halves the time of a step at the Pixel-4 size. Kernels that need a gradient fall
    back to :func:`~defocusgan_plugin.ops.render.blur_layers_grid`.

    Args:
        layers (Tensor): (B, 1, N, P, H, W) layer planes.
        kernels (Tensor): (G, V, N, K, K) kernels per cell (G = rows * cols, row-major) and view.
        grid (tuple[int, int]): (rows, cols).
        pad_mode (str): Border handling, see :func:`defocusgan_plugin.ops.render.pad2d`.
        cache (dict | None): Keeps the kernel spectra between calls with the same kernels.

    Returns:
        Tensor: (B, V, N, P, H, W).
    """
    rows, cols = (int(v) for v in grid)
    if kernels.requires_grad:
        return blur_layers_grid(layers, kernels, grid, 'fft', pad_mode, cache)
    if kernels.dim() != 5 or kernels.shape[0] != rows * cols or layers.dim() != 6 or layers.shape[1] != 1:
        raise ValueError(
            f'blur_layers_tiled needs layers (B, 1, N, P, H, W) and kernels (rows * cols, V, N, K, K), got '
            f'{tuple(layers.shape)} and {tuple(kernels.shape)} for a {rows}x{cols} grid.')
    k = kernels.shape[-1]
    height, width = layers.shape[-2:]
    if k % 2 != 1 or rows > height or cols > width:
        raise ValueError(f'Kernels must have an odd size and the {rows}x{cols} grid must fit the {height}x{width} '
                         f'image, got kernels of {k} px.')
    cell_h, cell_w = -(-height // rows), -(-width // cols)
    tile_h, tile_w = fast_fft_len(cell_h + k - 1), fast_fft_len(cell_w + k - 1)
    x = pad2d(layers, k // 2, pad_mode)
    # every tile inside the (replicate-)extended image; the extension feeds only outputs that are cropped away
    extra_h, extra_w = (rows - 1) * cell_h + tile_h - x.shape[-2], (cols - 1) * cell_w + tile_w - x.shape[-1]
    if extra_h or extra_w:
        shape = x.shape
        x = F.pad(x.reshape(-1, 1, *shape[-2:]), (0, extra_w, 0, extra_h), mode='replicate')
        x = x.reshape(*shape[:-2], *x.shape[-2:])
    key = ('tiled', tuple(kernels.shape), tile_h, tile_w, x.dtype, kernels.device)
    spectra = None if cache is None else cache.get(key)
    if spectra is None:
        spectra = torch.fft.rfft2(kernels.to(x.dtype), s=(tile_h, tile_w))  # (G, V, N, th, tw / 2 + 1)
        # (rows, cols, 1, V, N, 1, th, tw / 2 + 1): broadcast over the batch and the planes
        spectra = spectra.reshape(rows, cols, 1, *kernels.shape[1:3], 1, *spectra.shape[-2:])
        if cache is not None:
            cache[key] = spectra
    out = _TiledConvolution.apply(x, spectra, (rows, cols, cell_h, cell_w, tile_h, tile_w, k))
    return out[..., :height, :width]


def _blur(layers, kernels, grid, method, pad_mode, cache):
    """Blur of a (B, 1, N, P, H, W) plane stack with (2, N, K, K) or (G, 2, N, K, K) kernels."""
    if method == 'tiled':
        return blur_layers_tiled(layers, kernels if kernels.dim() == 5 else kernels[None], grid or (1, 1), pad_mode,
                                 cache)
    if kernels.dim() == 4:
        return blur_layers(layers, kernels, method, pad_mode, cache)
    if kernels.dim() == 5:
        if grid is None:
            raise ValueError(f'{kernels.shape[0]} kernel sets need a grid of as many cells, got grid={grid}.')
        return blur_layers_grid(layers, kernels, grid, method, pad_mode, cache)
    raise ValueError(f'Expected kernels (2, N, K, K) or (G, 2, N, K, K), got {tuple(kernels.shape)}.')


def render_mpi(colors,
               alphas,
               kernels,
               grid=None,
               method='auto',
               pad_mode='reflect',
               normalize=True,
               details=False,
               cache=None,
               static_alphas=False):
    """Renders the left and right DP views of an MPI: every layer, view and grid cell blurred in one call.

    Each layer's premultiplied colour and alpha are blurred with the view's kernel of the layer (of the pixel's grid
    cell when the kernels vary over the image) and composited back to front: ``sum_i T~_i blur(c_i a_i)`` with the
    blurred transmittance ``T~_i = prod_{j > i} (1 - blur(a_j))``.

    Args:
        colors (Tensor): (B, N, C, H, W) layer colours, or (B, C, H, W) shared by all layers.
        alphas (Tensor): (B, N, 1, H, W) layer alphas, layer 0 = back.
        kernels (Tensor): (2, N, K, K) left/right kernels of the layers, or (G, 2, N, K, K) for spatially varying
            kernels, one set per cell of ``grid``.
        grid (tuple[int, int] | None): (rows, cols) of the kernel grid (see :func:`grid_cells`); needed when
            ``kernels`` has a cell dim.
        method (str): Convolution method of :func:`defocusgan_plugin.ops.render.blur_layers`, or 'tiled'
            (:func:`blur_layers_tiled`: the FFT result, faster on a CPU).
        pad_mode (str): Padding of the MPI at the image border: 'reflect' or 'replicate' (the release's edge
            padding by the kernel half-width).
        normalize (bool): Divide by the composited blurred alpha (removes dark halos where the back layer has
            holes; a no-op when the back layer is opaque).
        details (bool): Also return the blurred layer weights and the blurred layer colours.
        cache (dict | None): Keeps the kernels' spectra between calls with the same kernels (see
            :func:`defocusgan_plugin.ops.render.blur_layers`).
        static_alphas (bool): The alphas stay the same for every call with this ``cache`` (and need no gradient):
            their blur and the blurred transmittance are computed once and kept in it, and only the colour planes
            are blurred per call (2C of the 2C + 1 planes, no gradient through the compositing weights).

    Returns:
        Tensor | dict: (B, 2, C, H, W) rendered left (index 0) and right (index 1) views; with ``details`` a dict of
        ``views``, ``weights`` (B, 2, N, 1, H, W): the blurred alpha times the blurred transmittance of each layer,
        and ``layer_colors`` (B, 2, N, C, H, W): each layer's colour blurred alone (not premultiplied).
    """
    if colors.dim() == 4:
        colors = colors.unsqueeze(1)
    colors = colors.expand(-1, alphas.shape[1], -1, -1, -1)
    channels = colors.shape[2]
    if static_alphas:
        if cache is None or alphas.requires_grad:
            raise ValueError('static_alphas needs a cache and alphas without gradient.')
        if 'static_alphas' not in cache:
            with torch.no_grad():
                alpha = _blur(alphas.unsqueeze(1), kernels, grid, method, pad_mode, cache).clamp(0.0, 1.0)
                trans = exclusive_front_transmittance(alpha.movedim(2, 1)).movedim(1, 2)
            cache['static_alphas'] = alpha, trans
        alpha, trans = cache['static_alphas']
        parts = [colors * alphas] + ([colors] if details else [])
        blurred = _blur(torch.cat(parts, dim=2).unsqueeze(1), kernels, grid, method, pad_mode, cache)
        premult, layer_colors = blurred[..., :channels, :, :], blurred[..., channels:, :, :]
    else:
        parts = [colors * alphas, alphas] + ([colors] if details else [])
        layers = torch.cat(parts, dim=2).unsqueeze(1)  # (B, 1, N, 2C + 1 | C + 1, H, W)
        blurred = _blur(layers, kernels, grid, method, pad_mode, cache)
        premult, alpha = blurred[..., :channels, :, :], blurred[..., channels:channels + 1, :, :].clamp(0.0, 1.0)
        layer_colors = blurred[..., channels + 1:, :, :]
        trans = exclusive_front_transmittance(alpha.movedim(2, 1)).movedim(1, 2)  # (B, V, N, 1, H, W)
    weights = alpha * trans
    views = (premult * trans).sum(2)
    if normalize:
        views = views / weights.sum(2).clamp_min(1e-6)
    if not details:
        return views
    return {'views': views, 'weights': weights, 'layer_colors': layer_colors}


def charbonnier(x, gamma=0.1):
    """Scaled Charbonnier penalty ``sqrt((x / gamma)^2 + 1) - 1``: quadratic below ``gamma``, linear above."""
    return torch.sqrt((x / gamma)**2 + 1.0) - 1.0


def _diffs(x):
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def edge_aware_tv(image, guide, sigma=0.05, eps=1e-3):
    """Total variation of ``image`` that fades out across edges of ``guide``.

    Each horizontal/vertical difference is penalised by ``sqrt(d^2 + eps^2)`` (smooth at 0) times
    ``exp(-|d_guide| / sigma)``, with ``d_guide`` the same difference of the channel-mean guide.

    Args:
        image (Tensor): (..., C, H, W).
        guide (Tensor): (B, C', H, W) edge guide (e.g. the observed combined view).
        sigma (float): Guide difference at which the weight has fallen to 1/e.
        eps (float): Smoothing of the absolute value.

    Returns:
        Tensor: Scalar mean penalty.
    """
    gx, gy = _diffs(guide.mean(-3, keepdim=True))
    dx, dy = _diffs(image)
    wx, wy = torch.exp(-gx.abs() / sigma), torch.exp(-gy.abs() / sigma)
    return (wx * torch.sqrt(dx * dx + eps * eps)).mean() + (wy * torch.sqrt(dy * dy + eps * eps)).mean()


def sqrt_alpha_tv(alphas, eps=1e-3):
    """Total variation of ``sqrt(alpha)`` (mean over layers and pixels): favours few, compact layer supports."""
    dx, dy = _diffs(torch.sqrt(alphas + eps * eps))
    return dx.abs().mean() + dy.abs().mean()


def collision_entropy(weights, eps=1e-8):
    """Per-pixel collision (Renyi-2) entropy ``-log sum_i p_i^2`` of the layer distribution, divided by ``log N``.

    0 when a pixel belongs to one layer, 1 when it is spread evenly over all ``N`` layers.

    Args:
        weights (Tensor): (B, N, 1, H, W) non-negative layer weights (normalised here per pixel).

    Returns:
        Tensor: (B, 1, H, W) in [0, 1].
    """
    num = weights.shape[1]
    if num < 2:
        return torch.zeros_like(weights[:, 0])
    p = weights / weights.sum(1, keepdim=True).clamp_min(eps)
    return -torch.log((p * p).sum(1).clamp_min(eps)) / torch.log(torch.tensor(float(num)))
