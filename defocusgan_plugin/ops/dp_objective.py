"""The objective of the official release of Xin et al. (ICCV 2021) for the joint DP optimiser, term by term.

Notation: ``L`` MPI layers (layer 0 = back), views ``v`` (left, right), ``eps = 0.5 / mean(observations)`` the
exposure factor, ``rho(x2) = sqrt(x2 / gamma^2 + 1) - 1`` the Charbonnier penalty of a squared error
(``gamma = 0.1``), ``T_l`` the (un-blurred) transmittance of layer ``l`` (its visibility weight), ``T~_l`` the
transmittance of the blurred MPI, ``b_l`` the noise bias of layer ``l``. With the release's weights:

* data: ``2.5e4 * eps * mean rho((render - obs)^2 - sum_l T~_l b_l)`` over views and pixels;
* auxiliary data: ``2.5e4 * eps * mean over pixels of mean_{l, v} [L * sg(T~_l) * rho((blur_l(c_l) - obs)^2 - b_l)]``;
* intensity smoothness: local-variance TV ``tv`` (:func:`local_variance_tv`) of ``eps * AiF`` and
  ``L * sg(T_l) * tv(eps * c_l)`` averaged over layers, each with the edge mask of its own (stop-gradient) TV:
  ``30 * [mean(tv_aif (1 - e_aif) + tv_layers (1 - e_layers)) + mean(tv_aif + tv_layers)]``;
* alpha smoothness: ``tv(sqrt(a_l)) + tv(sqrt(T_l))`` for every layer, masked by the AiF's edge mask:
  ``w_a (L / 12)^2 * [mean(tv (1 - e_aif)) + mean(tv)]`` (``w_a`` 1.5e4 - 7.5e4 per scene in the release);
* entropy: collision entropy over layers of normalised ``sqrt(a_l)`` (layers 1..L-1) plus that of ``sqrt(T_l)``
  (all layers): ``w_e / log(L) * mean(...)`` (``w_e`` 20 - 30 per scene).

``sg`` is stop-gradient. The priors are evaluated on the image area only (the release pads the MPI by the kernel
half-width for rendering and crops the priors back); the 3x3 filters see replicated borders, as in the release.
"""
import math
import torch
import torch.nn.functional as F

from defocusgan_plugin.ops.mpi import visibility_weights as visibility

GAMMA = 0.1  # Charbonnier scale of every term
EDGE_BETA = 1.0 / 32  # edge mask scale
NOISE_SIGMA = 5e-3  # noise standard deviation of the bias correction, at mean intensity 0.5
NOISE_C = 5e-3  # regulariser of the inverse filter in the bias correction
RELEASE_WEIGHTS = {'data': 2.5e4, 'aux_data': 2.5e4, 'aif_tv': 30.0, 'alpha_tv': 7.5e4, 'entropy': 20.0}


def exposure_factor(observations):
    """``eps = 0.5 / mean(observations)``: makes every data and intensity term invariant to the exposure."""
    return 0.5 / observations.mean().clamp_min(1e-8)


def charbonnier_sq(x2, gamma=GAMMA):
    """Charbonnier penalty of a squared error: ``sqrt(x2 / gamma^2 + 1) - 1``."""
    return torch.sqrt(x2 / gamma**2 + 1.0) - 1.0


def _smooth121(x):
    """``[1, 2, 1]^T [1, 2, 1] / 16`` filter of (..., H, W) with replicated borders (shifted sums: a grouped 3x3
    ``conv2d`` is several times slower on CPU)."""
    shape = x.shape
    x = F.pad(x.reshape(-1, 1, *shape[-2:]), (1, 1, 1, 1), mode='replicate')
    x = x[..., :, :-2] + 2.0 * x[..., :, 1:-1] + x[..., :, 2:]
    x = x[..., :-2, :] + 2.0 * x[..., 1:-1, :] + x[..., 2:, :]
    return (x * (1.0 / 16.0)).reshape(shape)


def local_variance_tv(image, gamma=GAMMA):
    """Per-pixel local variance ``|G * I^2 - (G * I)^2|`` through :func:`charbonnier_sq`.

    ``G`` is the 3x3 kernel ``[1, 2, 1]^T [1, 2, 1] / 16``; borders are replicated.

    Args:
        image (Tensor): (..., H, W).
        gamma (float): Charbonnier scale.

    Returns:
        Tensor: (..., H, W).
    """
    var = (_smooth121(image * image) - _smooth121(image)**2).abs()
    return charbonnier_sq(var, gamma)


def edge_mask(tv, gamma=GAMMA, beta=EDGE_BETA):
    """Edge mask of a Charbonnier TV map: ``1 - exp(-((tv + 1)^2 - 1) gamma^2 / (2 beta^2))`` (1 on edges)."""
    return 1.0 - torch.exp(-((tv + 1.0)**2 - 1.0) * gamma**2 / (2.0 * beta**2))


def edge_aware(tv):
    """``mean(tv (1 - e)) + mean(tv)`` with the edge mask ``e`` of the (stop-gradient) ``tv`` itself."""
    return (tv * (1.0 - edge_mask(tv.detach()))).mean() + tv.mean()


def collision_entropy(values, dim=1, eps=1e-12):
    """Collision entropy ``-log sum_i p_i^2`` of ``p = values / sum(values)`` along ``dim`` (no normalisation by
    ``log n``); where the values sum to 0 the entropy is that of the uniform distribution, ``log n``."""
    total = values.sum(dim, keepdim=True)
    p = values / total.clamp_min(eps)
    entropy = -torch.log((p * p).sum(dim).clamp_min(eps))
    return torch.where(total.squeeze(dim) > eps, entropy, torch.full_like(entropy, math.log(values.shape[dim])))


