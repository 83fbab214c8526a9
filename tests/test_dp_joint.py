"""Joint DP optimiser (Xin et al.): MPI rendering, data term, kernel banks, the solver and DPJointOptimModel."""
import cv2
import numpy as np
import pytest
import re
import torch
from conftest import load_options, run_python, run_test, tiny_options
from scipy.ndimage import gaussian_filter

from defocusgan_plugin.data.dp_synthesis import DEFAULT_PSF, linear_to_srgb, srgb_to_linear, synthesize_dp
from defocusgan_plugin.ops.dp_joint import DEFAULT_LEVELS, DPJointSolver
from defocusgan_plugin.ops.kernel_bank import ParametricKernelBank, ResampledKernelBank, resample_kernels, trim_kernels
from defocusgan_plugin.ops.mpi import grid_cells, layer_radii, render_mpi
from defocusgan_plugin.ops.psf import centered_grid, dp_psf
from defocusgan_plugin.ops.render import pad2d

PSF = {k: v for k, v in DEFAULT_PSF.items() if k != 'profile'}  # the synthetic data's own PSF


def texture(size, seed=0):
    """A smooth random colour texture in [0.1, 0.9], HWC."""
    img = gaussian_filter(np.random.default_rng(seed).random((size, size, 3)), (1, 1, 0))
    return ((img - img.min()) / (img.max() - img.min()) * 0.8 + 0.1).astype(np.float32)


def to_linear(img):
    return torch.from_numpy(srgb_to_linear(img)).permute(2, 0, 1)[None]


def psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((a - b)**2))


def x_centroid(kernel):
    x, _ = centered_grid(kernel.shape[-1], kernel.dtype)
    return float((kernel * x).sum() / kernel.sum())


# ---------------------------------------------------------------------- rendering and data term
def test_single_in_focus_layer_renders_the_all_in_focus_image():
    aif = torch.rand(1, 3, 20, 24)
    alphas = torch.ones(1, 1, 1, 20, 24)
    for bank in (ParametricKernelBank(**PSF),
                 ResampledKernelBank(dp_psf([3.0], 11, **PSF).transpose(0, 1)[:, None], [3.0])):
        kernels = bank(torch.zeros(1))[0]
        views = render_mpi(aif[:, None], alphas, kernels)
        assert views.shape == (1, 2, 3, 20, 24)
        assert torch.allclose(views[:, 0], aif, atol=1e-5) and torch.allclose(views[:, 1], aif, atol=1e-5)


def two_layer_scene(size=64, radius=2.0):
    """Background at +radius, a foreground square at -radius; the texture is flat grey near the occlusion edge, where
    the generator's layer split (holes in the back layer) and the MPI's opaque back layer would otherwise differ."""
    img = texture(size)
    mask = np.zeros((size, size), np.float32)
    lo, hi = size // 4, 3 * size // 4
    mask[lo:hi, lo:hi] = 1
    half = int(np.ceil(radius + 3 * PSF['sigma'])) + 1  # kernel radius
    reach = 4 * half + 1  # flat within two kernel radii of the edge: the blurred alpha, then the colour it weighs
    edge = cv2.dilate(mask, np.ones((reach, reach))) - cv2.erode(mask, np.ones((reach, reach)))
    img[edge > 0] = 0.5
    coc = np.where(mask > 0, -radius, radius).astype(np.float32)
    return img, mask, coc


def test_data_term_is_zero_for_the_true_scene_of_a_two_layer_dp_pair():
    img, mask, coc = two_layer_scene()
    views = synthesize_dp(img, coc, rng=None)  # the dataset generator's own renderer, in sRGB files' encoding
    observed = torch.stack([to_linear(views['left']), to_linear(views['right'])], 1)
    solver = DPJointSolver(ParametricKernelBank(**PSF), num_layers=2, colors='shared')
    radii = layer_radii(-2.0, 2.0, 2)  # back (+2) first
    alphas = torch.stack([torch.ones(1, 1, *mask.shape), torch.from_numpy(mask)[None, None]], 1)
    truth, _ = solver.losses(to_linear(img), alphas, observed, solver.bank(radii)[0], observed.mean(1))
    assert truth['data'] < 1e-9
    swapped, _ = solver.losses(to_linear(img), alphas, observed, solver.bank(-radii)[0], observed.mean(1))
    assert swapped['data'] > 1e-4  # the wrong layer order does not explain the views


