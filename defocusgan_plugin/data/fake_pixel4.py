"""A FAKE dual-pixel set in the exact layout of the Pixel-4 release of Xin et al. (ICCV 2021), for tests and demos.

Nothing here is real data: the scenes are scikit-image photos and textures on a background plane and photo cut-outs at
random depths (:func:`fake_scene`), rendered with the plugin's layered renderer through a synthetic, spatially varying
6x8 calibration that imitates the released one (disk-equivalent kernel radii ~11.5-14 px at the calibration defocus,
a band-stop-like profile, the left kernel's centroid ~4 px left of the right one's, the left view 1.04-1.36x brighter
than the right in the white sheets).

Geometry. The default mirrors the real files: 2016x1512 frames whose centre 1008x1344 crop holds the 6x8 grid of
168-px cells that the calibration belongs to, kernels of 61x61 px. A smaller ``crop`` (height, width) scales
everything with ``f = width / 1344``: the frame is 1.5x the crop, cells are ``crop / grid``, kernels
``2 * round(30 f) + 1`` px with radii ``f`` times the full-size ones, textures resampled by ``f``, so a tiny set is the
same kind of scene at a lower resolution. Scenes lie on one side of the focal plane, as the release's: the kernel of
a pixel is its cell's calibration kernel magnified by a scale in ``[0.1, 1.6]`` (the release's layer-scale range).

Files (``out_dir``): ``NNN_left.png`` / ``NNN_right.png`` (16-bit raw, black level 1024, 14-bit white level 16383),
``calibration/blur_kernels_{left,right}.npy`` (48, K, K), ``calibration/white_sheet_{left,right}.png``,
``gt_all_in_focus_im/NNN_gt.png`` (crop size, value / 65535 = (raw - 1024) / 16383 of the noise-free sharp view) and
``gt_defocus_map/NNN_gt.png`` (crop size, value / 65535 = scale / 2; 0 = no ground truth, near depth edges) and
``fake_set.json`` (how the set was made: geometry, noise, mismatch and its per-cell scale errors).

Calibration mismatch (``mismatch``, off by default). By default the views are rendered with exactly the kernels the
calibration files hold (resampled by the scale, as the solver resamples them): the solver's forward model is perfect.
A real calibration never is, so ``mismatch`` renders with other PSFs (:class:`TrueKernels`): a few percent of scale
error per calibration cell, a radius that varies within the cells (a finer grid), a shape that changes with depth
(the darker centre fills in and the DP split softens away from the calibrated defocus, the optics' own blur does not
scale with the defocus), soft aperture edges, and phone-level sensor noise.
"""
import cv2
import math
import numpy as np
import os
import skimage.color
import skimage.data
import torch
import torch.nn.functional as F

from defocusgan_plugin.data.dp_synthesis import srgb_to_linear
from defocusgan_plugin.ops.kernel_bank import ResampledKernelBank, resample_kernels
from defocusgan_plugin.ops.psf import dp_psf
from defocusgan_plugin.ops.render import (blur_layers, blur_layers_grid, exclusive_front_transmittance, tent_weights,
                                          weights_to_alphas)

BLACK_LEVEL, WHITE_LEVEL = 1024, 2**14 - 1
FULL_CROP, GRID, FULL_KERNEL = (1008, 1344), (6, 8), 61
CUTOFF, BETA, RAMP_WIDTH = 2.5, 0.1, 1.5  # Butterworth profile and DP split of the fake calibration's kernels
SCALE_RANGE = (0.1, 1.6)  # kernel scales relative to the calibration (the release's hand-tuned layer ranges)
CALIBRATION_NOISE = (4e-5, 1e-3)  # (shot, read) of the default set: nearly noise-free views
# Phone-level raw noise at full size, variance = shot * x + read^2 in white-level units: the centre of the shot-noise
# range that Brooks et al. (CVPR 2019, "Unprocessing images") fit to real raw captures (log-uniform 1e-4 .. 1.2e-2)
# and the read noise their fit gives for it (std ~1e-3). A smaller set bins it (variance x factor^2): it is the
# full-size capture seen at a lower resolution, as its blur is.
PHONE_NOISE = (1e-3, 1e-3)
# What ``mismatch=True`` renders with (see TrueKernels; 'phone': PHONE_NOISE, binned)
MISMATCH = dict(scale_error=0.04, shape_change=1.0, soft_edge=0.08, subgrid=2, noise='phone')
PHOTOS = ('astronaut', 'coffee', 'rocket', 'chelsea', 'camera', 'coins', 'hubble_deep_field')
TEXTURES = ('gravel', 'grass', 'brick')


