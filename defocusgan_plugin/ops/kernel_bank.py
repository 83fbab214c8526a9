"""Dual-pixel kernel banks for layered rendering: parametric, calibrated from ``.npy`` files, or learned.

A bank maps the signed radii of the MPI layers (pixels at the working resolution, positive = behind the focal plane)
to left/right kernels: ``bank(radii) -> (G, 2, N, K, K)``, each kernel summing to 1, with ``G = rows * cols``
kernel sets laid row-major over the image on ``bank.grid`` (``G = 1``: the same kernels everywhere).

Calibrated kernels follow the published Pixel-4 calibration (Xin et al., ICCV 2021): one ``.npy`` array per view,
shape ``(cells, H, W)`` on a grid of the sensor, captured at one reference defocus. A layer of signed radius ``r``
uses the kernel resampled by the scale ``r / r_ref``: magnified or shrunk about its centre, renormalised, and
point-reflected when the scale is negative (in front of the focal plane the aperture's image is inverted).
A calibration on a grid belongs to the image crop it was measured on (Pixel 4: the centre 1008x1344 of the
2016x1512 frame, 6x8 cells of 168 px): ``frame_size`` records it, and the joint optimiser refuses views of another
size. Resampled kernels are cut to the calibration's window (``max_size``, as the release cuts them to 61 px).
Calibrations at several defoci are accepted too: arrays ``(radii, H, W)`` or ``(radii, cells, H, W)`` with the
signed radius of each entry; each layer then resamples the calibration nearest to its radius. Learned kernels
(stage 1's ``LearnableBlurKernel``, one per integer radius) are used the same way (:class:`ResampledKernelBank`).
"""
import math
import numpy as np
import torch
import torch.nn.functional as F
from os import path as osp

from defocusgan_plugin.ops.psf import centered_grid, dp_psf, kernel_size_for


def kernel_radii(kernels):
    """Disk-equivalent radius of each kernel, about its own centroid (``E[rho^2] = r^2 / 2`` for a uniform disk).

    Args:
        kernels (Tensor): (..., K, K) non-negative kernels.

    Returns:
        Tensor: (...) radii in pixels (float64).
    """
    kernels = torch.as_tensor(kernels, dtype=torch.float64)
    x, y = centered_grid(kernels.shape[-1], kernels.dtype)
    total = kernels.sum((-2, -1)).clamp_min(1e-12)
    cx, cy = (kernels * x).sum((-2, -1)) / total, (kernels * y).sum((-2, -1)) / total
    second = (kernels * (x * x + y * y)).sum((-2, -1)) / total - cx * cx - cy * cy
    return torch.sqrt(2.0 * second.clamp_min(0.0))


def resample_kernels(kernels, scale, supersample=4):
    """Resamples kernels to a signed scale about their centre, renormalised; a negative scale point-reflects them.

    The output pixel at ``x`` takes the bilinearly interpolated input at ``x / scale``; when shrinking
    (``|scale| < 1``) each output pixel averages ``ss^2`` such samples over its area (``ss`` at least
    ``supersample`` and ``1 / |scale|``, so no input pixel falls between samples); a kernel shrunk inside one pixel
    becomes a delta. A scale of exactly 1 returns the kernels unchanged.

    Args:
        kernels (Tensor): (M, K, K), K odd.
        scale (float): Signed scale.
        supersample (int): Samples per output pixel and axis when shrinking.

    Returns:
        Tensor: (M, K', K') with ``K' = 2 * ceil(|scale| * (K // 2) - 1/2) + 1``, each summing to 1.
    """
    num, size = kernels.shape[0], kernels.shape[-1]
    half = size // 2
    out_half = math.ceil(abs(scale) * half - 0.5 - 1e-6)  # outermost output pixel the support reaches
    if out_half == 0 or half == 0:  # everything falls into the centre pixel
        return torch.ones(num, 1, 1, dtype=kernels.dtype, device=kernels.device)
    if scale == 1.0:
        return kernels / kernels.sum((-2, -1), keepdim=True)
    # sample at least every input pixel, so that a strongly shrunk kernel is not missed between samples
    ss = max(supersample, math.ceil(1.0 / abs(scale))) if abs(scale) < 1 else 1
    offsets = (torch.arange(ss, dtype=kernels.dtype, device=kernels.device) + 0.5) / ss - 0.5
    coords = (torch.arange(-out_half, out_half + 1, dtype=kernels.dtype, device=kernels.device)[:, None] +
              offsets).reshape(-1) / (scale * half)  # normalised input coordinates, align_corners=True
    gy, gx = torch.meshgrid(coords, coords, indexing='ij')
    grid = torch.stack([gx, gy], dim=-1).expand(num, -1, -1, -1)
    out = F.grid_sample(kernels[:, None], grid, mode='bilinear', padding_mode='zeros', align_corners=True)
    if ss > 1:
        out = F.avg_pool2d(out, ss)
    out = out[:, 0]
    return out / out.sum((-2, -1), keepdim=True).clamp_min(1e-12)


