"""Joint test-time optimisation of an all-in-focus image and a defocus map from one DP pair (Xin et al., ICCV 2021).

For each image an MPI (:mod:`defocusgan_plugin.ops.mpi`) is fitted so that its rendered left/right views match the
observed ones, under priors: a Charbonnier data term on both views, edge-aware total variation of the all-in-focus
image, total variation of sqrt(alpha) and a collision-entropy prior that pushes each pixel towards one layer.

Speed (the original needs ~10k full-resolution iterations, about 2 hours per image on a Titan RTX):

* all layers and both views are blurred in one FFT call (grouped ``conv2d`` for small kernels);
* coarse to fine: most iterations run at 1/4 resolution with kernels scaled accordingly, then the logits are
  upsampled and refined at 1/2 and full resolution;
* each level stops early when the loss plateaus;
* the layer range and a starting defocus map come from the DP cross-convolution identity ``L * k_R = R * k_L``
  (:func:`cross_defocus`), so the MPI starts near the answer instead of from equally visible layers;
* optional bfloat16 autocast of the rendering: only the small-kernel ``conv2d`` path runs in reduced precision,
  the FFTs and the losses stay float32.
"""
import math
import time
import torch
import torch.nn.functional as F

from defocusgan_plugin.ops.correlation import cross_convolution_costs
from defocusgan_plugin.ops.mpi import (charbonnier, collision_entropy, edge_aware_tv, expected_value,
                                       layer_radii, render_mpi, sqrt_alpha_tv, visibility_weights)
from defocusgan_plugin.ops.render import tent_weights, weights_to_alphas

DEFAULT_LEVELS = ({'scale': 0.25, 'iters': 400}, {'scale': 0.5, 'iters': 200}, {'scale': 1.0, 'iters': 100})
DEFAULT_WEIGHTS = {'data': 1.0, 'aif_tv': 1e-2, 'alpha_tv': 2e-3, 'entropy': 2e-3}
DEFAULT_EARLY_STOP = {'window': 20, 'rel_tol': 0.05}


