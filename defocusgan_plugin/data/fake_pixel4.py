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
``gt_defocus_map/NNN_gt.png`` (crop size, value / 65535 = scale / 2; 0 = no ground truth, near depth edges).
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
from defocusgan_plugin.ops.kernel_bank import ResampledKernelBank
from defocusgan_plugin.ops.psf import dp_psf
from defocusgan_plugin.ops.render import (blur_layers, blur_layers_grid, exclusive_front_transmittance, tent_weights,
                                          weights_to_alphas)

BLACK_LEVEL, WHITE_LEVEL = 1024, 2**14 - 1
FULL_CROP, GRID, FULL_KERNEL = (1008, 1344), (6, 8), 61
SCALE_RANGE = (0.1, 1.6)  # kernel scales relative to the calibration (the release's hand-tuned layer ranges)
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


def fake_calibration(geometry, ramp_width=1.5):
    """Synthetic spatially varying DP kernels, one per grid cell: (2, G, K, K) left/right, each summing to 1.

    Radii grow from ~11.5 px at the centre to ~14 px at the corners (times the size factor); the kernels are the
    plugin's Butterworth DP kernels at a negative radius (the left kernel's mass on the left, as the released
    calibration), shifted by about one (scaled) pixel to the right.
    """
    rows, cols = geometry['grid']
    f, size = geometry['factor'], geometry['kernel_size']
    yy, xx = np.meshgrid((np.arange(rows) + 0.5) / rows - 0.5, (np.arange(cols) + 0.5) / cols - 0.5, indexing='ij')
    radius = f * (11.5 + 2.5 * (4 * (xx**2 + yy**2) / 2.0))  # 11.5 at the centre .. 14 at the corners
    kernels = dp_psf(
        -torch.from_numpy(radius.reshape(-1)).float(),
        size,
        profile='butterworth',
        order=3,
        cutoff=2.5,
        beta=0.1,
        sigma=0.5 * max(f, 0.5),
        ramp_width=ramp_width)
    shift = int(round(f))
    if shift:
        kernels = torch.roll(kernels, shift, dims=-1)
        kernels[..., :shift] = 0
    return kernels / kernels.sum((-2, -1), keepdim=True)


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


def fake_scene(geometry, rng, objects=(3, 6)):
    """A sharp linear grey frame (H, W) in [0, 0.8] and its kernel-scale map (H, W) in ``SCALE_RANGE``.

    A textured background plane, slanted in depth, far from the focal plane, and ``objects`` (a random count in the
    range) textured photo cut-outs (soft-edged ellipses) at random depths in front of it, the nearest close to the
    focal plane; every surface is a photo times a fine texture, so depth edges are image edges and detail is
    everywhere, as in a photograph. Nearer = sharper (one-sided, as the release's scenes).
    """
    height, width = geometry['frame']
    near, far = rng.uniform(0.1, 0.4), rng.uniform(1.3, SCALE_RANGE[1])
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


def fake_pixel4_scene(geometry, kernels, rng, noise=(4e-5, 1e-3)):
    """Renders one fake scene: raw left/right frames (uint16), the GT all-in-focus crop and the GT scale map.

    Args:
        geometry (dict): :func:`fake_geometry`.
        kernels (Tensor): (2, G, K, K) calibration (:func:`fake_calibration`).
        rng (np.random.Generator): Random source.
        noise (tuple[float, float]): (shot, read) noise of the normalised views: variance = shot * x + read^2.

    Returns:
        dict: ``left``, ``right`` (uint16 frames), ``gt`` (float crop, GT units), ``scale`` (float crop), plus the
        white-sheet model ``ratio`` and ``falloff`` (frames).
    """
    frame, (h, w), top, left = geometry['frame'], geometry['crop'], geometry['top'], geometry['left']
    sharp, scale = fake_scene(geometry, rng)
    ratio, falloff = white_sheet_model(frame)
    sharp = sharp * falloff
    bank = ResampledKernelBank(kernels.transpose(0, 1)[None], [1.0], geometry['grid'], max_size=kernels.shape[-1])
    # the frame with the cell-averaged kernels, then the calibrated crop with its true surroundings as halo
    views = _render_views(sharp, scale, bank.averaged(), 1.0, 'reflect')
    half = kernels.shape[-1] // 2
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


def write_fake_pixel4(out_dir, num_scenes=3, crop=FULL_CROP, seed=0, noise=(4e-5, 1e-3)):
    """Writes a fake set in the release's layout (see the module docstring).

    Args:
        out_dir (str): Output folder (created).
        num_scenes (int): Scenes ``001`` .. ``num_scenes``.
        crop (tuple[int, int]): (height, width) of the calibrated centre crop; default the Pixel 4's 1008x1344 (in a
            1512x2016 frame). Must split evenly into the 6x8 grid.
        seed (int): Seed of everything random; the output is deterministic.
        noise (tuple[float, float]): (shot, read) noise, see :func:`fake_pixel4_scene`.

    Returns:
        dict: The geometry (:func:`fake_geometry`) and the calibration's reference radius in pixels.
    """
    from defocusgan_plugin.utils.img_io import atomic_write_bytes
    geometry = fake_geometry(crop)
    kernels = fake_calibration(geometry)
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
        scene = fake_pixel4_scene(geometry, kernels, np.random.default_rng([seed, i]), noise)
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
    return dict(geometry, radius=radius)


def defocus_ground_truth(scale, factor):
    """16-bit GT defocus map: value / 65535 = scale / 2, 0 (no ground truth) within ~4 scaled px of depth edges."""
    from scipy import ndimage
    size = 2 * max(1, round(4 * factor)) + 1
    spread = ndimage.maximum_filter(scale, size) - ndimage.minimum_filter(scale, size)
    out = np.round(scale / 2 * 65535).clip(1, 65535)
    out[spread > 0.2] = 0
    return out.astype(np.uint16)
