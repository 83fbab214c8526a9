"""DefocusGAN stage-1 defocus-map network exactly as the authors released it (loads their checkpoint).

Module names and shapes equal the release's ``state_dict`` (324 tensors, 3,306,755 parameters). The network is the
full-scale path of the release generator (:mod:`defocusgan_plugin.archs.defocusgan_release_arch`) with branch
settings (1, 4, 4, 7) and one difference in stage 6 (``o6 = L6(P(h, o5) + o5 + o3)``): ``h = ReLU(head(x))`` from
the 6-channel DP pair, the four branches summed without masks, ``out = tail_hard(h + sum_k o8_k)`` (3 channels, no
activation), clamped to +-``clamp`` pixels. Sizes that are not multiples of 16 are replicate-padded and cropped back
(the release itself needs multiples of 16). Like the release generator it takes RGB views and, with
``channel_order: bgr`` (default), runs its layers on BGR as the release trained them (its map channels follow the
image channels, so they are returned in RGB order).
"""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn as nn
from torch.nn import functional as F

from defocusgan_plugin.archs.defocusgan_release_arch import ReleaseBranches, release_branch_path

RELEASE_MAP_BRANCHES = (1, 4, 4, 7)


@ARCH_REGISTRY.register()
class DefocusMapReleaseNet(ReleaseBranches):
    """Defocus-map network of the DefocusGAN release: DP views in, a 3-channel signed CoC map (pixels) out.

    Args:
        num_in_ch (int): Input channels, concat(left, right). Default: 6.
        num_out_ch (int): Output channels. Default: 3.
        num_feat (int): Channels. Default: 64.
        branch_settings (Sequence[int]): Stage-body setting per branch (<= 1: 1x1 conv, else ``k // 3`` RCABs).
            Default: (1, 4, 4, 7).
        reduction (int): Channel-attention reduction. Default: 16.
        clamp (float | None): The output is clamped to [-clamp, clamp] pixels (also the attribute ``cap``); None:
            no clamp. Default: 24.
        channel_order (str): Colour order the layers see, 'bgr' (the release's weights) or 'rgb'. Default: 'bgr'.
    """

    def __init__(self,
                 num_in_ch=6,
                 num_out_ch=3,
                 num_feat=64,
                 branch_settings=RELEASE_MAP_BRANCHES,
                 reduction=16,
                 clamp=24.0,
                 channel_order='bgr'):
        super().__init__(num_feat, branch_settings, reduction, channel_order)
        if self.swap_channels and (num_in_ch % 3 or num_out_ch != 3):
            raise ValueError("DefocusMapReleaseNet: channel_order 'bgr' needs colour views (num_in_ch a multiple of "
                             f"3) and num_out_ch 3; got {num_in_ch} and {num_out_ch} (use channel_order: rgb).")
        if clamp is not None and not clamp > 0:
            raise ValueError(f'DefocusMapReleaseNet: clamp must be a positive number of pixels or null, got {clamp}.')
        self.cap = None if clamp is None else float(clamp)
        self.pad_multiple = self.resample_multiple
        self.head = nn.Sequential(nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), nn.ReLU(inplace=True))
        self.tail_hard = nn.Sequential(nn.Conv2d(num_feat, num_out_ch, 3, 1, 1))
        self.build_layers()

    def forward(self, x):
        height, width = x.shape[-2:]
        pad = (0, -width % self.pad_multiple, 0, -height % self.pad_multiple)
        if any(pad):
            x = F.pad(x, pad, mode='replicate')
        if self.swap_channels:  # each RGB view to BGR
            x = x.unflatten(1, (-1, 3)).flip(2).flatten(1, 2)
        h = self.head(x)
        cache, total = {}, h
        for k in range(len(self.branch_settings)):
            total = total + release_branch_path(self, k, h, cache, 8, variant='map')
        out = self.tail_hard(total)
        if self.cap is not None:
            out = out.clamp(-self.cap, self.cap)
        return (out.flip(1) if self.swap_channels else out)[..., :height, :width]
