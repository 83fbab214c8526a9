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


def render_layers(max_coc, psf=None, layer_step=0.5, device='cpu'):
    """The rendering layers of :func:`synthesize_dp`: signed radii back (farthest) first and their DP kernels.

    Args:
        max_coc (float): Largest |CoC| of the map in pixels.
        psf (dict | None): DP PSF options (see :func:`defocusgan_plugin.ops.dp_psf`); default ``DEFAULT_PSF``.
        layer_step (float): CoC spacing of the layers in pixels.
        device (str): Torch device of the kernels.

    Returns:
        tuple[Tensor, Tensor]: radii (N,) from the top radius down to minus it, kernels (2, N, K, K) (left, right).
    """
    psf = dict(DEFAULT_PSF if psf is None else psf)
    ramp_width = psf.pop('ramp_width', 1.0)
    top = math.ceil(max(max_coc, layer_step) / layer_step) * layer_step
    radii = torch.arange(top, -top - layer_step / 2, -layer_step)
    size = kernel_size_for(top, psf.get('sigma', 0.0))
    return radii, dp_psf(radii, size, ramp_width=ramp_width, device=device, **psf)


def synthesize_dp(image, coc, rng=None, psf=None, layer_step=0.5, noise=(1e-4, 1e-3), device='cpu', vignetting=None):
    """Renders a DP capture of a sharp image with a signed CoC map.

    Args:
        image (ndarray): HWC RGB sRGB float in [0, 1] (the all-in-focus target).
        coc (ndarray): HW signed CoC in pixels.
        rng (np.random.Generator | None): Noise source; None renders without noise.
        psf (dict | None): DP PSF options (see :func:`defocusgan_plugin.ops.dp_psf`); default ``DEFAULT_PSF``.
        layer_step (float): CoC spacing of the rendering layers in pixels.
        noise (tuple[float, float]): (shot, read) noise in linear light: variance = shot * x + read^2.
        device (str): Torch device for rendering.
        vignetting (tuple[float, float] | None): (ramp, imbalance): unequal DP views, in linear light, before noise.
            The left view is scaled by ``(1 + imbalance) * (1 + ramp * (0.5 - x / W))``, the right view by the mirror
            ``(1 - imbalance) * (1 - ramp * (0.5 - x / W))``. None (default): equal views.

    Returns:
        dict[str, ndarray]: 'left', 'right', 'combined', 'target' (HWC RGB sRGB float32 [0, 1]) and 'coc' (HW).
    """
    radii, kernels = render_layers(float(np.abs(coc).max()), psf, layer_step, device)
    top = float(radii[0])
    lin = torch.from_numpy(srgb_to_linear(image)).permute(2, 0, 1)[None].to(device)
    values = torch.from_numpy(np.ascontiguousarray(coc, dtype=np.float32))[None, None].to(device)
    with torch.no_grad():
        views = render_layered(lin, values, kernels, start=top, step=-layer_step, mode='over')[0]  # (2, C, H, W)
    views = views.permute(0, 2, 3, 1).cpu().numpy().clip(0.0, 1.0)
    if vignetting is not None:
        ramp, imbalance = vignetting
        u = ramp * (0.5 - (np.arange(views.shape[2], dtype=np.float32) + 0.5) / views.shape[2])[None, :, None]
        views = np.stack([views[0] * (1 + imbalance) * (1 + u), views[1] * (1 - imbalance) * (1 - u)]).clip(0.0, 1.0)
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
                         scenes=None,
                         psf_mix=None):
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
        psf_mix (dict | None): From :func:`parse_psf_mix`: draws each image's PSF family, vignetting and noise.
            None (default) renders every image with ``psf`` and ``noise``.

    Returns:
        dict[str, int]: Number of images written per split.
    """
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
                if psf_mix is None:  # today's set, byte for byte: the same draws in the same order
                    views = synthesize_dp(image, coc, rng, psf, noise=noise)
                else:
                    formation = draw_image_formation(rng, psf_mix, noise)
                    views = synthesize_dp(
                        image, coc, rng, formation['psf'], noise=formation['noise'], vignetting=formation['vignetting'])
                _write_item(out_dir, split, f"{scene['name']}_{k:02d}", views, write_image)
                counts[split] += 1
    return counts


# PSF families of --psf-mix: full-aperture shapes (one drawn per image) and modifiers (applied to every image).
PSF_SHAPES = ('butterworth', 'soft_disk', 'apodised')
PSF_MODIFIERS = ('vignetting', 'noise')


def parse_psf_mix(text):
    """Parses a ``--psf-mix`` value.

    Args:
        text (str | None): 'none' (or None/empty): today's single model (:data:`DEFAULT_PSF`, fixed noise); 'all':
            every family; else a comma list of families, shapes optionally weighted as ``name:weight``, e.g.
            ``butterworth:2,soft_disk,apodised,noise``. Shapes: 'butterworth' (RDPD's model with random order,
            cut-off, floor, smoothing and ramp width), 'soft_disk' (disk with a soft rim 1.5–4 px wide), 'apodised'
            (radial fall-off). Modifiers: 'vignetting' (left/right intensity ramp and imbalance), 'noise' (shot and
            read noise drawn log-uniformly from clean to phone-like).

    Returns:
        dict | None: ``{'shapes': {name: weight}, 'modifiers': set}`` or None for today's model.
    """
    if text is None or text.strip().lower() in ('', 'none'):
        return None
    if text.strip().lower() == 'all':
        text = ','.join(PSF_SHAPES + PSF_MODIFIERS)
    shapes, modifiers = {}, set()
    for item in text.split(','):
        name, _, weight = item.strip().partition(':')
        if name in PSF_MODIFIERS and not weight:
            modifiers.add(name)
        elif name in PSF_SHAPES:
            try:
                shapes[name] = float(weight) if weight else 1.0
            except ValueError:
                raise ValueError(f"--psf-mix: weight of '{name}' must be a number, got '{weight}'.") from None
            if shapes[name] <= 0:
                raise ValueError(f"--psf-mix: weight of '{name}' must be positive, got {weight}.")
        else:
            raise ValueError(f"--psf-mix: unknown family '{item.strip()}'; shapes (optionally name:weight): "
                             f"{', '.join(PSF_SHAPES)}; modifiers: {', '.join(PSF_MODIFIERS)}; or 'none' / 'all'.")
    return dict(shapes=shapes or {'butterworth': 1.0}, modifiers=modifiers)


def draw_image_formation(rng, mix, noise=(1e-4, 1e-3)):
    """Draws the PSF, vignetting and noise of one image from a parsed ``--psf-mix``.

    Args:
        rng (np.random.Generator): Random source (not used at all when ``mix`` is None).
        mix (dict | None): From :func:`parse_psf_mix`.
        noise (tuple): (shot, read) noise used when the mix has no 'noise' modifier.

    Returns:
        dict: ``psf`` (options of :func:`defocusgan_plugin.ops.dp_psf`), ``vignetting`` ((ramp, imbalance) or None),
        ``noise`` ((shot, read)) and ``family`` (the shape's name).
    """
    if mix is None:
        return dict(psf=dict(DEFAULT_PSF), vignetting=None, noise=tuple(noise), family='butterworth')
    names = sorted(mix['shapes'])
    weights = np.array([mix['shapes'][n] for n in names])
    family = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    psf = dict(profile=family, sigma=float(rng.uniform(0.3, 0.8)), ramp_width=float(rng.uniform(0.7, 1.0)))
    if family == 'butterworth':  # RDPD's ranges (REFERENCE.md): orders 3/6/9, cut-offs 2-2.5, floors 0.1/0.2
        psf.update(
            order=int(rng.choice([3, 6, 9])), cutoff=float(rng.uniform(2.0, 2.5)), beta=float(rng.choice([0.1, 0.2])))
    elif family == 'soft_disk':
        psf.update(edge=float(rng.uniform(1.5, 4.0)))
    else:
        psf.update(falloff=float(rng.uniform(0.3, 0.9)))
    vignetting = None
    if 'vignetting' in mix['modifiers']:  # Pixel-4 white sheets: left 1.04-1.36x the right (REFERENCE.md)
        vignetting = (float(rng.uniform(0.0, 0.3)), float(rng.uniform(-0.15, 0.15)))
    if 'noise' in mix['modifiers']:  # clean (1e-6) to phone-like (shot 4e-3, read 4e-3) in linear light
        noise = (float(np.exp(rng.uniform(np.log(1e-6),
                                          np.log(4e-3)))), float(np.exp(rng.uniform(np.log(1e-4), np.log(4e-3)))))
    return dict(psf=psf, vignetting=vignetting, noise=tuple(noise), family=family)


def find_photos(roots):
    """Image files under the given folders (recursive, sorted), with the name they are known by in a manifest.

    Returns:
        list[tuple[str, str]]: (path, key) with key = ``<root folder name>/<path relative to root>``.
    """
    import os

    from defocusgan_plugin.utils.img_io import is_image_file
    found = []
    for root in roots:
        if not os.path.isdir(root):
            raise FileNotFoundError(f'--photos: folder not found: {root}')
        base = os.path.basename(os.path.normpath(root))
        for folder, _, files in sorted(os.walk(root)):
            for name in sorted(files):
                if is_image_file(name):
                    path = os.path.join(folder, name)
                    found.append((path, f'{base}/{os.path.relpath(path, root)}'.replace(os.sep, '/')))
    return found


def split_photos(keys, num_val, num_test, seed=0):
    """Assigns whole photos to train / val / test: a seeded permutation of the sorted keys.

    Returns:
        dict[str, str]: key -> split.
    """
    if num_val + num_test >= len(keys):
        raise ValueError(f'{len(keys)} photos cannot give {num_val} val and {num_test} test photos and still train; '
                         'add photos or lower --val-photos / --test-photos.')
    order = np.random.default_rng([seed, 7]).permutation(sorted(keys))
    return {
        str(k): 'test' if i < num_test else 'val' if i < num_test + num_val else 'train'
        for i, k in enumerate(order)
    }


def _photo_rng(seed, key, *extra):
    import zlib
    return np.random.default_rng([seed, zlib.crc32(key.encode()), *extra])


def photo_crop(image, crop, rng, zoom=(1.0, 1.6)):
    """A random ``crop`` (h, w) of a photo downscaled so that the crop shows a large part of it (a scene, not a
    texture close-up): scale = ``zoom`` x the smallest scale at which the crop fits.

    Returns:
        tuple[ndarray, tuple]: The crop and (scale, top, left) to cut a matching depth map.
    """
    h, w = image.shape[:2]
    scale = max(crop[0] / h, crop[1] / w) * rng.uniform(*zoom)
    scaled = _resize(image, scale) if abs(scale - 1) > 1e-6 else image
    top = int(rng.integers(0, scaled.shape[0] - crop[0] + 1))
    left = int(rng.integers(0, scaled.shape[1] - crop[1] + 1))
    return np.ascontiguousarray(scaled[top:top + crop[0], left:left + crop[1]]), (scale, top, left)


def write_photo_dpdd(out_dir,
                     photo_roots,
                     crop=(384, 512),
                     crops_per_photo=(3, 1, 2),
                     focus_per_crop=(2, 1, 1),
                     num_val=6,
                     num_test=10,
                     coc_max=8.0,
                     psf_mix=None,
                     noise=(1e-4, 1e-3),
                     seed=0,
                     licences=None,
                     log=print):
    """Renders DP training data from any photos, in the exact DPDD layout, split by photo.

    Each photo gives ``crops_per_photo[split]`` random crops (see :func:`photo_crop`), each rendered at
    ``focus_per_crop[split]`` focal planes with a procedural inverse depth (or the photo's own, from a sibling
    ``<stem>.invdepth.npy``). Whole photos go to one split (:func:`split_photos`), so no content is shared between
    train, val and test. ``manifest.json`` lists every source file with its split, its licence (when ``licences``
    knows it) and the images made from it, plus the settings.

    Args:
        out_dir (str): Output root.
        photo_roots (list[str]): Folders searched recursively for photos.
        crop (tuple[int, int]): Crop size (h, w); multiples of 8 keep down-sampling archs free of padding.
        crops_per_photo (tuple[int, int, int]): Crops per photo for train, val and test.
        focus_per_crop (tuple[int, int, int]): Focal planes per crop for train, val and test.
        num_val (int): Validation photos.
        num_test (int): Test photos.
        coc_max (float): Largest |CoC| in pixels.
        psf_mix (dict | None): From :func:`parse_psf_mix`; None renders every image with today's model.
        noise (tuple): (shot, read) noise when the mix draws none.
        seed (int): Seed of the split and of everything random; a photo's images depend only on the seed and its key.
        licences (dict | None): key -> record (e.g. from ``datasets/photos/manifest.json``) copied into the manifest.
        log (callable): Progress printer.

    Returns:
        dict[str, int]: Number of images written per split.
    """
    import json
    import os

    from defocusgan_plugin.utils.img_io import read_image, write_image
    photos = find_photos(photo_roots)
    splits = split_photos([k for _, k in photos], num_val, num_test, seed)
    counts, records = dict(train=0, val=0, test=0), []
    for path, key in photos:
        split = splits[key]
        idx = ('train', 'val', 'test').index(split)
        image = read_image(path)[0][..., ::-1].astype(np.float32)  # BGR -> RGB
        depth_file = os.path.splitext(path)[0] + '.invdepth.npy'
        inv_full = np.load(depth_file).astype(np.float32) if os.path.isfile(depth_file) else None
        if image.shape[0] < 64 or image.shape[1] < 64:
            raise ValueError(f'Photo too small ({image.shape[1]}x{image.shape[0]}): {path}')
        record = dict(
            (licences or {}).get(key, {}),
            key=key,
            split=split,
            depth='real' if inv_full is not None else 'procedural',
            images=[])
        stem_base = os.path.splitext(key.replace('/', '__'))[0]
        for c in range(crops_per_photo[idx]):
            rng = _photo_rng(seed, key, c)
            image_crop, (scale, top, left) = photo_crop(image, crop, rng)
            if inv_full is not None:
                inv = _normalise01(_resize(inv_full, scale)[top:top + crop[0], left:left + crop[1]])
            else:
                inv = procedural_inverse_depth(image_crop, rng)
            for k in range(focus_per_crop[idx]):
                rng_k = _photo_rng(seed, key, c, k)
                coc = sample_coc(inv, rng_k, coc_max)
                formation = draw_image_formation(rng_k, psf_mix, noise)
                views = synthesize_dp(
                    image_crop,
                    coc,
                    rng_k,
                    formation['psf'],
                    noise=formation['noise'],
                    vignetting=formation['vignetting'])
                stem = f'{stem_base}_c{c}_f{k}'
                _write_item(out_dir, split, stem, views, write_image)
                record['images'].append(
                    dict(
                        name=stem,
                        **{k2: formation[k2]
                           for k2 in ('family', 'psf', 'noise')},
                        vignetting=formation['vignetting']))
                counts[split] += 1
        records.append(record)
        log(f'[photos] {split:5s} {key}: {len(record["images"])} images')
    manifest = dict(
        settings=dict(
            crop=list(crop),
            crops_per_photo=list(crops_per_photo),
            focus_per_crop=list(focus_per_crop),
            num_val=num_val,
            num_test=num_test,
            coc_max=coc_max,
            psf_mix=psf_mix and dict(shapes=psf_mix['shapes'], modifiers=sorted(psf_mix['modifiers'])),
            noise=list(noise),
            seed=seed),
        counts=counts,
        photos=records)
    with open(os.path.join(out_dir, 'manifest.json'), 'w') as f:
        json.dump(manifest, f, indent=1)
    return counts


def _write_item(out_dir, split, stem, views, write_image):
    """Writes one rendered capture into the DPDD folders of ``split`` (16-bit PNG) and its GT map (``.npy``)."""
    import os
    for folder, key in ((f'{split}_c/source', 'combined'), (f'{split}_c/target', 'target'),
                        (f'{split}_l/source', 'left'), (f'{split}_r/source', 'right')):
        write_image(os.path.join(out_dir, folder, stem + '.png'), views[key][..., ::-1], bit_depth=16)
    os.makedirs(os.path.join(out_dir, f'{split}_defocus'), exist_ok=True)
    np.save(os.path.join(out_dir, f'{split}_defocus', stem + '.npy'), views['coc'])
