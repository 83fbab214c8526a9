"""Evaluation protocol labels: what a validation/test metric measured, logged next to its value.

DPDD numbers move with the protocol as much as with the method (8- vs 16-bit reads, outputs scored at 8 or 16 bits,
combined view vs DP pair input, border crop, LPIPS backbone), so the plugin's models log every metric with a label,
e.g. ``psnr: 25.6100 [16-bit reads, scored 16-bit, combined-view input, full image, crop 0]``.

The scoring depth is the option ``val.bit_depth``: 8 (default, BasicSR's behaviour) gives every image metric
``tensor2img``'s uint8 image; 16 gives the plugin's full-precision metrics (:data:`FULL_PRECISION_METRICS`) uint16
images quantised as a 16-bit PNG write would, while BasicSR's own metrics (``calculate_psnr``, ``calculate_ssim``,
which assume 0..255) still get the uint8 image. Defocus-map metrics always see the float maps.
"""
import numpy as np
from basicsr.utils import tensor2img

from defocusgan_plugin.metrics.defocus_map_metric import DEFOCUS_MAP_METRICS

# Metrics that take uint16 images (normalised by 65535); every other image metric gets uint8 at any val.bit_depth.
FULL_PRECISION_METRICS = ('calculate_mae', 'calculate_dpdd_psnr', 'calculate_dpdd_ssim', 'calculate_lpips')
# BasicSR's metrics with a test_y_channel option (default False: RGB)
Y_CHANNEL_METRICS = ('calculate_psnr', 'calculate_ssim', 'calculate_psnr_pt', 'calculate_ssim_pt')
FLOAT_DEPTH = 32  # read depth of float files and of rendered (never quantised) data
UNKNOWN_DEPTH = 0


def scoring_bit_depth(val_opt):
    """The validated ``val.bit_depth`` (8 or 16; default 8)."""
    depth = (val_opt or {}).get('bit_depth', 8)
    if depth not in (8, 16) or isinstance(depth, bool):
        raise ValueError(f'Option val.bit_depth must be 8 or 16 (the depth outputs are scored at), got {depth!r}.')
    return int(depth)


def metric_bit_depth(metric_opt, bit_depth):
    """Depth a metric is scored at: 16 only for the full-precision metrics when ``val.bit_depth`` is 16."""
    return 16 if bit_depth == 16 and metric_opt['type'] in FULL_PRECISION_METRICS else 8


def tensor2img16(tensor):
    """As BasicSR's ``tensor2img`` (clamp to [0, 1], HWC BGR, gray as HW) but uint16, rounded as a 16-bit PNG write."""
    img = tensor2img(tensor, out_type=np.float64)
    return (img * 65535.0 + 0.5).astype(np.uint16)


class MetricImages:
    """The (prediction, reference) pair of one sample as arrays, converted once per scoring depth.

    Args:
        img (Tensor): Prediction, (1, C, H, W) or (C, H, W), RGB in [0, 1].
        img2 (Tensor | None): Reference (None for no-reference metrics).
    """

    def __init__(self, img, img2=None):
        self.tensors = (img, img2)
        self._arrays = {}

    def at(self, depth):
        """dict(img=..., img2=...) as uint8 (``depth`` 8) or uint16 (16) HWC BGR arrays."""
        if depth not in self._arrays:
            convert = tensor2img if depth == 8 else tensor2img16
            arrays = [None if t is None else convert(t.detach().cpu()) for t in self.tensors]
            self._arrays[depth] = {k: v for k, v in zip(('img', 'img2'), arrays) if v is not None}
        return self._arrays[depth]

    def for_metric(self, metric_opt, bit_depth):
        """The arrays ``metric_opt`` is scored on when ``val.bit_depth`` is ``bit_depth``."""
        return self.at(metric_bit_depth(metric_opt, bit_depth))


def reads_label(depths):
    """'16-bit reads', '8/16-bit reads', 'float data', 'unknown read depth', ... for a set of read depths."""
    known = sorted(int(d) for d in set(depths) if d and int(d) != FLOAT_DEPTH)
    parts = [f'{"/".join(str(d) for d in known)}-bit reads'] if known else []
    if FLOAT_DEPTH in set(int(d) for d in depths):
        parts.append('float data')
    if not parts or UNKNOWN_DEPTH in set(int(d) for d in depths):
        parts.append('unknown read depth')
    return ' + '.join(parts)


def input_view(data):
    """'DP-pair input' when the batch's ``lq`` holds both DP views (twice the channels of ``gt``), else
    'combined-view input'."""
    lq, ref = data.get('lq'), data.get('gt', data.get('lq_l'))
    if lq is not None and ref is not None and lq.shape[1] == 2 * ref.shape[1]:
        return 'DP-pair input'
    return 'combined-view input'


def metric_label(metric_opt, scored=8, reads=None, view=None, region='full image'):
    """Protocol label of one metric.

    Args:
        metric_opt (dict): The block ``val.metrics.<name>`` (with ``type``).
        scored (int | str): Depth the images were scored at (8, 16) or a word (e.g. 'float').
        reads (Iterable[int] | None): Read depths of the samples (8, 16, 32 = float, 0 = unknown); None omits them.
        view (str | None): What the model was given, e.g. 'DP-pair input'.
        region (str): What part of each sample was scored (before ``crop_border``).

    Returns:
        str: e.g. 'squeeze, 16-bit reads, scored 16-bit, combined-view input, full image, crop 0'.
    """
    mtype = metric_opt['type']
    crop = f'crop {int(metric_opt.get("crop_border", 0) or 0)}'
    if mtype in DEFOCUS_MAP_METRICS:
        parts = ['float defocus maps', view, region, crop]
    else:
        parts = [metric_opt.get('net', 'alex')] if mtype == 'calculate_lpips' else []
        parts += [
            None if reads is None else reads_label(reads),
            f'scored {scored}-bit' if isinstance(scored, int) else f'scored {scored}', view, region, crop
        ]
        if mtype in Y_CHANNEL_METRICS or 'test_y_channel' in metric_opt:
            parts.append('Y channel' if metric_opt.get('test_y_channel') else 'RGB')
    return ', '.join(p for p in parts if p)


class ValProtocol:
    """What one validation run scored: the scoring depth, the samples' read depths and the labels.

    Args:
        val_opt (dict): The ``val`` block (``bit_depth``: 8 or 16).
        dataset (Dataset | None): The validation dataset; BasicSR's own datasets read 8-bit (``imfrombytes``), others
            report a ``bit_depth`` per sample (the plugin's datasets) or count as unknown.
    """

    def __init__(self, val_opt, dataset=None):
        self.bit_depth = scoring_bit_depth(val_opt)
        self.reads = set()
        self.default_reads = 8 if type(dataset).__module__.startswith('basicsr.') else UNKNOWN_DEPTH

    def add_sample(self, data):
        """Records the read depth(s) of one validation batch (its ``bit_depth`` key)."""
        depth = data.get('bit_depth')
        if depth is None:
            self.reads.add(self.default_reads)
        else:
            self.reads.update(int(d) for d in np.asarray(depth).ravel())

    def label(self, metric_opt, view=None):
        """Label of a metric block scored in this run (see :func:`metric_label`)."""
        return metric_label(metric_opt, metric_bit_depth(metric_opt, self.bit_depth), self.reads or None, view)
