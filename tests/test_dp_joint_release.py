"""The `release` objective of the joint DP optimiser, term by term against the written definitions (REFERENCE.md,
"Xin et al. (ICCV 2021) official optimiser"), on tiny tensors with independent NumPy references."""
import math
import numpy as np
import pytest
import torch

from defocusgan_plugin.ops import dp_objective as obj
from defocusgan_plugin.ops.dp_joint import PRESETS, DPJointSolver
from defocusgan_plugin.ops.filters import bilateral_filter
from defocusgan_plugin.ops.kernel_bank import ParametricKernelBank
from defocusgan_plugin.ops.mpi import render_mpi

GAMMA, BETA = 0.1, 1.0 / 32


# ---------------------------------------------------------------------- NumPy references of the definitions
def rho(x2):
    """Charbonnier of a squared error: sqrt(x2 / gamma^2 + 1) - 1, gamma = 0.1."""
    return np.sqrt(x2 / GAMMA**2 + 1.0) - 1.0


def tv_ref(img):
    """rho(|G * I^2 - (G * I)^2|), G = [1,2,1]^T [1,2,1] / 16, replicated borders, by explicit loops."""
    g = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 16.0
    h, w = img.shape
    pad = np.pad(img, 1, mode='edge')
    out = np.zeros_like(img)
    for y in range(h):
        for x in range(w):
            win = pad[y:y + 3, x:x + 3]
            out[y, x] = abs((g * win * win).sum() - (g * win).sum()**2)
    return rho(out)


def edge_ref(tv):
    return 1.0 - np.exp(-((tv + 1.0)**2 - 1.0) * GAMMA**2 / (2.0 * BETA**2))


def entropy_ref(values):
    """-log sum p^2 over axis 0 of p = values / sum(values)."""
    p = values / values.sum(0, keepdims=True)
    return -np.log((p * p).sum(0))


def transmittance_ref(alphas):
    """T_l = a_l prod_{j > l} (1 - a_j), layer 0 = back; alphas (L, H, W)."""
    out = np.zeros_like(alphas)
    for i in range(alphas.shape[0]):
        out[i] = alphas[i] * np.prod(1.0 - alphas[i + 1:], axis=0)
    return out


def tiny_scene(seed=0, layers=3, h=6, w=7):
    rng = np.random.default_rng(seed)
    # smooth colours with a step: the edge masks are ~0 in flat parts and ~1 at the step
    colors = 0.3 + 0.01 * rng.standard_normal((1, layers, 1, h, w)) + 0.4 * (np.arange(w) >= w // 2)
    alphas = rng.uniform(0.05, 0.95, (1, layers, 1, h, w))
    alphas[:, 0] = 1.0
    rendering = {
        'views': rng.uniform(0.1, 0.9, (1, 2, 1, h, w)),
        'weights': rng.uniform(0.0, 1.0, (1, 2, layers, 1, h, w)),
        'layer_colors': rng.uniform(0.1, 0.9, (1, 2, layers, 1, h, w))
    }
    views = rng.uniform(0.1, 0.6, (1, 2, 1, h, w))
    bias = rng.uniform(1e-5, 1e-4, layers)
    return colors, alphas, rendering, views, bias


def torch_terms(colors, alphas, rendering, views, bias, weights=None):
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in rendering.items()}
    return obj.release_terms(
        torch.tensor(colors), torch.tensor(alphas), t, torch.tensor(views), torch.tensor(bias), weights)


# ---------------------------------------------------------------------- building blocks
def test_charbonnier_of_squared_error():
    x2 = torch.tensor([0.0, 0.01, 0.03, 1.0], dtype=torch.float64)
    assert torch.allclose(obj.charbonnier_sq(x2), torch.tensor(rho(x2.numpy())))
    assert float(obj.charbonnier_sq(torch.tensor(0.01))) == pytest.approx(math.sqrt(2) - 1)  # x = gamma


def test_exposure_factor_is_half_over_the_mean():
    obs = torch.tensor([[0.1, 0.3], [0.2, 0.2]])
    assert float(obj.exposure_factor(obs)) == pytest.approx(0.5 / 0.2)


