"""Synthetic dual-pixel image formation and the embedded scenes that need no download.

Image formation (RDPD-style, Abuolaim et al. ICCV 2021), in linear light:

1. signed CoC from inverse depth with the thin-lens law (:func:`defocusgan_plugin.ops.coc_from_inverse_depth`),
2. layered, depth-ordered 'over' rendering of the sharp image with left/right DP PSFs
   (:func:`defocusgan_plugin.ops.render_layered`, :func:`defocusgan_plugin.ops.dp_psf`),
3. heteroscedastic sensor noise on each view (shot + read), then the combined image ``C = (L + R) / 2``,
4. back to sRGB.

Embedded scenes come with scikit-image: the Middlebury 2014 motorcycle (real disparity, i.e. real inverse depth) and
bundled colour photos with a procedural inverse depth (a tilted ground plane plus superpixel objects, so depth edges
follow image edges).
"""
import math
import numpy as np
import torch

from defocusgan_plugin.ops import coc_from_inverse_depth, dp_psf, kernel_size_for, render_layered
from defocusgan_plugin.ops.filters import fill_invalid

# scikit-image sample photos used with procedural depth (all ship with the package; no download).
PROCEDURAL_PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket')
DEFAULT_PSF = dict(profile='butterworth', order=3, cutoff=2.5, beta=0.1, sigma=0.5, ramp_width=1.0)


def srgb_to_linear(x):
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055)**2.4).astype(np.float32)


def linear_to_srgb(x):
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(np.float32)


def _normalise01(x):
    lo, hi = float(x.min()), float(x.max())
    return ((x - lo) / max(hi - lo, 1e-6)).astype(np.float32)


def procedural_inverse_depth(image, rng, n_segments=24):
    """Plausible inverse depth for a photo: tilted ground plane plus nearer superpixel 'objects'.

    Args:
        image (ndarray): HWC RGB float in [0, 1].
        rng (np.random.Generator): Random source.
        n_segments (int): SLIC superpixels to draw objects from.

    Returns:
        ndarray: HW float32 inverse depth in [0, 1] (1 = nearest).
    """
    from skimage.segmentation import slic
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    plane = 0.6 * yy / h + rng.uniform(-0.2, 0.2) * xx / w  # ground nearer towards the bottom
    labels = slic(image, n_segments=n_segments, compactness=20, start_label=0, channel_axis=-1)
    inv = plane.copy()
    for label in np.unique(labels):
        if rng.random() < 0.35:
            mask = labels == label
            level = float(plane[mask].mean()) + rng.uniform(0.15, 0.6)
            inv[mask] = np.maximum(inv[mask], level)
    return _normalise01(inv)


def _resize(img, scale):
    import cv2
    if scale == 1:
        return img
    h, w = img.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def embedded_scenes(max_side=512, seed=0):
    """Sharp images with inverse depth, all from scikit-image's bundled data.

    Args:
        max_side (int | None): Downscale so the longer side is at most this. None keeps the native size.
        seed (int): Seed of the procedural depth.

    Returns:
        list[dict]: ``name``, ``image`` (HWC RGB float32 [0, 1]), ``inv_depth`` (HW float32 [0, 1]) and ``depth``
        ('real' or 'procedural').
    """
    import skimage.data
    rng = np.random.default_rng(seed)
    scenes = []
    left, _, disp = skimage.data.stereo_motorcycle()
    disp = fill_invalid(np.where(np.isfinite(disp) & (disp > 0), disp, np.nan).astype(np.float32))
    scenes.append(
        dict(name='motorcycle', image=left.astype(np.float32) / 255.0, inv_depth=_normalise01(disp), depth='real'))
    for name in PROCEDURAL_PHOTOS:
        img = getattr(skimage.data, name)().astype(np.float32) / 255.0
        scenes.append(dict(name=name, image=img, inv_depth=None, depth='procedural'))
    for scene in scenes:
        img = scene['image']
        scale = 1.0 if max_side is None else min(1.0, max_side / max(img.shape[:2]))
        # sizes are cropped to multiples of 8 (like DPDD's 1680x1120) so that down-sampling archs need no padding
        crop = (slice(0, _round8(img.shape[0] * scale)), slice(0, _round8(img.shape[1] * scale)))
        scene['image'] = _resize(img, scale)[crop]
        if scene['inv_depth'] is None:
            scene['inv_depth'] = procedural_inverse_depth(scene['image'], rng)
        else:
            scene['inv_depth'] = _resize(scene['inv_depth'], scale)[crop]
    return scenes


