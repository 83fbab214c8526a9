"""MCCNet: dual-pixel defocus deblurring with a Siamese encoder and multi-scale explicit cross-correlation.

After Swami, "Adjust Your Focus: Defocus Deblurring From Dual-Pixel Images Using Explicit Multi-Scale
Cross-Correlation". Instead of concatenating the two DP views at the input, both views go through one shared
(Siamese) encoder; at every encoder scale the left and right features are cross-correlated over signed horizontal
displacements (:func:`defocusgan_plugin.ops.correlation.horizontal_correlation`). The correlation volumes are fused
coarse to fine into a guidance pyramid (large blur is seen at coarse scales, fine disparity at fine scales), and the
guidance modulates the merged features of the two views that feed a U-Net decoder, so each region is deblurred
according to its disparity. The output is a residual on the mean of the two views.
"""
import torch
from basicsr.archs.arch_util import ResidualBlockNoBN, make_layer
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn as nn
from torch.nn import functional as F

from defocusgan_plugin.ops.correlation import horizontal_correlation


def _as_list(value, num, name):
    values = list(value) if isinstance(value, (list, tuple)) else [value] * num
    if len(values) != num:
        raise ValueError(f'MCCNet option {name} needs {num} values (one per scale), got {values}.')
    return [int(v) for v in values]


class SiameseEncoder(nn.Module):
    """Feature pyramid of one view: a residual stage per scale, stride-2 convolutions in between."""

    def __init__(self, num_in_ch, widths, num_blocks):
        super().__init__()
        self.conv_first = nn.Conv2d(num_in_ch, widths[0], 3, 1, 1)
        self.downs = nn.ModuleList(nn.Conv2d(c_in, c_out, 3, 2, 1) for c_in, c_out in zip(widths[:-1], widths[1:]))
        self.stages = nn.ModuleList(make_layer(ResidualBlockNoBN, n, num_feat=c) for c, n in zip(widths, num_blocks))
        self.lrelu = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x):
        feats = [self.stages[0](self.lrelu(self.conv_first(x)))]
        for down, stage in zip(self.downs, self.stages[1:]):
            feats.append(stage(self.lrelu(down(feats[-1]))))
        return feats


class CorrelationGuide(nn.Module):
    """Turns one scale's correlation volume (plus the up-sampled guidance of the coarser scale) into guidance."""

    def __init__(self, num_in_ch, num_feat):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.LeakyReLU(0.1, inplace=True))

    def forward(self, corr, coarser=None):
        if coarser is not None:
            coarser = F.interpolate(coarser, size=corr.shape[-2:], mode='bilinear', align_corners=False)
            corr = torch.cat([corr, coarser], dim=1)
        return self.body(corr)


class GuidedViewFusion(nn.Module):
    """Merges the left and right features of one scale and modulates them with the correlation guidance
    (spatial feature transform: ``f * (1 + scale) + shift``), so the decoder can treat each region by its disparity."""

    def __init__(self, num_feat, guide_feat):
        super().__init__()
        self.merge = nn.Conv2d(2 * num_feat, num_feat, 1)
        self.modulation = nn.Conv2d(guide_feat, 2 * num_feat, 1)

    def forward(self, feat_l, feat_r, guide):
        feat = self.merge(torch.cat([feat_l, feat_r], dim=1))
        scale, shift = self.modulation(guide).chunk(2, dim=1)
        return feat * (1 + scale) + shift


