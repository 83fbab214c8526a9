import cv2
import numpy as np
import os
import torch
from basicsr.utils.registry import DATASET_REGISTRY
from os import path as osp
from torch.utils import data as data

from defocusgan_plugin.ops.filters import box_mean
from defocusgan_plugin.utils.img_io import read_image

PIXEL4_CROP = (1008, 1344)  # the centre crop the Pixel-4 calibration belongs to (6 x 8 cells of 168 px)


def read_raw(path, black_level, white_level, what='raw DP image'):
    """Reads a 16-bit raw file and returns ``max(raw - black_level, 0) / white_level`` as float32 (H, W).

    Errors name the file: missing, unreadable, not single-channel 16-bit.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'{what} not found: {path}')
    raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f'Cannot decode {what} (corrupt or unsupported format): {path}')
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise ValueError(f'{what} must be a single-channel 16-bit PNG (raw DP data), got {raw.dtype} with shape '
                         f'{raw.shape}: {path}')
    return np.clip(raw.astype(np.int32) - int(black_level), 0, None).astype(np.float32) / float(white_level)


def read_16bit(path, what):
    """Reads a single-channel 8- or 16-bit PNG as float32 (H, W) divided by its peak (255 or 65535)."""
    img, depth = read_image(path, channels=None)  # errors name the file
    if img.shape[2] != 1:
        raise ValueError(f'{what} must be single-channel, got shape {img.shape[:2] + (img.shape[2], )}: {path}')
    if depth not in (8, 16):
        raise ValueError(f'{what} must be 8- or 16-bit, got a float image: {path}')
    return img[..., 0]


def centre_crop_box(frame, crop):
    """(top, left) of a centred ``crop`` (height, width) in a ``frame`` (height, width), as the release: the
    offsets are ``(frame - crop) // 2``."""
    return (frame[0] - crop[0]) // 2, (frame[1] - crop[1]) // 2


def _phrase(*parts):
    return ' '.join(p for p in parts if p)


def raw_crop_box(frame, crop, where='', option='crop'):
    """(top, left, height, width) of the centred ``crop`` (height, width) in a ``frame`` (height, width), the whole
    frame when ``crop`` is None; a crop larger than the frame is an error naming both sizes, ``where`` (e.g. 'in
    FOLDER') and the ``option``."""
    if crop is None:
        return 0, 0, frame[0], frame[1]
    if crop[0] > frame[0] or crop[1] > frame[1]:
        raise ValueError(f'Option {option} {list(crop)} (height, width) is larger than the '
                         f'{_phrase(f"{frame[0]}x{frame[1]} frame", where)}.')
    top, left = centre_crop_box(frame, crop)
    return top, left, crop[0], crop[1]