def test_local_variance_tv_matches_its_definition():
    img = np.random.default_rng(1).uniform(0, 1, (5, 6))
    out = obj.local_variance_tv(torch.tensor(img)).numpy()
    assert np.allclose(out, tv_ref(img), atol=1e-10)
    assert np.allclose(obj.local_variance_tv(torch.full((4, 4), 0.3)).numpy(), 0.0, atol=1e-7)  # flat: no variance


def test_edge_mask_matches_its_definition_and_stops_the_gradient():
    tv = torch.tensor([0.0, 0.01, 0.1, 1.0, 10.0], dtype=torch.float64, requires_grad=True)
    assert np.allclose(obj.edge_mask(tv.detach()).numpy(), edge_ref(tv.detach().numpy()))
    obj.edge_aware(tv).backward()  # mean(tv (1 - e)) + mean(tv), e from the stop-gradient tv
    expected = ((1.0 - edge_ref(tv.detach().numpy())) + 1.0) / tv.numel()
    assert np.allclose(tv.grad.numpy(), expected)


def test_collision_entropy():
    values = np.random.default_rng(2).uniform(0.1, 1, (4, 3, 5))
    out = obj.collision_entropy(torch.tensor(values)[None], dim=1)[0].numpy()
    assert np.allclose(out, entropy_ref(values))
    assert float(obj.collision_entropy(torch.ones(1, 12, 1), 1)) == pytest.approx(math.log(12))  # uniform: log n
    assert float(obj.collision_entropy(torch.tensor([[0.0, 1.0, 0.0]]), 1)) == pytest.approx(0.0, abs=1e-6)
    assert float(obj.collision_entropy(torch.zeros(1, 5, 1), 1)) == pytest.approx(math.log(5))  # 0 / 0: uniform


def test_noise_bias_matches_its_definition():
    rng = np.random.default_rng(3)
    kernels = rng.uniform(0, 1, (4, 2, 3, 5, 5))  # (cells, views, layers, K, K)
    kernels /= kernels.sum((-2, -1), keepdims=True)
    mean, sigma, c = 0.3, 5e-3, 5e-3
    power = (np.abs(np.fft.fft2(kernels))**2).sum(1)  # sum over views: (cells, layers, K, K)
    expected = mean / 0.5 * 2 * sigma**2 * (c / (power + c)).mean(axis=(0, 2, 3))
    assert np.allclose(obj.noise_bias(torch.tensor(kernels), mean).numpy(), expected)
    delta = torch.zeros(2, 1, 3, 3, dtype=torch.float64)
    delta[..., 1, 1] = 1  # |K^|^2 = 1 per view: c / (2 + c) at every frequency
    assert float(obj.noise_bias(delta, 0.5)) == pytest.approx(2 * sigma**2 * c / (2 + c))


# ---------------------------------------------------------------------- the weighted terms
def test_release_weights_are_the_release_defaults():
    assert obj.RELEASE_WEIGHTS == {'data': 2.5e4, 'aux_data': 2.5e4, 'aif_tv': 30.0, 'alpha_tv': 7.5e4, 'entropy': 20.0}


def test_data_term():
    colors, alphas, rendering, views, bias = tiny_scene()
    eps = 0.5 / views.mean()
    residual = (rendering['views'] - views)**2 - (rendering['weights'] * bias.reshape(1, 1, -1, 1, 1, 1)).sum(2)
    expected = 2.5e4 * eps * rho(residual).mean()
    assert float(torch_terms(colors, alphas, rendering, views, bias)['data']) == pytest.approx(expected, rel=1e-9)


def test_auxiliary_data_term_and_its_stop_gradient():
    colors, alphas, rendering, views, bias = tiny_scene(4)
    layers = colors.shape[1]
    eps = 0.5 / views.mean()
    per_layer = (rendering['layer_colors'] - views[:, :, None])**2 - bias.reshape(1, 1, -1, 1, 1, 1)
    expected = 2.5e4 * eps * (layers * rendering['weights'] * rho(per_layer)).mean()
    t = {k: torch.tensor(v, requires_grad=True) for k, v in rendering.items()}
    aux = obj.release_terms(torch.tensor(colors), torch.tensor(alphas), t, torch.tensor(views), torch.tensor(bias))
    assert float(aux['aux_data'].detach()) == pytest.approx(expected, rel=1e-9)
    aux['aux_data'].backward()
    assert t['weights'].grad is None or float(t['weights'].grad.abs().max()) == 0  # stop_grad(blurred T)
    assert float(t['layer_colors'].grad.abs().max()) > 0