@ARCH_REGISTRY.register()
class MCCNet(nn.Module):
    """Multi-scale cross-correlation network for dual-pixel defocus deblurring.

    The correlation is normalised over channels at each pixel: every left and right feature vector is L2-normalised
    before the dot product (``horizontal_correlation(..., normalize=True)``), so each entry of the volume is a cosine
    similarity in [-1, 1]. Why: the raw dot product grows with feature magnitude, which drifts during training and
    follows image brightness and texture contrast; a bright or strongly textured region would then look like a better
    match than a dark or flat one. Cosine similarity keeps the scale of the volume fixed, so the guidance layers read
    disparity from where the peak lies along the displacement axis, not from feature energy. Displacements that leave
    the image give 0, a neutral "no match".

    Args:
        num_in_ch (int): Channels of the DP pair concat(left, right): 6 for RGB views, 2 for gray ones. Default: 6.
        num_out_ch (int): Output channels; must equal the channels of one view (residual on their mean). Default: 3.
        num_feat (int): Channels at full resolution. Default: 32.
        channel_mult (list[int]): Channel multiplier of each scale (full, 1/2, 1/4, ...; every further scale halves
            the resolution); its length sets the number of scales. Default: [1, 2, 4, 4].
        num_enc_blocks (int | list[int]): Residual blocks of the Siamese encoder per scale. Default: [1, 2, 2, 2].
        num_dec_blocks (int | list[int]): Residual blocks of the decoder per scale. Default: [1, 2, 2, 2].
        max_disp (int | list[int]): Largest |displacement| of the correlation per scale, in that scale's pixels.
            The default 4 at 1, 1/2, 1/4, 1/8 covers +-4, 8, 16, 32 full-resolution pixels: fine disparities at
            full precision, and the largest DPDD blur (CoC radius about 25 px) at the coarse scales. Default: 4.

    Forward:
        ``net(x)`` with x (N, num_in_ch, H, W) = concat(left, right) as ``DPDDDataset`` gives with ``input: dual``,
        or ``net(left, right)`` with two (N, num_in_ch / 2, H, W) tensors. Any H, W (padded internally).
        Returns (N, num_out_ch, H, W).
    """

    def __init__(self,
                 num_in_ch=6,
                 num_out_ch=3,
                 num_feat=32,
                 channel_mult=(1, 2, 4, 4),
                 num_enc_blocks=(1, 2, 2, 2),
                 num_dec_blocks=(1, 2, 2, 2),
                 max_disp=4):
        super().__init__()
        if num_in_ch % 2 or num_out_ch != num_in_ch // 2:
            raise ValueError(f'MCCNet needs num_in_ch = 2 x num_out_ch (two DP views of num_out_ch channels each), '
                             f'got num_in_ch={num_in_ch}, num_out_ch={num_out_ch}.')
        num_scales = len(channel_mult)
        self.view_ch = num_in_ch // 2
        self.max_disp = _as_list(max_disp, num_scales, 'max_disp')
        num_enc_blocks = _as_list(num_enc_blocks, num_scales, 'num_enc_blocks')
        num_dec_blocks = _as_list(num_dec_blocks, num_scales, 'num_dec_blocks')
        widths = [num_feat * int(m) for m in channel_mult]
        guide_widths = [max(c // 2, 8) for c in widths]
        self.size_multiple = 2**(num_scales - 1)

        self.encoder = SiameseEncoder(self.view_ch, widths, num_enc_blocks)
        # guidance of scale k sees its own correlation and the guidance of scale k + 1 (none at the coarsest)
        self.guides = nn.ModuleList(
            CorrelationGuide(2 * d + 1 + (guide_widths[k + 1] if k + 1 < num_scales else 0), guide_widths[k])
            for k, d in enumerate(self.max_disp))
        self.fusions = nn.ModuleList(GuidedViewFusion(c, g) for c, g in zip(widths, guide_widths))
        self.ups = nn.ModuleList(nn.Conv2d(c_in, c_out, 1) for c_out, c_in in zip(widths[:-1], widths[1:]))
        self.decoder = nn.ModuleList(
            make_layer(ResidualBlockNoBN, n, num_feat=c) for c, n in zip(widths, num_dec_blocks))
        self.conv_last = nn.Conv2d(widths[0], num_out_ch, 3, 1, 1)
        # zero residual at start: the untrained network returns the mean of the views instead of noise around it
        nn.init.zeros_(self.conv_last.weight)
        nn.init.zeros_(self.conv_last.bias)

    def _views(self, x, right):
        if right is None:
            if x.dim() != 4 or x.shape[1] != 2 * self.view_ch:
                raise ValueError(f'MCCNet needs dual-pixel input: concat(left, right) with {2 * self.view_ch} '
                                 f'channels (dataset option input: dual) or two {self.view_ch}-channel tensors; got '
                                 f'shape {tuple(x.shape)}.')
            return x[:, :self.view_ch], x[:, self.view_ch:]
        if x.shape != right.shape or x.dim() != 4 or x.shape[1] != self.view_ch:
            raise ValueError(f'MCCNet(left, right) needs two (N, {self.view_ch}, H, W) tensors of the same shape; got '
                             f'{tuple(x.shape)} and {tuple(right.shape)}.')
        return x, right

    def forward(self, x, right=None):
        left, right = self._views(x, right)
        n, _, h, w = left.shape
        base = 0.5 * (left + right)
        pad_h, pad_w = -h % self.size_multiple, -w % self.size_multiple
        pair = torch.cat([left, right], dim=0)  # Siamese: one pass of the shared encoder over both views
        if pad_h or pad_w:
            pair = F.pad(pair, (0, pad_w, 0, pad_h), mode='replicate')
        feats = self.encoder(pair)

        skips, guide = [None] * len(feats), None
        for k in reversed(range(len(feats))):
            feat_l, feat_r = feats[k][:n], feats[k][n:]
            guide = self.guides[k](horizontal_correlation(feat_l, feat_r, self.max_disp[k]), guide)
            skips[k] = self.fusions[k](feat_l, feat_r, guide)

        out = self.decoder[-1](skips[-1])
        for k in reversed(range(len(feats) - 1)):
            # a 1x1 conv commutes with bilinear up-sampling: apply it at the coarse (cheaper) resolution
            out = F.interpolate(self.ups[k](out), scale_factor=2, mode='bilinear', align_corners=False)
            out = self.decoder[k](out + skips[k])
        return self.conv_last(out)[..., :h, :w] + base