# ---------------------------------------------------------------------- the optimiser
@pytest.mark.parametrize('init', ['uniform', 'cross'])
def test_optimisation_recovers_layer_order_and_deblurs(init):
    img = texture(48, seed=1)
    coc = np.full((48, 48), 3.0, np.float32)
    coc[12:36, 24:] = -3.0  # a near object in front of the focal plane, the rest behind it
    views = synthesize_dp(img, coc, rng=None)
    levels = [{'scale': 0.5, 'iters': 150}, {'scale': 1.0, 'iters': 50}]
    solver = DPJointSolver(ParametricKernelBank(**PSF), num_layers=6, levels=levels, max_radius=5, init=init)
    out = solver(to_linear(views['left']), to_linear(views['right']))
    assert sum(out['iters']) <= 200
    defocus = out['defocus'][0, 0].numpy()
    assert defocus[coc > 0].mean() > 1.0 and defocus[coc < 0].mean() < -1.0  # signs, hence depth order
    aif = linear_to_srgb(out['aif'][0].permute(1, 2, 0).numpy())
    assert psnr(aif, img) > psnr(views['combined'], img) + 1.0


def test_early_stopping_ends_a_level_on_a_plateau():
    img, _, coc = two_layer_scene(32)
    views = synthesize_dp(img, coc, rng=None)
    left, right = to_linear(views['left']), to_linear(views['right'])
    common = dict(num_layers=4, levels=[{'scale': 1.0, 'iters': 300}], max_radius=4)
    stopped = DPJointSolver(ParametricKernelBank(**PSF), early_stop={'window': 10, 'rel_tol': 0.05}, **common)
    assert stopped(left, right, (-2.5, 2.5))['iters'][0] < 300
    # ~ runs every iteration
    full = DPJointSolver(
        ParametricKernelBank(**PSF), early_stop=None, **dict(common, levels=[{
            'scale': 1.0,
            'iters': 12
        }]))
    assert full(left, right, (-2.5, 2.5))['iters'] == [12]


def test_mixed_precision_renders_like_float32():
    img, mask, coc = two_layer_scene(32)
    views = synthesize_dp(img, coc, rng=None)
    observed = torch.stack([to_linear(views['left']), to_linear(views['right'])], 1)
    alphas = torch.stack([torch.ones(1, 1, 32, 32), torch.from_numpy(mask)[None, None]], 1)
    results = []
    for amp in (False, True):
        solver = DPJointSolver(ParametricKernelBank(**PSF), num_layers=2, colors='shared', amp=amp, blur_method='conv')
        terms, rendered = solver.losses(
            to_linear(img), alphas, observed,
            solver.bank(layer_radii(-2, 2, 2))[0], observed.mean(1))
        results.append(rendered)
    assert results[1].dtype == torch.float32 and torch.allclose(results[0], results[1], atol=1e-2)
    assert not torch.equal(results[0], results[1])  # the conv really ran in bfloat16


def test_spatially_varying_kernels_render_each_cell_with_its_own_kernels():
    colors, alphas = torch.rand(1, 2, 3, 24, 30), torch.rand(1, 2, 1, 24, 30)
    alphas[:, 0] = 1
    small, large = dp_psf([2.0, -1.0], 9, **PSF), dp_psf([3.0, -2.0], 9, **PSF)
    same = render_mpi(colors, alphas, torch.stack([small] * 6), grid=(2, 3))
    assert torch.allclose(same, render_mpi(colors, alphas, small), atol=1e-5)  # no seams between cells
    mixed = render_mpi(colors, alphas, torch.stack([small, large, small, small, small, small]), grid=(2, 3))
    assert torch.allclose(mixed[..., :12, 10:20], render_mpi(colors, alphas, large)[..., :12, 10:20], atol=1e-5)
    assert torch.allclose(mixed[..., 12:, :], same[..., 12:, :], atol=1e-5)


