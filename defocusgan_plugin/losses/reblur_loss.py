from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn as nn
from torch.nn import functional as F

from defocusgan_plugin.ops.filters import box_highpass


def _crop(x, border):
    return x[..., border:-border, border:-border] if border else x


@LOSS_REGISTRY.register()
class ReblurGeometricLoss(nn.Module):
    """DefocusGAN's geometric loss L_gem: L1 between the reblurred sharp image and the captured blurred image.

    The reblur ``g(AiF, defocus map; kernels)`` is :func:`defocusgan_plugin.ops.render.reblur_coc`. The release uses
    the combined-image term only (``loss_weight: 1000``, the other weights 0, no border crop). With |CoC|-indexed
    kernels the combined image cannot tell in front of from behind the focal plane; with the dual-pixel views (their
    kernels swap halves across the focal plane) two more terms are available (this plugin's variant):

    * ``view_weight``: L1 on each rendered view against the captured view;
    * ``diff_weight``: L1 on the rendered view difference ``L - R`` against the captured one. This is the term that
      makes the sign learnable. Along the path from the mirrored map (-GT) to the true one (+GT) it decreases
      monotonically (a wrong sign renders the difference negated, twice as far as rendering no blur), whereas the
      per-view L1 is flat or rising on the wrong side (at -GT it is about that of no blur at all), so with the
      combined term's barrier at 0 a wrongly signed map is a local minimum. How much weight removes that minimum
      depends on the texture: about 1.2 on the embedded synthetic validation images, about 4 on the sharper test
      scene of ``tests/test_defocus_map.py``; the plugin's option files use 5.

    Args:
        loss_weight (float): Loss weight (the official release uses 1000). Default: 1.0.
        view_weight (float): Weight of the per-view term relative to the combined-image term. Default: 0.
        diff_weight (float): Weight of the view-difference term relative to the combined-image term. Default: 0
            (release).
        crop_border (int): Pixels ignored at each border, where the padding of the reblur differs from the real
            scene outside the crop. Default: 0.
        view_highpass (int): Ours, 0 (off) by default: radius of a box mean subtracted from the rendered and the
            captured views before the view and difference terms. Unequal left/right gains (vignetting) put a
            low-frequency L - R into the captures that no map renders; the high-pass leaves the terms the
            disparity and blur that a map does render (the cue's ``match_highpass`` for the loss).
    """

    def __init__(self, loss_weight=1.0, view_weight=0.0, diff_weight=0.0, crop_border=0, view_highpass=0):
        super().__init__()
        if min(view_weight, diff_weight, crop_border, view_highpass) < 0:
            raise ValueError(f'ReblurGeometricLoss: view_weight ({view_weight}), diff_weight ({diff_weight}), '
                             f'crop_border ({crop_border}) and view_highpass ({view_highpass}) must be >= 0.')
        self.view_highpass = int(view_highpass)
        self.loss_weight = loss_weight
        self.view_weight = view_weight
        self.diff_weight = diff_weight
        self.crop_border = int(crop_border)

    @property
    def uses_views(self):
        """Whether the loss needs the rendered DP views."""
        return self.view_weight > 0 or self.diff_weight > 0

    def forward(self, reblurred, blurred, reblurred_views=None, views=None):
        """
        Args:
            reblurred (Tensor): (B, C, H, W) reblurred sharp image.
            blurred (Tensor): (B, C, H, W) captured blurred (combined) image.
            reblurred_views (Tensor | None): (B, 2, C, H, W) reblurred left/right views.
            views (Tensor | None): (B, 2, C, H, W) captured left/right views.

        Returns:
            Tensor: Scalar loss.
        """
        border = self.crop_border
        loss = F.l1_loss(_crop(reblurred, border), _crop(blurred, border))
        if reblurred_views is not None and views is not None:
            rendered, captured = (_crop(box_highpass(x, self.view_highpass), border) for x in (reblurred_views, views))
            if self.view_weight > 0:
                loss = loss + self.view_weight * F.l1_loss(rendered, captured)
            if self.diff_weight > 0:
                loss = loss + self.diff_weight * F.l1_loss(rendered[:, 0] - rendered[:, 1],
                                                           captured[:, 0] - captured[:, 1])
        return self.loss_weight * loss
