"""Pure functions shared by data, losses and models: thin-lens CoC, defocus PSFs, layered rendering."""
from .coc import coc_from_inverse_depth, thin_lens_coc
from .psf import (butterworth_disk_psf, centered_grid, disk_coverage, disk_psf, dp_psf, dp_ramp, dp_split,
                  gaussian_kernel2d, kernel_size_for, smooth_kernels)
from .render import blur_layers, composite_layers, render_layered, tent_weights, weights_to_alphas

__all__ = [
    'thin_lens_coc', 'coc_from_inverse_depth', 'butterworth_disk_psf', 'centered_grid', 'disk_coverage', 'disk_psf',
    'dp_psf', 'dp_ramp', 'dp_split', 'gaussian_kernel2d', 'kernel_size_for', 'smooth_kernels', 'blur_layers',
    'composite_layers', 'render_layered', 'tent_weights', 'weights_to_alphas'
]
