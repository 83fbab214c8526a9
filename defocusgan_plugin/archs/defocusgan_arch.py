"""DefocusGAN generator: a defocus-map-guided multi-scale deblurring network.

After Zhai et al., "Learnable Blur Kernel for Single-Image Defocus Deblurring in the Wild" (DefocusGAN). A
defocus-guided block (DGB) runs at full resolution, the features go down to 1/4 and through a slimmer DGB, then to
1/8 and a third DGB; the scales are fused coarse to fine and the output is the input plus a residual.

A DGB has one branch per |CoC| range. Each branch is a U-Net-like path (``num_levels`` levels down and back up, skip
sums) whose stage bodies are a 1x1 conv, 1, 2 or 3 RCABs (BasicSR's residual channel-attention block). During
training the defocus map splits the image into binary masks K_k and the branches are mixed as
``sum_k (w * K_k + (1 - w)) * alpha_k * f_k``; the guidance weight w is annealed from 1 to 0 by the model, after which
(and at inference) the map is not needed: ``forward(x)`` equals ``forward(x, defocus, guidance=0)``.

Compared with the official release (64 channels everywhere, the branch modules shared between scales) this version
gives each scale its own, slimmer DGB and spends fewer channels at full resolution, where most of the cost is:
~4.7 M parameters and ~0.8 M MAC per pixel instead of 4.93 M and 1.06 M (``scripts/benchmark_generator.py``).
"""
import torch
from basicsr.archs.rcan_arch import RCAB
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn as nn
from torch.nn import functional as F


def defocus_masks(defocus, edges, size=None):
    """Binary masks of the |CoC| ranges ``[0, e_1), [e_1, e_2), ..., [e_n, inf)``.

    Args:
        defocus (Tensor): (B, C, H, W) defocus map in pixels (signed CoC); the magnitude is the max of ``|map|``
            over channels.
        edges (Sequence[float]): Increasing inner range edges in pixels (n edges give n + 1 masks).
        size (tuple[int, int] | None): Output size; the magnitude is area-averaged to it first. Default: (H, W).

    Returns:
        Tensor: (B, n + 1, h, w) masks of 0/1 values; every pixel lies in exactly one range.
    """
    magnitude = defocus.abs().amax(dim=1, keepdim=True)
    if size is not None and tuple(size) != tuple(magnitude.shape[-2:]):
        magnitude = F.adaptive_avg_pool2d(magnitude, size)
    boundaries = torch.as_tensor(edges, dtype=magnitude.dtype, device=magnitude.device)
    index = torch.bucketize(magnitude[:, 0], boundaries, right=True)  # number of edges <= |CoC|
    return F.one_hot(index, len(edges) + 1).permute(0, 3, 1, 2).to(defocus.dtype)


def _stage_body(num_feat, num_rcab, squeeze_factor):
    if num_rcab == 0:  # the in-focus branch only needs per-pixel processing
        return nn.Sequential(nn.Conv2d(num_feat, num_feat, 1), nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*[RCAB(num_feat, squeeze_factor) for _ in range(num_rcab)])


class DGBBranch(nn.Module):
    """One DGB branch: a U-Net path with ``2 * num_levels`` stage bodies and skip sums.

    Downsampling is a 2x2 stride-2 conv, upsampling a 1x1 conv + pixel shuffle; odd sizes are padded by one row /
    column before going down and cropped back after coming up, so any input size works.

    Args:
        num_feat (int): Channels (the same at every level).
        num_levels (int): Resolution levels (1 = no down-sampling).
        num_rcab (int): RCABs per stage body; 0 = one 1x1 conv.
        squeeze_factor (int): Channel-attention squeeze factor of the RCABs.
    """

    def __init__(self, num_feat, num_levels, num_rcab, squeeze_factor):
        super().__init__()
        self.encoders = nn.ModuleList(_stage_body(num_feat, num_rcab, squeeze_factor) for _ in range(num_levels))
        self.decoders = nn.ModuleList(_stage_body(num_feat, num_rcab, squeeze_factor) for _ in range(num_levels))
        self.downs = nn.ModuleList(nn.Conv2d(num_feat, num_feat, 2, 2) for _ in range(num_levels - 1))
        self.ups = nn.ModuleList(
            nn.Sequential(nn.Conv2d(num_feat, 4 * num_feat, 1), nn.PixelShuffle(2)) for _ in range(num_levels - 1))

    def forward(self, x):
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x)
            if level < len(self.downs):
                skips.append(x)
                h, w = x.shape[-2:]
                x = self.downs[level](F.pad(x, (0, w % 2, 0, h % 2), mode='replicate'))
        for level, decoder in enumerate(self.decoders):
            if level > 0:
                skip = skips.pop()
                x = self.ups[len(self.ups) - level](x)[..., :skip.shape[-2], :skip.shape[-1]] + skip
            x = decoder(x)
        return x


class DefocusGuidedBlock(nn.Module):
    """DGB: one branch per |CoC| range, mixed by the guided masks, plus a skip connection.

    Args:
        num_feat (int): Channels.
        num_levels (int): U-Net levels of every branch.
        branch_blocks (Sequence[int]): RCABs per stage body of each branch (0 = 1x1 conv), from small to large CoC.
        squeeze_factor (int): Channel-attention squeeze factor.
    """

    def __init__(self, num_feat, num_levels, branch_blocks, squeeze_factor):
        super().__init__()
        self.branches = nn.ModuleList(DGBBranch(num_feat, num_levels, n, squeeze_factor) for n in branch_blocks)
        self.alpha = nn.Parameter(torch.ones(len(branch_blocks)))

    def forward(self, x, masks=None, guidance=0.0):
        out = x
        for k, branch in enumerate(self.branches):  # accumulated one branch at a time: low peak memory
            feat = branch(x) * self.alpha[k]
            if masks is not None:
                feat = feat * (guidance * masks[:, k:k + 1] + (1.0 - guidance))
            out = out + feat
        return out


