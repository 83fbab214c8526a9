"""PatchGAN critic (Isola et al., pix2pix), as DefocusGAN uses it with a WGAN-GP objective."""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn as nn


@ARCH_REGISTRY.register()
class PatchGANDiscriminator(nn.Module):
    """PatchGAN: ``num_layers`` strided 4x4 convs, then two stride-1 convs, giving an N x N map of patch scores.

    The defaults are the critic of the DefocusGAN release (DeblurGAN's ``NLayerDiscriminator``): ndf 64, 3 strided
    layers, padding 2, InstanceNorm without affine parameters and convolutions with bias. There is no sigmoid (a
    WGAN critic); for BasicSR's ``GANLoss`` of type ``vanilla`` the scores are logits. The critic uses instance norm,
    not batch norm: the gradient penalty of WGAN-GP is defined per sample, which batch statistics would break.

    Args:
        num_in_ch (int): Input channels. Default: 3.
        num_feat (int): Channels of the first layer (ndf), doubled at each stride, at most 8x. Default: 64.
        num_layers (int): Strided conv layers. Default: 3.
        norm (str): 'instance' or 'none'. Default: 'instance'.
        padding (int): Zero padding of every 4x4 conv: 2 (release; a score sees 70 x 70 px and a 256 px input gives
            35 x 35 scores) or 1 (pix2pix; 30 x 30). Default: 2.
        norm_affine (bool): Learnable scale and shift in the instance norms; the convolutions before them then have
            no bias (pix2pix). Default: False (release: no affine, convolutions with bias).

    Inputs need at least ``min_size`` pixels per side (24 with padding 1, 2 with padding 2 and 3 layers); smaller
    ones raise a ValueError naming both sizes instead of failing inside a layer.
    """

    def __init__(self, num_in_ch=3, num_feat=64, num_layers=3, norm='instance', padding=2, norm_affine=False):
        super().__init__()
        if norm not in ('instance', 'none'):
            raise ValueError(f"PatchGANDiscriminator norm must be 'instance' or 'none', got {norm!r}.")
        if num_layers < 1:
            raise ValueError(f'PatchGANDiscriminator num_layers must be >= 1, got {num_layers}.')
        if padding not in (1, 2):
            raise ValueError(f'PatchGANDiscriminator padding must be 1 or 2, got {padding!r}.')
        affine = bool(norm_affine)

        def block(c_in, c_out, stride, normalise=True):
            bias = not (normalise and norm == 'instance' and affine)  # an affine norm's shift replaces the bias
            layers = [nn.Conv2d(c_in, c_out, 4, stride, padding, bias=bias)]
            if normalise and norm == 'instance':
                layers.append(nn.InstanceNorm2d(c_out, affine=affine))
            return layers + [nn.LeakyReLU(0.2, inplace=True)]

        self.num_layers, self.norm = num_layers, norm
        channels = [num_feat * min(2**i, 8) for i in range(num_layers + 1)]
        layers = block(num_in_ch, channels[0], 2, normalise=False)
        for i in range(1, num_layers):
            layers += block(channels[i - 1], channels[i], 2)
        layers += block(channels[num_layers - 1], channels[num_layers], 1)
        layers.append(nn.Conv2d(channels[num_layers], 1, 4, 1, padding))
        self.body = nn.Sequential(*layers)
        self.min_size = _min_input_size(self.body)

    def forward(self, x):
        h, w = x.shape[-2:]
        if h < self.min_size or w < self.min_size:
            shrink = 'to 1x1 before an InstanceNorm layer, or to nothing' if self.norm == 'instance' else 'to nothing'
            raise ValueError(f'PatchGANDiscriminator input of {h}x{w} pixels is too small: with num_layers='
                             f'{self.num_layers} it needs at least {self.min_size}x{self.min_size} (its score map '
                             f'would shrink {shrink}).')
        return self.body(x)


def _min_input_size(body):
    """Smallest side giving a score map of at least 1 px with a side of >= 2 px at every InstanceNorm (one pixel
    has no statistics to normalise), walking the layers back from the output."""
    size = 1
    for layer in reversed(body):
        if isinstance(layer, nn.InstanceNorm2d):
            size = max(size, 2)
        elif isinstance(layer, nn.Conv2d):
            size = max(1, (size - 1) * layer.stride[0] + layer.kernel_size[0] - 2 * layer.padding[0])
    return size
