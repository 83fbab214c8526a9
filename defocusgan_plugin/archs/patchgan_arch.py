"""PatchGAN critic (Isola et al., pix2pix), as DefocusGAN uses it with a WGAN-GP objective."""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn as nn


@ARCH_REGISTRY.register()
class PatchGANDiscriminator(nn.Module):
    """PatchGAN: ``num_layers`` strided 4x4 convs, then two stride-1 convs, giving an N x N map of patch scores.

    With the defaults a score sees a 70 x 70 patch. There is no sigmoid (a WGAN critic); for BasicSR's
    ``GANLoss`` of type ``vanilla`` the scores are logits. The critic uses instance norm, not batch norm: the
    gradient penalty of WGAN-GP is defined per sample, which batch statistics would break.

    Args:
        num_in_ch (int): Input channels. Default: 3.
        num_feat (int): Channels of the first layer (ndf), doubled at each stride, at most 8x. Default: 64.
        num_layers (int): Strided conv layers. Default: 3.
        norm (str): 'instance' or 'none'. Default: 'instance'.
    """

    def __init__(self, num_in_ch=3, num_feat=64, num_layers=3, norm='instance'):
        super().__init__()
        if norm not in ('instance', 'none'):
            raise ValueError(f"PatchGANDiscriminator norm must be 'instance' or 'none', got {norm!r}.")
        if num_layers < 1:
            raise ValueError(f'PatchGANDiscriminator num_layers must be >= 1, got {num_layers}.')

        def block(c_in, c_out, stride, normalise=True):
            layers = [nn.Conv2d(c_in, c_out, 4, stride, 1, bias=not (normalise and norm == 'instance'))]
            if normalise and norm == 'instance':
                layers.append(nn.InstanceNorm2d(c_out, affine=True))
            return layers + [nn.LeakyReLU(0.2, inplace=True)]

        channels = [num_feat * min(2**i, 8) for i in range(num_layers + 1)]
        layers = block(num_in_ch, channels[0], 2, normalise=False)
        for i in range(1, num_layers):
            layers += block(channels[i - 1], channels[i], 2)
        layers += block(channels[num_layers - 1], channels[num_layers], 1)
        layers.append(nn.Conv2d(channels[num_layers], 1, 4, 1, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.body(x)
