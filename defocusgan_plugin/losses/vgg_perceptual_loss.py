"""Perceptual loss on VGG19 features (DefocusGAN: Euclidean distance on conv3_3), with offline weights.

BasicSR's ``PerceptualLoss`` cannot be used offline (its ``VGGFeatureExtractor`` falls back to a torchvision download)
and its ``criterion: l2`` is broken in 1.4.2. This loss reads torchvision's ``vgg19-dcbb9e9d.pth`` from a local path
(option ``vgg_path``, else ``$DEFOCUSGAN_VGG19_WEIGHTS``, torchvision's cache or ``experiments/pretrained_models``).
``pretrained: false`` uses a randomly initialised VGG19 instead, for tests and offline demos.
"""
import torch
from basicsr.archs.vgg_arch import NAMES
from basicsr.utils import get_root_logger
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn as nn
from torch.nn import functional as F
from torchvision.models.vgg import cfgs, make_layers

from defocusgan_plugin.utils.pretrained import load_state_dict, resolve_weights

VGG19_FILE = 'vgg19-dcbb9e9d.pth'
VGG19_ENV = 'DEFOCUSGAN_VGG19_WEIGHTS'
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@LOSS_REGISTRY.register()
class VGG19PerceptualLoss(nn.Module):
    """Distance between VGG19 features of the output and the target at one layer (pre-activation).

    The defaults are the DefocusGAN release's: torchvision's VGG19 ``features`` up to and including conv3_3 (before its
    ReLU), fed the raw [0, 1] RGB images (no ImageNet mean/std), mean squared error, the target's features detached.
    ``use_input_norm: true`` normalises the inputs first (BasicSR's ``PerceptualLoss`` does); the feature differences
    are then about 19x larger, so a weight tuned for one setting does not carry over to the other.

    Returns ``(loss, None)`` like BasicSR's ``PerceptualLoss`` (perceptual term, no style term), so it also works as
    ``perceptual_opt`` of BasicSR's SRModel / SRGANModel.

    Args:
        loss_weight (float): Weight of the loss. Default: 0.012 (paper).
        layer (str): VGG19 layer name (BasicSR's names: conv1_1 ... conv5_4). Default: 'conv3_3'.
        criterion (str): 'l2' (mean squared error: the Euclidean distance of the paper) or 'l1'. Default: 'l2'.
        vgg_path (str | None): Local torchvision VGG19 state dict. Default: searched (see module docstring).
        pretrained (bool): False builds a randomly initialised VGG19 (no file needed; the loss is then a fixed
            random-feature loss, not a perceptual one). Default: True.
        use_input_norm (bool): Normalise inputs in [0, 1] (RGB) with ImageNet mean and std. Default: False
            (release).
        channel_order (str): Colour order VGG19 is fed: 'rgb' (what it was trained on) or 'bgr' (the release feeds
            its OpenCV-read BGR images as they are). Inputs of the loss are RGB either way. Default: 'rgb'.
    """

    def __init__(self,
                 loss_weight=0.012,
                 layer='conv3_3',
                 criterion='l2',
                 vgg_path=None,
                 pretrained=True,
                 use_input_norm=False,
                 channel_order='rgb'):
        super().__init__()
        if channel_order not in ('rgb', 'bgr'):
            raise ValueError(f"VGG19PerceptualLoss channel_order must be 'rgb' or 'bgr', got {channel_order!r}.")
        self.swap_channels = channel_order == 'bgr'
        names = NAMES['vgg19']
        if layer not in names or not layer.startswith('conv'):
            raise ValueError(f'VGG19PerceptualLoss layer must be a VGG19 conv layer '
                             f'({", ".join(n for n in names if n.startswith("conv"))}); got {layer!r}.')
        if criterion not in ('l1', 'l2'):
            raise ValueError(f"VGG19PerceptualLoss criterion must be 'l1' or 'l2', got {criterion!r}.")
        self.loss_weight = loss_weight
        self.criterion = F.mse_loss if criterion == 'l2' else F.l1_loss
        self.use_input_norm = use_input_norm
        depth = names.index(layer) + 1
        features = make_layers(cfgs['E'])[:depth]  # VGG19's feature trunk, without the 120 M classifier
        if pretrained:
            try:
                path = resolve_weights(vgg_path, VGG19_ENV, VGG19_FILE, 'vgg_path of VGG19PerceptualLoss')
            except FileNotFoundError as err:
                raise FileNotFoundError(f'{err} Or set pretrained: false to train without pretrained VGG19 weights '
                                        '(tests, offline demos).') from None
            state = {k[len('features.'):]: v for k, v in load_state_dict(path).items() if k.startswith('features.')}
            wanted = features.state_dict()
            missing = [k for k in wanted if k not in state or state[k].shape != wanted[k].shape]
            if missing:
                raise ValueError(f'{path} is not a torchvision VGG19 state dict ({VGG19_FILE}): features.'
                                 f'{missing[0]} is missing or has another shape.')
            features.load_state_dict({k: state[k] for k in wanted})
        else:
            get_root_logger().warning('VGG19PerceptualLoss: pretrained: false, VGG19 is randomly initialised; the '
                                      'perceptual term is a random-feature loss.')
        self.features = features.eval().requires_grad_(False)
        self.register_buffer('mean', torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer('std', torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def train(self, mode=True):
        super().train(mode)
        self.features.eval()  # a frozen extractor stays in eval mode whatever the model does
        return self

    def _extract(self, x):
        if self.use_input_norm:
            x = (x - self.mean) / self.std
        return self.features(x.flip(1) if self.swap_channels else x)

    def forward(self, x, gt):
        """
        Args:
            x (Tensor): (B, 3, H, W) output, RGB in [0, 1].
            gt (Tensor): (B, 3, H, W) target.

        Returns:
            tuple[Tensor, None]: Weighted perceptual loss and no style loss.
        """
        if x.shape[1] != 3:
            raise ValueError(f'VGG19PerceptualLoss needs 3-channel RGB images, got {x.shape[1]} channels.')
        return self.loss_weight * self.criterion(self._extract(x), self._extract(gt.detach())), None