def _round8(n):
    return max(8, int(n) // 8 * 8)


def sample_coc(inv_depth, rng, coc_max, focus_quantile=(0.1, 0.9), fill=(0.6, 1.0)):
    """Draws a focal plane and an aperture for a scene and returns its signed CoC map.

    Args:
        inv_depth (ndarray): HW inverse depth.
        rng (np.random.Generator): Random source.
        coc_max (float): Upper bound of |CoC| in pixels.
        focus_quantile (tuple): Range of the inverse-depth quantile the camera focuses on.
        fill (tuple): Range of the fraction of ``coc_max`` that the largest |CoC| of the scene reaches.

    Returns:
        ndarray: HW float32 signed CoC in pixels (positive behind the focal plane).
    """
    focus = float(np.quantile(inv_depth, rng.uniform(*focus_quantile)))
    spread = float(np.abs(inv_depth - focus).max())
    gain = rng.uniform(*fill) * coc_max / max(spread, 1e-6)
    return coc_from_inverse_depth(inv_depth, focus, gain).numpy().astype(np.float32)


def synthesize_dp(image, coc, rng=None, psf=None, layer_step=0.5, noise=(1e-4, 1e-3), device='cpu'):
    """Renders a DP capture of a sharp image with a signed CoC map.

    Args:
        image (ndarray): HWC RGB sRGB float in [0, 1] (the all-in-focus target).
        coc (ndarray): HW signed CoC in pixels.
        rng (np.random.Generator | None): Noise source; None renders without noise.
        psf (dict | None): DP PSF options (see :func:`defocusgan_plugin.ops.dp_psf`); default ``DEFAULT_PSF``.
        layer_step (float): CoC spacing of the rendering layers in pixels.
        noise (tuple[float, float]): (shot, read) noise in linear light: variance = shot * x + read^2.
        device (str): Torch device for rendering.

    Returns:
        dict[str, ndarray]: 'left', 'right', 'combined', 'target' (HWC RGB sRGB float32 [0, 1]) and 'coc' (HW).
    """
    psf = dict(DEFAULT_PSF if psf is None else psf)
    ramp_width = psf.pop('ramp_width', 1.0)
    max_r = max(float(np.abs(coc).max()), layer_step)
    top = math.ceil(max_r / layer_step) * layer_step
    radii = torch.arange(top, -top - layer_step / 2, -layer_step)  # back (farthest) layer first
    size = kernel_size_for(top, psf.get('sigma', 0.0))
    kernels = dp_psf(radii, size, ramp_width=ramp_width, device=device, **psf)
    lin = torch.from_numpy(srgb_to_linear(image)).permute(2, 0, 1)[None].to(device)
    values = torch.from_numpy(np.ascontiguousarray(coc, dtype=np.float32))[None, None].to(device)
    with torch.no_grad():
        views = render_layered(lin, values, kernels, start=top, step=-layer_step, mode='over')[0]  # (2, C, H, W)
    views = views.permute(0, 2, 3, 1).cpu().numpy().clip(0.0, 1.0)
    if rng is not None:
        shot, read = noise
        views = views + rng.standard_normal(views.shape).astype(np.float32) * np.sqrt(shot * views + read**2)
        views = views.clip(0.0, 1.0)
    left, right = views[0], views[1]
    return dict(
        left=linear_to_srgb(left),
        right=linear_to_srgb(right),
        combined=linear_to_srgb(0.5 * (left + right)),
        target=np.ascontiguousarray(image, dtype=np.float32),
        coc=np.asarray(coc, dtype=np.float32))


def write_synthetic_dpdd(out_dir,
                         max_side=384,
                         coc_max=8.0,
                         focus_per_scene=(5, 1, 1),
                         eval_fraction=1 / 3,
                         seed=0,
                         psf=None,
                         noise=(1e-4, 1e-3),
                         scenes=None):
    """Writes the embedded synthetic DP dataset in the exact DPDD layout, as 16-bit PNG.

    Each scene is split by columns so no pixel is shared between splits: training images come from the left
    ``1 - eval_fraction`` of the scene, validation and test images from the right part (with different focal planes
    and noise). For every image the folders ``{split}_c/source``, ``{split}_c/target``, ``{split}_l/source``,
    ``{split}_r/source`` get a 16-bit PNG and ``{split}_defocus`` the ground-truth signed CoC map (``.npy``, pixels).

    Args:
        out_dir (str): Output root (created).
        max_side (int): Longer side of the scenes before splitting.
        coc_max (float): Largest |CoC| in pixels.
        focus_per_scene (tuple[int, int, int]): Images (focal planes) per scene for train, val and test.
        eval_fraction (float): Fraction of the columns reserved for val/test.
        seed (int): Seed of everything random (depth, focus, noise); the output is deterministic.
        psf (dict | None): DP PSF options (default ``DEFAULT_PSF``).
        noise (tuple): (shot, read) noise in linear light.
        scenes (list[dict] | None): Scenes as returned by :func:`embedded_scenes` (default: those).

    Returns:
        dict[str, int]: Number of images written per split.
    """
    import os

    from defocusgan_plugin.utils.img_io import write_image
    scenes = embedded_scenes(max_side=max_side, seed=seed) if scenes is None else scenes
    counts = {}
    for split_idx, (split, num) in enumerate(zip(('train', 'val', 'test'), focus_per_scene)):
        counts[split] = 0
        for scene_idx, scene in enumerate(scenes):
            w = scene['image'].shape[1]
            cut = _round8(round(w * (1 - eval_fraction)))
            cols = slice(0, cut) if split == 'train' else slice(cut, w)
            image, inv_depth = scene['image'][:, cols], scene['inv_depth'][:, cols]
            for k in range(num):
                rng = np.random.default_rng([seed, split_idx, scene_idx, k])
                coc = sample_coc(inv_depth, rng, coc_max)
                views = synthesize_dp(image, coc, rng, psf, noise=noise)
                stem = f"{scene['name']}_{k:02d}"
                for folder, key in ((f'{split}_c/source', 'combined'), (f'{split}_c/target', 'target'),
                                    (f'{split}_l/source', 'left'), (f'{split}_r/source', 'right')):
                    write_image(os.path.join(out_dir, folder, stem + '.png'), views[key][..., ::-1], bit_depth=16)
                os.makedirs(os.path.join(out_dir, f'{split}_defocus'), exist_ok=True)
                np.save(os.path.join(out_dir, f'{split}_defocus', stem + '.npy'), views['coc'])
                counts[split] += 1
    return counts
