"""Joint test-time optimisation of an all-in-focus image and a defocus map from one DP pair (Xin et al., ICCV 2021).

For each image an MPI (:mod:`defocusgan_plugin.ops.mpi`) is fitted so that its rendered left/right views match the
observed ones, under priors. Two objectives:

* ``release``: the official release's objective, term by term (:mod:`defocusgan_plugin.ops.dp_objective`):
  exposure-normalised, bias-corrected Charbonnier data term, auxiliary per-layer data term, local-variance TV with
  edge masks on the all-in-focus image and every layer, TV of sqrt(alpha) and sqrt(transmittance), collision
  entropy; the MPI edge-padded for rendering; a bilateral filter of the all-in-focus image at the end;
* ``plugin``: the plugin's earlier, lighter objective (Charbonnier data term, edge-aware gradient TV of the
  all-in-focus image guided by the input, TV of sqrt(alpha), normalised collision entropy).

Presets (``preset``): ``release`` = the release's objective and schedule (Adam 0.3 -> 0.1 log-decay, 10 000
full-resolution iterations, uniform start); ``fast`` = the same objective, optimised coarse to fine from the DP
cross-convolution map (1/2 scale, then a few full-resolution steps that continue from the 1/2-scale Adam moments),
with slower alphas and a data term that grows linearly above small errors (what an inexact calibration cannot
explain weighs less); ``fast_v1`` = the first ``fast`` (fresh Adam per level, 10 full-resolution steps, the release's
data term), kept for comparisons; none = the ``plugin`` objective with its coarse-to-fine schedule.

Speed: all layers, both views and every cell of a spatially varying kernel grid are blurred in one FFT call
(:func:`defocusgan_plugin.ops.render.blur_layers_grid`; ``fast``: :func:`defocusgan_plugin.ops.mpi.
blur_layers_tiled`, the same values with a leaner backward pass); coarse-to-fine levels run at reduced resolution
with kernels scaled accordingly and stop early on a plateau; the layer range and a start come from the
cross-convolution identity ``L * k_R = R * k_L`` (:func:`cross_defocus`).
"""
import math
import time
import torch
import torch.nn.functional as F

from defocusgan_plugin.ops.correlation import MATCH_CHANNELS, best_radius, cross_convolution_costs, match_planes
from defocusgan_plugin.ops.dp_objective import (NOISE_C, NOISE_SIGMA, RELEASE_WEIGHTS, exposure_factor, noise_bias,
                                                release_terms)
from defocusgan_plugin.ops.filters import bilateral_filter, box_mean, fill_invalid
from defocusgan_plugin.ops.mpi import (charbonnier, collision_entropy, edge_aware_tv, expected_value, layer_radii,
                                       render_mpi, sqrt_alpha_tv, visibility_weights)
from defocusgan_plugin.ops.render import blur_layers_grid, tent_weights, weights_to_alphas
from defocusgan_plugin.utils.heap import heap_reuse

DEFAULT_LEVELS = ({'scale': 0.25, 'iters': 400}, {'scale': 0.5, 'iters': 200}, {'scale': 1.0, 'iters': 100})
DEFAULT_WEIGHTS = {'data': 1.0, 'aif_tv': 1e-2, 'alpha_tv': 2e-3, 'entropy': 2e-3}
DEFAULT_EARLY_STOP = {'window': 20, 'rel_tol': 0.05}
RELEASE_POST_FILTER = {'sigma_s': 3.0, 'sigma_v': 0.05, 'quantized': True}

# Solver options without a preset (the plugin's earlier behaviour); a preset overrides some of them, and options
# given explicitly override the preset.
BASE_OPTIONS = dict(
    objective='plugin',
    num_layers=12,
    colors='per_layer',
    levels=DEFAULT_LEVELS,
    lr=(0.1, 0.03),
    weights=None,
    gamma=0.1,
    edge_sigma=0.05,
    early_stop=DEFAULT_EARLY_STOP,
    max_radius=25.0,
    search_scale=1.0,
    search=None,
    init='cross',
    init_mix=0.3,
    color_init='view',
    amp=False,
    blur_method='auto',
    pad_mode='reflect',
    post_filter=None,
    noise=None,
    one_sided=0.0,
    include_focus=False,
    min_level_radius=0.0,
    cross_cells=False,
    carry_adam=False,
    data_gamma=None,
    alpha_lr=1.0,
    heap_reuse=True)
DEFAULT_SEARCH = dict(step=0.5, window=7, channel='mean', highpass=0, subpixel=False)
# yapf: disable
# The release's objective, its renderer padding and post-filter: shared by both presets.
RELEASE_OBJECTIVE = dict(objective='release', lr=(0.3, 0.1), pad_mode='replicate', post_filter=RELEASE_POST_FILTER,
                         noise={'sigma': NOISE_SIGMA, 'c': NOISE_C}, one_sided=0.1, include_focus=True,
                         blur_method='fft')
