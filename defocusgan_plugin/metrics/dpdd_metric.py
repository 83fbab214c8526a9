"""Image metrics of the DPDD protocol: MAE, and PSNR/SSIM on [0, 1] at full precision.

BasicSR's validation passes ``tensor2img`` outputs (uint8 BGR HWC); the plugin's models may pass float images in
[0, 1] or uint16 to keep 16-bit precision. Every metric here accepts all three (``to_unit_range``).
"""
import numpy as np
import torch
from basicsr.metrics.metric_util import reorder_image
from basicsr.utils.registry import METRIC_REGISTRY


def to_unit_range(img, input_order='HWC', crop_border=0):
    """Converts a uint8 / uint16 / float image (ndarray or Tensor) to float64 HWC in [0, 1]."""
    if torch.is_tensor(img):
        img = img.detach().cpu().numpy()
        if img.ndim == 4:
            img = img[0]
        input_order = 'CHW' if img.ndim == 3 else input_order
    img = np.asarray(img)
    if img.dtype == np.uint8:
        img = img.astype(np.float64) / 255.0
    elif img.dtype == np.uint16:
        img = img.astype(np.float64) / 65535.0
    else:
        img = img.astype(np.float64)
    img = reorder_image(img, input_order=input_order)
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border, ...]
    return img


def _pair(img, img2, input_order, crop_border):
    a, b = to_unit_range(img, input_order, crop_border), to_unit_range(img2, input_order, crop_border)
    if a.shape != b.shape:
        raise ValueError(f'Image shapes are different: {a.shape}, {b.shape}.')
    return a, b


@METRIC_REGISTRY.register()
def calculate_mae(img, img2, crop_border=0, input_order='HWC', **kwargs):
    """Mean absolute error on [0, 1] (DPDD protocol: full image, ``crop_border: 0``).

    Args:
        img, img2 (ndarray | Tensor): uint8 (/255), uint16 (/65535) or float in [0, 1].
        crop_border (int): Pixels cropped from each edge. Default: 0.
        input_order (str): 'HWC' or 'CHW' for arrays. Default: 'HWC'.

    Returns:
        float: MAE.
    """
    a, b = _pair(img, img2, input_order, crop_border)
    return float(np.abs(a - b).mean())


@METRIC_REGISTRY.register()
def calculate_dpdd_psnr(img, img2, crop_border=0, input_order='HWC', **kwargs):
    """PSNR with peak 1 on [0, 1], at the precision of the input (16-bit stays 16-bit)."""
    a, b = _pair(img, img2, input_order, crop_border)
    mse = float(np.mean((a - b)**2))
    return float('inf') if mse == 0 else 10.0 * np.log10(1.0 / mse)


@METRIC_REGISTRY.register()
def calculate_dpdd_ssim(img, img2, crop_border=0, input_order='HWC', **kwargs):
    """SSIM as the DPDD literature reports it: scikit-image, data_range 1, averaged over colour channels."""
    from skimage.metrics import structural_similarity
    a, b = _pair(img, img2, input_order, crop_border)
    return float(structural_similarity(a, b, data_range=1.0, channel_axis=2))


def input_scores(loader, metrics=None):
    """Mean PSNR / SSIM / MAE of the blurred input (``lq``) against ``gt`` over a loader: the "doing nothing" row of
    a comparison, on 8-bit images as BasicSR's validation scores outputs.

    Args:
        loader (Iterable[dict]): Batches of one sample with ``lq`` and ``gt`` (e.g. a test DataLoader).
        metrics (dict[str, callable] | None): Name -> metric function. Default: psnr, ssim, mae of this module.

    Returns:
        dict[str, float]: Mean value per metric.
    """
    from basicsr.utils import tensor2img
    metrics = metrics or {'psnr': calculate_dpdd_psnr, 'ssim': calculate_dpdd_ssim, 'mae': calculate_mae}
    sums, count = dict.fromkeys(metrics, 0.0), 0
    for data in loader:
        pred, ref = tensor2img([data['lq']]), tensor2img([data['gt']])
        for key, fn in metrics.items():
            sums[key] += fn(pred, ref)
        count += 1
    return {k: v / count for k, v in sums.items()}
