import math
import torch
from basicsr.archs.arch_util import ResidualBlockNoBN, make_layer
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn as nn
from torch.nn import functional as F

from defocusgan_plugin.ops.correlation import MATCH_CHANNELS, best_radius, cross_convolution_costs, match_planes
from defocusgan_plugin.ops.filters import box_mean
from defocusgan_plugin.ops.psf import dp_psf, kernel_size_for

# Kernels of the matching cue: LearnableBlurKernel's initialisation (the official release's Butterworth start)
DEFAULT_MATCH_PSF = {'profile': 'butterworth', 'order': 3, 'cutoff': 2.5, 'beta': 0.1, 'sigma': 0.5, 'ramp_width': 1.0}


def view_correlation(left, right, max_disp, window):
    """Local zero-normalised cross-correlation of two views over horizontal shifts (a DP cost volume).

    Channel ``k`` is the ZNCC over a ``window`` box between ``left(x)`` and ``right(x - d)``, ``d = k - max_disp``:
    a scene point behind the focal plane (positive CoC) moves right in the left view, so it peaks at ``d > 0``.

    Args:
        left, right (Tensor): (B, C, H, W) views; channels are averaged.
        max_disp (int): Largest |shift| in pixels.
        window (int): Odd box size of the local statistics.

    Returns:
        Tensor: (B, 2 * max_disp + 1, H, W) correlations in [-1, 1] (0 where a view is flat).
    """
    left, right = left.mean(1, keepdim=True), right.mean(1, keepdim=True)
    mean_l, mean_r = box_mean(left, window // 2), box_mean(right, window // 2)
    var_l = (box_mean(left * left, window // 2) - mean_l**2).clamp_min(0)
    var_r = (box_mean(right * right, window // 2) - mean_r**2).clamp_min(0)

    def shifted(x):  # (B, 1, H, W) -> (B, 2D + 1, H, W): x(. - d) for d = -D..D
        padded = F.pad(x, (max_disp, max_disp, 0, 0), mode='replicate')
        width = x.shape[-1]
        return torch.cat([padded[..., max_disp - d:max_disp - d + width] for d in range(-max_disp, max_disp + 1)], 1)

    right_d = shifted(right)
    cov = box_mean(left * right_d, window // 2) - mean_l * shifted(mean_r)
    return cov * torch.rsqrt(var_l * shifted(var_r) + 1e-8)


class SoftClip(torch.autograd.Function):
    """``t (1 + t^4)^(-1/4)``, bounded to [-1, 1], with its analytic gradient ``(1 + t^4)^(-5/4)``.

    Autograd's product rule for this expression cancels to exactly 0 in float32 once ``|t|`` exceeds about 100; the
    analytic form stays positive (1e-30 at ``|t| = 1e6``), so a saturated map can always be pulled back.
    """

    @staticmethod
    def forward(ctx, t):
        ctx.save_for_backward(t)
        return (t * (1 + t**4)**-0.25).clamp(-1.0, 1.0)  # the clamp only removes float32 rounding overshoot

    @staticmethod
    def backward(ctx, grad):
        t, = ctx.saved_tensors
        return grad * (1 + t**4)**-1.25


@ARCH_REGISTRY.register()
class DefocusMapNet(nn.Module):
    """Defocus-map network f of DefocusGAN's stage 1: dual-pixel views in, signed CoC radius map out.

    A small U-Net: a residual encoder that halves the resolution ``num_level`` times, a residual bottleneck, and a
    decoder that doubles it back (bilinear up-sampling and a convolution) and adds the encoder's skip features. Any
    input size works: the input is reflect-padded to a multiple of ``2 ** num_level`` and the output cropped back.

    The views are first matched explicitly, because learning DP matching from raw views through the reblur loss
    alone is slow (on the embedded synthetic set a plain U-Net barely moves from its start in hundreds of
    iterations). Two matching cues can be concatenated to the input:

    * ``match_step > 0`` (default): the DP cross-convolution costs ``|L * k_R(r) - R * k_L(r)|`` over signed radii
      ``r = -cap..cap`` in steps of ``match_step`` (:func:`defocusgan_plugin.ops.correlation.cross_convolution_costs`)
      with the parametric DP kernels of ``psf`` (by default the Butterworth kernels that ``LearnableBlurKernel``
      starts from). The network predicts a correction to the best-matching radius, so it starts from a physically
      meaningful map in CoC pixels (measured on the synthetic val/test splits: AIWE(1) 0.74 / 0.84 px, against
      1.24 / 1.35 for OpenCV SGBM and 1.81 / 2.17 for the correlation cue). The kernels are fixed buffers computed
      from the options (not saved in checkpoints).
    * ``corr_disp > 0``: a local normalised cross-correlation over horizontal shifts ``-corr_disp..corr_disp``
      (:func:`view_correlation`); without the cross-convolution cue the network then starts from
      ``disparity_scale`` times the soft-argmax disparity.

    The output is the soft clip ``cap * y / (cap^4 + y^4)^(1/4)``: linear around 0 and bounded to ``[-cap, cap]``.
    Unlike ``cap * tanh(y / cap)``, whose gradient underflows to exactly 0 in float32 once ``|y| > 9 cap`` (a map
    stuck at the cap for good, seen in training), its gradient decays polynomially, so Adam can always pull a
    saturated map back. Sign convention of :mod:`defocusgan_plugin.ops.coc`: positive = behind the focal plane.

    Args:
        in_ch (int): Input channels, concat(left, right). Default: 6.
        cap (float): Largest |CoC| radius in pixels (DefocusGAN: 25 at DPDD resolution). Default: 25.
        num_feat (int): Channels at full resolution; doubled per level up to ``max_feat``. Default: 32.
        num_level (int): Down-sampling levels. Default: 3.
        num_block (int): Residual blocks per level (and in the bottleneck). Default: 2.
        max_feat (int): Channel ceiling. Default: 128.
        corr_disp (int): Largest |DP disparity| searched by the correlation cue, pixels; 0 disables. Default: 0.
        corr_window (int): Odd window of the correlation. Default: 11.
        disparity_scale (float): Initial CoC radius per pixel of correlation disparity (learned; only without the
            cross-convolution cue). Default: 2.
        match_step (float): Radius step of the cross-convolution cue, pixels; 0 disables. Default: 0.5.
        match_window (int): Odd window of the cross-convolution costs. Default: 15.
        psf (dict | None): Parametric DP kernels of the cue (:func:`defocusgan_plugin.ops.psf.dp_psf`: profile,
            order, cutoff, beta, sigma, ramp_width). Default: Butterworth order 3, cut-off 2.5, beta 0.1, sigma 0.5,
            ramp width 1.
        match_channel (str): View channel the cue matches: 'mean' of the channels (default), or 'red', 'green',
            'blue' (RGB input). Real Canon DP views match best on green (the Bayer channel with twice the samples).
        match_highpass (int): Radius of a box mean subtracted from both views before matching; 0 (default) off. A
            linear filter keeps the cross-convolution identity, and removes what the identity cannot explain: the
            left/right gain and offset differences of real captures (vignetting, sRGB encoding).
        match_subpixel (bool): Refine the best radius by a parabola through the costs of it and its two neighbours
            (real DP disparities at DPDD-like resolutions are often below 1 px). Default: false.
    """

    def __init__(self,
                 in_ch=6,
                 cap=25.0,
                 num_feat=32,
                 num_level=3,
                 num_block=2,
                 max_feat=128,
                 corr_disp=0,
                 corr_window=11,
                 disparity_scale=2.0,
                 match_step=0.5,
                 match_window=15,
                 psf=None,
                 match_channel='mean',
                 match_highpass=0,
                 match_subpixel=False):
        super().__init__()
        if cap <= 0:
            raise ValueError(f'DefocusMapNet: cap must be positive (largest |CoC| in pixels), got {cap}.')
        if num_level < 0:
            raise ValueError(f'DefocusMapNet: num_level must be >= 0, got {num_level}.')
        if in_ch % 2 or corr_disp < 0 or corr_window % 2 != 1 or match_step < 0 or match_window % 2 != 1:
            raise ValueError(f'DefocusMapNet: in_ch must be even (two views), corr_disp and match_step >= 0, '
                             f'corr_window and match_window odd; got {in_ch}, {corr_disp}, {match_step}, '
                             f'{corr_window}, {match_window}.')
        self.cap = float(cap)
        self.num_level = num_level
        self.corr_disp, self.corr_window = int(corr_disp), int(corr_window)
        self.match_window = int(match_window)
        if match_channel not in MATCH_CHANNELS or (MATCH_CHANNELS[match_channel] is not None and in_ch != 6):
            raise ValueError(f"DefocusMapNet: match_channel must be 'mean', or 'red' / 'green' / 'blue' with RGB views "
                             f'(in_ch 6); got {match_channel!r} with in_ch {in_ch}.')
        if match_highpass < 0:
            raise ValueError(f'DefocusMapNet: match_highpass must be >= 0 (a box radius), got {match_highpass}.')
        self.match_channel, self.match_highpass = MATCH_CHANNELS[match_channel], int(match_highpass)
        self.match_subpixel = bool(match_subpixel)
        num_cue = 2 * self.corr_disp + 2 if self.corr_disp else 0
        if match_step > 0:
            steps = math.floor(self.cap / match_step)
            radii = torch.arange(-steps, steps + 1, dtype=torch.float32) * float(match_step)
            psf = dict(DEFAULT_MATCH_PSF, **(psf or {}))
            size = kernel_size_for(float(radii.abs().max()), psf.get('sigma', 0.0))
            self.register_buffer('match_radii', radii, persistent=False)
            self.register_buffer('match_kernels', dp_psf(radii, size, **psf), persistent=False)
            num_cue += len(radii) + 1
        else:
            self.match_radii = None
        chans = [min(num_feat * 2**i, max_feat) for i in range(num_level + 1)]
        self.conv_first = nn.Conv2d(in_ch + num_cue, chans[0], 3, 1, 1)
        self.encoders = nn.ModuleList(make_layer(ResidualBlockNoBN, num_block, num_feat=c) for c in chans[:-1])
        self.downs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, 2, 1) for i in range(num_level))
        self.body = make_layer(ResidualBlockNoBN, num_block, num_feat=chans[-1])
        self.ups = nn.ModuleList(
            nn.Sequential(
                nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False),
                nn.Conv2d(chans[i + 1], chans[i], 3, 1, 1)) for i in range(num_level))
        self.decoders = nn.ModuleList(make_layer(ResidualBlockNoBN, num_block, num_feat=c) for c in chans[:-1])
        self.conv_last = nn.Conv2d(chans[0], 1, 3, 1, 1)
        if self.match_radii is not None:  # start exactly at the matched radius
            nn.init.zeros_(self.conv_last.weight)
            nn.init.zeros_(self.conv_last.bias)
        # only when the correlation cue sets the start: DDP needs every parameter to get a gradient
        if self.corr_disp and self.match_radii is None:
            self.disparity_scale = nn.Parameter(torch.tensor(float(disparity_scale)))
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def match_cue(self, left, right):
        """Cross-convolution costs (scaled by their per-pixel mean) and the best-matching radius of two views.

        Args:
            left, right (Tensor): (B, C, H, W) views.

        Returns:
            tuple[Tensor, Tensor]: (B, M, H, W) relative costs, (B, 1, H, W) radius in pixels.
        """
        with torch.no_grad():  # a function of the data only: nothing to learn through it
            left, right = match_planes(left, right, self.match_channel, self.match_highpass)
            cost, _ = cross_convolution_costs(left, right, self.match_kernels, self.match_window)
            radius = best_radius(cost, self.match_radii, self.match_subpixel)
            return cost / cost.mean(1, keepdim=True), radius

    def forward(self, x):
        """Args: x (Tensor): (B, in_ch, H, W). Returns: Tensor: (B, 1, H, W) signed CoC radius in pixels."""
        h, w = x.shape[-2:]
        mult = 2**self.num_level
        pad_h, pad_w = (-h) % mult, (-w) % mult
        if pad_h or pad_w:
            mode = 'reflect' if pad_h < h and pad_w < w else 'replicate'
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        left, right = x.chunk(2, dim=1)
        cues, start = [x], 0
        if self.corr_disp:
            corr = view_correlation(left, right, self.corr_disp, self.corr_window)
            disps = torch.arange(-self.corr_disp, self.corr_disp + 1, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            disparity = (torch.softmax(corr / 0.05, dim=1) * disps).sum(1, keepdim=True)  # soft-argmax match
            cues += [corr, disparity]
            if self.match_radii is None:
                start = self.disparity_scale * disparity
        if self.match_radii is not None:
            cost, radius = self.match_cue(left, right)
            cues += [cost, radius / self.cap]
            start = radius
        feat = self.lrelu(self.conv_first(torch.cat(cues, 1)))
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            feat = encoder(feat)
            skips.append(feat)
            feat = self.lrelu(down(feat))
        feat = self.body(feat)
        for i in reversed(range(self.num_level)):
            feat = self.decoders[i](self.lrelu(self.ups[i](feat)) + skips[i])
        t = (self.conv_last(feat) + start)[..., :h, :w] / self.cap
        return self.cap * SoftClip.apply(t.clamp(-1e6, 1e6))  # the clamp keeps t^4 finite in float32