def fake_geometry(crop=FULL_CROP, grid=GRID):
    """Frame, crop box, kernel size and size factor of a fake set whose centre crop is ``crop`` (height, width).

    Returns:
        dict: ``frame`` (H, W), ``crop`` (h, w), ``top``, ``left``, ``grid``, ``kernel_size`` and ``factor`` (width /
        1344).
    """
    h, w = (int(v) for v in crop)
    if h % grid[0] or w % grid[1]:
        raise ValueError(f'The crop {h}x{w} must split into the {grid[0]}x{grid[1]} grid evenly.')
    frame = (int(round(1.5 * h)), int(round(1.5 * w)))
    factor = w / FULL_CROP[1]
    kernel = 2 * max(1, round(FULL_KERNEL // 2 * factor)) + 1
    return dict(
        frame=frame,
        crop=(h, w),
        top=(frame[0] - h) // 2,
        left=(frame[1] - w) // 2,
        grid=tuple(grid),
        kernel_size=kernel,
        factor=factor)


def fake_calibration(geometry, ramp_width=RAMP_WIDTH):
    """Synthetic spatially varying DP kernels, one per grid cell: (2, G, K, K) left/right, each summing to 1.

    Radii grow from ~11.5 px at the centre to ~14 px at the corners (times the size factor); the kernels are the
    plugin's Butterworth DP kernels at a negative radius (the left kernel's mass on the left, as the released
    calibration), shifted by about one (scaled) pixel to the right.
    """
    f, size = geometry['factor'], geometry['kernel_size']
    radius = _model_radius(geometry['grid'], f)
    kernels = dp_psf(
        -torch.from_numpy(radius.reshape(-1)).float(),
        size,
        profile='butterworth',
        order=3,
        cutoff=CUTOFF,
        beta=BETA,
        sigma=_optics_sigma(f),
        ramp_width=ramp_width)
    return _shift_right(kernels, float(round(f)))


def _optics_sigma(factor):
    """Std (pixels) of the optics' own blur in the calibration's kernels."""
    return 0.5 * max(factor, 0.5)


def _model_radius(grid, factor):
    """Disk radius (pixels) of the fake lens at the calibrated defocus, at the centres of a ``grid`` of cells over
    the crop: 11.5 px (times ``factor``) at the centre .. 14 px in the corners."""
    rows, cols = grid
    yy, xx = np.meshgrid((np.arange(rows) + 0.5) / rows - 0.5, (np.arange(cols) + 0.5) / cols - 0.5, indexing='ij')
    return factor * (11.5 + 2.5 * (4 * (xx**2 + yy**2) / 2.0))


def _shift_right(kernels, shift):
    """Kernels (..., K, K) moved ``shift`` (>= 0, fractional: linear interpolation) pixels to the right, renormalised;
    what leaves the window is dropped."""
    whole, frac = int(math.floor(shift)), shift - math.floor(shift)
    out = torch.zeros_like(kernels)
    for offset, weight in ((whole, 1.0 - frac), (whole + 1, frac)):
        if weight > 0 and offset < kernels.shape[-1]:
            out[..., offset:] += weight * kernels[..., :kernels.shape[-1] - offset]
    return out / out.sum((-2, -1), keepdim=True).clamp_min(1e-12)


def _fit_window(kernels, size):
    """(..., K, K) kernels zero-padded, or cut and renormalised (as the solver's bank cuts them), to ``size``."""
    pad = (size - kernels.shape[-1]) // 2
    if pad >= 0:
        return F.pad(kernels, (pad, pad, pad, pad))
    kernels = kernels[..., -pad:pad, -pad:pad]
    return kernels / kernels.sum((-2, -1), keepdim=True).clamp_min(1e-12)


class TrueKernels:
    """The fake camera's true DP kernels when they differ from its calibration (the ``mismatch`` option).

    Called like a kernel bank with positive kernel scales (1 = the calibrated defocus), it gives one left/right
    kernel pair per cell of a grid ``subgrid`` times finer than the calibration's. The solver resamples the
    calibration kernel of a cell by the layer's scale ``s``; the true kernel of a (finer) cell at ``s`` is instead a
    kernel built like the calibration but

    * at the lens model's radius at the finer cell's centre (the calibration holds its own cell's centre: position
      dependence), resampled by ``s (1 + e)``, ``e`` the scale error of the calibration cell, drawn once per set
      (normal, std ``scale_error``, clipped at 2.5 std);
    * with a shape that changes with depth, of strength ``a = shape_change``: the Butterworth profile's centre floor
      rises and the DP split softens away from the calibrated defocus (``beta = 0.1 + 0.35 a |1 - s|``, ramp width
      ``1.5 (1 + 0.25 a (1 - s))``), and the optics' own blur scales as ``s^(1 - a)`` (``a = 1``: it keeps its size
      in pixels at every depth, where resampling the calibration scales it with ``s``);
    * with soft aperture edges: a Gaussian of std ``soft_edge`` times the radius.

    With every amount 0 and ``subgrid`` 1 the true kernels are the resampled calibration, at every scale.

    Args:
        geometry (dict): :func:`fake_geometry`.
        scale_error (float): Std of the per-cell relative scale error.
        shape_change (float): Strength ``a`` of the depth-dependent shape change (0: none).
        soft_edge (float): Std of the aperture-edge softening, as a fraction of the radius.
        subgrid (int): The true kernels vary on a grid this many times finer than the calibration's.
        rng (np.random.Generator | None): Source of the scale errors (None: no error).
    """

    def __init__(self, geometry, scale_error=0.0, shape_change=0.0, soft_edge=0.0, subgrid=1, rng=None):
        rows, cols = geometry['grid']
        subgrid = int(subgrid)
        if subgrid < 1 or min(scale_error, shape_change, soft_edge) < 0:
            raise ValueError(f'Mismatch amounts must be >= 0 and subgrid >= 1, got scale_error {scale_error}, '
                             f'shape_change {shape_change}, soft_edge {soft_edge}, subgrid {subgrid}.')
        self.factor, self.size = geometry['factor'], geometry['kernel_size']
        self.shape_change, self.soft_edge = float(shape_change), float(soft_edge)
        errors = np.zeros((rows, cols))
        if scale_error > 0 and rng is not None:
            errors = np.clip(rng.standard_normal((rows, cols)), -2.5, 2.5) * scale_error
        self.scale_errors = errors  # (rows, cols), relative, per calibration cell
        self.grid = (rows * subgrid, cols * subgrid)
        self.radius = torch.from_numpy(_model_radius(self.grid, self.factor).reshape(-1)).float()
        self.gain = torch.from_numpy(np.kron(1.0 + errors, np.ones((subgrid, subgrid))).reshape(-1)).float()
        self.max_size = self.size

    def base(self, scale):
        """(2, G, K, K) kernels at the calibrated defocus built with the shape of ``scale`` (before resampling)."""
        a, f = self.shape_change, self.factor
        sigma = math.sqrt((_optics_sigma(f) * scale**-a)**2 + (self.soft_edge * float(self.radius.mean()))**2)
        kernels = dp_psf(
            -self.radius,
            self.size,
            profile='butterworth',
            order=3,
            cutoff=CUTOFF,
            beta=min(BETA + 0.35 * a * abs(1.0 - scale), 0.95),
            sigma=sigma,
            ramp_width=max(RAMP_WIDTH * (1.0 + 0.25 * a * (1.0 - scale)), 0.5))
        return _shift_right(kernels, float(round(f)))

    def __call__(self, scales):
        """Kernels (G, 2, N, K, K) of positive scales (N,), G the cells of ``grid``."""
        scales = torch.as_tensor(scales, dtype=torch.float32).reshape(-1)
        if bool((scales <= 0).any()):
            raise ValueError('TrueKernels renders scenes behind the focal plane only (scales > 0).')
        out = []
        for s in scales.tolist():
            base = self.base(s).transpose(0, 1)  # (G, 2, K, K)
            cells = [resample_kernels(k, s * float(g)) for k, g in zip(base, self.gain)]
            out.append(torch.stack([_fit_window(k, self.size) for k in cells]))
        return torch.stack(out, 2)  # (G, 2, N, K, K)

    def averaged(self):
        """One kernel set for the whole image (the mean radius, no scale error), for the frame around the crop."""
        flat = TrueKernels.__new__(TrueKernels)
        flat.__dict__.update(self.__dict__)
        flat.radius, flat.gain, flat.grid = self.radius.mean().reshape(1), torch.ones(1), (1, 1)
        return flat


def _resize(img, size, interpolation=None):
    if img.shape[:2] == tuple(size):
        return img
    if interpolation is None:
        interpolation = cv2.INTER_AREA if size[0] < img.shape[0] else cv2.INTER_CUBIC
    return cv2.resize(img, (size[1], size[0]), interpolation=interpolation)


def _tiled_texture(name, size, factor, rng):
    """A scikit-image texture at ``factor`` of its native resolution, mirror-tiled to ``size``, zero mean, unit std."""
    import skimage.data
    tex = getattr(skimage.data, name)().astype(np.float32) / 255.0
    if factor != 1:
        tex = _resize(tex, (max(8, round(tex.shape[0] * factor)), max(8, round(tex.shape[1] * factor))))
    reps = (math.ceil(size[0] / tex.shape[0]) + 1, math.ceil(size[1] / tex.shape[1]) + 1)
    tiled = np.tile(
        np.concatenate([np.concatenate([tex, tex[:, ::-1]], 1)] * 2, 0)[:2 * tex.shape[0]], (reps[0], reps[1]))
    y0, x0 = rng.integers(0, tex.shape[0]), rng.integers(0, tex.shape[1])
    tiled = tiled[y0:y0 + size[0], x0:x0 + size[1]]
    return (tiled - tiled.mean()) / max(float(tiled.std()), 1e-6)


def _grey_photo(name, size):
    """A scikit-image photo as linear grey (H, W), resized to ``size``."""
    photo = getattr(skimage.data, name)().astype(np.float32) / 255.0
    if photo.ndim == 3:
        photo = skimage.color.rgb2gray(photo[..., :3]).astype(np.float32)
    return srgb_to_linear(_resize(photo, size).clip(0, 1))


def _textured(photo, geometry, rng, amount=0.35):
    """A photo (low frequencies) times a fine texture at the set's resolution (detail to recover)."""
    texture = _tiled_texture(TEXTURES[int(rng.integers(len(TEXTURES)))], photo.shape, geometry['factor'], rng)
    return photo * np.clip(1.0 + amount * texture, 0.2, 2.0)


def fake_scene(geometry, rng, objects=(3, 6), max_scale=SCALE_RANGE[1]):
    """A sharp linear grey frame (H, W) in [0, 0.8] and its kernel-scale map (H, W) in ``[0.1, max_scale]``.

    A textured background plane, slanted in depth, far from the focal plane (scale ``max_scale - 0.3`` ..
    ``max_scale``), and ``objects`` (a random count in the range) textured photo cut-outs (soft-edged ellipses) at
    random depths in front of it, the nearest close to the focal plane; every surface is a photo times a fine
    texture, so depth edges are image edges and detail is everywhere, as in a photograph. Nearer = sharper
    (one-sided, as the release's scenes).
    """
    height, width = geometry['frame']
    near, far = rng.uniform(0.1, 0.4), rng.uniform(max_scale - 0.3, max_scale)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    sharp = _textured(_grey_photo(PHOTOS[int(rng.integers(len(PHOTOS)))], (height, width)), geometry, rng)
    scale = far - 0.25 * (far - near) * (yy / height) * rng.uniform(0.0, 1.0)  # slanted plane
    count = int(rng.integers(objects[0], objects[1] + 1))
    depths = np.sort(rng.uniform(near, far - 0.3, count))[::-1]  # far first, pasted back to front
    depths[-1] = near
    for depth in depths:
        ry, rx = rng.uniform(0.12, 0.3) * height, rng.uniform(0.08, 0.22) * width
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width  # mostly inside the crop
        angle = rng.uniform(0, np.pi)
        u = ((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) / rx
        v = (-(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)) / ry
        mask = (u * u + v * v) <= 1.0
        content = _textured(_grey_photo(PHOTOS[int(rng.integers(len(PHOTOS)))], (height, width)), geometry, rng)
        sharp = np.where(mask, content * rng.uniform(0.6, 1.4), sharp)
        scale = np.where(mask, depth, scale)
    sharp = (0.03 + sharp / max(float(np.quantile(sharp, 0.999)), 1e-6) * 0.7).clip(0.0, 0.8)
    return sharp.astype(np.float32), scale.astype(np.float32)


def _render_views(sharp, scale, bank, radius_ref, pad_mode, grid=False, step=0.06, chunk=3):
    """Depth-ordered 'over' rendering of a sharp image with the kernels of a per-pixel scale map.

    Layers every ``step`` of scale (tent split), blurred in chunks of ``chunk`` layers. ``grid``: the kernels vary
    over the cells of the bank's grid and ``sharp`` / ``scale`` carry a halo of half a kernel around the gridded
    area (``pad_mode`` None), else ``pad_mode`` pads the border.

    Returns:
        ndarray: (2, h, w) left/right views.
    """
    top, bottom = float(scale.max()), float(scale.min())
    num = max(2, math.ceil((top - bottom) / step) + 1)
    scales = torch.linspace(top, bottom, num)  # back (largest blur) first
    values = torch.from_numpy(scale)[None, None]
    weights = tent_weights(values, top, (bottom - top) / (num - 1), num)  # (1, N, 1, H, W)
    alphas = weights_to_alphas(weights)
    colour = torch.from_numpy(sharp)[None, None, None]
    layers = torch.cat([colour * alphas, alphas], 2)  # (1, N, 2, H, W)
    kernels = bank(scales * radius_ref)  # (G, 2, N, K, K)
    if grid:  # the halo is half the calibration window: pad smaller (shrunk) kernels to it
        pad = (bank.max_size - kernels.shape[-1]) // 2
        kernels = F.pad(kernels, (pad, pad, pad, pad))
    out = []
    with torch.no_grad():
        for start in range(0, num, chunk):
            part, ker = layers[:, start:start + chunk].unsqueeze(1), kernels[:, :, start:start + chunk]
            if grid:
                out.append(blur_layers_grid(part, ker, bank.grid, 'fft', pad_mode))
            else:
                out.append(blur_layers(part, ker[0], 'fft', pad_mode))
    blurred = torch.cat(out, 2)[0]  # (2, N, 2, h, w)
    premult, alpha = blurred[:, :, :1], blurred[:, :, 1:].clamp(0, 1)
    trans = exclusive_front_transmittance(alpha)
    views = (premult * trans).sum(1) / (alpha * trans).sum(1).clamp_min(1e-6)
    return views[:, 0].numpy()


def fake_pixel4_scene(geometry, kernels, rng, noise=CALIBRATION_NOISE, true_kernels=None, max_scale=SCALE_RANGE[1]):
    """Renders one fake scene: raw left/right frames (uint16), the GT all-in-focus crop and the GT scale map.

    Args:
        geometry (dict): :func:`fake_geometry`.
        kernels (Tensor): (2, G, K, K) calibration (:func:`fake_calibration`).
        rng (np.random.Generator): Random source.
        noise (tuple[float, float]): (shot, read) noise of the normalised views: variance = shot * x + read^2.
        true_kernels (TrueKernels | None): Render with these instead of the calibration (a calibration mismatch).
        max_scale (float): Largest kernel scale of the scene (see :func:`fake_scene`).

    Returns:
        dict: ``left``, ``right`` (uint16 frames), ``gt`` (float crop, GT units), ``scale`` (float crop), plus the
        white-sheet model ``ratio`` and ``falloff`` (frames).
    """
    frame, (h, w), top, left = geometry['frame'], geometry['crop'], geometry['top'], geometry['left']
    sharp, scale = fake_scene(geometry, rng, max_scale=max_scale)
    ratio, falloff = white_sheet_model(frame)
    sharp = sharp * falloff
    bank = true_kernels or ResampledKernelBank(
        kernels.transpose(0, 1)[None], [1.0], geometry['grid'], max_size=kernels.shape[-1])
    # the frame with the cell-averaged kernels, then the calibrated crop with its true surroundings as halo
    views = _render_views(sharp, scale, bank.averaged(), 1.0, 'reflect')
    half = bank.max_size // 2
    rows = slice(top - half, top + h + half)
    cols = slice(left - half, left + w + half)
    views[:, top:top + h, left:left + w] = _render_views(
        sharp[rows, cols], scale[rows, cols], bank, 1.0, None, grid=True)
    views[1] = views[1] / ratio  # the right view is darker (vignetting)
    shot, read = noise
    views = views + rng.standard_normal(views.shape).astype(np.float32) * np.sqrt(shot * views.clip(0) + read**2)
    raw = np.clip(np.round(BLACK_LEVEL + views * WHITE_LEVEL), 0, WHITE_LEVEL).astype(np.uint16)
    crop = (slice(top, top + h), slice(left, left + w))
    return dict(left=raw[0], right=raw[1], gt=sharp[crop], scale=scale[crop], ratio=ratio, falloff=falloff)


def white_sheet_model(frame):
    """Vignetting of the fake camera: ``ratio`` = left / right brightness (1.04 at the left edge .. 1.36 at the
    right) and the common ``falloff`` of both views (1 at the centre, 0.75 in the corners); (H, W) each."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, frame[0]), np.linspace(-1, 1, frame[1]), indexing='ij')
    ratio = 1.04 + 0.32 * ((xx + 1) / 2)**1.5
    falloff = 1.0 - 0.125 * (xx**2 + yy**2)
    return ratio.astype(np.float32), falloff.astype(np.float32)


def resolve_mismatch(mismatch):
    """The mismatch amounts of a ``mismatch`` option: None/False -> None, True -> ``MISMATCH``, a dict -> ``MISMATCH``
    updated with it (unknown keys are an error)."""
    if not mismatch:
        return None
    if mismatch is True:
        return dict(MISMATCH)
    unknown = set(mismatch) - set(MISMATCH)
    if unknown:
        raise ValueError(f'Unknown mismatch option(s) {sorted(unknown)}; use {sorted(MISMATCH)}.')
    return dict(MISMATCH, **mismatch)


def write_fake_pixel4(out_dir,
                      num_scenes=3,
                      crop=FULL_CROP,
                      seed=0,
                      noise=None,
                      mismatch=None,
                      max_scale=SCALE_RANGE[1]):
    """Writes a fake set in the release's layout (see the module docstring).

    Args:
        out_dir (str): Output folder (created).
        num_scenes (int): Scenes ``001`` .. ``num_scenes``.
        crop (tuple[int, int]): (height, width) of the calibrated centre crop; default the Pixel 4's 1008x1344 (in a
            1512x2016 frame). Must split evenly into the 6x8 grid.
        seed (int): Seed of everything random; the output is deterministic.
        noise (tuple[float, float] | str | None): (shot, read) noise, see :func:`fake_pixel4_scene`; 'phone':
            ``PHONE_NOISE`` binned to the crop (variance times ``factor^2``); None: the mismatch's ``noise`` with a
            mismatch, else ``CALIBRATION_NOISE``.
        mismatch (bool | dict | None): Render with kernels other than the calibration's (:class:`TrueKernels`):
            True for ``MISMATCH``, a dict to change some of its amounts (``scale_error``, ``shape_change``,
            ``soft_edge``, ``subgrid``, ``noise``); None/False: the calibration's own kernels (default).
        max_scale (float): Largest kernel scale of the scenes (the calibration's radius, ~12.6 px at full size,
            times 1.6 by default; 1.9 for layers up to ~24 px).

    Returns:
        dict: The geometry (:func:`fake_geometry`), the calibration's reference radius in pixels, the noise and the
        mismatch (with its per-cell ``scale_errors``), as also written to ``fake_set.json``.
    """
    import json

    from defocusgan_plugin.utils.img_io import atomic_write_bytes
    geometry = fake_geometry(crop)
    kernels = fake_calibration(geometry)
    amounts = resolve_mismatch(mismatch)
    noise = noise or (amounts['noise'] if amounts else CALIBRATION_NOISE)
    if noise == 'phone':
        noise = (PHONE_NOISE[0] * geometry['factor']**2, PHONE_NOISE[1] * geometry['factor'])
    noise = tuple(float(v) for v in noise)
    true_kernels = None
    if amounts:
        true_kernels = TrueKernels(geometry, amounts['scale_error'], amounts['shape_change'], amounts['soft_edge'],
                                   amounts['subgrid'], np.random.default_rng([seed, 10**6]))
        amounts['scale_errors'] = np.round(true_kernels.scale_errors, 5).tolist()
    calib = os.path.join(out_dir, 'calibration')
    os.makedirs(calib, exist_ok=True)
    for gt_dir in ('gt_all_in_focus_im', 'gt_defocus_map'):
        os.makedirs(os.path.join(out_dir, gt_dir), exist_ok=True)
    for idx, side in enumerate(('left', 'right')):
        np.save(os.path.join(calib, f'blur_kernels_{side}.npy'), kernels[idx].numpy().astype(np.float32))

    def write(path, array):
        ok, buf = cv2.imencode('.png', array)
        if not ok:
            raise ValueError(f'Cannot encode {path}.')
        atomic_write_bytes(path, buf.tobytes())

    rng = np.random.default_rng(seed)
    ratio, falloff = white_sheet_model(geometry['frame'])
    white = 0.7 * falloff * (1.0 + 0.002 * rng.standard_normal(falloff.shape).astype(np.float32))
    for side, sheet in (('left', white), ('right', white / ratio)):
        write(
            os.path.join(calib, f'white_sheet_{side}.png'),
            np.clip(np.round(BLACK_LEVEL + sheet * WHITE_LEVEL), 0, WHITE_LEVEL).astype(np.uint16))
    for i in range(num_scenes):
        scene = fake_pixel4_scene(geometry, kernels, np.random.default_rng([seed, i]), noise, true_kernels, max_scale)
        name = f'{i + 1:03d}'
        write(os.path.join(out_dir, f'{name}_left.png'), scene['left'])
        write(os.path.join(out_dir, f'{name}_right.png'), scene['right'])
        write(
            os.path.join(out_dir, 'gt_all_in_focus_im', f'{name}_gt.png'),
            np.round(scene['gt'].clip(0, 1) * 65535).astype(np.uint16))
        write(
            os.path.join(out_dir, 'gt_defocus_map', f'{name}_gt.png'),
            defocus_ground_truth(scene['scale'], geometry['factor']))
    radius = float(
        ResampledKernelBank.from_npy(
            os.path.join(calib, 'blur_kernels_left.npy'),
            os.path.join(calib, 'blur_kernels_right.npy'),
            grid=list(GRID)).radii[0])
    info = dict(
        geometry,
        radius=radius,
        num_scenes=num_scenes,
        seed=seed,
        noise=list(noise),
        mismatch=amounts,
        max_scale=max_scale)
    atomic_write_bytes(os.path.join(out_dir, 'fake_set.json'), json.dumps(info, indent=1).encode())
    return info


def defocus_ground_truth(scale, factor):
    """16-bit GT defocus map: value / 65535 = scale / 2, 0 (no ground truth) within ~4 scaled px of depth edges."""
    from scipy import ndimage
    size = 2 * max(1, round(4 * factor)) + 1
    spread = ndimage.maximum_filter(scale, size) - ndimage.minimum_filter(scale, size)
    out = np.round(scale / 2 * 65535).clip(1, 65535)
    out[spread > 0.2] = 0
    return out.astype(np.uint16)