@pytest.mark.parametrize('size, method, pad_mode', [((24, 30), 'fft', 'reflect'), ((25, 31), 'conv', 'replicate'),
                                                    ((48, 64), 'fft', 'replicate')])
def test_grid_blur_is_one_batched_call_equal_to_blurring_each_cell(monkeypatch, size, method, pad_mode):
    from defocusgan_plugin.ops import render
    rows, cols = (2, 3) if size[0] < 48 else (6, 8)
    layers = torch.rand(1, 1, 3, 2, *size, dtype=torch.float64)
    kernels = torch.rand(rows * cols, 2, 3, 7, 7, dtype=torch.float64)
    kernels /= kernels.sum((-2, -1), keepdim=True)
    calls = []
    convolve = render._convolve_valid
    monkeypatch.setattr(render, '_convolve_valid', lambda *a, **k: calls.append(1) or convolve(*a, **k))
    out = render.blur_layers_grid(layers, kernels, (rows, cols), method, pad_mode)
    assert len(calls) == 1  # every cell, view and layer in one convolution call
    for (top, bottom, left, right), cell_kernels in zip(grid_cells(*size, (rows, cols)), kernels):
        whole = render.blur_layers(layers, cell_kernels, method, pad_mode)
        assert torch.allclose(out[..., top:bottom, left:right], whole[..., top:bottom, left:right], atol=1e-9)


def test_replicate_padding_extends_the_border_values():
    x = torch.arange(12.0).reshape(1, 3, 4)
    padded = pad2d(x, 2, 'replicate')
    assert padded.shape == (1, 7, 8) and torch.equal(padded[0, :2, :2], torch.zeros(2, 2))
    assert torch.equal(padded[0, -1, 2:-2], x[0, -1]) and torch.equal(pad2d(x, 1)[0, 0, 1:-1], x[0, 1])  # reflect


# ---------------------------------------------------------------------- kernel banks
def test_trimming_drops_only_negligible_outer_rings():
    kernels = dp_psf([2.0, -3.0], 21, **PSF)  # far larger windows than the disks need
    trimmed = trim_kernels(kernels, 1e-4)
    assert trimmed.shape[-1] < 15 and torch.allclose(trimmed.sum((-2, -1)), torch.ones(2, 2))
    half = (21 - trimmed.shape[-1]) // 2
    inner = kernels[..., half:-half, half:-half]
    assert float((1 - inner.sum((-2, -1))).max()) <= 1e-4  # what was cut
    assert torch.allclose(trimmed, inner / inner.sum((-2, -1), keepdim=True))
    assert trim_kernels(kernels, 0.0).shape[-1] >= trimmed.shape[-1]
    bank = ResampledKernelBank(kernels.transpose(0, 1)[:1, None], [2.0], trim=1e-4)
    assert bank(torch.tensor([2.0, 1.0])).shape[-1] < 15


def test_calibration_radius_is_estimated_per_cell_and_described(tmp_path):
    radii = torch.linspace(3.0, 5.0, 6)
    cells = dp_psf(radii, 15, profile='disk', ramp_width=1.0)  # (2, 6, K, K): left/right of 6 cells
    np.save(tmp_path / 'left.npy', cells[0].numpy())
    np.save(tmp_path / 'right.npy', cells[1].numpy())
    bank = ResampledKernelBank.from_npy(
        str(tmp_path / 'left.npy'), str(tmp_path / 'right.npy'), grid=[2, 3], frame_size=[20, 30])
    assert float(bank.radii[0]) == pytest.approx(float(radii.mean()), abs=0.3)  # disk-equivalent, about the centroid
    text = bank.describe()
    assert '2x3 grid of 15x15 kernels calibrated on 20x30 px' in text and 'reference radius +' in text
    override = ResampledKernelBank.from_npy(
        str(tmp_path / 'left.npy'), str(tmp_path / 'right.npy'), grid=[2, 3], radius=7.5)
    assert float(override.radii[0]) == 7.5


