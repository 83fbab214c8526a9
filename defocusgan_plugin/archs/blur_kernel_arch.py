import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn as nn

from defocusgan_plugin.ops.psf import (butterworth_disk_psf, centered_grid, dp_split, release_butterworth_kernel,
                                       release_smoothing_window)

INITS = ('fixed', 'release')
PARAMS = ('softmax', 'raw')
COMPOSITES = ('normalized', 'gather')
PADDINGS = ('reflect', 'zeros')


@ARCH_REGISTRY.register()
class LearnableBlurKernel(nn.Module):
    """DefocusGAN's learnable blur kernel: one defocus kernel per integer CoC radius.

    Initialisation (DefocusGAN Eq. 3): a disk times a Butterworth high-pass profile of order ``order`` rescaled to
    ``[beta, 1]``, Gaussian-smoothed - real DP kernels are brighter at the rim than at the centre.

    * ``init: release`` - the authors' release (:func:`defocusgan_plugin.ops.release_butterworth_kernel`): per radius
      r, cut-off ``D0 = 2r / cutoff_factor`` and a Gaussian window of ``round((2r + 1) / smooth_factor) + 1`` pixels
      (odd) with OpenCV's std rule; each kernel keeps that support (``2r + 1`` plus the window's half on each side).
    * ``init: fixed`` - one cut-off ``cutoff`` and one std ``sigma`` for every radius (this plugin's earlier choice).

    Kernel sets and parametrisation:

    * ``signed: true`` (release) - separate kernels for positive and negative radii, layers ``-R..R``; ``false`` -
      one kernel per |r|, layers ``0..R``. :meth:`radii` gives the radius of each layer of :meth:`forward`.
    * ``param: raw`` (release) - the kernels are the parameters themselves, zero outside their support (radius 0 is
      a trainable 1 x 1 weight). Nothing keeps them normalised or non-negative but the reblur loss: a kernel whose sum
      drifts from 1 changes the brightness of every pixel that uses it, which the L1 data term penalises at once; the
      release trains them with Adam at lr 2e-5 only during kernel phases. ``param: softmax`` - each kernel of radius
      != 0 is the softmax of learnable logits over the whole K x K grid (non-negative, sums to 1; the logits start at
      ``log(B_init)`` floored at ``floor`` times the peak), radius 0 a fixed delta.

    How the kernels blur (read by every user of the kernels - stage-1 reblur, deconvolution - so that they agree):
    ``linear_light`` (blur linear light: sRGB-decode before, encode after; the release blurs the files' values),
    ``composite`` ('gather': each output pixel is the blur of its own radius, ``sum_i w_i(map) (K_i * x)``, as the
    release; 'normalized': premultiplied layers blurred and normalised) and ``padding`` ('zeros' as the release's
    convolutions, or 'reflect'). See :func:`defocusgan_plugin.ops.render.reblur_coc`.

    Args:
        max_radius (int): Largest radius in pixels (the release: 24, its map clamp). Default: 25.
        kernel_size (int | None): Odd kernel grid size. Default: the largest support (``2 * max_radius + 1`` for
            ``init: fixed``; plus the release's smoothing margin for ``init: release``).
        order (float): Butterworth order n. Default: 3.
        cutoff (float): Cut-off D0 in pixels (``init: fixed``). Default: 2.5.
        beta (float): Floor of the Butterworth profile. Default: 0.1.
        sigma (float): Std kappa of the Gaussian smoothing in pixels (``init: fixed``). Default: 0.5.
        ramp_width (float): Left/right split of the DP kernels, see :func:`defocusgan_plugin.ops.dp_ramp`.
        linear_light (bool): See above. Default: True.
        floor (float): Softmax initialisation outside the disk, relative to the kernel's peak. Default: 1e-6.
        init (str): 'fixed' or 'release'. Default: 'fixed'.
        cutoff_factor (float): ``init: release``: D0 = (k - 1) / cutoff_factor. Default: 2.5.
        smooth_factor (float): ``init: release``: 1 / kappa of the window size. Default: 7.
        signed (bool): Separate kernels for negative radii. Default: False.
        param (str): 'softmax' or 'raw'. Default: 'softmax'.
        composite (str): 'normalized' or 'gather'. Default: 'normalized'.
        padding (str): 'reflect' or 'zeros'. Default: 'reflect'.

    The defaults keep the plugin's kernels (one set by |r|, radii 0..R), which the deconvolution and the joint DP
    optimiser index by |r|; ``options/train/train_defocus_map.yml`` sets the release's values.
    """

    def __init__(self,
                 max_radius=25,
                 kernel_size=None,
                 order=3,
                 cutoff=2.5,
                 beta=0.1,
                 sigma=0.5,
                 ramp_width=1.0,
                 linear_light=True,
                 floor=1e-6,
                 init='fixed',
                 cutoff_factor=2.5,
                 smooth_factor=7.0,
                 signed=False,
                 param='softmax',
                 composite='normalized',
                 padding='reflect'):
        super().__init__()
        if int(max_radius) != max_radius or max_radius < 1:
            raise ValueError(f'LearnableBlurKernel: max_radius must be an integer >= 1, got {max_radius}.')
        for name, value, allowed in (('init', init, INITS), ('param', param, PARAMS),
                                     ('composite', composite, COMPOSITES), ('padding', padding, PADDINGS)):
            if value not in allowed:
                raise ValueError(f'LearnableBlurKernel: {name} must be one of {", ".join(allowed)}; got {value!r}.')
        self.max_radius = int(max_radius)
        self.init, self.param, self.signed = init, param, bool(signed)
        self.composite, self.padding = composite, padding
        self.ramp_width = float(ramp_width)
        self.linear_light = bool(linear_light)
        if init == 'release':
            window = release_smoothing_window(2 * self.max_radius + 1, smooth_factor)[0]
            needed = 2 * self.max_radius + 1 + 2 * (window // 2)
        else:
            needed = 2 * self.max_radius + 1
        size = needed if kernel_size is None else int(kernel_size)
        if size % 2 != 1 or size < needed:
            raise ValueError(f'LearnableBlurKernel: kernel_size must be odd and >= {needed} (the largest initial '
                             f'kernel), got {kernel_size}.')
        self.kernel_size = size

        magnitudes = self.radii().abs().long()
        if init == 'release':
            init_kernels = torch.zeros(self.max_radius + 1, size, size)
            support = torch.zeros(self.max_radius + 1, size, size, dtype=torch.bool)
            for r in range(self.max_radius + 1):
                kernel = torch.from_numpy(release_butterworth_kernel(r, order, cutoff_factor, beta, smooth_factor))
                lo = (size - kernel.shape[-1]) // 2
                init_kernels[r, lo:lo + kernel.shape[-1], lo:lo + kernel.shape[-1]] = kernel.float()
                support[r, lo:lo + kernel.shape[-1], lo:lo + kernel.shape[-1]] = True
        else:
            x, y = centered_grid(size)
            delta = ((x == 0) & (y == 0)).float()
            init_kernels = torch.cat([
                delta[None],
                butterworth_disk_psf(torch.arange(1, self.max_radius + 1), size, order, cutoff, beta, sigma)
            ])
            support = torch.ones(self.max_radius + 1, size, size, dtype=torch.bool)
            support[0] = delta.bool()
        init_kernels, support = init_kernels[magnitudes], support[magnitudes]  # one per layer of radii()
        self.zero_index = int((magnitudes == 0).nonzero())
        if param == 'raw':
            self.weight = nn.Parameter(init_kernels * support)
            self.register_buffer('support', support.float(), persistent=False)
        else:
            learned = init_kernels[magnitudes != 0]
            peak = learned.amax(dim=(-2, -1), keepdim=True)
            self.logits = nn.Parameter(torch.log(torch.maximum(learned, floor * peak)))
            self.register_buffer('delta', init_kernels[self.zero_index][None], persistent=False)

    def radii(self):
        """Returns: Tensor: radius of each layer of :meth:`forward`, ``-R..R`` when signed, else ``0..R``."""
        start = -self.max_radius if self.signed else 0
        return torch.arange(start, self.max_radius + 1, dtype=torch.float32)

    def forward(self):
        """Returns: Tensor: (N, K, K) kernels of the layers :meth:`radii` (N = 2R + 1 signed, else R + 1)."""
        if self.param == 'raw':
            return self.weight * self.support
        learned = torch.softmax(self.logits.flatten(1), dim=1).view_as(self.logits)
        i = self.zero_index
        return torch.cat([learned[:i], self.delta.to(learned.dtype), learned[i:]])

    def signed_radii(self):
        """Returns: Tensor: (2 * max_radius + 1,) signed radii -max_radius..max_radius (layer order of DP views)."""
        param = self.weight if self.param == 'raw' else self.logits
        return torch.arange(-self.max_radius, self.max_radius + 1, dtype=param.dtype, device=param.device)

    def dp_kernels(self, kernels=None):
        """Left/right DP kernels of the signed radii -R..R, split from the full kernels by :func:`dp_split`.

        Args:
            kernels (Tensor | None): (N, K, K) output of :meth:`forward` (pass it when the module is wrapped in
                DDP so that the forward goes through the wrapper); None calls :meth:`forward`.

        Returns:
            Tensor: (2, 2R + 1, K, K); index 0 the left view; layer i has radius ``i - R``; for negative radii the
            halves are swapped (:func:`defocusgan_plugin.ops.dp_split`).
        """
        kernels = self() if kernels is None else kernels
        radii = self.signed_radii()
        full = kernels if self.signed else kernels[radii.abs().long()]
        return dp_split(full, radii, self.ramp_width)
