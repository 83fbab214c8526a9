"""DefocusGAN's defocus adversarial loss: a WGAN-GP objective whose patch scores are weighted by the defocus map."""
import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import autograd
from torch import nn as nn
from torch.nn import functional as F


def defocus_weights(defocus, size, offset=1.0):
    """Per-patch weights phi from a defocus map: larger |CoC| -> larger weight, mean 1 per sample.

    Args:
        defocus (Tensor): (B, C, H, W) defocus map in pixels; the magnitude is the max of ``|map|`` over channels.
        size (tuple[int, int]): Size of the critic's score map; the magnitude is area-averaged to it.
        offset (float): Added to |CoC| before normalising, in pixels: in-focus patches keep a weight of
            ``offset / mean(|CoC| + offset)`` rather than 0. Must be > 0.

    Returns:
        Tensor: (B, 1, h, w) weights with spatial mean 1 per sample.
    """
    magnitude = F.adaptive_avg_pool2d(defocus.detach().abs().amax(dim=1, keepdim=True), size) + offset
    return magnitude / magnitude.mean(dim=(2, 3), keepdim=True)


@LOSS_REGISTRY.register()
class DefocusAdversarialLoss(nn.Module):
    """Defocus adversarial loss (WGAN critic scores weighted by phi(defocus map)) with a WGAN-GP penalty.

    Called like BasicSR's ``GANLoss``: ``loss(pred, target_is_real, is_disc=False, defocus=None)``.

    * generator: ``-mean(phi * D(G(x)))`` times ``loss_weight``;
    * critic: ``-mean(phi * D(real))`` for real and ``mean(phi * D(fake))`` for fake samples (``loss_weight`` is not
      applied to the critic, as in BasicSR);
    * :meth:`gradient_penalty`: ``gp_weight * mean((||grad D(x_hat)||_2 - 1)^2)`` on random interpolates between
      real and fake, the norm taken per sample over all pixels (Gulrajani et al., 2017).

    Without a map (``defocus=None``) phi is 1: a plain WGAN-GP loss.

    Args:
        loss_weight (float): Weight of the generator term. Default: 0.002 (paper).
        gp_weight (float): Gradient penalty weight lambda. Default: 10.
        offset (float): See :func:`defocus_weights`. Default: 1 px.
    """

    def __init__(self, loss_weight=0.002, gp_weight=10.0, offset=1.0):
        super().__init__()
        if offset <= 0:
            raise ValueError(f'DefocusAdversarialLoss offset must be > 0 (pixels), got {offset}.')
        self.loss_weight = loss_weight
        self.gp_weight = gp_weight
        self.offset = offset

    def forward(self, pred, target_is_real, is_disc=False, defocus=None):
        """
        Args:
            pred (Tensor): (B, 1, h, w) critic scores.
            target_is_real (bool): Whether ``pred`` should score as real.
            is_disc (bool): Critic loss (True) or generator loss (False).
            defocus (Tensor | None): (B, C, H, W) defocus map of the batch, in pixels.

        Returns:
            Tensor: Scalar loss.
        """
        scores = pred if defocus is None else pred * defocus_weights(defocus, pred.shape[-2:], self.offset)
        loss = -scores.mean() if target_is_real else scores.mean()
        return loss if is_disc else loss * self.loss_weight

    def gradient_penalty(self, critic, real, fake):
        """WGAN-GP penalty on interpolates between ``real`` and ``fake`` (which is detached here).

        The critic of a sample is the mean of its patch scores (what the loss uses), so the penalty is on the
        gradient of that mean, its norm taken over the whole input of each sample (Gulrajani et al.). BasicSR's
        ``gradient_penalty_loss`` instead differentiates the sum of the scores and takes per-pixel norms over
        channels, which makes the penalty depend on the crop size.

        Returns:
            Tensor: ``gp_weight`` times the penalty; differentiable w.r.t. the critic's parameters.
        """
        alpha = torch.rand(real.size(0), 1, 1, 1, device=real.device, dtype=real.dtype)
        interpolates = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
        scores = critic(interpolates)
        grads = autograd.grad(scores.flatten(1).mean(dim=1).sum(), interpolates, create_graph=True)[0]
        penalty = ((grads.flatten(1).norm(2, dim=1) - 1)**2).mean()
        return self.gp_weight * penalty