def test_fast_schedule_merges_levels_whose_blur_is_too_small_to_see():
    solver = DPJointSolver(ParametricKernelBank(**PSF), preset='fast_v1', max_radius=24)
    assert solver.schedule(21.0) == [{'scale': 0.5, 'iters': 40}, {'scale': 1.0, 'iters': 10}]
    assert solver.schedule(5.0) == [{'scale': 1.0, 'iters': 20}]  # 40 iterations at 1/2 cost 10 at full size
    assert solver.search_scale == 0.25  # 'auto': the largest radius searched is 6 px at that resolution
    fast = DPJointSolver(ParametricKernelBank(**PSF), preset='fast', max_radius=24)
    assert fast.schedule(21.0) == [{'scale': 0.5, 'iters': 40}, {'scale': 1.0, 'iters': 6}]
    assert fast.schedule(5.0) == [{'scale': 1.0, 'iters': 16}]
    assert DPJointSolver(ParametricKernelBank(**PSF)).schedule(2.0) == [dict(level) for level in DEFAULT_LEVELS]


# ---------------------------------------------------------------------- kernel banks (calibrated files)
def test_resampling_keeps_scale_one_flips_negative_scales_and_collapses_tiny_ones():
    kernels = dp_psf([4.0], 13, **PSF)[:, 0]  # (2, K, K): left, right
    assert torch.equal(resample_kernels(kernels, 1.0), kernels / kernels.sum((-2, -1), keepdim=True))
    flipped = resample_kernels(kernels, -1.0)
    assert torch.allclose(flipped, kernels.flip(-2, -1), atol=1e-6)
    half = resample_kernels(kernels, 0.5)
    assert half.shape[-1] == 7 and torch.allclose(half.sum((-2, -1)), torch.ones(2))
    assert x_centroid(half[0]) == pytest.approx(0.5 * x_centroid(kernels[0]), rel=0.1)
    assert torch.equal(resample_kernels(kernels, 0.01), torch.ones(2, 1, 1))


def test_calibrated_bank_resamples_to_signed_layer_radii(tmp_path):
    kernels = dp_psf([4.0], 13, **PSF)[:, 0]
    np.save(tmp_path / 'left.npy', kernels[0].numpy())  # (K, K): one kernel per view
    np.save(tmp_path / 'right.npy', kernels[1].numpy())
    bank = ResampledKernelBank.from_npy(str(tmp_path / 'left.npy'), str(tmp_path / 'right.npy'), radius=4.0)
    out = bank(torch.tensor([4.0, 2.0, -4.0, 0.0]))
    assert out.shape[:3] == (1, 2, 4) and torch.allclose(out.sum((-2, -1)), torch.ones(1, 2, 4))
    assert torch.allclose(out[0, :, 0], kernels, atol=1e-6)
    # the DP disparity (left minus right centroid) scales with the radius and reverses in front of the focal plane
    disparity = [x_centroid(out[0, 0, i]) - x_centroid(out[0, 1, i]) for i in range(3)]
    assert disparity[0] > 1 and np.allclose(disparity[1:], [0.5 * disparity[0], -disparity[0]], rtol=0.02)
    assert out[0, 0, 3].max() == pytest.approx(1.0)  # radius 0: a delta
    # without `radius` the calibration radius comes from the kernels' second moment
    estimated = ResampledKernelBank.from_npy(str(tmp_path / 'left.npy'), str(tmp_path / 'right.npy'))
    assert 3.0 < float(estimated.radii[0]) < 5.5


