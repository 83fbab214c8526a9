"""Explicit cross-correlation of dual-pixel (DP) features over signed horizontal displacements.

DP disparity is horizontal and its sign tells the side of the focal plane. In the plugin's convention a positive CoC
(behind the focal plane) shifts the left view to the right relative to the right view, so a correlation indexed by
``d`` with ``left(x) <-> right(x - d)`` peaks at a positive ``d`` behind the focal plane and a negative ``d`` in front.
"""
import torch
import torch.nn.functional as F


def horizontal_correlation(left, right, max_disp, normalize=True, eps=1e-6):
    """Correlation volume of two feature maps over the displacements ``d = -max_disp .. max_disp``.

    ``out[:, d + max_disp, y, x] = <left[:, y, x], right[:, y, x - d]>``, with each feature vector L2-normalised over
    its channels (``normalize=True``: cosine similarity in [-1, 1], independent of the feature scale and of the crop
    size) or the plain dot product divided by the channel count (``normalize=False``, FlowNet's normalisation).
    Displacements that leave the image give 0.

    Swapping the views mirrors the displacement axis:
    ``horizontal_correlation(right, left)[:, m + d, y, x] == horizontal_correlation(left, right)[:, m - d, y, x - d]``.

    Args:
        left (Tensor): (N, C, H, W) features of the left view.
        right (Tensor): (N, C, H, W) features of the right view.
        max_disp (int): Largest |displacement| in pixels of this feature map (>= 0).
        normalize (bool): Cosine similarity (True) or channel-mean dot product (False). Default: True.
        eps (float): Guards the normalisation of zero vectors. Default: 1e-6.

    Returns:
        Tensor: (N, 2 * max_disp + 1, H, W); channel ``k`` holds displacement ``k - max_disp``.
    """
    if left.shape != right.shape or left.dim() != 4:
        raise ValueError(f'horizontal_correlation needs two (N, C, H, W) tensors of the same shape, got '
                         f'{tuple(left.shape)} and {tuple(right.shape)}.')
    max_disp = int(max_disp)
    if max_disp < 0:
        raise ValueError(f'max_disp must be >= 0, got {max_disp}.')
    if normalize:
        left, right = F.normalize(left, dim=1, eps=eps), F.normalize(right, dim=1, eps=eps)
    else:
        left = left / left.shape[1]
    width = left.shape[-1]
    # right[x - d] sits at column x - d + max_disp of the padded map: one pad, then a view per displacement
    padded = F.pad(right, (max_disp, max_disp))
    volume = [(left * padded[..., max_disp - d:max_disp - d + width]).sum(dim=1)
              for d in range(-max_disp, max_disp + 1)]
    return torch.stack(volume, dim=1)