def noise_bias(kernels, mean_intensity, sigma=NOISE_SIGMA, c=NOISE_C):
    """Expected squared residual of each layer's rendering due to sensor noise (the release's bias correction).

    ``b_l = (mean / 0.5) * 2 sigma^2 * mean over cells and frequencies of c / (sum_views |K^_l|^2 + c)``, the
    spectra taken on the kernels' own K x K grid.

    Args:
        kernels (Tensor): (G, V, L, K, K) or (V, L, K, K) kernels of the layers.
        mean_intensity (float | Tensor): Mean of the observations (max-normalised units).
        sigma (float): Noise standard deviation at mean intensity 0.5.
        c (float): Regulariser.

    Returns:
        Tensor: (L,) bias per layer.
    """
    if kernels.dim() == 4:
        kernels = kernels[None]
    power = torch.fft.fft2(kernels.double()).abs().pow(2).sum(1)  # (G, L, K, K)
    ratio = (c / (power + c)).mean(dim=(0, 2, 3))
    return (float(mean_intensity) / 0.5 * 2.0 * sigma**2 * ratio).to(kernels.dtype)


def robust_sq(x2, gamma=GAMMA, scale=None):
    """:func:`charbonnier_sq` at ``scale`` rescaled by ``(scale / gamma)^2``: the same as at ``gamma`` for errors well
    below ``scale`` (``~ x2 / (2 gamma^2)``), linear in the error above it, where the Charbonnier of ``gamma`` is
    still quadratic (``scale`` None or ``>= gamma``: the Charbonnier of ``gamma``)."""
    if scale is None or scale >= gamma:
        return charbonnier_sq(x2, gamma)
    return (scale / gamma)**2 * charbonnier_sq(x2, scale)


def release_terms(colors,
                  alphas,
                  rendering,
                  views,
                  bias,
                  weights=None,
                  gamma=GAMMA,
                  data_gamma=None,
                  static_alphas=False):
    """Weighted terms of the release's objective (see the module docstring).

    Args:
        colors (Tensor): (1, L, C, H, W) layer colours.
        alphas (Tensor): (1, L, 1, H, W) layer alphas, back layer opaque.
        rendering (dict): :func:`defocusgan_plugin.ops.mpi.render_mpi` output with ``details=True``: ``views``
            (1, V, C, H, W), ``weights`` (1, V, L, 1, H, W) = T~_l and ``layer_colors`` (1, V, L, C, H, W).
        views (Tensor): (1, V, C, H, W) observations.
        bias (Tensor): (L,) noise bias per layer (:func:`noise_bias`).
        weights (dict | None): Weights ``data``, ``aux_data``, ``aif_tv``, ``alpha_tv``, ``entropy`` as the
            release states them (``alpha_tv`` is scaled by ``(L / 12)^2`` and ``entropy`` divided by ``log L`` here).
        gamma (float): Charbonnier scale.
        data_gamma (float | None): Error scale above which the data and auxiliary terms grow linearly
            (:func:`robust_sq`; release: None, the Charbonnier of ``gamma``, quadratic at the views' error scale).
        static_alphas (bool): The alphas are constants (not optimised): the alpha smoothness and entropy terms are
            evaluated without gradient.

    Returns:
        dict[str, Tensor]: ``data``, ``aux_data``, ``aif_tv``, ``alpha_tv``, ``entropy`` (weighted scalars).
    """
    w = dict(RELEASE_WEIGHTS, **(weights or {}))
    num = alphas.shape[1]
    eps = exposure_factor(views)
    bias = bias.to(views).view(1, 1, -1, 1, 1, 1)
    blurred_t = rendering['weights']  # (1, V, L, 1, H, W)
    residual = (rendering['views'] - views)**2 - (blurred_t * bias).sum(2)
    data = w['data'] * eps * robust_sq(residual, gamma, data_gamma).mean()
    aux = (rendering['layer_colors'] - views.unsqueeze(2))**2 - bias
    aux = w['aux_data'] * eps * (num * blurred_t.detach() * robust_sq(aux, gamma, data_gamma)).mean()

    trans = visibility(alphas)  # (1, L, 1, H, W)
    aif = (trans * colors).sum(1)  # (1, C, H, W)
    tv_aif = local_variance_tv((eps * aif).mean(1), gamma)  # (1, H, W)
    tv_layers = (num * trans.detach()[:, :, 0] * local_variance_tv((eps * colors).mean(2), gamma)).mean(1)
    aif_tv = w['aif_tv'] * (edge_aware(tv_aif) + edge_aware(tv_layers))

    with torch.set_grad_enabled(torch.is_grad_enabled() and not static_alphas):
        smooth = (local_variance_tv(torch.sqrt(alphas[:, :, 0]), gamma) +
                  local_variance_tv(torch.sqrt(trans[:, :, 0]), gamma))  # (1, L, H, W)
        keep = 1.0 - edge_mask(tv_aif.detach())[:, None]
        alpha_tv = w['alpha_tv'] * (num / 12.0)**2 * ((smooth * keep).mean() + smooth.mean())

        entropy = collision_entropy(torch.sqrt(alphas[:, 1:, 0]), 1) + collision_entropy(torch.sqrt(trans[:, :, 0]), 1)
        entropy = w['entropy'] / math.log(num) * entropy.mean()
    return {'data': data, 'aux_data': aux, 'aif_tv': aif_tv, 'alpha_tv': alpha_tv, 'entropy': entropy}