PRESETS = {
    # the release: 10 000 full-resolution iterations from equally visible layers at the global mean colour
    'release': dict(RELEASE_OBJECTIVE, levels=({'scale': 1.0, 'iters': 10000}, ), init='uniform',
                    color_init='global', early_stop=None),
    # the same objective, coarse to fine from the cross-convolution map, stopping each level on a plateau
    # (levels whose blur is too small to see are merged into the next one: see min_level_radius)
    'fast_v1': dict(RELEASE_OBJECTIVE, levels=({'scale': 0.5, 'iters': 40}, {'scale': 1.0, 'iters': 10}),
                    min_level_radius=4.0, init='cross', color_init='view',
                    early_stop={'window': 10, 'rel_tol': 0.001}, search_scale='auto'),
}
# fast_v1 (the plugin's first fast preset) made faster and less hurt by a calibration that is not exact: a tiled blur
# (the same values, faster steps), fewer full-resolution steps that start from the 1/2-scale level's Adam moments,
# alphas at a tenth of the colours' learning rate (a fresh Adam moves every alpha logit by the full rate and erodes
# the cross-convolution start), a data term linear above errors of 0.03. Measured before/after on the mismatched
# fake set: docs/results/dp_joint_mismatch/
PRESETS['fast'] = dict(PRESETS['fast_v1'], levels=({'scale': 0.5, 'iters': 40}, {'scale': 1.0, 'iters': 6}),
                       blur_method='tiled', carry_adam=True, alpha_lr=0.1, data_gamma=0.03)
# yapf: enable
_UNSET = object()


def _resize(x, size):
    """Area-like resize of (..., C, H, W) to ``size`` (antialiased bilinear; identity when the size matches)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    lead = x.shape[:-3]
    x = x.reshape(-1, *x.shape[-3:])
    out = F.interpolate(x, size=size, mode='bilinear', align_corners=False, antialias=size[0] < x.shape[-2])
    return out.reshape(*lead, *out.shape[-3:])


def cross_defocus(left,
                  right,
                  bank,
                  max_radius,
                  step=0.5,
                  window=7,
                  chunk_size=16,
                  per_cell=False,
                  channel=None,
                  highpass=0,
                  subpixel=False):
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
        per_cell (bool): With a grid of kernels, blur each cell with its own kernels (else with their average:
            one kernel set for the image, cheaper, but the map then inherits the calibration's variation over the
            image, ~10 % of the radius for the Pixel 4).
        channel, highpass: The planes matched (:func:`defocusgan_plugin.ops.correlation.match_planes`): a channel
            index (None: the mean of the channels) and a box radius subtracted (0: none).
        subpixel (bool): Refine the radius between the tried ones
            (:func:`defocusgan_plugin.ops.correlation.best_radius`).

    Returns:
        tuple[Tensor, Tensor]: (1, 1, H, W) radius map and (1, 1, H, W) bool confidence.
    """
    probe = torch.arange(-math.ceil(max_radius / step), math.ceil(max_radius / step) + 1) * step
    probe = probe[probe.abs() <= max_radius + 1e-6]
    grid = tuple(getattr(bank, 'grid', (1, 1)))
    if grid != (1, 1) and not per_cell and hasattr(bank, 'averaged'):
        bank, grid = bank.averaged(), (1, 1)  # resample one kernel set, not one per cell
    gray_l, gray_r = match_planes(left.float(), right.float(), channel, highpass)
    costs, textures = [], []
    for chunk in probe.split(chunk_size):  # bounds the memory of the FFTs at full resolution
        kernels = bank(chunk).to(left.device, torch.float32)  # (G, 2, m, K, K)
        if grid == (1, 1):
            cost, texture = cross_convolution_costs(gray_l, gray_r, kernels.mean(0), window)
        else:
            cost, texture = _cross_costs_grid(gray_l, gray_r, kernels, grid, window)
        costs.append(cost)
        textures.append(texture)
    cost, texture = torch.cat(costs, 1), torch.cat(textures, 1)
    best_cost = cost.min(1, keepdim=True)[0]
    radius = best_radius(cost, probe.to(left.device), subpixel)
    tex = texture.min(1, keepdim=True)[0]
    confident = (best_cost < 0.5 * cost.median(1, keepdim=True)[0]) & (tex > tex.median())
    return radius, confident


