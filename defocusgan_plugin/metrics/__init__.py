"""Metrics registered into BasicSR's METRIC_REGISTRY (imported explicitly, as BasicSR does for its own)."""
from .defocus_map_metric import calculate_aiwe1, calculate_aiwe2, calculate_spearman_error
from .dpdd_metric import calculate_dpdd_psnr, calculate_dpdd_ssim, calculate_mae, to_unit_range
from .lpips_metric import calculate_lpips, check_lpips_weights
from .protocol import MetricImages, ValProtocol, metric_label

__all__ = [
    'calculate_mae', 'calculate_dpdd_psnr', 'calculate_dpdd_ssim', 'calculate_lpips', 'calculate_aiwe1',
    'calculate_aiwe2', 'calculate_spearman_error', 'to_unit_range', 'check_lpips_weights', 'MetricImages',
    'ValProtocol', 'metric_label'
]