def trim_kernels(kernels, tol):
    """Drops the outer rings of (..., K, K) kernels that hold at most ``tol`` of any kernel's mass; renormalises.

    Args:
        kernels (Tensor): (..., K, K), K odd, non-negative.
        tol (float): Largest mass fraction (of the kernel's total) that may be cut from any kernel; 0 cuts only
            rings that are zero in every kernel.

    Returns:
        Tensor: (..., K', K') with K' <= K odd.
    """
    size = kernels.shape[-1]
    half = size // 2
    flat = kernels.reshape(-1, size, size)
    total = flat.sum((-2, -1)).clamp_min(1e-12)
    keep = half
    while keep > 0:
        inner = flat[:, half - keep + 1:half + keep, half - keep + 1:half + keep].sum((-2, -1))
        if float(((total - inner) / total).max()) > tol:
            break
        keep -= 1
    if keep == half:
        return kernels
    out = kernels[..., half - keep:half + keep + 1, half - keep:half + keep + 1]
    return out / out.sum((-2, -1), keepdim=True).clamp_min(1e-12)


def _pad_to(kernels, size):
    """Zero-pads (or centre-crops and renormalises) (..., K, K) kernels to ``size``."""
    pad = (size - kernels.shape[-1]) // 2
    if pad < 0:
        kernels = kernels[..., -pad:pad, -pad:pad]
        return kernels / kernels.sum((-2, -1), keepdim=True).clamp_min(1e-12)
    return F.pad(kernels, (pad, pad, pad, pad)) if pad else kernels


class ParametricKernelBank:
    """DP kernels of :func:`defocusgan_plugin.ops.psf.dp_psf` (the synthetic data's image formation by default).

    Args:
        profile (str): 'butterworth' or 'disk'. Default: 'butterworth'.
        ramp_width (float): Left/right split ramp width (see :func:`defocusgan_plugin.ops.psf.dp_ramp`).
        **profile_kwargs: order, cutoff, beta, sigma of the profile.
    """

    grid = (1, 1)
    frame_size = None  # the same kernels fit any image

    def __init__(self, profile='butterworth', ramp_width=1.0, **profile_kwargs):
        self.profile, self.ramp_width, self.profile_kwargs = profile, ramp_width, profile_kwargs
        dp_psf([1.0], 5, profile, ramp_width, **profile_kwargs)  # fail now, not mid-optimisation, on bad options

    def __call__(self, radii):
        radii = torch.as_tensor(radii, dtype=torch.float32)
        size = kernel_size_for(float(radii.abs().max()), self.profile_kwargs.get('sigma', 0.0))
        return dp_psf(radii, size, self.profile, self.ramp_width, device=radii.device, **self.profile_kwargs)[None]


def load_kernel_array(path, option):
    """Loads a calibrated kernel array from a ``.npy`` file; errors name the file and the option.

    Small negative values (calibration noise) are clipped to 0.

    Returns:
        ndarray: float32 array of 2 to 4 dims whose last two are an odd square kernel.
    """
    if not isinstance(path, str) or not path:
        raise ValueError(f'Option {option} must be the path of a .npy kernel file, got {path!r}.')
    if not osp.isfile(path):
        raise FileNotFoundError(f'Calibrated kernel file not found: {path} (option {option}).')
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as err:
        raise ValueError(f'Cannot read calibrated kernel file {path} (option {option}): {err}') from None
    where = f'Calibrated kernel file {path} (option {option})'
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f'{where} holds {arr.dtype} data, not numbers.')
    if arr.ndim not in (2, 3, 4) or arr.shape[-1] != arr.shape[-2] or arr.shape[-1] % 2 != 1:
        raise ValueError(f'{where} has shape {arr.shape}; expected ([radii,] [cells,] K, K) with K odd, e.g. '
                         '(48, 61, 61) for a 6x8 grid.')
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f'{where} contains NaN or Inf.')
    arr = np.clip(arr, 0.0, None)
    empty = np.flatnonzero(arr.reshape(-1, arr.shape[-1] * arr.shape[-1]).sum(1) <= 0)
    if empty.size:
        raise ValueError(f'{where}: kernel {int(empty[0])} (flattened index) sums to zero.')
    return arr


