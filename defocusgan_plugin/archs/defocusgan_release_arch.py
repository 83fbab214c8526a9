"""DefocusGAN generator exactly as the authors released it (loads their ``90_models.pth``).

Module names and shapes equal the release's ``state_dict`` (468 tensors, 4,934,531 parameters), so the published
weights load with ``strict=True`` (``defocusgan-deblur --weights 90_models.pth`` or ``path.pretrain_network_g`` with
``param_key_g: state_dict``). The forward follows the release operation by operation:

* ``head``: conv3x3 3->64 + ReLU gives ``h``.
* ``layer1`` .. ``layer8``: one module list per U-Net stage, one entry per branch. A branch with setting ``k <= 1``
  is a 1x1 conv + ReLU at every stage (no resampling); otherwise a residual group of ``k // 3`` RCABs and a conv3x3,
  then max-pool 2x2 (stages 1-4) or nearest x2 up-sampling (stages 5-8). Before every stage the block input,
  average-pooled to the stage's size, is added (:func:`release_branch_path`).
* Full scale: all 8 stages; 1/4 scale (after ``unetdown4``: max-pool 4 + DoubleConv): stages 1, 2, 7, 8; 1/8 scale
  (after ``unetdown2``): stages 1 and 7, plus a skip. The same ``layerN`` modules serve all three scales.
* Branch outputs are summed with gates ``g_k = w * mask_k + (1 - w)``; the masks split max |map| over channels into
  the ranges ``[e_k, e_(k+1))`` of ``mask_edges`` (resized to 1/4 and 1/8 by nearest neighbour). Without a map (or
  with w = 0) every gate is 1, which is how the release runs at test time.
* Back up: ``unetup2`` (bilinear x2 with aligned corners, concat with the 1/4 input, DoubleConv), ``unetup4``
  (transposed conv, DoubleConv, transposed conv); output ``sigmoid(tail_hard(h + u4 + t1))``, no global residual.

Channel order: the release reads its PNGs with OpenCV and never converts them, so its networks were trained on BGR
images. With ``channel_order: bgr`` (default) the module takes RGB images, as every BasicSR pipeline gives them, and
swaps the channels around the release's layers, so the authors' weights give the release's output; for training
from scratch the swap is a fixed permutation of the first and last layers and changes nothing.

``connect`` and ``connect2`` are in the release's state dict but never used by its forward; they are kept (frozen, so
distributed training needs no ``find_unused_parameters``) for strict loading and the exact parameter count.

Input sizes: the release only works on multiples of 16 (its skip sums mismatch otherwise; DPDD's 1680x1120 is one).
This module replicate-pads other sizes to the next multiple of 16 (``pad_multiple``) and crops the output back, so a
multiple of 16 gives exactly the release's output and any size works. The aligned-corner bilinear up-sampling of
``unetup2`` depends on the image size, so tiles differ slightly from the whole image away from seams (unlike the
slim ``DefocusGANGenerator``, which is exactly shift-invariant by its ``pad_multiple``).
"""
import math
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn as nn
from torch.nn import functional as F

