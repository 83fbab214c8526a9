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

from defocusgan_plugin.ops.render import _exclusive_front_transmittance, composite_layers


def layer_radii(low, high, num, dtype=torch.float32, device=None):
    """Signed radii of ``num`` layers evenly spaced over ``[low, high]``, back (``high``, farthest) first."""
    if num < 1:
        raise ValueError(f'An MPI needs at least one layer, got {num}.')
    if num == 1:
        return torch.full((1, ), 0.5 * (float(low) + float(high)), dtype=dtype, device=device)
    return torch.linspace(float(high), float(low), num, dtype=dtype, device=device)


def visibility_weights(alphas):
    """``w_i = a_i * prod_{j > i} (1 - a_j)`` for alphas (B, N, 1, H, W), layer 0 = back; sums to 1 if a_0 = 1."""
    return alphas * _exclusive_front_transmittance(alphas)


def expected_value(weights, values):
    """``sum_i w_i v_i`` over the layer dim 1: values (B, N, C, H, W), (B, C, H, W) shared, or (N,) per layer."""
    if values.dim() == 1:
        values = values.view(1, -1, 1, 1, 1)
    elif values.dim() == 4:
        values = values.unsqueeze(1)
    return (weights * values).sum(1)


def grid_cells(height, width, grid):
    """Pixel bounds of the cells of a ``(rows, cols)`` grid laid over an image, row-major.

    Returns:
        list[tuple[int, int, int, int]]: ``(top, bottom, left, right)`` per cell (bottom/right exclusive).
    """
    rows, cols = grid
    if rows > height or cols > width:
        raise ValueError(f'A {rows}x{cols} kernel grid does not fit a {height}x{width} image.')
    ys = [round(i * height / rows) for i in range(rows + 1)]
    xs = [round(j * width / cols) for j in range(cols + 1)]
    return [(ys[i], ys[i + 1], xs[j], xs[j + 1]) for i in range(rows) for j in range(cols)]


def render_mpi(colors, alphas, kernels, grid=None, method='auto'):
    """Renders the left and right DP views of an MPI.

    Args:
        colors (Tensor): (B, N, C, H, W) layer colours, or (B, C, H, W) shared by all layers.
        alphas (Tensor): (B, N, 1, H, W) layer alphas, layer 0 = back.
        kernels (Tensor): (2, N, K, K) left/right kernels of the layers, or (G, 2, N, K, K) for spatially varying
            kernels, one set per cell of ``grid``.
        grid (tuple[int, int] | None): (rows, cols) of the kernel grid, row-major cells evenly laid over the image;
            needed when ``kernels`` has a cell dim.
        method (str): Convolution method of :func:`defocusgan_plugin.ops.render.blur_layers`.

    Returns:
        Tensor: (B, 2, C, H, W) rendered left (index 0) and right (index 1) views.
    """
    if kernels.dim() == 4:
        return composite_layers(colors, alphas, kernels, mode='over', method=method)
    if grid is None or grid[0] * grid[1] != kernels.shape[0]:
        raise ValueError(f'{kernels.shape[0]} kernel sets need a grid of as many cells, got grid={grid}.')
    # Each cell is rendered with its own kernels on a crop that carries a halo of the neighbouring layers, so the
    # blur across cell borders is exact and cells stitch without seams; only the image border is reflected.
    height, width = alphas.shape[-2:]
    halo = kernels.shape[-1] // 2
    rows = []
    for cell, (top, bottom, left, right) in enumerate(grid_cells(height, width, grid)):
        y0, y1 = max(top - halo, 0), min(bottom + halo, height)
        x0, x1 = max(left - halo, 0), min(right + halo, width)
        out = composite_layers(colors[..., y0:y1, x0:x1], alphas[..., y0:y1, x0:x1], kernels[cell], mode='over',
                               method=method)
        out = out[..., top - y0:bottom - y0, left - x0:right - x0]
        if cell % grid[1] == 0:
            rows.append([])
        rows[-1].append(out)
    return torch.cat([torch.cat(row, dim=-1) for row in rows], dim=-2)


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


def box_mean(x, radius):
    """Mean over a ``(2 radius + 1)^2`` window, windows clipped at the border (count-normalised)."""
    return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


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