@ARCH_REGISTRY.register()
class DefocusGANGenerator(nn.Module):
    """DefocusGAN generator (single blurred image in, all-in-focus image out).

    Args:
        num_in_ch (int): Input channels. Default: 3.
        num_out_ch (int): Output channels; with ``num_in_ch == num_out_ch`` the network predicts a residual on the
            input. Default: 3.
        num_feat (Sequence[int]): Channels of the DGBs at 1, 1/4 and 1/8 scale. Default: (48, 40, 32).
        num_levels (Sequence[int]): U-Net levels of the branches of each DGB. Default: (4, 4, 3) (8 stage bodies
            per branch at full scale, as in the paper).
        branch_blocks (Sequence[int]): RCABs per stage body of each branch (0 = plain 1x1 conv). Default:
            (0, 1, 2, 3).
        mask_edges (Sequence[float]): |CoC| range edges in pixels separating the branches (one fewer than
            branches). Default: (1.9, 4.2, 6.2) (the official release, DPDD resolution).
        squeeze_factor (int): Channel-attention squeeze factor of the RCABs. Default: 8.

    Forward:
        x (Tensor): (B, num_in_ch, H, W) blurred image in [0, 1]; any size (padded to ``pad_multiple`` internally).
        defocus (Tensor | None): (B, C, H, W) defocus map (signed CoC, pixels). None: no guidance (inference).
        guidance (float): Guidance weight w in [0, 1], used with ``defocus``. Default: 1.
    """

    accepts_defocus_map = True  # DefocusGANModel passes the map and the annealed weight to such generators

    def __init__(self,
                 num_in_ch=3,
                 num_out_ch=3,
                 num_feat=(48, 40, 32),
                 num_levels=(4, 4, 3),
                 branch_blocks=(0, 1, 2, 3),
                 mask_edges=(1.9, 4.2, 6.2),
                 squeeze_factor=8):
        super().__init__()
        if len(num_feat) != 3 or len(num_levels) != 3:
            raise ValueError(f'num_feat and num_levels need one value per scale (1, 1/4, 1/8); got {num_feat} and '
                             f'{num_levels}.')
        if len(mask_edges) != len(branch_blocks) - 1 or list(mask_edges) != sorted(mask_edges):
            raise ValueError(f'mask_edges must be {len(branch_blocks) - 1} increasing values (one fewer than '
                             f'branch_blocks {list(branch_blocks)}); got {list(mask_edges)}.')
        c1, c4, c8 = num_feat
        # Total down-sampling (scale x 2^(levels - 1) per DGB; 32 by default). Padding to it keeps the network's
        # output invariant to shifts by this multiple, which seamless tiling (defocusgan-deblur --tile) relies on.
        self.pad_multiple = max(8, *(s * 2**(n - 1) for s, n in zip((1, 4, 8), num_levels)))
        self.mask_edges = tuple(float(e) for e in mask_edges)
        self.residual = num_in_ch == num_out_ch
        self.conv_first = nn.Conv2d(num_in_ch, c1, 3, 1, 1)
        self.dgb1 = DefocusGuidedBlock(c1, num_levels[0], branch_blocks, squeeze_factor)
        self.down4 = nn.Sequential(nn.PixelUnshuffle(4), nn.Conv2d(16 * c1, c4, 1))
        self.dgb4 = DefocusGuidedBlock(c4, num_levels[1], branch_blocks, squeeze_factor)
        self.down8 = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(4 * c4, c8, 1))
        self.dgb8 = DefocusGuidedBlock(c8, num_levels[2], branch_blocks, squeeze_factor)
        self.up8 = nn.Sequential(nn.Conv2d(c8, 4 * c4, 1), nn.PixelShuffle(2))
        self.fuse4 = RCAB(c4, squeeze_factor)
        self.up4 = nn.Sequential(nn.Conv2d(c4, 16 * c1, 1), nn.PixelShuffle(4))
        self.fuse1 = RCAB(c1, squeeze_factor)
        self.conv_last = nn.Conv2d(c1, num_out_ch, 3, 1, 1)
        if self.residual:  # start as the identity: training begins at the blurred input, not at noise
            nn.init.zeros_(self.conv_last.weight)
            nn.init.zeros_(self.conv_last.bias)

    def forward(self, x, defocus=None, guidance=1.0):
        h, w = x.shape[-2:]
        pad = (0, -w % self.pad_multiple, 0, -h % self.pad_multiple)
        inp = F.pad(x, pad, mode='replicate') if any(pad) else x
        masks = [None] * 3
        if defocus is not None:
            if defocus.shape[-2:] != (h, w):
                raise ValueError(f'Defocus map size {tuple(defocus.shape[-2:])} differs from the image size {(h, w)}.')
            defocus = F.pad(defocus, pad, mode='replicate') if any(pad) else defocus
            hp, wp = inp.shape[-2:]
            masks = [defocus_masks(defocus, self.mask_edges, (hp // s, wp // s)) for s in (1, 4, 8)]
        else:
            guidance = 0.0

        f1 = self.dgb1(self.conv_first(inp), masks[0], guidance)
        f4 = self.dgb4(self.down4(f1), masks[1], guidance)
        f8 = self.dgb8(self.down8(f4), masks[2], guidance)
        f4 = self.fuse4(f4 + self.up8(f8))
        f1 = self.fuse1(f1 + self.up4(f4))
        out = self.conv_last(f1)
        if self.residual:
            out = out + inp
        return out[..., :h, :w]
