import cv2
import numpy as np
import torch
from basicsr.utils import get_root_logger, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from os import path as osp
from torch.utils import data as data

from defocusgan_plugin.utils.dp_pairs import depth_path, find_dp_pairs
from defocusgan_plugin.utils.img_io import read_image

DEPTH_FORMATS = ('auto', 'sdirt')
SDIRT_GREY_RANGE = 10.0  # metres of grey level 255 in the Sdirt / DP119 8-bit depth PNGs
SDIRT_16BIT_UNIT = 1e-3  # metres per unit of the 16-bit (Orbbec) depth PNGs


def read_depth(path, depth_format='auto'):
    """Reads a depth file in metres, float32 (H, W), as the Sdirt release's loader does (``dfdp/dataset.py``).

    * 8-bit PNG (grey, RGB or RGBA, e.g. the ``box`` and ``casual/iphone`` scenes): grey / 255 * 10 m;
    * 16-bit single-channel PNG (``casual/orbbec``): value / 1000 m;
    * ``.npy`` (``depth_format: auto`` only): metres as stored (NaN = no measurement).

    Args:
        path (str): Depth file.
        depth_format (str): 'auto' (by file type, as above) or 'sdirt' (the two PNG encodings only).

    Returns:
        ndarray: Depth in metres (no validity applied: see :func:`inverse_depth_target`).
    """
    if depth_format not in DEPTH_FORMATS:
        raise ValueError(f"Option depth_format must be one of {', '.join(DEPTH_FORMATS)}, got {depth_format!r}.")
    if path.lower().endswith('.npy'):
        if depth_format != 'auto':
            raise ValueError(f"depth_format 'sdirt' reads 8- or 16-bit PNG depth, not {path}; use depth_format: auto.")
        depth = np.load(path).astype(np.float32)
        if depth.ndim != 2:
            raise ValueError(f'Depth array must be H x W (metres), got shape {depth.shape}: {path}')
        return depth
    raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f'Cannot read depth file (missing, corrupt or unsupported format): {path}')
    if raw.dtype == np.uint8:
        if raw.ndim == 3:  # grey stored as RGB(A): OpenCV's grey conversion, as cv2.imread(path, 0) in the release
            raw = cv2.cvtColor(raw[..., :3], cv2.COLOR_BGR2GRAY)
        return raw.astype(np.float32) * (SDIRT_GREY_RANGE / 255.0)
    if raw.dtype == np.uint16 and raw.ndim == 2:
        return raw.astype(np.float32) * SDIRT_16BIT_UNIT
    raise ValueError(f'Depth PNG must be 8-bit (grey / 255 * 10 m) or single-channel 16-bit (millimetres), got '
                     f'{raw.dtype} with shape {raw.shape}: {path}')


def inverse_depth_target(depth, focus_distance=1.0, depth_min=0.0, depth_max=10.0):
    """Signed inverse-depth target ``1 / z_f - 1 / z`` (1/m), NaN where the depth is no measurement.

    The thin-lens signed CoC radius is ``K (1 / z_f - 1 / z)`` for one unknown ``K``: positive behind the focal plane,
    as the plugin's maps. Depth counts as measured when ``depth_min < z < depth_max`` (Sdirt: 0 and 10 m).

    Args:
        depth (ndarray): Depth in metres.
        focus_distance (float): Focus distance z_f in metres.
        depth_min, depth_max (float): Exclusive bounds of a valid depth, metres.

    Returns:
        ndarray: float32 target of the same shape.
    """
    depth = np.asarray(depth, np.float32)
    valid = np.isfinite(depth) & (depth > depth_min) & (depth < depth_max)
    target = np.full(depth.shape, np.nan, np.float32)
    target[valid] = 1.0 / focus_distance - 1.0 / depth[valid]
    return target


