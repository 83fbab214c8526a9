import torch
from basicsr.archs.arch_util import ResidualBlockNoBN, make_layer
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn as nn
from torch.nn import functional as F


def _box(x, window):
    return F.avg_pool2d(x, window, 1, window // 2, count_include_pad=False)


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
    mean_l, mean_r = _box(left, window), _box(right, window)
    var_l = (_box(left * left, window) - mean_l**2).clamp_min(0)
    var_r = (_box(right * right, window) - mean_r**2).clamp_min(0)

    def shifted(x):  # (B, 1, H, W) -> (B, 2D + 1, H, W): x(. - d) for d = -D..D
        padded = F.pad(x, (max_disp, max_disp, 0, 0), mode='replicate')
        width = x.shape[-1]
        return torch.cat([padded[..., max_disp - d:max_disp - d + width] for d in range(-max_disp, max_disp + 1)], 1)

    right_d = shifted(right)
    cov = _box(left * right_d, window) - mean_l * shifted(mean_r)
    return cov * torch.rsqrt(var_l * shifted(var_r) + 1e-8)


@ARCH_REGISTRY.register()
class DefocusMapNet(nn.Module):
    """Defocus-map network f of DefocusGAN's stage 1: dual-pixel views in, signed CoC radius map out.

    A small U-Net: a residual encoder that halves the resolution ``num_level`` times, a residual bottleneck, and a
    decoder that doubles it back (bilinear up-sampling and a convolution) and adds the encoder's skip features. The receptive field grows
    with ``num_level`` and must cover the largest DP disparity (about the CoC diameter). Any input size works: the
    input is reflect-padded to a multiple of ``2 ** num_level`` and the output cropped back.

    A DP pair is a stereo pair with a small signed disparity, so the views are first matched explicitly:
    a local normalised cross-correlation over horizontal shifts ``-corr_disp..corr_disp``
    (:func:`view_correlation`) is concatenated to the views as input. Learning the disparity from raw views takes a
    plain U-Net far longer (measured on the embedded synthetic set); ``corr_disp: 0`` disables it.

    The output is the soft clip ``cap * y / (cap^4 + y^4)^(1/4)``: linear around 0 (the in-focus start of training)
    and bounded to ``[-cap, cap]``. Unlike ``cap * tanh(y / cap)``, whose gradient underflows to exactly 0 in float32
    once ``|y| > 9 cap`` (a map stuck at the cap for good, seen in training), its gradient decays polynomially, so
    Adam can always pull a saturated map back. Sign convention of :mod:`defocusgan_plugin.ops.coc`: positive = behind
    the focal plane.

    Args:
        in_ch (int): Input channels, concat(left, right). Default: 6.
        cap (float): Largest |CoC| radius in pixels (DefocusGAN: 25 at DPDD resolution). Default: 25.
        num_feat (int): Channels at full resolution; doubled per level up to ``max_feat``. Default: 32.
        num_level (int): Down-sampling levels. Default: 3.
        num_block (int): Residual blocks per level (and in the bottleneck). Default: 2.
        max_feat (int): Channel ceiling. Default: 128.
        corr_disp (int): Largest |DP disparity| searched by the correlation input, pixels; 0 disables. Default: 8.
        corr_window (int): Odd window of the correlation. Default: 11.
    """

    def __init__(self, in_ch=6, cap=25.0, num_feat=32, num_level=3, num_block=2, max_feat=128, corr_disp=8,
                 corr_window=11, disparity_scale=2.0):
        super().__init__()
        if cap <= 0:
            raise ValueError(f'DefocusMapNet: cap must be positive (largest |CoC| in pixels), got {cap}.')
        if num_level < 0:
            raise ValueError(f'DefocusMapNet: num_level must be >= 0, got {num_level}.')
        if in_ch % 2 or corr_disp < 0 or corr_window % 2 != 1:
            raise ValueError(f'DefocusMapNet: in_ch must be even (two views), corr_disp >= 0 and corr_window odd; got '
                             f'{in_ch}, {corr_disp}, {corr_window}.')
        self.cap = float(cap)
        self.num_level = num_level
        self.corr_disp, self.corr_window = int(corr_disp), int(corr_window)
        chans = [min(num_feat * 2**i, max_feat) for i in range(num_level + 1)]
        num_corr = 2 * self.corr_disp + 2 if self.corr_disp else 0
        self.conv_first = nn.Conv2d(in_ch + num_corr, chans[0], 3, 1, 1)
        self.encoders = nn.ModuleList(make_layer(ResidualBlockNoBN, num_block, num_feat=c) for c in chans[:-1])
        self.downs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, 2, 1) for i in range(num_level))
        self.body = make_layer(ResidualBlockNoBN, num_block, num_feat=chans[-1])
        self.ups = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False),
                          nn.Conv2d(chans[i + 1], chans[i], 3, 1, 1)) for i in range(num_level))
        self.decoders = nn.ModuleList(make_layer(ResidualBlockNoBN, num_block, num_feat=c) for c in chans[:-1])
        self.conv_last = nn.Conv2d(chans[0], 1, 3, 1, 1)
        self.disparity_scale = nn.Parameter(torch.tensor(float(disparity_scale)))
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x):
        """Args: x (Tensor): (B, in_ch, H, W). Returns: Tensor: (B, 1, H, W) signed CoC radius in pixels."""
        h, w = x.shape[-2:]
        mult = 2**self.num_level
        pad_h, pad_w = (-h) % mult, (-w) % mult
        if pad_h or pad_w:
            mode = 'reflect' if pad_h < h and pad_w < w else 'replicate'
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        if self.corr_disp:
            left, right = x.chunk(2, dim=1)
            corr = view_correlation(left, right, self.corr_disp, self.corr_window)
            disps = torch.arange(-self.corr_disp, self.corr_disp + 1, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            disparity = (torch.softmax(corr / 0.05, dim=1) * disps).sum(1, keepdim=True)  # soft-argmax match
            x = torch.cat([x, corr, disparity], 1)
        else:
            disparity = 0
        feat = self.lrelu(self.conv_first(x))
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            feat = encoder(feat)
            skips.append(feat)
            feat = self.lrelu(down(feat))
        feat = self.body(feat)
        for i in reversed(range(self.num_level)):
            feat = self.decoders[i](self.lrelu(self.ups[i](feat)) + skips[i])
        t = (self.conv_last(feat) + self.disparity_scale * disparity)[..., :h, :w] / self.cap
        t = t.clamp(-1e4, 1e4)  # keeps t^4 finite; the gradient there is ~1e-20, still not 0
        out = self.cap * t * (1 + t**4)**-0.25
        # float32 rounding can overshoot the cap by an ulp; clip the value but keep the soft clip's gradient
        return out + (out.clamp(-self.cap, self.cap) - out).detach()
