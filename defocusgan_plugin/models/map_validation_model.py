"""MapValidationModel: validation that scores a predicted defocus map and an output image, for map-making models."""
import numpy as np
import os
from basicsr.metrics import calculate_metric
from basicsr.utils import get_root_logger
from os import path as osp

from defocusgan_plugin.metrics.defocus_map_metric import DEFOCUS_MAP_METRICS
from defocusgan_plugin.metrics.protocol import MetricImages, ValProtocol
from defocusgan_plugin.models.robust_base_model import RobustBaseModel


def diverging_colormap(values, limit):
    """Signed map -> BGR uint8 image: blue in front of the focal plane, white in focus, red behind it.

    Args:
        values (ndarray): HxW signed values.
        limit (float): Value drawn at full saturation (larger magnitudes are clipped).

    Returns:
        ndarray: HxWx3 uint8 BGR.
    """
    t = np.clip(values / max(float(limit), 1e-6), -1.0, 1.0)[..., None]
    white = np.ones(3)
    red, blue = np.array([0.15, 0.15, 0.85]), np.array([0.85, 0.25, 0.15])  # BGR
    rgb = np.where(t >= 0, white + t * (red - white), white - t * (blue - white))
    return (rgb * 255.0 + 0.5).astype(np.uint8)


class MapValidationModel(RobustBaseModel):
    """Base of the models whose output is a defocus map (``self.output``, (B, C, H, W)) and possibly an image.

    Validation scores the map with the defocus-map metrics against the dataset's ``defocus`` map (``self.gt_map``;
    a map of several channels, e.g. the release map network's one per colour, is scored by its channel mean) and
    every other metric on the image pair returned by :meth:`metric_inputs`; metrics without data are skipped and
    named in the log. At test time the signed maps are also written as ``.npy`` to
    ``results/<name>/defocus_maps/<dataset>/`` (H x W, or C x H x W for several channels; ``DPDDDataset`` reads both
    as ``dataroot_defocus``). Subclasses implement the hooks below.
    """

    def metric_inputs(self):
        """(prediction, reference) image tensors for the image metrics, or None."""
        return None

    def default_metrics(self):
        """Image metrics reported even when ``val.metrics`` has none."""
        return {}

    def save_visuals(self, img_name, tag, folder):
        """Writes the visuals of the current sample into ``folder``."""

    def save_kernels(self, tag):
        """Writes the model's kernels once per validation (if it has any)."""

    # what the image metrics' inputs were made from (the protocol label); every map model here reads the DP pair
    metric_view = 'DP-pair input'

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        dataset_name = dataloader.dataset.opt['name']
        val_opt = self.opt.get('val') or {}
        metrics = dict(val_opt.get('metrics') or {})
        if not any(m['type'] not in DEFOCUS_MAP_METRICS for m in metrics.values()):
            metrics.update(self.default_metrics())
        sums, counts = dict.fromkeys(metrics, 0.0), dict.fromkeys(metrics, 0)
        tag = current_iter if self.opt['is_train'] else (val_opt.get('suffix') or self.opt['name'])
        self.val_protocol = protocol = ValProtocol(val_opt, dataloader.dataset)  # val.bit_depth: 8 | 16
        for val_data in dataloader:
            img_name = osp.splitext(osp.basename(val_data['lq_path'][0]))[0]
            protocol.add_sample(val_data)
            self.feed_data(val_data)
            self.test()
            pair = self.metric_inputs()
            images = None if pair is None else MetricImages(pair[0], pair[1])
            maps = None if self.gt_map is None else dict(
                img=self.output[0].mean(0).cpu(), img2=self.gt_map[0].mean(0).cpu())
            for name, metric_opt in metrics.items():
                if metric_opt['type'] in DEFOCUS_MAP_METRICS:
                    data = maps
                else:
                    data = None if images is None else images.for_metric(metric_opt, protocol.bit_depth)
                if data is not None:
                    sums[name] += calculate_metric(data, metric_opt)
                    counts[name] += 1
            if save_img:
                folder = osp.join(self.opt['path']['visualization'], img_name if self.opt['is_train'] else dataset_name)
                self.save_visuals(img_name, tag, folder)
                if not self.opt['is_train']:
                    maps = osp.join(osp.dirname(self.opt['path']['visualization']), 'defocus_maps', dataset_name)
                    os.makedirs(maps, exist_ok=True)
                    out_map = self.output[0].cpu().numpy()
                    np.save(osp.join(maps, f'{img_name}.npy'), out_map[0] if len(out_map) == 1 else out_map)
        self.save_kernels(tag)
        skipped = [name for name, count in counts.items() if count == 0]
        if skipped:
            get_root_logger().info(f'Validation {dataset_name}: no data for {", ".join(skipped)} (defocus-map metrics '
                                   'need the dataset\'s defocus maps; image metrics need gt and the blurred image).')
        self.metric_results = {name: sums[name] / counts[name] for name in metrics if counts[name]}
        self.metric_protocols = {name: protocol.label(metrics[name], self.metric_view) for name in self.metric_results}
        if not self.metric_results:
            return
        self._init_best(dataset_name, metrics)
        for name, value in self.metric_results.items():
            self._update_best_metric_result(dataset_name, name, value, current_iter)
        self._log_validation_metric_values(current_iter, dataset_name, tb_logger)

    def _init_best(self, dataset_name, metrics):
        if not hasattr(self, 'best_metric_results'):
            self.best_metric_results = {}
        record = self.best_metric_results.setdefault(dataset_name, {})
        for name, metric_opt in metrics.items():
            better = metric_opt.get('better', 'lower' if metric_opt['type'] in DEFOCUS_MAP_METRICS else 'higher')
            record.setdefault(name,
                              dict(better=better, val=float('-inf') if better == 'higher' else float('inf'), iter=-1))
