"""DefocusGAN's defocus adversarial loss: a WGAN-GP objective whose patch scores are weighted by the defocus map."""
import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import autograd
from torch import nn as nn
from torch.nn import functional as F

WEIGHTINGS = ('release', 'paper', 'none')
GP_NORMS = ('pixel', 'sample')
GP_ALPHAS = ('batch', 'sample')


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


def release_critic_weights(defocus, size, map_weight=0.1):
    """The release's per-pixel critic weights ``1 + map_weight * m``.

    ``m`` is the max of ``|map|`` over channels resized to the critic's score map by nearest neighbour (PyTorch's
    ``interpolate`` default), in pixels and not normalised. ``mean(d) + map_weight * mean(d * m)`` with
    ``d = D(fake) - D(real)`` is then ``mean(D(fake) w) - mean(D(real) w)``.

    Returns:
        Tensor: (B, 1, h, w) weights.
    """
    magnitude = F.interpolate(defocus.detach().abs().amax(dim=1, keepdim=True), size=tuple(size), mode='nearest')
    return 1.0 + map_weight * magnitude


@LOSS_REGISTRY.register()
class DefocusAdversarialLoss(nn.Module):
    """Defocus adversarial loss (WGAN critic scores weighted by the defocus map) with a WGAN-GP penalty.

    Called like BasicSR's ``GANLoss``: ``loss(pred, target_is_real, is_disc=False, defocus=None)``; the critic loss
    is the sum of its real and fake calls (``loss_weight`` is not applied to the critic, as in BasicSR).

    ``weighting`` - where the map enters:

    * 'release' (the authors' release): critic only. With ``d = D(fake) - D(real)`` per score pixel,
      ``L_D = mean(d) + critic_map_weight * mean(d * m)`` (``m``: :func:`release_critic_weights`); the generator
      term ``-mean(D(G(x)))`` is not weighted.
    * 'paper' (Eq. 7): ``phi(map) = (|c| + offset) / mean`` (:func:`defocus_weights`) on the generator term and on
      both critic terms.
    * 'none': plain WGAN terms.

    Without a map (``defocus=None``) every weighting is 'none'.

    :meth:`gradient_penalty`: ``gp_weight * mean((||g|| - 1)^2)`` on interpolates ``alpha * real + (1 - alpha) *
    fake``. ``gp_alpha``: 'batch' - one alpha for the whole batch (release), 'sample' - one per sample (Gulrajani
    et al., 2017). ``gp_norm``: 'pixel' - ``g = d(sum D)/dx``, its norm over the colour channels at each pixel, the
    mean over (batch, H, W) (release); 'sample' - ``g = d(mean of a sample's scores)/dx``, its norm over the whole
    sample (the critic of a sample is the mean of its patch scores, which is what the loss uses).

    Args:
        loss_weight (float): Weight of the generator term. Default: 0.002 (paper; the release uses 0.001 next to an
            L1 weight of 0.5).
        gp_weight (float): Gradient penalty weight lambda. Default: 10.
        offset (float): 'paper' weighting, see :func:`defocus_weights`. Default: 1 px.
        weighting (str): 'release', 'paper' or 'none'. Default: 'release'.
        critic_map_weight (float): 'release' weighting's factor on ``mean(d * m)``. Default: 0.1.
        gp_norm (str): 'pixel' or 'sample'. Default: 'pixel'.
        gp_alpha (str): 'batch' or 'sample'. Default: 'batch'.
    """

    def __init__(self,
                 loss_weight=0.002,
                 gp_weight=10.0,
                 offset=1.0,
                 weighting='release',
                 critic_map_weight=0.1,
                 gp_norm='pixel',
                 gp_alpha='batch'):
        super().__init__()
        if offset <= 0:
            raise ValueError(f'DefocusAdversarialLoss offset must be > 0 (pixels), got {offset}.')
        for name, value, allowed in (('weighting', weighting, WEIGHTINGS), ('gp_norm', gp_norm, GP_NORMS),
                                     ('gp_alpha', gp_alpha, GP_ALPHAS)):
            if value not in allowed:
                raise ValueError(f'DefocusAdversarialLoss {name} must be one of {", ".join(allowed)}; got {value!r}.')
        self.loss_weight = loss_weight
        self.gp_weight = gp_weight
        self.offset = offset
        self.weighting = weighting
        self.critic_map_weight = critic_map_weight
        self.gp_norm = gp_norm
        self.gp_alpha = gp_alpha

    def uses_map(self, is_disc):
        """Whether the critic (``is_disc``) or generator term reads the defocus map."""
        return self.weighting == 'paper' or (self.weighting == 'release' and is_disc)

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
        scores = pred
        if defocus is not None and self.uses_map(is_disc):
            if self.weighting == 'paper':
                scores = pred * defocus_weights(defocus, pred.shape[-2:], self.offset)
            else:
                scores = pred * release_critic_weights(defocus, pred.shape[-2:], self.critic_map_weight)
        loss = -scores.mean() if target_is_real else scores.mean()
        return loss if is_disc else loss * self.loss_weight

    def gradient_penalty(self, critic, real, fake, alpha=None):
        """WGAN-GP penalty on interpolates between ``real`` and ``fake`` (both detached here).

        Args:
            critic (nn.Module): The critic.
            real, fake (Tensor): (B, C, H, W) images.
            alpha (Tensor | float | None): Interpolation weight(s), broadcastable to the images; None draws them
                (``gp_alpha``).

        Returns:
            Tensor: ``gp_weight`` times the penalty; differentiable w.r.t. the critic's parameters.
        """
        if alpha is None:
            shape = (1, 1, 1, 1) if self.gp_alpha == 'batch' else (real.size(0), 1, 1, 1)
            alpha = torch.rand(shape, device=real.device, dtype=real.dtype)
        interpolates = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
        scores = critic(interpolates)
        if self.gp_norm == 'pixel':
            grads = autograd.grad(scores.sum(), interpolates, create_graph=True)[0]
            penalty = ((grads.norm(2, dim=1) - 1)**2).mean()
        else:
            grads = autograd.grad(scores.flatten(1).mean(dim=1).sum(), interpolates, create_graph=True)[0]
            penalty = ((grads.flatten(1).norm(2, dim=1) - 1)**2).mean()
        return self.gp_weight * penalty