def resize_target(target, size):
    """Area resampling of a map with NaN holes to ``size`` (height, width); NaN where any of the footprint is.

    Area averaging, not nearest: a box depth pixel of the 768x512 views covers ~61 pixels of the 6000x4000 depth
    map, whose 8-bit steps (39 mm) nearest-neighbour would keep and whose mean matches what the view pixel
    integrates; an output pixel touching a hole or an excluded depth is excluded rather than mixed.
    """
    h, w = size
    if target.shape == (h, w):
        return target
    valid = np.isfinite(target)
    num = cv2.resize(np.where(valid, target, 0).astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    den = cv2.resize(valid.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    out = np.full((h, w), np.nan, np.float32)
    full = den > 1.0 - 1e-4
    out[full] = num[full] / den[full]
    return out


@DATASET_REGISTRY.register()
class DPPairsDataset(data.Dataset):
    """Folders of real dual-pixel pairs, optionally with measured depth (e.g. the Sdirt / DP119 sample set).

    Pairs are found by :func:`defocusgan_plugin.utils.dp_pairs.find_dp_pairs` under every ``dataroot``: folders
    holding ``l.png`` + ``r.png`` (a ``d.png`` beside them is the scene's depth) or files ``X_left.png`` +
    ``X_right.png``; an item is named after its folder path ('box/001' -> ``box_001``). There is no all-in-focus
    image, so items have no ``gt``: the map models (``DefocusMapModel``, ``DPJointOptimModel``) then score only the
    defocus-map metrics against ``defocus``.

    The depth becomes the signed inverse-depth target ``1 / z_f - 1 / z`` (1/m), which the affine-invariant map
    metrics (AIWE, Spearman) compare with a CoC map directly (the CoC is affine in it). The three Sdirt layouts are
    read by :func:`read_depth`; the target is area-resampled to the views' size (:func:`resize_target`).

    Args:
        opt (dict): Config for the dataset. Keys:
            dataroot (str | list[str]): Folder(s) searched recursively for pairs.
            focus_distance (float): Focus distance z_f of the captures, metres. Default: 1.0 (Sdirt).
            depth_format (str): 'auto' (8-bit PNG: grey / 255 * 10 m, 16-bit PNG: mm, ``.npy``: metres) or 'sdirt'
                (the PNG encodings only). Default: 'auto'.
            depth_min, depth_max (float): Depths outside (depth_min, depth_max) metres are no measurement (NaN).
                Default: 0 and 10 (Sdirt's rule).
            border (int): Pixels (at the files' resolution) at each image border set to NaN in the target. Default: 0.
            scale (float): Downscaling of views and target (area), e.g. 0.5; disparities shrink with it. Default: 1.
            require_depth (bool): Skip pairs without a depth file (e.g. Sdirt's flat targets). Default: false.
            swap_views (bool): Read ``l`` as the right view and ``r`` as the left. The Sdirt captures (Canon DPP4
                extraction) have the opposite DP sign to the plugin's convention: on their flat target every
                estimator maps 0.6 m (in front of the focal plane) positive; swapped, maps are positive behind the
                focal plane as the plugin's and the target. Default: false.
            color (str): 'rgb' (default) or 'gray' views.

    Returns (per item):
        dict: ``lq`` = concat(L, R) (6 or 2 channels), ``lq_l``, ``lq_r``, ``lq_c`` = (L + R) / 2, ``lq_path``
        (``<pair folder>/<name>``: outputs are named after the pair), ``bit_depth`` of the view files, and with
        depth ``defocus`` (1, H, W) target (NaN = excluded), ``depth_path``.
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        roots = opt.get('dataroot')
        if not roots:
            raise ValueError('DPPairsDataset needs option dataroot (one folder or a list of folders of DP pairs).')
        self.roots = [osp.expanduser(str(r)) for r in ([roots] if isinstance(roots, str) else roots)]
        self.focus = float(opt.get('focus_distance', 1.0))
        self.depth_min, self.depth_max = float(opt.get('depth_min', 0.0)), float(opt.get('depth_max', 10.0))
        if self.focus <= 0 or not 0 <= self.depth_min < self.depth_max:
            raise ValueError(f'DPPairsDataset: focus_distance must be positive and 0 <= depth_min < depth_max, got '
                             f'{self.focus}, {self.depth_min}, {self.depth_max}.')
        self.depth_format = opt.get('depth_format', 'auto')
        if self.depth_format not in DEPTH_FORMATS:
            raise ValueError(f"Option depth_format must be one of {', '.join(DEPTH_FORMATS)}, got "
                             f'{self.depth_format!r}.')
        self.border = int(opt.get('border', 0))
        self.scale = float(opt.get('scale', 1.0))
        if self.border < 0 or not 0 < self.scale <= 1:
            raise ValueError(f'DPPairsDataset: border must be >= 0 and scale in (0, 1], got {self.border}, '
                             f'{self.scale}.')
        self.channels = {'rgb': 3, 'gray': 1}.get(opt.get('color', 'rgb'))
        if self.channels is None:
            raise ValueError(f"Dataset option 'color' must be 'rgb' or 'gray', got {opt.get('color')!r}.")
        samples = [(pair, depth_path(pair.left)) for pair in find_dp_pairs(self.roots)]
        if opt.get('require_depth', False):
            skipped = [pair.name for pair, depth in samples if depth is None]
            samples = [(pair, depth) for pair, depth in samples if depth is not None]
            if skipped:
                get_root_logger().info(f'DPPairsDataset: {len(skipped)} pair(s) without depth skipped '
                                       f'(require_depth): {", ".join(skipped)}.')
            if not samples:
                raise ValueError(f'DPPairsDataset: no DP pair with a depth file (d.png) in {", ".join(self.roots)}.')
        self.samples = samples
        self.swap = bool(opt.get('swap_views', False))

    def __len__(self):
        return len(self.samples)

    def describe(self):
        """Units and exclusions of the target, for the metric lines of the log."""
        scale = f', views and target at {self.scale:g}x (area)' if self.scale != 1 else ''
        return (f'signed inverse depth 1/{self.focus:g} m - 1/z, depth in ({self.depth_min:g}, {self.depth_max:g}) m, '
                f'{self.border}-px border excluded{scale}')

    def _read_view(self, path):
        img, depth = read_image(path, self.channels)
        if self.scale != 1:
            h, w = img.shape[:2]
            size = (max(1, round(w * self.scale)), max(1, round(h * self.scale)))
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
            img = img[..., None] if img.ndim == 2 else img
        return img, depth

    def __getitem__(self, index):
        pair, dpath = self.samples[index]
        left, bit_depth = self._read_view(pair.right if self.swap else pair.left)
        right, _ = self._read_view(pair.left if self.swap else pair.right)
        if left.shape != right.shape:
            raise ValueError(f'DP pair {pair.name}: the views differ in size ({left.shape[1]}x{left.shape[0]} vs '
                             f'{right.shape[1]}x{right.shape[0]}): {pair.left}, {pair.right}')
        lq_l, lq_r = img2tensor([left, right], bgr2rgb=self.channels == 3, float32=True)
        out = {
            'lq_l': lq_l,
            'lq_r': lq_r,
            'lq_c': 0.5 * (lq_l + lq_r),
            'lq': torch.cat([lq_l, lq_r], 0),
            'lq_path': osp.join(osp.dirname(pair.left), pair.name),
            'bit_depth': bit_depth
        }
        if dpath is not None:
            target = inverse_depth_target(
                read_depth(dpath, self.depth_format), self.focus, self.depth_min, self.depth_max)
            target = resize_target(target, left.shape[:2])
            border = int(np.ceil(self.border * self.scale))
            if border:
                target[:border], target[-border:], target[:, :border], target[:, -border:] = (np.nan, ) * 4
            out['defocus'], out['depth_path'] = torch.from_numpy(target)[None], dpath
        return out
