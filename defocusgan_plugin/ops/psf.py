"""Point-spread functions of defocus: anti-aliased disks, Butterworth-shaped disks and dual-pixel (DP) halves.

All builders are vectorised over a 1-D tensor of radii, are differentiable with respect to the radius, and return
kernels normalised to sum 1, centred in an odd ``size x size`` grid (x to the right, y downwards).

Dual-pixel model (RDPD, Abuolaim et al. ICCV 2021): the left view sees the disk weighted by a ramp rising from 0 to
1 across x, the right view by the mirrored ramp, so ``left + right`` is the full disk and the combined image is the
mean of the views. For a negative (in front of the focal plane) radius the two halves swap.
"""
import math
import numpy as np
import torch
import torch.nn.functional as F


def _radii(radii, dtype=torch.float32, device=None):
    radii = torch.as_tensor(radii, dtype=dtype, device=device)
    return radii.reshape(-1)


def kernel_size_for(max_radius, sigma=0.0):
    """Odd kernel size that holds a disk of ``max_radius`` after Gaussian smoothing of std ``sigma``."""
    half = math.ceil(abs(float(max_radius)) + 3.0 * float(sigma)) + 1  # +1: anti-aliased rim
    return 2 * half + 1


def centered_grid(size, dtype=torch.float32, device=None):
    """Returns ``(x, y)`` pixel coordinates of an odd ``size x size`` grid centred at 0."""
    if size % 2 != 1:
        raise ValueError(f'Kernel size must be odd, got {size}.')
    coords = torch.arange(size, dtype=dtype, device=device) - size // 2
    y, x = torch.meshgrid(coords, coords, indexing='ij')
    return x, y


def _normalise(kernels, eps=1e-12):
    return kernels / kernels.sum(dim=(-2, -1), keepdim=True).clamp_min(eps)


def disk_coverage(radii, size, dtype=torch.float32, device=None, edge=1.0):
    """Anti-aliased disk masks (not normalised): 1 inside, 0 outside, a linear rim ``edge`` pixels wide.

    A radius below 0.5 px degenerates smoothly into the centre pixel (a delta after normalisation).

    Args:
        radii (Tensor | sequence | float): Radii in pixels, shape (N,); the sign is ignored.
        size (int): Odd kernel size.
        edge (float): Width of the rim's linear fall-off in pixels, centred on the radius. Default: 1 (the
            anti-aliased hard disk); wider rims model soft aperture edges.

    Returns:
        Tensor: (N, size, size) coverage in [0, 1].
    """
    if edge <= 0:
        raise ValueError(f'edge must be positive, got {edge}.')
    radii = _radii(radii, dtype, device).abs()
    x, y = centered_grid(size, dtype, device)
    rho = torch.sqrt(x * x + y * y)
    if edge == 1.0:  # kept as the original expression: today's kernels bit for bit
        return (radii[:, None, None] + 0.5 - rho).clamp(0.0, 1.0)
    # the centre pixel stays covered, so a small radius still degenerates into a delta
    return ((radii[:, None, None] + 0.5 * edge - rho) / edge).clamp(0.0, 1.0).maximum((rho == 0).to(dtype))


def gaussian_kernel2d(sigma, size, dtype=torch.float32, device=None):
    """Normalised isotropic Gaussian kernel; ``sigma <= 0`` gives a delta."""
    x, y = centered_grid(size, dtype, device)
    if sigma <= 0:
        return ((x == 0) & (y == 0)).to(dtype)
    g = torch.exp(-(x * x + y * y) / (2.0 * float(sigma)**2))
    return g / g.sum()