class ResampledKernelBank:
    """Left/right kernels known at a few signed radii (measured or learned), resampled to each layer's radius.

    A layer of radius ``r`` takes the kernels known at the radius nearest to it (same sign first, then the closest
    ratio) and resamples them by the signed scale ``r / r_k`` (:func:`resample_kernels`).

    Args:
        kernels (Tensor): (R, G, 2, K, K) kernels: R known radii, G grid cells, left/right.
        radii (sequence[float]): The R signed radii (pixels), none of them 0.
        grid (tuple[int, int]): (rows, cols) of the G cells. Default: (1, 1).
        supersample (int): See :func:`resample_kernels`.
        frame_size (tuple[int, int] | None): (height, width) of the image the grid was calibrated on; None: the
            grid is spread over whatever image is rendered.
        max_size (int | None): Resampled kernels larger than this (odd) are centre-cropped to it and renormalised;
            None keeps them whole.
        trim (float): Outer rings of the resampled kernels holding at most this share of any kernel's mass are
            dropped (:func:`trim_kernels`): smaller kernels, cheaper blurs. 0 (default) keeps the whole window.
    """

    def __init__(self, kernels, radii, grid=(1, 1), supersample=4, frame_size=None, max_size=None, trim=0.0):
        kernels = torch.as_tensor(kernels, dtype=torch.float32)
        if kernels.dim() != 5 or kernels.shape[2] != 2 or kernels.shape[1] != grid[0] * grid[1]:
            raise ValueError(f'Expected kernels (radii, {grid[0] * grid[1]} cells, 2, K, K), got '
                             f'{tuple(kernels.shape)}.')
        self.radii = torch.tensor([float(r) for r in radii])
        if len(self.radii) != kernels.shape[0]:
            raise ValueError(f'{kernels.shape[0]} kernel sets but {len(self.radii)} radii.')
        if (self.radii == 0).any():
            raise ValueError('Kernels known at radius 0 cannot be rescaled to other radii.')
        self.kernels = kernels / kernels.sum((-2, -1), keepdim=True).clamp_min(1e-12)
        self.grid, self.supersample = tuple(grid), supersample
        if frame_size is not None:
            frame_size = tuple(int(v) for v in frame_size)
            if len(frame_size) != 2 or frame_size[0] < grid[0] or frame_size[1] < grid[1]:
                raise ValueError(f'frame_size must be [height, width] holding the {grid[0]}x{grid[1]} grid, got '
                                 f'{frame_size}.')
        self.frame_size = frame_size
        if max_size is not None and (int(max_size) < 1 or int(max_size) % 2 != 1):
            raise ValueError(f'max_size must be a positive odd kernel size, got {max_size}.')
        self.max_size = None if max_size is None else int(max_size)
        if not 0 <= float(trim) < 0.5:
            raise ValueError(f'trim must lie in [0, 0.5), got {trim}.')
        self.trim = float(trim)

    def averaged(self):
        """The same bank with the kernels averaged over the grid cells (one set for the whole image)."""
        return ResampledKernelBank(
            self.kernels.mean(1, keepdim=True), self.radii.tolist(), (1, 1), self.supersample, None, self.max_size,
            self.trim)

    def describe(self):
        """One line for the log: grid, kernel size, frame and the radius of each calibration (with its spread)."""
        cells = kernel_radii(self.kernels.sum(2))  # (R, G): the full aperture (left + right) of each cell
        parts = []
        for i, r in enumerate(self.radii.tolist()):
            spread = f' ({float(cells[i].min()):.1f}-{float(cells[i].max()):.1f} over cells)' if cells.shape[1] > 1 \
                else ''
            parts.append(f'{r:+.2f} px{spread}')
        frame = 'any image' if self.frame_size is None else f'{self.frame_size[0]}x{self.frame_size[1]} px'
        return (f'{self.grid[0]}x{self.grid[1]} grid of {self.kernels.shape[-1]}x{self.kernels.shape[-1]} kernels '
                f'calibrated on {frame}; reference radius {", ".join(parts)}')

    @classmethod
    def from_npy(cls,
                 left,
                 right,
                 grid=None,
                 radii=None,
                 radius=None,
                 supersample=4,
                 frame_size=None,
                 max_size='calibration',
                 trim=0.0,
                 option='kernels'):
        """Loads a calibration: one ``.npy`` file per view.

        Args:
            left (str): ``.npy`` file of the left-view kernels.
            right (str): ``.npy`` file of the right-view kernels (same shape).
            grid (list[int] | None): (rows, cols) when the kernels vary over the image (Pixel 4: [6, 8] with arrays
                (48, 61, 61)). Default: one kernel set for the whole image.
            radii (list[float] | None): Signed radius (pixels) of each calibration when the arrays hold several
                defoci on their first axis: (radii, H, W) or (radii, cells, H, W). Default: one calibration.
            radius (float | None): Signed radius (pixels) of a single calibration, an override. Default: estimated
                as the mean over cells of the disk-equivalent radius of each cell's full aperture (left + right
                kernels, :func:`kernel_radii`), positive; the views' sign convention is the calibration's.
            supersample (int): See :func:`resample_kernels`.
            frame_size (list[int] | None): [height, width] of the crop the grid belongs to (Pixel 4: [1008, 1344]).
            max_size (int | str | None): Cut of the resampled kernels; 'calibration' (default): the calibration's
                own kernel size, as the release; None: no cut.
            trim (float): See the class.
            option (str): Option prefix used in error messages.
        """
        arrays = [load_kernel_array(left, f'{option}.left'), load_kernel_array(right, f'{option}.right')]
        if arrays[0].shape != arrays[1].shape:
            raise ValueError(f'Calibrated left and right kernels differ in shape: {arrays[0].shape} in {left} vs '
                             f'{arrays[1].shape} in {right} (options {option}.left / {option}.right).')
        grid = tuple(int(v) for v in (grid or (1, 1)))
        if len(grid) != 2 or min(grid) < 1:
            raise ValueError(f'Option {option}.grid must be [rows, cols] of positive integers, got {grid}.')
        cells, num_radii = grid[0] * grid[1], 1 if radii is None else len(radii)
        shape, k = arrays[0].shape, arrays[0].shape[-1]
        lead = shape[:-2]
        if int(np.prod(lead)) != num_radii * cells or (len(lead) == 2 and lead != (num_radii, cells)):
            raise ValueError(f'Calibrated kernel file {left} has shape {shape}, but options {option}.grid and '
                             f'{option}.radii ({num_radii} radii, {cells} cells) ask for {(num_radii, cells, k, k)} '
                             f'or {(num_radii * cells, k, k)}.')
        kernels = torch.from_numpy(np.stack([a.reshape(-1, k, k) for a in arrays], 1))  # (R * cells, 2, K, K)
        kernels = kernels.reshape(num_radii, cells, 2, k, k)
        if radii is None:
            radii = [float(kernel_radii(kernels[0].sum(1)).mean()) if radius is None else radius]
        if any(float(r) == 0 for r in radii):
            raise ValueError(f'Option {option}.radii/radius: a calibration at radius 0 cannot be rescaled.')
        if max_size == 'calibration':
            max_size = k
        try:
            return cls(kernels, radii, grid, supersample, frame_size, max_size, trim)
        except ValueError as err:
            raise ValueError(f'Options {option}: {err}') from None

    def _nearest(self, radius):
        """Index of the known radius to rescale for ``radius``: same sign first, then the closest log-scale."""
        ratio = (radius / self.radii).abs().clamp_min(1e-12).log().abs()
        return int((ratio + 1e3 * (self.radii * radius < 0)).argmin())

    def __call__(self, radii):
        radii = torch.as_tensor(radii, dtype=torch.float32).reshape(-1).cpu()
        cells, size = self.kernels.shape[1], self.kernels.shape[-1]
        per_layer = []
        for r in radii.tolist():
            idx = self._nearest(r)
            flat = self.kernels[idx].reshape(cells * 2, size, size)
            per_layer.append(resample_kernels(flat, r / float(self.radii[idx]), self.supersample))
        out_size = max(k.shape[-1] for k in per_layer)
        if self.max_size is not None:
            out_size = min(out_size, self.max_size)
        out = torch.stack([_pad_to(k, out_size) for k in per_layer], 1)  # (G * 2, N, K, K)
        if self.trim > 0:
            out = trim_kernels(out, self.trim)
        return out.reshape(cells, 2, len(per_layer), *out.shape[-2:])