def test_calibrations_at_several_radii_use_the_nearest_of_the_same_sign(tmp_path):
    kernels = dp_psf([4.0, -2.0], 11, **PSF)  # (2 views, 2 radii, K, K)
    np.save(tmp_path / 'left.npy', kernels[0].numpy())
    np.save(tmp_path / 'right.npy', kernels[1].numpy())
    bank = ResampledKernelBank.from_npy(str(tmp_path / 'left.npy'), str(tmp_path / 'right.npy'), radii=[4.0, -2.0])
    out = bank(torch.tensor([-2.0, -1.0, 3.0]))[0]
    assert torch.allclose(out[:, 0], kernels[:, 1], atol=1e-6)
    assert torch.allclose(out[:, 1], _centre(resample_kernels(kernels[:, 1], 0.5), out.shape[-1]), atol=1e-6)
    assert torch.allclose(out[:, 2], _centre(resample_kernels(kernels[:, 0], 0.75), out.shape[-1]), atol=1e-6)


def _centre(kernels, size):
    pad = (size - kernels.shape[-1]) // 2
    return torch.nn.functional.pad(kernels, (pad, pad, pad, pad))


def test_calibrated_grid_bank_gives_one_kernel_set_per_cell(tmp_path):
    cells = dp_psf(torch.linspace(2, 4, 6), 11, **PSF)  # (2, 6, K, K): 6 cells of a 2x3 grid
    np.save(tmp_path / 'left.npy', cells[0].numpy())
    np.save(tmp_path / 'right.npy', cells[1].numpy())
    bank = ResampledKernelBank.from_npy(
        str(tmp_path / 'left.npy'), str(tmp_path / 'right.npy'), grid=[2, 3], radius=3.0)
    assert bank.grid == (2, 3)
    out = bank(torch.tensor([3.0, -1.5]))
    assert out.shape[:3] == (6, 2, 2)
    assert torch.allclose(out[5, :, 0], cells[:, 5] / cells[:, 5].sum((-2, -1), keepdim=True), atol=1e-6)


@pytest.mark.parametrize('case, message', [
    ('missing', 'not found'),
    ('corrupt', 'Cannot read'),
    ('even', 'K odd'),
    ('grid', 'ask for'),
    ('nan', 'NaN'),
    ('zero', 'sums to zero'),
    ('mismatch', 'differ in shape'),
])
def test_calibrated_loader_rejects_bad_files_with_clear_errors(tmp_path, case, message):
    good = np.full((6, 11, 11), 1.0 / 121, np.float32)
    left, right = tmp_path / 'left.npy', tmp_path / 'right.npy'
    np.save(right, good)
    bad = {
        'even': np.ones((6, 10, 10)),
        'grid': good,
        'nan': np.where(good > 0, np.nan, 0),
        'zero': good * 0,
        'mismatch': good[:4]
    }.get(case, good)
    if case == 'corrupt':
        left.write_bytes(b'not a numpy file')
    elif case != 'missing':
        np.save(left, bad)
    grid = [2, 2] if case == 'grid' else [2, 3]
    with pytest.raises((ValueError, FileNotFoundError), match=message) as err:
        ResampledKernelBank.from_npy(str(left), str(right), grid=grid, option='dp_joint.kernels')
    assert str(left) in str(err.value) and 'dp_joint.kernels' in str(err.value)


@pytest.mark.parametrize('signed', [False, True])
def test_learned_kernels_from_a_stage1_checkpoint(tmp_path, signed):
    from defocusgan_plugin.archs.blur_kernel_arch import LearnableBlurKernel
    from defocusgan_plugin.models.dp_joint_optim_model import build_kernel_bank
    arch = {'max_radius': 4, 'signed': signed, 'param': 'raw' if signed else 'softmax'}
    net = LearnableBlurKernel(**arch)
    with torch.no_grad():  # as if learned; a signed set then differs between +r and -r
        for p in net.parameters():
            p.mul_(1 + 0.3 * torch.rand_like(p))
    path = tmp_path / 'net_kernel_10.pth'
    torch.save({'params': net.state_dict()}, path)

    class Stub:  # the model's option access and loader
        opt = {
            'network_kernel': {
                'type': 'LearnableBlurKernel',
                **arch
            },
            'path': {
                'pretrain_network_kernel': str(path)
            }
        }

        def load_pretrained(self, module, label):
            module.load_state_dict(torch.load(self.opt['path'][f'pretrain_network_{label}'])['params'])

    bank = build_kernel_bank({'type': 'learned'}, Stub())
    out = bank(torch.tensor([3.0, -3.0]))[0]
    expected = net.dp_kernels().detach()  # radii -4..4
    assert torch.allclose(out[:, 0], expected[:, 7], atol=1e-6)  # +3: the learned kernel itself
    # -3: its own kernel (signed), or the +3 kernel split as stage 1 splits it (halves swapped), as in training
    assert torch.allclose(out[:, 1], expected[:, 1], atol=1e-6)


