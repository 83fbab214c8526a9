import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn as nn

from defocusgan_plugin.ops.psf import butterworth_disk_psf, centered_grid, dp_split


@ARCH_REGISTRY.register()
class LearnableBlurKernel(nn.Module):
    """DefocusGAN's learnable blur kernel: one defocus kernel per integer CoC radius 0..max_radius.

    Initialisation (DefocusGAN Eq. 3): a disk of radius r times a Butterworth high-pass profile of order ``order``
    and cut-off ``cutoff`` (rescaled to ``[beta, 1]``), smoothed by a Gaussian of std ``sigma`` (kappa) — real DP
    kernels are brighter at the rim than at the centre.

    Parametrisation: each kernel of radius >= 1 is the softmax of a learnable logit map, so it stays non-negative and
    sums to 1 whatever the optimiser does; the logits start at ``log(B_init)`` with a floor of ``floor`` times the
    kernel's peak outside the disk, so learning reshapes a kernel mostly within its support. Radius 0 is a fixed
    delta (in focus means no blur). Only the logits are saved (``params.logits``).

    Args:
        max_radius (int): Largest radius in pixels; ``max_radius + 1`` kernels. Default: 25.
        kernel_size (int | None): Odd kernel size. Default: ``2 * max_radius + 1``.
        order (float): Butterworth order n. Default: 3.
        cutoff (float): Butterworth cut-off D0 in pixels. Default: 2.5.
        beta (float): Floor of the Butterworth profile. Default: 0.1.
        sigma (float): Std kappa of the Gaussian smoothing in pixels. Default: 0.5.
        ramp_width (float): Left/right split of the DP kernels, see :func:`defocusgan_plugin.ops.dp_ramp`.
        linear_light (bool): The kernels blur linear light: images are sRGB-decoded before blurring and encoded
            after (stored here so that every user of the kernels - reblur, deconvolution - agrees). Default: True.
        floor (float): Initial kernel value outside the disk, relative to the kernel's peak. Default: 1e-6.
    """

    def __init__(self, max_radius=25, kernel_size=None, order=3, cutoff=2.5, beta=0.1, sigma=0.5, ramp_width=1.0,
                 linear_light=True, floor=1e-6):
        super().__init__()
        if int(max_radius) != max_radius or max_radius < 1:
            raise ValueError(f'LearnableBlurKernel: max_radius must be an integer >= 1, got {max_radius}.')
        self.max_radius = int(max_radius)
        size = 2 * self.max_radius + 1 if kernel_size is None else int(kernel_size)
        if size % 2 != 1 or size < 3:
            raise ValueError(f'LearnableBlurKernel: kernel_size must be odd and >= 3, got {kernel_size}.')
        self.kernel_size = size
        self.ramp_width = float(ramp_width)
        self.linear_light = bool(linear_light)
        init = butterworth_disk_psf(torch.arange(1, self.max_radius + 1), size, order, cutoff, beta, sigma)
        peak = init.amax(dim=(-2, -1), keepdim=True)
        self.logits = nn.Parameter(torch.log(torch.maximum(init, floor * peak)))
        x, y = centered_grid(size)
        self.register_buffer('delta', ((x == 0) & (y == 0)).float()[None], persistent=False)

    def forward(self):
        """Returns: Tensor: (max_radius + 1, K, K) kernels of the radii 0..max_radius, each summing to 1."""
        learned = torch.softmax(self.logits.flatten(1), dim=1).view_as(self.logits)
        return torch.cat([self.delta.to(learned.dtype), learned])

    def signed_radii(self):
        """Returns: Tensor: (2 * max_radius + 1,) signed radii -max_radius..max_radius (layer order of DP views)."""
        return torch.arange(-self.max_radius, self.max_radius + 1, dtype=self.logits.dtype,
                            device=self.logits.device)

    def dp_kernels(self, kernels=None):
        """Left/right DP kernels of the signed radii -R..R, split from the full kernels by :func:`dp_split`.

        Args:
            kernels (Tensor | None): (R + 1, K, K) output of :meth:`forward` (pass it when the module is wrapped in
                DDP so that the forward goes through the wrapper); None calls :meth:`forward`.

        Returns:
            Tensor: (2, 2R + 1, K, K); index 0 the left view; layer i has radius ``i - R``; for negative radii the
            halves are swapped (:func:`defocusgan_plugin.ops.dp_split`).
        """
        kernels = self() if kernels is None else kernels
        radii = self.signed_radii()
        return dp_split(kernels[radii.abs().long()], radii, self.ramp_width)
