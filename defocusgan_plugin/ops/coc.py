"""Signed circle of confusion (CoC) from depth, thin-lens model.

Sign convention used throughout the plugin: the CoC radius is **positive behind the focal plane** (farther than the
focus distance) and negative in front of it. Since the CoC is affine in inverse depth, depth order and signed CoC
order agree: larger signed CoC = farther.
"""
import torch


def thin_lens_coc(depth, focus_distance, focal_length, f_number, pixel_pitch):
    """Signed CoC radius in pixels of a thin lens.

    The CoC diameter of a point at depth ``z`` for a lens of focal length ``f``, aperture diameter ``A = f / N``,
    focused at ``z_f`` is ``A * f / (z_f - f) * (z - z_f) / z``.

    Args:
        depth (Tensor | ndarray | float): Scene depth, same unit as ``focus_distance`` and ``focal_length``.
        focus_distance (float): Distance of the focal plane (> focal_length).
        focal_length (float): Focal length.
        f_number (float): Aperture f-number N.
        pixel_pitch (float): Sensor pixel size, same unit as ``focal_length``.

    Returns:
        Tensor: Signed CoC radius in pixels (positive behind the focal plane).
    """
    if focus_distance <= focal_length:
        raise ValueError(f'focus_distance ({focus_distance}) must exceed focal_length ({focal_length}).')
    depth = torch.as_tensor(depth, dtype=torch.float32)
    aperture = focal_length / f_number
    diameter = aperture * focal_length / (focus_distance - focal_length) * (depth - focus_distance) / depth
    return diameter / (2.0 * pixel_pitch)


def coc_from_inverse_depth(inv_depth, focus_inv_depth, gain):
    """Signed CoC radius from inverse depth (e.g. stereo disparity), ``gain * (focus_inv_depth - inv_depth)``.

    This is the thin-lens law written in inverse depth, where it is affine; ``gain`` folds aperture, focal length
    and pixel pitch into one number (pixels of CoC radius per unit of inverse depth).

    Args:
        inv_depth (Tensor | ndarray): Inverse depth (larger = nearer).
        focus_inv_depth (float): Inverse depth of the focal plane.
        gain (float): CoC pixels per unit inverse depth (> 0).

    Returns:
        Tensor: Signed CoC radius in pixels (positive behind the focal plane).
    """
    return gain * (focus_inv_depth - torch.as_tensor(inv_depth, dtype=torch.float32))