def test_intensity_smoothness_prior():
    colors, alphas, rendering, views, bias = tiny_scene(5)
    layers = colors.shape[1]
    eps = 0.5 / views.mean()
    trans = transmittance_ref(alphas[0, :, 0])  # (L, H, W)
    aif = (trans * colors[0, :, 0]).sum(0)
    tv_aif = tv_ref(eps * aif)
    tv_layers = np.mean([layers * trans[i] * tv_ref(eps * colors[0, i, 0]) for i in range(layers)], axis=0)
    expected = 30.0 * (
        np.mean(tv_aif * (1 - edge_ref(tv_aif)) + tv_layers * (1 - edge_ref(tv_layers))) + np.mean(tv_aif + tv_layers))
    assert float(torch_terms(colors, alphas, rendering, views, bias)['aif_tv']) == pytest.approx(expected, rel=1e-9)


def test_alpha_smoothness_prior_with_the_layer_count_scaling():
    colors, alphas, rendering, views, bias = tiny_scene(6, layers=4)
    layers = colors.shape[1]
    eps = 0.5 / views.mean()
    trans = transmittance_ref(alphas[0, :, 0])
    aif_edges = edge_ref(tv_ref(eps * (trans * colors[0, :, 0]).sum(0)))
    smooth = np.stack([tv_ref(np.sqrt(alphas[0, i, 0])) + tv_ref(np.sqrt(trans[i])) for i in range(layers)])
    expected = 7.5e4 * (layers / 12)**2 * (np.mean(smooth * (1 - aif_edges)) + np.mean(smooth))
    got = torch_terms(colors, alphas, rendering, views, bias)['alpha_tv']
    assert float(got) == pytest.approx(expected, rel=1e-9)
    halved = torch_terms(colors, alphas, rendering, views, bias, {'alpha_tv': 1.5e4})['alpha_tv']
    assert float(halved) == pytest.approx(expected / 5, rel=1e-9)


def test_entropy_prior():
    colors, alphas, rendering, views, bias = tiny_scene(7, layers=5)
    layers = colors.shape[1]
    trans = transmittance_ref(alphas[0, :, 0])
    entropy = entropy_ref(np.sqrt(alphas[0, 1:, 0])) + entropy_ref(np.sqrt(trans))
    expected = 20.0 / math.log(layers) * entropy.mean()
    assert float(torch_terms(colors, alphas, rendering, views, bias)['entropy']) == pytest.approx(expected, rel=1e-9)


# ---------------------------------------------------------------------- rendering, schedule, post-filter
def test_rendering_edge_pads_the_mpi_and_composites_blurred_layers():
    rng = np.random.default_rng(8)
    colors, alphas = rng.uniform(0, 1, (1, 2, 1, 5, 6)), rng.uniform(0, 1, (1, 2, 1, 5, 6))
    alphas[:, 0] = 1
    kernels = rng.uniform(0, 1, (2, 2, 3, 3))  # (views, layers, K, K)
    kernels /= kernels.sum((-2, -1), keepdims=True)

    def conv(img, k):  # true convolution of the edge-padded image
        pad = np.pad(img, 1, mode='edge')
        return np.array([[(pad[y:y + 3, x:x + 3] * k[::-1, ::-1]).sum() for x in range(img.shape[1])]
                         for y in range(img.shape[0])])

    out = render_mpi(
        torch.tensor(colors),
        torch.tensor(alphas),
        torch.tensor(kernels),
        pad_mode='replicate',
        normalize=False,
        details=True)
    for v in range(2):
        blurred_a = [conv(alphas[0, i, 0], kernels[v, i]) for i in range(2)]
        blurred_ca = [conv(colors[0, i, 0] * alphas[0, i, 0], kernels[v, i]) for i in range(2)]
        expected = blurred_ca[0] * (1 - blurred_a[1]) + blurred_ca[1]  # back layer seen through the front one
        assert np.allclose(out['views'][0, v, 0].numpy(), expected, atol=1e-9)
        assert np.allclose(out['weights'][0, v, 0, 0].numpy(), blurred_a[0] * (1 - blurred_a[1]), atol=1e-9)
        assert np.allclose(out['layer_colors'][0, v, 1, 0].numpy(), conv(colors[0, 1, 0], kernels[v, 1]), atol=1e-9)