def _cross_costs_grid(left, right, kernels, grid, window):
    """:func:`defocusgan_plugin.ops.correlation.cross_convolution_costs` with per-cell kernels (G, 2, M, K, K)."""
    views = torch.stack([left, right], 1)[:, :, None]  # (B, 2, 1, 1, H, W): L, R as a 1-layer, 1-channel stack
    blurred = blur_layers_grid(views, kernels.flip(1), grid, 'auto', 'reflect')[:, :, :, 0]  # L * k_R, R * k_L
    a, b = blurred[:, 0], blurred[:, 1]  # (B, M, H, W)
    grad = (a[..., :, 1:] - a[..., :, :-1]).abs() + (b[..., :, 1:] - b[..., :, :-1]).abs()
    texture = box_mean(F.pad(grad, (0, 1, 0, 0), mode='replicate'), window // 2) + 1e-4
    return box_mean((a - b).abs(), window // 2) / texture, texture


def estimate_radius_range(radius,
                          confident,
                          quantiles=(0.02, 0.98),
                          margin=0.5,
                          min_span=1.0,
                          one_sided=0.0,
                          off_focus=1.0,
                          include_focus=False):
    """Signed radius range of a scene: quantiles of the confident radii, widened by ``margin`` on each side.

    Args:
        radius (Tensor): Per-pixel signed radii (:func:`cross_defocus`).
        confident (Tensor): Bool mask of the same shape; all pixels are used when fewer than 16 are confident.
        quantiles (tuple[float, float]): Lower and upper quantile.
        margin (float): Widening on each side, pixels.
        min_span (float): Smallest span of the range, pixels.
        one_sided (float): When the range crosses 0 but fewer than this share of the samples clearly off focus
            (``|r| > off_focus``) lie on one side, that side is cut at 0: a scene on one side of the focal plane
            (as the Pixel-4 data) spends no layers on the other. 0 disables.
        off_focus (float): See ``one_sided``.
        include_focus (bool): Extend the range to radius 0: a photograph is focused on something in it, and the
            in-focus parts are the least confident ones of the cross-convolution search (small kernels differ
            little), so the quantiles tend to miss them.

    Returns:
        tuple[float, float]: (low, high).
    """
    samples = radius[confident] if int(confident.sum()) >= 16 else radius.reshape(-1)
    samples = samples.float()
    low, high = (float(torch.quantile(samples, q)) for q in quantiles)
    low, high = low - margin, high + margin
    if include_focus:
        low, high = min(low, 0.0), max(high, 0.0)
    if one_sided > 0 and low < 0 < high:
        off = samples[samples.abs() > off_focus]
        if off.numel():
            negative = float((off < 0).float().mean())
            if negative < one_sided:
                low = 0.0
            elif 1.0 - negative < one_sided:
                high = 0.0
    if high - low < min_span:
        mid = 0.5 * (low + high)
        low, high = mid - 0.5 * min_span, mid + 0.5 * min_span
    return low, high


def fill_unconfident(radius, confident):
    """Replaces unconfident radii by the radius of the nearest confident pixel (the median if none is)."""
    if not bool(confident.any()):
        return torch.full_like(radius, float(radius.median()))
    values = torch.where(confident, radius, torch.full_like(radius, float('nan')))[0, 0].cpu().numpy()
    return torch.from_numpy(fill_invalid(values)).to(radius)[None, None]


def _logit(p):
    return torch.log(p) - torch.log1p(-p)


class DPJointSolver:
    """Fits an MPI to a DP pair; call it with the two views to get the all-in-focus image and the defocus map.

    Every option but ``bank`` defaults to the value of the ``preset`` (see ``PRESETS``), else to ``BASE_OPTIONS``;
    an option given explicitly overrides the preset.

    Args:
        bank (callable): Kernel bank (:mod:`defocusgan_plugin.ops.kernel_bank`): signed radii (N,) in pixels at the
            working resolution -> (G, 2, N, K, K), with ``grid`` and ``frame_size`` attributes.
        preset (str | None): 'release', 'fast', 'fast_v1' (the first 'fast', for comparisons) or None.
        objective (str): 'release' (the official release's terms, :func:`defocusgan_plugin.ops.dp_objective.
            release_terms`) or 'plugin' (the plugin's earlier objective).
        num_layers (int): MPI layers (paper: 12).
        colors (str): 'per_layer' (a colour per layer, as the release; required by 'release') or 'shared'.
        levels (list[dict]): Coarse-to-fine schedule: ``scale`` (of the input resolution) and ``iters`` per level,
            optionally ``lr`` (the level's own ``[start, end]``) and ``alpha_lr`` (the level's own, see below; 0
            freezes the alphas for the level: with the 'release' objective their blur, transmittance and priors are
            then computed once, and a step costs about a third less). The result is always returned at full
            resolution.
        lr (list[float]): Adam learning rate at the start and end of each level, decayed log-linearly.
        weights (dict): Loss weights; 'release': ``data``, ``aux_data``, ``aif_tv``, ``alpha_tv``, ``entropy`` as
            the release writes them (defaults: 2.5e4, 2.5e4, 30, 7.5e4, 20; the release tunes ``alpha_tv`` within
            1.5e4-7.5e4 and ``entropy`` within 20-30 per scene); 'plugin': ``data``, ``aif_tv``, ``alpha_tv``,
            ``entropy``.
        gamma (float): Charbonnier scale (release: 0.1).
        edge_sigma (float): Guide-difference scale of the 'plugin' objective's edge-aware TV.
        early_stop (dict | None): A level stops when its smoothed loss has improved by less than ``rel_tol``
            (relative) over the last ``window`` iterations; None runs every iteration.
        max_radius (float): Largest |radius| (full-resolution pixels) the per-image search of the layer range
            considers (:func:`cross_defocus`).
        search_scale (float | str): Resolution (fraction of the input) of the range search and the 'cross' start;
            'auto': ``min(1, 6 / max_radius)`` (the largest radius searched is then ~6 px at that resolution).
        search (dict | None): How the range search and the 'cross' start match the views (:func:`cross_defocus`):
            ``step`` (radius spacing, full-resolution pixels; default 0.5), ``window`` (odd; default 7),
            ``channel`` ('mean', 'red', 'green', 'blue'; default 'mean'), ``highpass`` (box radius; default 0) and
            ``subpixel`` (default false); ``window`` and ``highpass`` in pixels at the search resolution. Real DP
            captures with sub-pixel radii need a finer step than 0.5 px, sub-pixel refinement, the green channel
            and a high-pass against the views' gain differences (as ``DefocusMapNet``'s cue options).
        init (str): 'cross' starts the layers from the cross-convolution map (:func:`cross_defocus`); 'uniform'
            starts from equally visible layers (the release).
        init_mix (float): Share of the uniform layer split mixed into the 'cross' start (see :meth:`init_params`).
        color_init (str): Start of the layer colours: 'view' (the mean of the two views, per pixel) or 'global'
            (their global mean, as the release).
        amp (bool): bfloat16 autocast of the 'plugin' objective's rendering (the small-kernel ``conv2d`` path).
        blur_method (str): 'auto', 'fft' or 'conv' (see :func:`defocusgan_plugin.ops.render.blur_layers`), or
            'tiled' (:func:`defocusgan_plugin.ops.mpi.blur_layers_tiled`: the FFT result, about twice as fast on a CPU).
        pad_mode (str): Padding of the MPI at the image border for rendering: 'reflect' or 'replicate' (release).
        post_filter (dict | None): Bilateral filter of the exposure-normalised all-in-focus image
            (:func:`defocusgan_plugin.ops.filters.bilateral_filter` options ``sigma_s``, ``sigma_v``,
            ``quantized``; release: 3, 0.05, true); None: no filter.
        noise (dict | None): Noise bias correction of the 'release' objective: ``sigma``, ``c`` (release: 5e-3,
            5e-3); at a level of scale ``s`` the bias is multiplied by ``s^2`` (downsampling averages the noise).
            None: no correction.
        one_sided (float): See :func:`estimate_radius_range` (0 keeps signed ranges as estimated).
        include_focus (bool): See :func:`estimate_radius_range`.
        min_level_radius (float): A level whose largest layer radius (pixels at its resolution) is below this is
            skipped and its iterations go to the next level at equal pixel cost (``iters * scale^2``): coarse levels
            help only while the blur is still visible there (0: every level runs).
        cross_cells (bool): The cross-convolution search (range and 'cross' start) blurs each cell of a kernel grid
            with its own kernels (:func:`cross_defocus` ``per_cell``); False: with the cells' average (the map then
            carries the calibration's variation over the image).
        carry_adam (bool): Each level starts from the previous level's Adam moments (resized) instead of a fresh
            optimiser, whose first steps move every logit by the full learning rate.
        data_gamma (float | None): 'release' objective: error scale (views' units) above which the data and auxiliary
            terms grow linearly instead of quadratically (:func:`defocusgan_plugin.ops.dp_objective.robust_sq`): what
            the kernels cannot explain weighs less. None: the release's Charbonnier of ``gamma``.
        alpha_lr (float): Learning rate of the alpha logits relative to ``lr`` (Adam moves every logit by about the
            learning rate in its first steps, also where the views say little about the layer: a start from the
            cross-convolution map loses part of its accuracy at lr 0.3).
        heap_reuse (bool): On a CPU with glibc, keep freed memory in the process while solving
            (:func:`defocusgan_plugin.utils.heap.heap_reuse`): the same results without the page faults of the steps'
            large temporaries (at 1008x1344 a full-resolution step then takes about half the time; the peak memory
            grows by about half).
    """

    def __init__(self,
                 bank,
                 preset=None,
                 objective=_UNSET,
                 num_layers=_UNSET,
                 colors=_UNSET,
                 levels=_UNSET,
                 lr=_UNSET,
                 weights=_UNSET,
                 gamma=_UNSET,
                 edge_sigma=_UNSET,
                 early_stop=_UNSET,
                 max_radius=_UNSET,
                 search_scale=_UNSET,
                 search=_UNSET,
                 init=_UNSET,
                 init_mix=_UNSET,
                 color_init=_UNSET,
                 amp=_UNSET,
                 blur_method=_UNSET,
                 pad_mode=_UNSET,
                 post_filter=_UNSET,
                 noise=_UNSET,
                 one_sided=_UNSET,
                 include_focus=_UNSET,
                 min_level_radius=_UNSET,
                 cross_cells=_UNSET,
                 carry_adam=_UNSET,
                 data_gamma=_UNSET,
                 alpha_lr=_UNSET,
                 heap_reuse=_UNSET):
        given = {k: v for k, v in locals().items() if k not in ('self', 'bank', 'preset') and v is not _UNSET}
        if preset is not None and preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)} or None, got {preset!r}.")
        opt = {**BASE_OPTIONS, **(PRESETS[preset] if preset else {}), **given}
        self.bank, self.preset = bank, preset
        self.objective = opt['objective']
        if self.objective not in ('release', 'plugin'):
            raise ValueError(f"objective must be 'release' or 'plugin', got {self.objective!r}.")
        if opt['colors'] not in ('per_layer', 'shared'):
            raise ValueError(f"colors must be 'per_layer' or 'shared', got {opt['colors']!r}.")
        if self.objective == 'release' and opt['colors'] != 'per_layer':
            raise ValueError("objective 'release' needs colors: per_layer (its auxiliary term and smoothness prior "
                             'act on each layer\'s colour).')
        if int(opt['num_layers']) < 2:
            raise ValueError(f"num_layers must be at least 2, got {opt['num_layers']}.")
        if opt['init'] not in ('cross', 'uniform'):
            raise ValueError(f"init must be 'cross' or 'uniform', got {opt['init']!r}.")
        if opt['color_init'] not in ('view', 'global'):
            raise ValueError(f"color_init must be 'view' or 'global', got {opt['color_init']!r}.")
        if opt['blur_method'] not in ('auto', 'fft', 'conv', 'tiled'):
            raise ValueError(f"blur_method must be 'auto', 'fft', 'conv' or 'tiled', got {opt['blur_method']!r}.")
        if opt['pad_mode'] not in ('reflect', 'replicate'):
            raise ValueError(f"pad_mode must be 'reflect' or 'replicate', got {opt['pad_mode']!r}.")
        if float(opt['max_radius']) <= 0:
            raise ValueError(f"max_radius must be positive, got {opt['max_radius']}.")
        self.levels = [dict(level) for level in opt['levels']]
        if not self.levels:
            raise ValueError('levels must hold at least one {scale, iters} level.')
        for level in self.levels:
            level_lr = level.get('lr', opt['lr'])
            if (not {'scale', 'iters'} <= set(level) <= {'scale', 'iters', 'lr', 'alpha_lr'}
                    or not 0 < float(level['scale']) <= 1 or int(level['iters']) < 0 or len(level_lr) != 2
                    or min(level_lr) <= 0 or float(level.get('alpha_lr', 1.0)) < 0):
                raise ValueError(f'Each level needs scale in (0, 1] and iters >= 0, and may set lr [start, end] '
                                 f'(both positive) and alpha_lr (>= 0), got {level}.')
        defaults = RELEASE_WEIGHTS if self.objective == 'release' else DEFAULT_WEIGHTS
        unknown = set(opt['weights'] or {}) - set(defaults)
        if unknown:
            raise ValueError(f'Unknown loss weights {sorted(unknown)} for objective {self.objective!r}; use '
                             f'{sorted(defaults)}.')
        lr = opt['lr']
        if len(lr) != 2 or min(lr) <= 0:
            raise ValueError(f'lr must be [start, end], both positive, got {lr}.')
        if opt['search_scale'] != 'auto' and not 0 < float(opt['search_scale']) <= 1:
            raise ValueError(f"search_scale must lie in (0, 1] or be 'auto', got {opt['search_scale']!r}.")
        search = dict(DEFAULT_SEARCH, **(opt['search'] or {}))
        if (set(search) - set(DEFAULT_SEARCH) or float(search['step']) <= 0 or int(search['window']) % 2 != 1
                or search['channel'] not in MATCH_CHANNELS or int(search['highpass']) < 0):
            raise ValueError(f"search takes step (> 0), window (odd), channel ({', '.join(MATCH_CHANNELS)}), "
                             f"highpass (>= 0) and subpixel, got {opt['search']}.")
        if float(opt['min_level_radius']) < 0:
            raise ValueError(f"min_level_radius must be >= 0, got {opt['min_level_radius']}.")
        post = opt['post_filter']
        if post is not None and (not isinstance(post, dict) or set(post) - {'sigma_s', 'sigma_v', 'quantized'}):
            raise ValueError(f'post_filter takes sigma_s, sigma_v, quantized (or ~ for none), got {post}.')
        noise = opt['noise']
        if noise is not None and (not isinstance(noise, dict) or set(noise) - {'sigma', 'c'}):
            raise ValueError(f'noise takes sigma and c (or ~ for no bias correction), got {noise}.')
        if not 0 <= float(opt['one_sided']) < 0.5:
            raise ValueError(f"one_sided must lie in [0, 0.5), got {opt['one_sided']}.")
        self.num_layers, self.colors = int(opt['num_layers']), opt['colors']
        self.lr, self.gamma, self.edge_sigma = (float(lr[0]),
                                                float(lr[1])), float(opt['gamma']), float(opt['edge_sigma'])
        self.weights = dict(defaults, **(opt['weights'] or {}))
        self.early_stop = dict(DEFAULT_EARLY_STOP, **opt['early_stop']) if opt['early_stop'] else None
        self.max_radius = float(opt['max_radius'])
        self.search_scale = (
            min(1.0, 6.0 / self.max_radius) if opt['search_scale'] == 'auto' else float(opt['search_scale']))
        # cross_defocus's arguments (the channel as an index)
        self.search = {
            'step': float(search['step']),
            'window': int(search['window']),
            'channel': MATCH_CHANNELS[search['channel']],
            'highpass': int(search['highpass']),
            'subpixel': bool(search['subpixel'])
        }
        self.min_level_radius = float(opt['min_level_radius'])
        self.init, self.init_mix, self.color_init = opt['init'], float(opt['init_mix']), opt['color_init']
        self.amp, self.blur_method, self.pad_mode = bool(opt['amp']), opt['blur_method'], opt['pad_mode']
        self.post_filter = None if post is None else dict(RELEASE_POST_FILTER, **post)
        self.noise = None if noise is None else {'sigma': NOISE_SIGMA, 'c': NOISE_C, **noise}
        self.one_sided, self.include_focus = float(opt['one_sided']), bool(opt['include_focus'])
        self.cross_cells, self.carry_adam = bool(opt['cross_cells']), bool(opt['carry_adam'])
        self.data_gamma = None if opt['data_gamma'] is None else float(opt['data_gamma'])
        self.alpha_lr, self.heap_reuse = float(opt['alpha_lr']), bool(opt['heap_reuse'])
        if self.alpha_lr <= 0:
            raise ValueError(f"alpha_lr must be positive, got {opt['alpha_lr']}.")
        if self.data_gamma is not None and (self.data_gamma <= 0 or self.objective != 'release'):
            raise ValueError(f"data_gamma must be positive and needs objective 'release', got {opt['data_gamma']}.")

    def describe(self):
        """One line for the log: preset, objective, levels and start."""
        levels = ', '.join(f"{level['iters']} it. at {level['scale']:g}" for level in self.levels)
        return (f"preset {self.preset or 'none'} (objective {self.objective}; {levels}; {self.init} start; "
                f"lr {self.lr[0]:g} -> {self.lr[1]:g}; early stop {'on' if self.early_stop else 'off'})")

    # ------------------------------------------------------------------ parameters
    def init_params(self, views, radii, init_defocus=None):
        """Logits of the first level. Colours at the mean view (``color_init: view``) or at the global mean of the
        views (``global``, the release); alphas 1/(i+1) (every layer equally visible) or, given an initial defocus
        map, visibility split between the two layers around each pixel's radius and mixed with ``init_mix`` of the
        uniform split so that every layer stays reachable."""
        if self.color_init == 'global':
            mean = views.mean().expand(1, views.shape[2], *views.shape[-2:])
        else:
            mean = views.mean(1)  # (1, C, h, w)
        color = _logit(mean.clamp(0.01, 0.99))
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
    def losses(self, colors, alphas, views, kernels, guide=None, bias=None, cache=None, static_alphas=False):
        """Loss terms of a scene and its rendered views.

        Args:
            colors (Tensor): (1, N, C, h, w) or shared (1, C, h, w) layer colours.
            alphas (Tensor): (1, N, 1, h, w) layer alphas, layer 0 = back.
            views (Tensor): (1, 2, C, h, w) observed left/right views.
            kernels (Tensor): (2, N, K, K) or (G, 2, N, K, K) kernels of the layers at this resolution.
            guide (Tensor | None): (1, C, h, w) edge guide of the 'plugin' objective's smoothness (the observed
                combined view); default the mean of the views.
            bias (Tensor | None): (N,) noise bias of the 'release' objective; default none.
            cache (dict | None): Kernel spectra kept between the iterations of a level.
            static_alphas (bool): 'release': the alphas are frozen for the level (see
                :func:`defocusgan_plugin.ops.mpi.render_mpi`; needs ``cache``).

        Returns:
            tuple[dict[str, Tensor], Tensor]: The terms ('release': weighted ``data``, ``aux_data``, ``aif_tv``,
            ``alpha_tv``, ``entropy``; 'plugin': unweighted ``data``, ``aif_tv``, ``alpha_tv``, ``entropy``) and
            the rendered views (1, 2, C, h, w).
        """
        grid = self.bank.grid
        if self.objective == 'release':
            rendering = render_mpi(
                colors,
                alphas,
                kernels,
                grid,
                self.blur_method,
                self.pad_mode,
                normalize=False,
                details=True,
                cache=cache,
                static_alphas=static_alphas)
            bias = torch.zeros(alphas.shape[1]) if bias is None else bias
            terms = release_terms(colors, alphas, rendering, views, bias, self.weights, self.gamma, self.data_gamma,
                                  static_alphas)
            return terms, rendering['views']
        with torch.autocast(views.device.type, dtype=torch.bfloat16, enabled=self.amp):
            rendered = render_mpi(colors, alphas, kernels, grid, self.blur_method, self.pad_mode, cache=cache)
        rendered = rendered.float()
        weights = visibility_weights(alphas)
        aif = expected_value(weights, colors)
        guide = views.mean(1) if guide is None else guide
        terms = {
            'data': charbonnier(rendered - views, self.gamma).mean(),
            'aif_tv': edge_aware_tv(aif, guide, self.edge_sigma),
            'alpha_tv': sqrt_alpha_tv(alphas[:, 1:]),
            'entropy': collision_entropy(weights).mean(),
        }
        return terms, rendered

    def total(self, terms):
        """Total loss of :meth:`losses`' terms ('release' terms come weighted already)."""
        if self.objective == 'release':
            return sum(terms.values())
        return sum(self.weights[k] * v for k, v in terms.items())

    # ------------------------------------------------------------------ solve
    def check_frame(self, height, width):
        """Raises if the bank's kernel grid was calibrated on a frame of another size than the views'."""
        frame = getattr(self.bank, 'frame_size', None)
        if frame is not None and tuple(frame) != (height, width):
            grid = getattr(self.bank, 'grid', (1, 1))
            raise ValueError(f'The {grid[0]}x{grid[1]} kernel grid was calibrated on a {frame[0]}x{frame[1]} '
                             f'(height x width) frame, but the views are {height}x{width}: crop them to the '
                             "calibration's frame (e.g. the dataset's crop option) or fix dp_joint.kernels.frame_size.")

    def __call__(self, left, right, radius_range=None, callback=None):
        """Runs the optimisation.

        Args:
            left, right (Tensor): (1, C, H, W) observed views in linear intensity, at most 1 (e.g. divided by their
                joint maximum).
            radius_range (tuple[float, float] | None): Signed radius range (full-resolution pixels) of the layers;
                None estimates it from the views (:func:`cross_defocus`, :func:`estimate_radius_range`).
            callback (callable | None): Called after each step as ``callback(state)`` with a dict of ``level``,
                ``iteration``, ``params``, ``terms`` and ``radii`` (e.g. to record quality against iterations with
                :meth:`outputs`).

        Returns:
            dict: ``aif`` (1, C, H, W) in the views' units (post-filtered when ``post_filter`` is set),
            ``defocus`` (1, 1, H, W) expected radius in pixels, ``weights`` (1, N, 1, H, W), ``radii`` (N,),
            ``range`` (low, high), ``iters`` (iterations run per level), ``loss`` (final total) and ``seconds``
            (including the range search).
        """
        with heap_reuse(self.heap_reuse and left.device.type == 'cpu'):
            return self._solve(left, right, radius_range, callback)

    def _solve(self, left, right, radius_range, callback):
        start = time.perf_counter()
        views_full = torch.stack([left, right], 1).float()  # (1, 2, C, H, W)
        height, width = views_full.shape[-2:]
        self.check_frame(height, width)
        init_defocus = None
        if radius_range is None or self.init == 'cross':
            scale = self.search_scale
            small = _resize(views_full, (max(1, round(height * scale)), max(1, round(width * scale))))
            # radii tried every search step in full-resolution pixels, whatever the search resolution
            radius, confident = cross_defocus(
                small[:, 0],
                small[:, 1],
                self.bank,
                self.max_radius * scale,
                per_cell=self.cross_cells,
                **dict(self.search, step=self.search['step'] * scale))
            radius = radius / scale
            if radius_range is None:
                radius_range = estimate_radius_range(
                    radius, confident, one_sided=self.one_sided, include_focus=self.include_focus)
            if self.init == 'cross':
                init_defocus = fill_unconfident(radius, confident)
        radii = layer_radii(radius_range[0], radius_range[1], self.num_layers)
        mean = float(views_full.mean())
        params, iters, total, optimizer = None, [], float('nan'), None
        for level_idx, level in enumerate(self.schedule(max(abs(float(r)) for r in radius_range))):
            scale = float(level['scale'])
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            views = _resize(views_full, size)
            kernels = self.bank(radii * (size[1] / width)).to(views.device, views.dtype)
            if kernels.shape[0] == 1:
                kernels = kernels[0]
            bias = None
            if self.objective == 'release' and self.noise is not None:
                bias = noise_bias(kernels, mean, **self.noise) * (size[1] / width)**2
            if params is None:
                params = self.init_params(views, radii, init_defocus)
            else:
                previous, params = params, self._upsample(params, size)
            warm = self._carried_state(optimizer, previous, params) if optimizer and self.carry_adam else None
            report = None if callback is None else (lambda it, terms, level=level_idx: callback(
                dict(level=level, iteration=it, params=params, terms=terms, radii=radii)))
            context = dict(views=views, kernels=kernels, guide=views.mean(1), bias=bias, cache={})
            ran, total, optimizer = self._optimise(
                params,
                context,
                int(level['iters']),
                report,
                lr=level.get('lr'),
                warm=warm,
                alpha_lr=level.get('alpha_lr'))
            iters.append(ran)
        if tuple(params[1].shape[-2:]) != (height, width):
            params = self._upsample(params, (height, width))
        aif, defocus, weights = self.outputs(params, radii)
        aif = self.post_process(aif, views_full)
        return {
            'aif': aif,
            'defocus': defocus,
            'weights': weights,
            'radii': radii,
            'range': tuple(radius_range),
            'iters': iters,
            'loss': total,
            'seconds': time.perf_counter() - start
        }

    def schedule(self, max_radius):
        """The levels run for layers up to ``max_radius`` (full-resolution pixels): levels whose largest radius is
        below ``min_level_radius`` hand their iterations to the next level at equal pixel cost."""
        levels, carried = [], 0.0
        for i, level in enumerate(self.levels):
            scale, iters = float(level['scale']), int(level['iters'])
            last = i == len(self.levels) - 1
            if not last and max_radius * scale < self.min_level_radius:
                carried += iters * scale**2
                continue
            levels.append(dict(level, scale=scale, iters=iters + int(round(carried / scale**2))))
            carried = 0.0
        return levels

    def outputs(self, params, radii):
        """All-in-focus image (1, C, h, w), defocus map (1, 1, h, w) and layer visibility (1, N, 1, h, w) of
        the parameters, at their resolution (no post-filter)."""
        with torch.no_grad():
            colors, alphas = self.scene(params)
            weights = visibility_weights(alphas)
            return expected_value(weights, colors), expected_value(weights, radii.to(weights.device)), weights

    def post_process(self, aif, views):
        """The all-in-focus image through ``post_filter`` (the release's bilateral filter of the exposure-normalised
        image; ``views`` (1, 2, C, H, W) give the exposure), or unchanged without one."""
        if self.post_filter is None:
            return aif
        eps = float(exposure_factor(views))
        return bilateral_filter(eps * aif, **self.post_filter) / eps

    @staticmethod
    def _upsample(params, size):
        return [_resize(p.detach(), size).requires_grad_() for p in params]

    @staticmethod
    def _carried_state(optimizer, previous, params):
        """Adam's moments of the previous level's parameters, resized to the next level's: its first steps then scale
        with the gradients' history instead of moving every logit by the full learning rate. Gradients of a mean
        over pixels shrink with the pixel count, so the moments are rescaled by the ratio of the counts."""
        warm = []
        for old, new in zip(previous, params):
            state = optimizer.state.get(old)
            if not state:
                return None
            ratio = old[0, ..., 0, :, :].numel() / new[0, ..., 0, :, :].numel()
            warm.append({
                'step': state['step'].clone(),
                'exp_avg': _resize(state['exp_avg'], new.shape[-2:]) * ratio,
                'exp_avg_sq': _resize(state['exp_avg_sq'], new.shape[-2:]).clamp_min(0.0) * ratio**2
            })
        return warm

    def _optimise(self, params, context, iters, report, lr=None, warm=None, alpha_lr=None):
        """Adam on ``params`` in place for at most ``iters`` steps from ``lr`` (default the solver's) and the Adam
        state ``warm`` (one dict per parameter, or None), the alphas at ``alpha_lr`` times the rate (default the
        solver's; 0 freezes them: a cheaper step); returns (steps run, last total loss, the optimiser)."""
        lr = self.lr if lr is None else (float(lr[0]), float(lr[1]))
        alpha_lr = self.alpha_lr if alpha_lr is None else float(alpha_lr)
        factors = [1.0] + [alpha_lr] * (len(params) - 1)  # colours, then alphas
        if alpha_lr == 0 and self.objective == 'release':
            params[1].requires_grad_(False)
            context = dict(context, static_alphas=True)
        optimizer = torch.optim.Adam([{'params': [p], 'factor': f} for p, f in zip(params, factors) if f > 0], lr=lr[0])
        for p, state in zip(params, warm or []):
            if p.requires_grad:
                optimizer.state[p].update(state)
        decay = math.log(lr[1] / lr[0])
        smooth, history, total = None, [], float('nan')
        for it in range(iters):
            for group in optimizer.param_groups:
                group['lr'] = group['factor'] * lr[0] * math.exp(decay * it / max(iters - 1, 1))
            optimizer.zero_grad(set_to_none=True)
            terms, _ = self.losses(*self.scene(params), **context)
            loss = self.total(terms)
            loss.backward()
            for p in params:  # as the release: a non-finite gradient entry is dropped, not propagated
                if p.grad is not None:
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
                if before - smooth < self.early_stop['rel_tol'] * abs(before):
                    return it + 1, total, optimizer
        return iters, total, optimizer