def _resize(x, size):
    """Area-like resize of (..., C, H, W) to ``size`` (antialiased bilinear; identity when the size matches)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    lead = x.shape[:-3]
    x = x.reshape(-1, *x.shape[-3:])
    out = F.interpolate(x, size=size, mode='bilinear', align_corners=False, antialias=size[0] < x.shape[-2])
    return out.reshape(*lead, *out.shape[-3:])


def cross_defocus(left, right, bank, max_radius, step=0.5, window=7, chunk_size=16):
    """Per-pixel signed radius from the DP cross-convolution identity, with a confidence mask.

    A fronto-parallel patch blurred by the left/right kernels ``k_L, k_R`` satisfies ``L * k_R = R * k_L``. Each
    candidate radius is scored by the local mean of ``|L * k_R(r) - R * k_L(r)|``, normalised by the local gradient
    energy of both sides (larger radii blur both sides and would otherwise always win). A pixel is confident when
    its best cost is well below its median cost over radii and it is textured (gradient energy above the median).

    Args:
        left, right (Tensor): (1, C, H, W) views.
        bank (callable): Kernel bank, ``bank(radii) -> (G, 2, N, K, K)`` (cell-averaged when G > 1).
        max_radius (float): Largest |radius| tried, pixels at the views' resolution.
        step (float): Spacing of the tried radii, pixels.
        window (int): Side of the local averaging window (odd).
        chunk_size (int): Radii blurred per FFT call.

    Returns:
        tuple[Tensor, Tensor]: (1, 1, H, W) radius map and (1, 1, H, W) bool confidence.
    """
    probe = torch.arange(-math.ceil(max_radius / step), math.ceil(max_radius / step) + 1) * step
    probe = probe[probe.abs() <= max_radius + 1e-6]
    gray_l, gray_r = left.float().mean(1, keepdim=True), right.float().mean(1, keepdim=True)
    costs, textures = [], []
    for chunk in probe.split(chunk_size):  # bounds the memory of the FFTs at full resolution
        kernels = bank(chunk).mean(0).to(left.device, torch.float32)  # (2, m, K, K)
        cost, texture = cross_convolution_costs(gray_l, gray_r, kernels, window)
        costs.append(cost)
        textures.append(texture)
    cost, texture = torch.cat(costs, 1), torch.cat(textures, 1)
    best_cost, best = cost.min(1, keepdim=True)
    radius = probe.to(left.device)[best]
    tex = texture.min(1, keepdim=True)[0]
    confident = (best_cost < 0.5 * cost.median(1, keepdim=True)[0]) & (tex > tex.median())
    return radius, confident


def estimate_radius_range(radius, confident, quantiles=(0.02, 0.98), margin=0.5, min_span=1.0):
    """Signed radius range of a scene: quantiles of the confident radii, widened by ``margin`` on each side."""
    samples = radius[confident] if int(confident.sum()) >= 16 else radius.reshape(-1)
    low, high = (float(torch.quantile(samples.float(), q)) for q in quantiles)
    low, high = low - margin, high + margin
    if high - low < min_span:
        mid = 0.5 * (low + high)
        low, high = mid - 0.5 * min_span, mid + 0.5 * min_span
    return low, high


def fill_unconfident(radius, confident):
    """Replaces unconfident radii by the radius of the nearest confident pixel (the median if none is)."""
    from defocusgan_plugin.data.dp_synthesis import _fill_invalid  # lazy: the data package imports ops
    if not bool(confident.any()):
        return torch.full_like(radius, float(radius.median()))
    values = torch.where(confident, radius, torch.full_like(radius, float('nan')))[0, 0].cpu().numpy()
    return torch.from_numpy(_fill_invalid(values)).to(radius)[None, None]


def _logit(p):
    return torch.log(p) - torch.log1p(-p)


class DPJointSolver:
    """Fits an MPI to a DP pair; call it with the two views to get the all-in-focus image and the defocus map.

    Args:
        bank (callable): Kernel bank (:mod:`defocusgan_plugin.ops.kernel_bank`): signed radii (N,) in pixels at the
            working resolution -> (G, 2, N, K, K), with a ``grid`` attribute.
        num_layers (int): MPI layers (paper: 12).
        colors (str): 'per_layer' (a colour per layer, as the official release) or 'shared' (one all-in-focus
            colour for all layers).
        levels (list[dict]): Coarse-to-fine schedule: ``scale`` (of the input resolution) and ``iters`` per level.
            The result is always returned at full resolution.
        lr (list[float]): Adam learning rate at the start and end of each level, decayed log-linearly
            (release: 0.3 -> 0.1).
        weights (dict): Loss weights ``data``, ``aif_tv``, ``alpha_tv``, ``entropy``.
        gamma (float): Charbonnier scale of the data term (release: 0.1).
        edge_sigma (float): Guide-difference scale of the edge-aware TV.
        early_stop (dict | None): A level stops when its smoothed loss has improved by less than ``rel_tol``
            (relative) over the last ``window`` iterations; None runs every iteration.
        max_radius (float): Largest |radius| (full-resolution pixels) the per-image search of the layer range
            considers (:func:`cross_defocus`). Default: 25 (DPDD's largest blur).
        search_scale (float): Resolution (fraction of the input) of the range search and the 'cross' start.
        init (str): 'cross' starts the layers from the cross-convolution map (:func:`cross_defocus`), which cuts the
            iterations needed several-fold; 'uniform' starts from equally visible layers (the release).
        init_mix (float): Share of the uniform layer split mixed into the 'cross' start (see :meth:`init_params`).
        amp (bool): bfloat16 autocast of the rendering: the small-kernel ``conv2d`` path runs in bfloat16 (a GPU
            gain; on most CPUs a loss), the FFTs and the losses stay float32.
        blur_method (str): 'auto', 'fft' or 'conv' (see :func:`defocusgan_plugin.ops.render.blur_layers`).
    """

    def __init__(self, bank, num_layers=12, colors='per_layer', levels=DEFAULT_LEVELS, lr=(0.1, 0.03), weights=None,
                 gamma=0.1, edge_sigma=0.05, early_stop=DEFAULT_EARLY_STOP, max_radius=25.0, search_scale=1.0,
                 init='cross', init_mix=0.3, amp=False, blur_method='auto'):
        if colors not in ('per_layer', 'shared'):
            raise ValueError(f"colors must be 'per_layer' or 'shared', got {colors!r}.")
        if int(num_layers) < 2:
            raise ValueError(f'num_layers must be at least 2, got {num_layers}.')
        if init not in ('cross', 'uniform'):
            raise ValueError(f"init must be 'cross' or 'uniform', got {init!r}.")
        if float(max_radius) <= 0:
            raise ValueError(f'max_radius must be positive, got {max_radius}.')
        self.levels = [dict(level) for level in levels]
        if not self.levels:
            raise ValueError('levels must hold at least one {scale, iters} level.')
        for level in self.levels:
            if set(level) != {'scale', 'iters'} or not 0 < float(level['scale']) <= 1 or int(level['iters']) < 0:
                raise ValueError(f'Each level needs scale in (0, 1] and iters >= 0 (and nothing else), got {level}.')
        unknown = set(weights or {}) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ValueError(f'Unknown loss weights {sorted(unknown)}; use {sorted(DEFAULT_WEIGHTS)}.')
        if len(lr) != 2 or min(lr) <= 0:
            raise ValueError(f'lr must be [start, end], both positive, got {lr}.')
        self.bank, self.num_layers, self.colors = bank, int(num_layers), colors
        self.lr, self.gamma, self.edge_sigma = (float(lr[0]), float(lr[1])), float(gamma), float(edge_sigma)
        self.weights = dict(DEFAULT_WEIGHTS, **(weights or {}))
        self.early_stop = dict(DEFAULT_EARLY_STOP, **early_stop) if early_stop else None
        if not 0 < float(search_scale) <= 1:
            raise ValueError(f'search_scale must lie in (0, 1], got {search_scale}.')
        self.max_radius, self.search_scale = float(max_radius), float(search_scale)
        self.init, self.init_mix = init, float(init_mix)
        self.amp, self.blur_method = bool(amp), blur_method

    # ------------------------------------------------------------------ parameters
    def init_params(self, views, radii, init_defocus=None):
        """Logits of the first level: colours at the mean view; alphas 1/(i+1) (every layer equally visible) or,
        given an initial defocus map, visibility split between the two layers around each pixel's radius and mixed
        with ``init_mix`` of the uniform split so that every layer stays reachable."""
        mean = views.mean(1).clamp(0.01, 0.99)  # (1, C, h, w)
        color = _logit(mean)
        if self.colors == 'per_layer':
            color = color[:, None].repeat(1, self.num_layers, 1, 1, 1)
        if init_defocus is None:
            alpha = 1.0 / torch.arange(2, self.num_layers + 1, dtype=views.dtype, device=views.device)
            alpha = alpha.view(1, -1, 1, 1, 1).expand(1, -1, 1, *views.shape[-2:])
        else:
            step = float(radii[1] - radii[0])
            tent = tent_weights(_resize(init_defocus.float(), views.shape[-2:]), float(radii[0]), step, len(radii))
            weights = (1.0 - self.init_mix) * tent + self.init_mix / len(radii)
            alpha = weights_to_alphas(weights)[:, 1:]
        alpha = _logit(alpha.clamp(1e-3, 1.0 - 1e-3))
        return [color.clone().requires_grad_(), alpha.clone().requires_grad_()]

    def scene(self, params):
        """Colours (B, N, C, h, w) or (B, C, h, w) and alphas (B, N, 1, h, w) (back layer opaque) from logits."""
        colors = torch.sigmoid(params[0])
        alpha = torch.sigmoid(params[1])
        alphas = torch.cat([torch.ones_like(alpha[:, :1]), alpha], 1)
        return colors, alphas

    # ------------------------------------------------------------------ loss
    def losses(self, colors, alphas, views, kernels, guide):
        """Unweighted loss terms of a scene and its rendered views.

        Args:
            colors (Tensor): (1, N, C, h, w) or shared (1, C, h, w) layer colours.
            alphas (Tensor): (1, N, 1, h, w) layer alphas, layer 0 = back.
            views (Tensor): (1, 2, C, h, w) observed left/right views.
            kernels (Tensor): (2, N, K, K) or (G, 2, N, K, K) kernels of the layers at this resolution.
            guide (Tensor): (1, C, h, w) edge guide of the all-in-focus smoothness (the observed combined view).

        Returns:
            tuple[dict[str, Tensor], Tensor]: The terms (``data``, ``aif_tv``, ``alpha_tv``, ``entropy``) and the
            rendered views (1, 2, C, h, w).
        """
        with torch.autocast(views.device.type, dtype=torch.bfloat16, enabled=self.amp):
            rendered = render_mpi(colors, alphas, kernels, self.bank.grid, self.blur_method)
        rendered = rendered.float()
        weights = visibility_weights(alphas)
        aif = expected_value(weights, colors)
        terms = {
            'data': charbonnier(rendered - views, self.gamma).mean(),
            'aif_tv': edge_aware_tv(aif, guide, self.edge_sigma),
            'alpha_tv': sqrt_alpha_tv(alphas[:, 1:]),
            'entropy': collision_entropy(weights).mean(),
        }
        return terms, rendered

    def total(self, terms):
        return sum(self.weights[k] * v for k, v in terms.items())

    # ------------------------------------------------------------------ solve
    def __call__(self, left, right, radius_range=None, callback=None):
        """Runs the optimisation.

        Args:
            left, right (Tensor): (1, C, H, W) observed views in linear intensity [0, 1].
            radius_range (tuple[float, float] | None): Signed radius range (full-resolution pixels) of the layers;
                None estimates it from the views (:func:`cross_defocus`, :func:`estimate_radius_range`).
            callback (callable | None): Called after each step as ``callback(state)`` with a dict of ``level``,
                ``iteration``, ``params``, ``terms`` and ``radii`` (e.g. to record quality against iterations with
                :meth:`outputs`).

        Returns:
            dict: ``aif`` (1, C, H, W), ``defocus`` (1, 1, H, W) expected radius in pixels, ``weights``
            (1, N, 1, H, W), ``radii`` (N,), ``range`` (low, high), ``iters`` (iterations run per level), ``loss``
            (final total) and ``seconds`` (including the range search).
        """
        start = time.perf_counter()
        views_full = torch.stack([left, right], 1).float()  # (1, 2, C, H, W)
        height, width = views_full.shape[-2:]
        init_defocus = None
        if radius_range is None or self.init == 'cross':
            scale = self.search_scale
            small = _resize(views_full, (max(1, round(height * scale)), max(1, round(width * scale))))
            # radii tried every 0.5 full-resolution pixel, whatever the search resolution
            radius, confident = cross_defocus(small[:, 0], small[:, 1], self.bank, self.max_radius * scale,
                                              step=0.5 * scale)
            radius = radius / scale
            if radius_range is None:
                radius_range = estimate_radius_range(radius, confident)
            if self.init == 'cross':
                init_defocus = fill_unconfident(radius, confident)
        radii = layer_radii(radius_range[0], radius_range[1], self.num_layers)
        params, iters, total = None, [], float('nan')
        for level_idx, level in enumerate(self.levels):
            scale = float(level['scale'])
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            views = _resize(views_full, size)
            guide = views.mean(1)
            kernels = self.bank(radii * (size[1] / width)).to(views.device, views.dtype)
            if kernels.shape[0] == 1:
                kernels = kernels[0]
            params = self.init_params(views, radii, init_defocus) if params is None else self._upsample(params, size)
            report = None if callback is None else (
                lambda it, terms, level=level_idx: callback(dict(level=level, iteration=it, params=params,
                                                                 terms=terms, radii=radii)))
            ran, total = self._optimise(params, views, kernels, guide, int(level['iters']), report)
            iters.append(ran)
        if tuple(params[1].shape[-2:]) != (height, width):
            params = self._upsample(params, (height, width))
        aif, defocus, weights = self.outputs(params, radii)
        return {'aif': aif, 'defocus': defocus, 'weights': weights, 'radii': radii, 'range': tuple(radius_range),
                'iters': iters, 'loss': total, 'seconds': time.perf_counter() - start}

    def outputs(self, params, radii):
        """All-in-focus image (1, C, h, w), defocus map (1, 1, h, w) and layer visibility (1, N, 1, h, w) of
        the parameters, at their resolution."""
        with torch.no_grad():
            colors, alphas = self.scene(params)
            weights = visibility_weights(alphas)
            return expected_value(weights, colors), expected_value(weights, radii.to(weights.device)), weights

    @staticmethod
    def _upsample(params, size):
        return [_resize(p.detach(), size).requires_grad_() for p in params]

    def _optimise(self, params, views, kernels, guide, iters, report):
        """Adam on ``params`` in place for at most ``iters`` steps; returns (steps run, last total loss)."""
        optimizer = torch.optim.Adam(params, lr=self.lr[0])
        decay = math.log(self.lr[1] / self.lr[0])
        smooth, history, total = None, [], float('nan')
        for it in range(iters):
            for group in optimizer.param_groups:
                group['lr'] = self.lr[0] * math.exp(decay * it / max(iters - 1, 1))
            optimizer.zero_grad(set_to_none=True)
            terms, _ = self.losses(*self.scene(params), views, kernels, guide)
            loss = self.total(terms)
            loss.backward()
            for p in params:  # as the release: a non-finite gradient entry is dropped, not propagated
                torch.nan_to_num_(p.grad, nan=0.0, posinf=0.0, neginf=0.0)
            optimizer.step()
            total = float(loss.detach())
            if report is not None:
                report(it + 1, terms)
            if self.early_stop is None:
                continue
            smooth = total if smooth is None else 0.8 * smooth + 0.2 * total
            history.append(smooth)
            window = self.early_stop['window']
            if len(history) > window:
                before = history[-1 - window]
                if before - smooth < self.early_stop['rel_tol'] * before:
                    return it + 1, total
        return iters, total