RELEASE_GENERATOR_BRANCHES = (1, 4, 7, 10)
RELEASE_MASK_EDGES = (0.0, 1.9, 4.2, 6.2)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation channel attention of RCAN (``conv_du``: 1x1 convs C -> C/r -> C, sigmoid)."""

    def __init__(self, num_feat, reduction):
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(num_feat, num_feat // reduction, 1), nn.ReLU(inplace=True),
            nn.Conv2d(num_feat // reduction, num_feat, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.conv_du(F.adaptive_avg_pool2d(x, 1))


class ReleaseRCAB(nn.Module):
    """RCAB: conv3x3, ReLU, conv3x3, channel attention, identity skip."""

    def __init__(self, num_feat, reduction):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.ReLU(inplace=True), nn.Conv2d(num_feat, num_feat, 3, 1, 1),
            ChannelAttention(num_feat, reduction))

    def forward(self, x):
        return self.body(x) + x


class ReleaseResidualGroup(nn.Module):
    """``num_rcab`` RCABs and a conv3x3, with a skip around the group."""

    def __init__(self, num_feat, num_rcab, reduction):
        super().__init__()
        self.body = nn.Sequential(*[ReleaseRCAB(num_feat, reduction) for _ in range(num_rcab)],
                                  nn.Conv2d(num_feat, num_feat, 3, 1, 1))

    def forward(self, x):
        return self.body(x) + x


class DoubleConv(nn.Module):
    """Two bias-free conv3x3, each followed by ReLU (``double_conv.0`` and ``double_conv.2``)."""

    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False), nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.double_conv(x)


class PoolDown(nn.Module):
    """Max-pool by ``factor``, then DoubleConv (``unetdown4`` / ``unetdown2``)."""

    def __init__(self, num_feat, factor):
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(factor), DoubleConv(num_feat, num_feat))

    def forward(self, x):
        return self.maxpool_conv(x)


class BilinearUp(nn.Module):
    """``unetup2``: bilinear x2 (aligned corners) of ``x``, zero-padded to ``skip``'s size, concat [skip, up],
    DoubleConv 2C -> C."""

    def __init__(self, num_feat):
        super().__init__()
        self.conv = DoubleConv(2 * num_feat, num_feat)

    def forward(self, x, skip):
        x = F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=True)
        dy, dx = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        if dy or dx:
            x = F.pad(x, (dx // 2, dx - dx // 2, dy // 2, dy - dy // 2))
        return self.conv(torch.cat([skip, x], dim=1))


class TransposedUp(nn.Module):
    """``unetup4``: transposed conv 2x2/2, DoubleConv, transposed conv 2x2/2 (x4 in all)."""

    def __init__(self, num_feat):
        super().__init__()
        self.up = nn.Sequential(
            nn.ConvTranspose2d(num_feat, num_feat, 2, 2), DoubleConv(num_feat, num_feat),
            nn.ConvTranspose2d(num_feat, num_feat, 2, 2))

    def forward(self, x):
        return self.up(x)


def release_stage(num_feat, setting, reduction, resample):
    """Stage body of one branch: ``setting <= 1``: 1x1 conv + ReLU (nothing else); otherwise a residual group of
    ``setting // 3`` RCABs followed by ``resample``."""
    if setting <= 1:
        return nn.Sequential(nn.Conv2d(num_feat, num_feat, 1), nn.ReLU(inplace=True))
    return nn.Sequential(ReleaseResidualGroup(num_feat, setting // 3, reduction), resample)


class ReleaseBranches(nn.Module):
    """Base of the release networks: the eight stage lists ``layer1`` .. ``layer8`` and their branch paths.

    Args:
        num_feat (int): Channels.
        branch_settings (Sequence[int]): Stage-body setting per branch (<= 1: 1x1 conv, else ``k // 3`` RCABs).
        reduction (int): Channel-attention reduction of the RCABs.
        channel_order (str): 'bgr' (the release's training data) or 'rgb': the colour order the layers see; the
            module's inputs and outputs are RGB either way.
    """

    def __init__(self, num_feat, branch_settings, reduction, channel_order='bgr'):
        super().__init__()
        if channel_order not in ('bgr', 'rgb'):
            raise ValueError(f"channel_order must be 'bgr' (the release's weights) or 'rgb', got {channel_order!r}.")
        self.swap_channels = channel_order == 'bgr'
        if not branch_settings or any(int(k) != k or k < 0 for k in branch_settings):
            raise ValueError(f'branch_settings must be a non-empty list of whole numbers >= 0, got {branch_settings}.')
        if num_feat % reduction:
            raise ValueError(f'num_feat ({num_feat}) must be divisible by reduction ({reduction}).')
        self.branch_settings = tuple(int(k) for k in branch_settings)
        self.num_feat, self.reduction = num_feat, reduction
        # four 2x max-pool stages in every resampling branch
        self.resample_multiple = 16 if any(k > 1 for k in self.branch_settings) else 1

    def build_layers(self):
        """Creates ``layer1`` .. ``layer8``; subclasses call it last, so that the state dict lists the modules in the
        release's order."""
        num_feat, reduction = self.num_feat, self.reduction
        for n in range(1, 9):
            resample = (lambda: nn.MaxPool2d(2)) if n <= 4 else (lambda: nn.Upsample(scale_factor=2, mode='nearest'))
            setattr(self, f'layer{n}',
                    nn.ModuleList(release_stage(num_feat, k, reduction, resample()) for k in self.branch_settings))

    def stage(self, n, branch, x):
        return getattr(self, f'layer{n}')[branch](x)


def pool_to(cache, x, like):
    """P(x, like): ``x`` adaptive-average-pooled to ``like``'s size (memoised per size in ``cache``)."""
    size = tuple(like.shape[-2:])
    if size not in cache:
        cache[size] = x if size == tuple(x.shape[-2:]) else F.adaptive_avg_pool2d(x, size)
    return cache[size]


def release_branch_path(net, branch, x, cache, stages, variant='generator'):
    """One branch's U-Net path on block input ``x`` (see the module docstring).

    Args:
        net (ReleaseBranches): Owner of the stage modules.
        branch (int): Branch index.
        x (Tensor): Block input (``h``, ``d4`` or ``d8``).
        cache (dict): Memo of ``x`` pooled per size, shared by the branches of one block input.
        stages (int): 8 (full scale), 4 (1/4: stages 1, 2, 7, 8) or 2 (1/8: stages 1, 7).
        variant (str): 'generator' (o6 = L6(P(x, o3) + o5)) or 'map' (o6 = L6(P(x, o5) + o5 + o3)).

    Returns:
        Tensor: The branch output (o8, p8 or q7).
    """

    def stage(n, prev, *skips):  # L_n(P(x, prev) + prev + skips)
        inp = pool_to(cache, x, prev) + prev
        for skip in skips:
            inp = inp + skip
        return net.stage(n, branch, inp)

    o1 = net.stage(1, branch, x)
    if stages == 2:
        return stage(7, o1)
    o2 = stage(2, o1)
    if stages == 4:
        return stage(8, stage(7, o2), o1)
    o3 = stage(3, o2)
    o4 = stage(4, o3)
    o5 = stage(5, o4)
    if variant == 'map':
        o6 = stage(6, o5, o3)
    else:
        o6 = net.stage(6, branch, pool_to(cache, x, o3) + o5)
    o7 = stage(7, o6, o2)
    return stage(8, o7, o1)


def range_masks(defocus, edges, size=None):
    """Masks of the |CoC| ranges ``[e_k, e_(k+1))`` (the last one open), from max |map| over channels.

    Args:
        defocus (Tensor): (B, C, H, W) defocus map in pixels.
        edges (Sequence[float]): Increasing lower edges, one per range.
        size (tuple[int, int] | None): Output size; the magnitude is resized by nearest neighbour. Default: (H, W).

    Returns:
        list[Tensor]: One (B, 1, h, w) mask of 0/1 values per range.
    """
    magnitude = defocus.abs().amax(dim=1, keepdim=True)
    if size is not None and tuple(size) != tuple(magnitude.shape[-2:]):
        magnitude = F.interpolate(magnitude, size=tuple(size), mode='nearest')
    uppers = list(edges[1:]) + [math.inf]
    return [((magnitude >= lo) & (magnitude < hi)).to(defocus.dtype) for lo, hi in zip(edges, uppers)]


@ARCH_REGISTRY.register()
class DefocusGANReleaseGenerator(ReleaseBranches):
    """DefocusGAN generator of the official release (see the module docstring for the exact forward).

    Args:
        num_feat (int): Channels. Default: 64.
        branch_settings (Sequence[int]): Stage-body setting per branch (<= 1: 1x1 conv, else ``k // 3`` RCABs).
            Default: (1, 4, 7, 10).
        mask_edges (Sequence[float]): Lower |CoC| edge of each branch's range, pixels, increasing (one per branch).
            Default: (0, 1.9, 4.2, 6.2).
        reduction (int): Channel-attention reduction. Default: 16.
        channel_order (str): Colour order the layers see, 'bgr' (the release's weights) or 'rgb'. Default: 'bgr'.

    Forward:
        x (Tensor): (B, 3, H, W) blurred image in [0, 1]; any size.
        defocus (Tensor | None): (B, C, H, W) defocus map in pixels; None: every gate is 1 (inference).
        guidance (float | Tensor): Guidance weight w in [0, 1], used with ``defocus``. Default: 1.

    Returns:
        Tensor: (B, 3, H, W) deblurred image in (0, 1).
    """

    accepts_defocus_map = True  # DefocusGANModel passes the map and the annealed weight to such generators

    def __init__(self,
                 num_feat=64,
                 branch_settings=RELEASE_GENERATOR_BRANCHES,
                 mask_edges=RELEASE_MASK_EDGES,
                 reduction=16,
                 channel_order='bgr'):
        super().__init__(num_feat, branch_settings, reduction, channel_order)
        if len(mask_edges) != len(self.branch_settings) or list(mask_edges) != sorted(mask_edges):
            raise ValueError(f'mask_edges must be {len(self.branch_settings)} increasing values (the lower |CoC| edge '
                             f'of each branch of branch_settings {list(self.branch_settings)}); got '
                             f'{list(mask_edges)}.')
        self.mask_edges = tuple(float(e) for e in mask_edges)
        # max-pool 4 then 2, and four 2x stages at every scale: 16 in total
        self.pad_multiple = max(8, self.resample_multiple)
        self.head = nn.Sequential(nn.Conv2d(3, num_feat, 3, 1, 1), nn.ReLU(inplace=True))
        self.tail_hard = nn.Sequential(nn.Conv2d(num_feat, 3, 3, 1, 1), nn.Sigmoid())
        self.connect = nn.Conv2d(num_feat, num_feat, 3, 1, 1)  # unused by the release's forward
        self.connect2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.connect.requires_grad_(False)
        self.connect2.requires_grad_(False)
        self.unetdown4 = PoolDown(num_feat, 4)
        self.unetdown2 = PoolDown(num_feat, 2)
        self.unetup2 = BilinearUp(num_feat)
        self.unetup4 = TransposedUp(num_feat)
        self.build_layers()

    def forward(self, x, defocus=None, guidance=1.0):
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f'DefocusGANReleaseGenerator expects a (B, 3, H, W) image, got {tuple(x.shape)}.')
        height, width = x.shape[-2:]
        pad = (0, -width % self.pad_multiple, 0, -height % self.pad_multiple)
        if any(pad):
            x = F.pad(x, pad, mode='replicate')
        if defocus is not None:
            if defocus.shape[-2:] != (height, width):
                raise ValueError(f'Defocus map size {tuple(defocus.shape[-2:])} differs from the image size '
                                 f'{(height, width)}.')
            if not torch.is_tensor(guidance) and guidance == 0:
                defocus = None  # every gate is 1
            elif any(pad):
                defocus = F.pad(defocus, pad, mode='replicate')

        def gated_sum(inp, stages):  # one branch at a time: low peak memory
            cache, total, masks = {}, None, None
            for k in range(len(self.branch_settings)):
                out = release_branch_path(self, k, inp, cache, stages)
                if defocus is not None:
                    if masks is None:
                        masks = range_masks(defocus, self.mask_edges, out.shape[-2:])
                    out = out * (guidance * masks[k] + (1 - guidance))
                total = out if total is None else total + out
            return total

        h = self.head(x.flip(1) if self.swap_channels else x)
        t1 = gated_sum(h, 8)
        d4 = self.unetdown4(t1)
        t4 = gated_sum(d4, 4)
        d8 = self.unetdown2(t4)
        t8 = gated_sum(d8, 2) + d8
        u2 = self.unetup2(t8, d4)
        u4 = self.unetup4(t4 + u2)
        out = self.tail_hard(h + u4 + t1)
        return (out.flip(1) if self.swap_channels else out)[..., :height, :width]