# ---------------------------------------------------------------------- the BasicSR model
FAST_SOLVER = {
    'dp_joint:solver:levels': [{
        'scale': 0.5,
        'iters': 60
    }, {
        'scale': 1.0,
        'iters': 20
    }],
    'dp_joint:solver:max_radius': 5,
    'dp_joint:solver:num_layers': 6,
}


def test_basicsr_test_writes_aif_maps_and_beats_the_input(tmp_path, synthetic_root):
    opt_path = tiny_options('test_dp_joint_synthetic.yml', tmp_path, synthetic_root, FAST_SOLVER)
    proc = run_python(['-m', 'defocusgan_plugin.test', '-opt', str(opt_path)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    name = load_options(opt_path)['name']
    vis = tmp_path / 'results' / name / 'visualization' / 'SyntheticDPDD_test'
    aifs = sorted(p for p in vis.glob('*.png') if not p.name.endswith('_map.png'))
    assert len(aifs) == 5 and len(list(vis.glob('*_map.png'))) == 5
    assert cv2.imread(str(aifs[0]), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    assert len(list((tmp_path / 'results' / name / 'defocus_maps' / 'SyntheticDPDD_test').glob('*.npy'))) == 5
    log = proc.stdout + proc.stderr
    logged = {k: float(v) for k, v in re.findall(r'(\w+): (\d+\.\d+)\b(?!\.)', log)}  # metric: value
    for metric in ('psnr', 'ssim', 'mae', 'aiwe1', 'aiwe2', 'spearman', 'input_psnr', 'input_ssim', 'input_mae'):
        assert metric in logged, metric
    assert logged['psnr'] > logged['input_psnr'] and logged['mae'] < logged['input_mae']


def test_grayscale_views(tmp_path, synthetic_root):
    overrides = dict(
        FAST_SOLVER, **{
            'datasets:test_1:color': 'gray',
            'val:metrics': {
                'psnr': {
                    'type': 'calculate_dpdd_psnr'
                }
            },
            'dp_joint:solver:levels': [{
                'scale': 0.5,
                'iters': 30
            }]
        })
    opt_path = tiny_options('test_dp_joint_synthetic.yml', tmp_path, synthetic_root, overrides)
    run_test(opt_path, tmp_path)
    vis = tmp_path / 'results' / load_options(opt_path)['name'] / 'visualization' / 'SyntheticDPDD_test'
    aif = cv2.imread(str(next(p for p in vis.glob('*.png') if not p.name.endswith('_map.png'))), -1)
    assert aif.ndim == 2  # one channel in, one channel out


def test_model_refuses_bad_options_and_single_input(tmp_path, synthetic_root):
    from basicsr.models import build_model
    base = load_options('test_dp_joint_synthetic.yml')
    base.update(is_train=False, dist=False, rank=0, world_size=1)
    base['path'] = {'visualization': str(tmp_path)}
    with pytest.raises(ValueError, match='dp_joint.solver.num_layer'):
        build_model(dict(base, dp_joint={'solver': {'num_layer': 4}}))
    with pytest.raises(ValueError, match='dp_joint.kernels.type'):
        build_model(dict(base, dp_joint={'kernels': {'type': 'gaussian'}}))
    with pytest.raises(ValueError, match='no training'):
        build_model(dict(base, is_train=True))
    model = build_model(base)
    with pytest.raises(ValueError, match='input: dual'):
        model.feed_data({'lq': torch.rand(1, 3, 8, 8), 'gt': torch.rand(1, 3, 8, 8)})