def test_release_preset_is_the_release_schedule_and_start():
    solver = DPJointSolver(ParametricKernelBank(), preset='release')
    assert solver.objective == 'release' and solver.colors == 'per_layer' and solver.num_layers == 12
    assert solver.levels == [{'scale': 1.0, 'iters': 10000}] and solver.lr == (0.3, 0.1)
    assert solver.init == 'uniform' and solver.color_init == 'global' and solver.early_stop is None
    assert solver.pad_mode == 'replicate' and solver.noise == {'sigma': 5e-3, 'c': 5e-3}
    assert solver.post_filter == {'sigma_s': 3.0, 'sigma_v': 0.05, 'quantized': True}
    assert solver.weights == obj.RELEASE_WEIGHTS
    views = torch.rand(1, 2, 1, 8, 9) * 0.5
    colors, alphas = solver.scene(solver.init_params(views, torch.linspace(4, 0, 12)))
    assert torch.allclose(colors, torch.full_like(colors, float(views.mean())), atol=1e-5)  # global mean colour
    trans = obj.visibility(alphas)
    assert torch.allclose(trans, torch.full_like(trans, 1 / 12), atol=1e-3)  # alphas 1/(i+1): equal transmittance
    assert PRESETS['fast']['objective'] == 'release'  # the fast preset optimises the same objective


def test_learning_rate_decays_log_linearly_and_nan_gradients_are_dropped(monkeypatch):
    solver = DPJointSolver(ParametricKernelBank(), preset='release', levels=[{'scale': 1.0, 'iters': 5}], num_layers=3)
    rates = []
    step = torch.optim.Adam.step

    def record(self, *args, **kwargs):
        rates.append(self.param_groups[0]['lr'])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, 'step', record)
    params = [torch.zeros(1, 2, 1, 4, 4, requires_grad=True), torch.zeros(1, 2, 1, 4, 4, requires_grad=True)]

    class NaNLoss:  # a loss whose gradient is NaN everywhere: the step must leave the parameters finite

        def __call__(self, *args, **kwargs):
            return {'data': (torch.sqrt(-params[0].abs() - 1)).sum() + params[1].sum()}, None

    monkeypatch.setattr(solver, 'losses', NaNLoss())
    monkeypatch.setattr(solver, 'scene', lambda p: (p[0], p[1]))
    solver._optimise(params, {}, 5, None)
    assert np.allclose(rates, [0.3 * (0.1 / 0.3)**(i / 4) for i in range(5)])
    assert torch.isfinite(params[0]).all() and torch.equal(params[0], torch.zeros_like(params[0]))


def bilateral_ref(img, sigma_s=3.0, sigma_v=0.05):
    """The release's bilateral filter (weights floor(3 g) / 3), with replicated borders."""

    def g(r2, s):
        return np.floor(3 * np.exp(-0.5 * r2 / s**2)) / 3

    half = int(3 * sigma_s + 1)
    pad = np.pad(img, half, mode='edge')
    h, w = img.shape
    total, norm = img * 1e-8, np.full_like(img, 1e-8)
    for dy in range(-half, half + 1):
        for dx in range(-half, half + 1):
            shifted = pad[half + dy:half + dy + h, half + dx:half + dx + w]
            weight = g(dy * dy + dx * dx, sigma_s) * g((shifted - img)**2, sigma_v)
            total, norm = total + weight * shifted, norm + weight
    return total / norm


def test_bilateral_post_filter_matches_the_release_filter():
    img = np.random.default_rng(9).uniform(0, 1, (12, 14))
    img[:, 7:] += 1.0  # an edge the filter must keep
    out = bilateral_filter(torch.tensor(img)[None, None])[0, 0].numpy()
    assert np.allclose(out, bilateral_ref(img), atol=1e-9)
    assert out[:, :7].max() < 1.0 < out[:, 7:].min()