def smooth_kernels(kernels, sigma, radii=None):
    """Convolves each kernel of a (N, K, K) stack with a Gaussian of std ``sigma`` (same size, zero border).

    With ``radii`` given, the smoothing fades in over the first pixel of radius (blend weight ``min(|r|, 1)``), so an
    in-focus kernel (radius 0) stays an exact delta and kernels still vary continuously with the radius.
    """
    if sigma <= 0:
        return kernels
    gsize = min(kernels.shape[-1], 2 * math.ceil(3 * sigma) + 1)
    g = gaussian_kernel2d(sigma, gsize, kernels.dtype, kernels.device)
    smooth = F.conv2d(kernels[:, None], g[None, None], padding=gsize // 2)[:, 0]
    if radii is None:
        return smooth
    t = _radii(radii, kernels.dtype, kernels.device).abs().clamp(max=1.0)[:, None, None]
    return t * smooth + (1.0 - t) * kernels


def disk_psf(radii, size, sigma=0.0, dtype=torch.float32, device=None):
    """Normalised uniform disk PSFs (pillbox), optionally Gaussian-smoothed.

    Returns:
        Tensor: (N, size, size), each summing to 1.
    """
    return _normalise(smooth_kernels(disk_coverage(radii, size, dtype, device), sigma, radii))


def butterworth_disk_psf(radii, size, order=3, cutoff=2.5, beta=0.1, sigma=0.0, dtype=torch.float32, device=None):
    """Butterworth high-pass profile times a disk, then Gaussian smoothing (DefocusGAN Eq. 3, RDPD's DP PSF).

    ``B(rho) = 1 / (1 + (cutoff / rho)^(2 order))`` is rescaled to ``[beta, 1]`` (so the centre keeps weight
    ``beta``), multiplied by the anti-aliased disk of each radius, smoothed by a Gaussian of std ``sigma`` and
    normalised. Real DP PSFs look like this: a brighter rim and a darker centre.

    Args:
        radii (Tensor | sequence | float): Radii in pixels, shape (N,); the sign is ignored.
        size (int): Odd kernel size (see :func:`kernel_size_for`).
        order (float): Butterworth order n. Default: 3.
        cutoff (float): Cut-off distance D0 in pixels. Default: 2.5.
        beta (float): Floor of the rescaled profile, in [0, 1]. Default: 0.1.
        sigma (float): Std of the Gaussian smoothing (kappa) in pixels; it fades in over the first pixel of radius so
            that radius 0 stays a delta. Default: 0.

    Returns:
        Tensor: (N, size, size) kernels summing to 1; radius 0 gives a delta.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f'beta must lie in [0, 1], got {beta}.')
    x, y = centered_grid(size, dtype, device)
    rho2n = (x * x + y * y)**order  # rho^(2n) without a square root
    profile = rho2n / (rho2n + float(cutoff)**(2 * order))  # == (1 + (D0 / rho)^(2n))^-1, safe at rho = 0
    profile = beta + (1.0 - beta) * profile
    cover = disk_coverage(radii, size, dtype, device)
    small = _radii(radii, dtype, device).abs()[:, None, None] < 0.5  # profile has no meaning inside one pixel
    kernels = torch.where(small, cover, cover * profile)
    return _normalise(smooth_kernels(kernels, sigma, radii))


def soft_disk_psf(radii, size, edge=2.0, sigma=0.0, dtype=torch.float32, device=None):
    """Disk PSFs whose rim falls off linearly over ``edge`` pixels (soft aperture edges), optionally smoothed.

    Returns:
        Tensor: (N, size, size), each summing to 1.
    """
    return _normalise(smooth_kernels(disk_coverage(radii, size, dtype, device, edge=edge), sigma, radii))


def apodised_disk_psf(radii, size, falloff=0.5, sigma=0.0, dtype=torch.float32, device=None):
    """Apodised apertures: a disk whose weight falls off radially as ``1 - falloff * (rho / r)^2``.

    The opposite of the Butterworth profile's bright rim: the centre is brightest (lenses with vignetting inside the
    aperture, apodisation filters). ``falloff = 0`` is the plain disk.

    Returns:
        Tensor: (N, size, size), each summing to 1.
    """
    if not 0.0 <= falloff <= 1.0:
        raise ValueError(f'falloff must lie in [0, 1], got {falloff}.')
    x, y = centered_grid(size, dtype, device)
    radii_t = _radii(radii, dtype, device).abs()[:, None, None]
    profile = 1.0 - falloff * ((x * x + y * y) / (radii_t + 0.5)**2).clamp(max=1.0)
    return _normalise(smooth_kernels(disk_coverage(radii, size, dtype, device) * profile, sigma, radii))


def release_smoothing_window(kernel_size, smooth_factor=7.0):
    """Gaussian window of the release's kernel initialisation for a ``kernel_size`` disk kernel.

    ``g = round(kernel_size / smooth_factor) + 1``, made odd (+1), and OpenCV's rule for a window's default std,
    ``sigma = 0.3 * ((g - 1) / 2 - 1) + 0.8`` (``smooth_factor`` is 1 / kappa of the paper).

    Returns:
        tuple[int, float]: Window size g and std sigma.
    """
    g = int(round(kernel_size / float(smooth_factor))) + 1
    if g % 2 == 0:
        g += 1
    return g, 0.3 * ((g - 1) * 0.5 - 1.0) + 0.8


def release_butterworth_kernel(radius, order=3, cutoff_factor=2.5, beta=0.1, smooth_factor=7.0):
    """Initial blur kernel of one radius as the DefocusGAN release builds it (its ``k_c``, full aperture).

    For ``k = 2 radius + 1``: the Butterworth high-pass ``B = q / (1 + q)``, ``q = (rho^2 / D0^2)^order`` with
    ``D0 = (k - 1) / cutoff_factor`` on the k x k grid, min-max rescaled over that grid to ``[beta, 1]``, times the
    disk ``rho <= k // 2``; zero-padded by ``g // 2`` on each side and blurred with the g x g Gaussian of
    :func:`release_smoothing_window` (OpenCV ``GaussianBlur``, whose border is reflect-101); normalised to sum 1.
    Radius 0 is the 1 x 1 kernel [[1]].

    Args:
        radius (int): Radius in pixels, >= 0.
        order (float): Butterworth order n. Default: 3.
        cutoff_factor (float): D0 = (k - 1) / cutoff_factor. Default: 2.5.
        beta (float): Floor of the rescaled profile. Default: 0.1.
        smooth_factor (float): Window size factor (1 / kappa). Default: 7.

    Returns:
        ndarray: (k + 2 (g // 2), k + 2 (g // 2)) float64 kernel summing to 1.
    """
    radius = int(radius)
    if radius < 0:
        raise ValueError(f'radius must be >= 0, got {radius}.')
    if radius == 0:
        return np.ones((1, 1))
    k = 2 * radius + 1
    coords = np.arange(k, dtype=np.float64) - k // 2
    rho2 = coords[None, :]**2 + coords[:, None]**2
    q = (rho2 / ((k - 1) / float(cutoff_factor))**2)**order
    butter = q / (1.0 + q)
    butter = (1.0 - beta) * (butter - butter.min()) / (butter.max() - butter.min()) + beta
    kernel = butter * (rho2 <= (k // 2)**2)
    g, sigma = release_smoothing_window(k, smooth_factor)
    half = g // 2
    kernel = np.pad(kernel, half)
    taps = np.exp(-(np.arange(g) - half)**2 / (2.0 * sigma**2))
    taps /= taps.sum()
    for axis in (0, 1):  # separable Gaussian, reflect-101 border (numpy 'reflect' = OpenCV BORDER_REFLECT_101)
        padded = np.pad(kernel, [(half, half) if a == axis else (0, 0) for a in (0, 1)], mode='reflect')
        kernel = sum(taps[i] * np.take(padded, np.arange(i, i + kernel.shape[axis]), axis=axis) for i in range(g))
    return kernel / kernel.sum()


def dp_ramp(radii, size, ramp_width=1.0, dtype=torch.float32, device=None):
    """Left-view weighting across x: rises from 0 to 1 over ``ramp_width`` of the disk diameter.

    ``ramp_width = 1`` is the linear ramp across the whole disk (RDPD); small values approach a hard half-disk split.
    The right-view weighting is ``1 - ramp`` (the mirror image, since the ramp is odd about 0.5).

    Returns:
        Tensor: (N, size, size) ramp in [0, 1].
    """
    if ramp_width <= 0:
        raise ValueError(f'ramp_width must be positive, got {ramp_width}.')
    radii = _radii(radii, dtype, device).abs().clamp_min(0.5)
    x, _ = centered_grid(size, dtype, device)
    return (0.5 + x[None] / (2.0 * ramp_width * radii[:, None, None])).clamp(0.0, 1.0)


def dp_split(kernels, radii, ramp_width=1.0):
    """Splits full-aperture kernels into left/right DP halves, swapped for negative radii.

    Works for any kernel stack (parametric or learned), which is how stage 1 renders DP views with learned kernels.

    Args:
        kernels (Tensor): (N, K, K) full-aperture kernels.
        radii (Tensor | sequence): (N,) signed radii of the kernels (positive: behind the focal plane).
        ramp_width (float): See :func:`dp_ramp`.

    Returns:
        Tensor: (2, N, K, K) — index 0 the left view, 1 the right view — each kernel summing to 1.
    """
    radii = _radii(radii, kernels.dtype, kernels.device)
    if radii.numel() != kernels.shape[0]:
        raise ValueError(f'Got {kernels.shape[0]} kernels but {radii.numel()} radii.')
    ramp = dp_ramp(radii, kernels.shape[-1], ramp_width, kernels.dtype, kernels.device)
    ramp = torch.where(radii[:, None, None] < 0, 1.0 - ramp, ramp)
    return torch.stack([_normalise(kernels * ramp), _normalise(kernels * (1.0 - ramp))])


def dp_psf(radii, size, profile='butterworth', ramp_width=1.0, dtype=torch.float32, device=None, **profile_kwargs):
    """Parametric DP PSFs for signed radii.

    Args:
        radii (Tensor | sequence | float): (N,) signed radii in pixels.
        size (int): Odd kernel size.
        profile (str): 'butterworth' (:func:`butterworth_disk_psf`), 'disk' (:func:`disk_psf`), 'soft_disk'
            (:func:`soft_disk_psf`) or 'apodised' (:func:`apodised_disk_psf`).
        ramp_width (float): See :func:`dp_ramp`.
        **profile_kwargs: Passed to the profile builder (order, cutoff, beta, sigma; edge; falloff).

    Returns:
        Tensor: (2, N, size, size) left/right kernels, each summing to 1.
    """
    if profile not in PSF_PROFILES:
        raise ValueError(f"Unknown PSF profile '{profile}'; use one of {sorted(PSF_PROFILES)}.")
    full = PSF_PROFILES[profile](radii, size, dtype=dtype, device=device, **profile_kwargs)
    return dp_split(full, radii, ramp_width)


# Full-aperture profiles by name (the DP halves are cut from them by dp_split).
PSF_PROFILES = {
    'butterworth': butterworth_disk_psf,
    'disk': disk_psf,
    'soft_disk': soft_disk_psf,
    'apodised': apodised_disk_psf
}