def vignetting_ratio(left_sheet, right_sheet, black_level, white_level, box, what='white sheet (option vignetting)'):
    """The release's vignetting correction of the right view: the box average (odd side ``box``) of
    ``white_left / white_right`` over the whole frame, the white sheets read as raw views (:func:`read_raw`).

    Returns:
        ndarray: (H, W) float32 factor of the right view.
    """
    sheets = [read_raw(path, black_level, white_level, what) for path in (left_sheet, right_sheet)]
    if sheets[0].shape != sheets[1].shape:
        raise ValueError(f'The white sheets differ in size: {sheets[0].shape[0]}x{sheets[0].shape[1]} in {left_sheet}, '
                         f'{sheets[1].shape[0]}x{sheets[1].shape[1]} in {right_sheet}.')
    ratio = sheets[0] / np.maximum(sheets[1], 1e-6)
    ratio = box_mean(torch.from_numpy(ratio)[None, None], box // 2)[0, 0].numpy()
    return ratio.astype(np.float32)


def correct_vignetting(right, ratio, where=''):
    """The right view (H, W) times the white-sheet ratio (:func:`vignetting_ratio`); sizes must match."""
    if ratio.shape != right.shape:
        raise ValueError(
            f'The white sheets are {ratio.shape[0]}x{ratio.shape[1]} but {_phrase("the views", where)} are '
            f'{right.shape[0]}x{right.shape[1]}.')
    return right * ratio


def preprocess_raw_pair(left, right, vignetting=None, crop=None, normalize='joint_max', where='', crop_option='crop'):
    """The release's preprocessing of a raw DP pair read by :func:`read_raw` (black and white level applied): the
    right view corrected for vignetting, the centre crop, then (``joint_max``) both views divided by their joint
    maximum.

    Args:
        left, right (ndarray): (H, W) float32 views.
        vignetting (ndarray | None): (H, W) ratio of :func:`vignetting_ratio`; None: no correction.
        crop (tuple[int, int] | None): (height, width) of the centre crop; None keeps the whole frame.
        normalize (str): 'joint_max' or 'none'.
        where (str): Names the pair in error messages (e.g. 'of scene 001 in FOLDER').
        crop_option (str): Names the crop option in error messages.

    Returns:
        tuple: (left, right) cropped and normalised (h, w) float32 views, the factor back to the raw units (1 for
        'none') and the crop box (top, left, height, width).
    """
    if left.shape != right.shape:
        raise ValueError(f'{_phrase("The views", where)} differ in size: {left.shape[0]}x{left.shape[1]} (left) vs '
                         f'{right.shape[0]}x{right.shape[1]} (right).')
    if vignetting is not None:
        right = correct_vignetting(right, vignetting, where)
    box = raw_crop_box(left.shape, crop, where, crop_option)
    top, x0, h, w = box
    left, right = left[top:top + h, x0:x0 + w], right[top:top + h, x0:x0 + w]
    scale = 1.0
    if normalize == 'joint_max':
        scale = max(float(left.max()), float(right.max()), 1e-6)
        left, right = left / scale, right / scale
    return left, right, scale, box


@DATASET_REGISTRY.register()
class DPRawPixel4Dataset(data.Dataset):
    """Raw dual-pixel captures in the layout of the Pixel-4 release of Xin et al. (ICCV 2021).

    Layout under ``dataroot``: per scene ``NNN_left.png`` / ``NNN_right.png`` (16-bit grey raw DP views, the
    Pixel 4's green channel, 2016x1512, 14-bit with black level 1024), ``calibration/blur_kernels_{left,right}.npy``
    (read by the model's ``dp_joint.kernels``), ``calibration/white_sheet_{left,right}.png``, and optionally
    ``gt_all_in_focus_im/NNN_gt.png`` (linear 16-bit: value / 65535 = (raw - black) / white) and
    ``gt_defocus_map/NNN_gt.png`` (relative units, 0 = no ground truth).

    Preprocessing, as the release: ``(raw - black_level)`` clipped at 0, divided by ``white_level``; the white sheets
    alike; the right view multiplied by the ``vignetting_box`` box average of ``white_left / white_right``; the
    centre ``crop``; then (``normalize: joint_max``) both views divided by their joint maximum, returned as
    ``norm_scale`` so that outputs go back to the GT's units (multiply by it).

    Args:
        opt (dict): Config for the dataset. Keys:
            dataroot (str): Folder in the release layout.
            black_level (int): Default: 1024.
            white_level (float): Default: 16383 (2^14 - 1).
            vignetting (bool): Correct the right view's vignetting with the white sheets. Default: true.
            vignetting_box (int): Odd side of the box average of the white-sheet ratio. Default: 101.
            crop (list[int] | None): [height, width] of the centre crop (the frame the kernel calibration belongs
                to). Default: [1008, 1344]; None keeps the whole frame.
            normalize (str): 'joint_max' (default) or 'none'.
            scenes (list[str] | None): Scene names (``NNN``) to use. Default: every ``*_left.png``.

    Returns (per item):
        dict: ``lq_l``, ``lq_r`` (1, H, W) views, ``lq_c`` their mean, ``lq`` = concat(L, R), ``norm_scale`` (the
        factor back to GT units), optional ``gt`` (1, H, W) in GT units and ``defocus`` (1, H, W, NaN where the
        file has no ground truth), ``lq_path`` (``dataroot/NNN``, outputs are named after the scene), ``gt_path``
        and ``bit_depth`` (16).
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        root = opt.get('dataroot')
        if not root or not osp.isdir(osp.expanduser(root)):
            raise FileNotFoundError(f'DPRawPixel4Dataset: dataroot not found: {root} (option dataroot).')
        self.root = osp.expanduser(root)
        self.black = int(opt.get('black_level', 1024))
        self.white = float(opt.get('white_level', 2**14 - 1))
        if self.white <= 0:
            raise ValueError(f'Option white_level must be positive, got {self.white}.')
        crop = opt.get('crop', list(PIXEL4_CROP))
        if crop is not None and (len(crop) != 2 or min(int(v) for v in crop) < 1):
            raise ValueError(f'Option crop must be [height, width] or ~, got {crop}.')
        self.crop = None if crop is None else (int(crop[0]), int(crop[1]))
        self.normalize = opt.get('normalize', 'joint_max')
        if self.normalize not in ('joint_max', 'none'):
            raise ValueError(f"Option normalize must be 'joint_max' or 'none', got {self.normalize!r}.")
        self.box = int(opt.get('vignetting_box', 101))
        if self.box < 1 or self.box % 2 != 1:
            raise ValueError(f'Option vignetting_box must be a positive odd size, got {self.box}.')
        names = opt.get('scenes')
        if names is None:
            names = sorted(f[:-len('_left.png')] for f in os.listdir(self.root) if f.endswith('_left.png'))
        if not names:
            raise ValueError(f'No NNN_left.png views in {self.root} (option dataroot).')
        for name in names:
            for side in ('left', 'right'):
                if not osp.isfile(osp.join(self.root, f'{name}_{side}.png')):
                    raise FileNotFoundError(f'Scene {name}: {name}_{side}.png is missing in {self.root}.')
        self.scenes = [str(n) for n in names]
        self.vignetting = None
        if opt.get('vignetting', True):
            self.vignetting = self._vignetting_ratio()

    # ------------------------------------------------------------------ preprocessing
    def _vignetting_ratio(self):
        """Box average of ``white_left / white_right`` over the whole frame (H, W)."""
        calib = osp.join(self.root, 'calibration')
        return vignetting_ratio(
            osp.join(calib, 'white_sheet_left.png'), osp.join(calib, 'white_sheet_right.png'), self.black, self.white,
            self.box)

    def crop_box(self, frame):
        """(top, left, height, width) of the crop in a frame of size ``frame``; errors name both sizes."""
        return raw_crop_box(frame, self.crop, f'in {self.root}')

    def describe(self):
        """Crop, units and vignetting of the samples, for the metric lines of the log."""
        frame = read_raw(osp.join(self.root, f'{self.scenes[0]}_left.png'), self.black, self.white).shape
        top, left, h, w = self.crop_box(frame)
        if self.crop is None:
            crop = f'whole {h}x{w} frame'
        else:
            crop = (f'centre crop {h}x{w} (rows {top}:{top + h}, cols {left}:{left + w}) of the {frame[0]}x{frame[1]} '
                    'frame')
        vignetting = ('right view x box' + str(self.box) +
                      '(white_left / white_right)' if self.vignetting is not None else 'none')
        return f"{crop}; units (raw - {self.black}) / {self.white:g}, linear; vignetting correction {vignetting}"

    def _ground_truth(self, folder, name, frame, box, what):
        path = osp.join(self.root, folder, f'{name}_gt.png')
        if not osp.isfile(path):
            return None, None
        img = read_16bit(path, what)
        top, left, h, w = box
        if img.shape == (h, w):
            return img, path
        if img.shape == tuple(frame):
            return img[top:top + h, left:left + w], path
        raise ValueError(f'{what} {path} is {img.shape[0]}x{img.shape[1]}; expected the crop ({h}x{w}) or the '
                         f'frame ({frame[0]}x{frame[1]}).')

    def __len__(self):
        return len(self.scenes)

    def read_view(self, name, side):
        """One whole view of scene ``name`` ('left' or 'right'), black level and white level applied, the right one
        corrected for vignetting (when enabled); float32 (H, W)."""
        view = read_raw(osp.join(self.root, f'{name}_{side}.png'), self.black, self.white)
        if side == 'right' and self.vignetting is not None:
            view = correct_vignetting(view, self.vignetting, f'of scene {name} in {self.root}')
        return view

    def __getitem__(self, index):
        name = self.scenes[index]
        left, right = (
            read_raw(osp.join(self.root, f'{name}_{side}.png'), self.black, self.white) for side in ('left', 'right'))
        frame = left.shape
        left, right, scale, box = preprocess_raw_pair(left, right, self.vignetting, self.crop, self.normalize,
                                                      f'of scene {name} in {self.root}')
        lq_l, lq_r = (torch.from_numpy(np.ascontiguousarray(v))[None] for v in (left, right))
        out = {
            'lq_l': lq_l,
            'lq_r': lq_r,
            'lq_c': 0.5 * (lq_l + lq_r),
            'lq': torch.cat([lq_l, lq_r], 0),
            'norm_scale': torch.tensor(scale, dtype=torch.float32),
            'lq_path': osp.join(self.root, name),
            'bit_depth': 16
        }  # 16-bit raw reads, named in the metrics' protocol labels
        gt, gt_path = self._ground_truth('gt_all_in_focus_im', name, frame, box, 'GT all-in-focus image')
        if gt is not None:
            out['gt'], out['gt_path'] = torch.from_numpy(np.ascontiguousarray(gt))[None], gt_path
        defocus, _ = self._ground_truth('gt_defocus_map', name, frame, box, 'GT defocus map')
        if defocus is not None:
            out['defocus'] = torch.from_numpy(np.where(defocus > 0, defocus, np.nan).astype(np.float32))[None]
        return out
