"""The joint DP optimiser against an inexact calibration, and its speed: the fake set's mismatch options (PSFs other
than the calibration, phone-level noise), the solver's options for it (robust data term, slower alphas, per-cell
cross-convolution search, Adam moments carried across levels) and the tiled blur of the fast preset."""
import json
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, run_python

from defocusgan_plugin.data.dp_raw_dataset import DPRawPixel4Dataset
from defocusgan_plugin.data.fake_pixel4 import (MISMATCH, PHONE_NOISE, TrueKernels, fake_calibration, fake_geometry,
                                                resolve_mismatch, write_fake_pixel4)
from defocusgan_plugin.ops.dp_joint import PRESETS, DPJointSolver, cross_defocus
from defocusgan_plugin.ops.dp_objective import charbonnier_sq, robust_sq
from defocusgan_plugin.ops.kernel_bank import ResampledKernelBank, kernel_radii, resample_kernels
from defocusgan_plugin.ops.mpi import blur_layers_tiled, render_mpi
from defocusgan_plugin.ops.psf import centered_grid, dp_psf
from defocusgan_plugin.ops.render import blur_layers_grid

pytestmark = pytest.mark.usefixtures('one_thread')
HALF = fake_geometry((504, 672))  # 31 px kernels of ~6.6 px radius: the shapes are resolved, the kernels cheap
TINY_CROP = (96, 128)


def calibration_bank(geometry):
    kernels = fake_calibration(geometry)  # (2, G, K, K)
    return ResampledKernelBank(kernels.transpose(0, 1)[None], [1.0], geometry['grid'], max_size=kernels.shape[-1])


def x_centroid(kernels):
    x, _ = centered_grid(kernels.shape[-1], kernels.dtype)
    return (kernels * x).sum((-2, -1)) / kernels.sum((-2, -1))


# ---------------------------------------------------------------------- the fake set's mismatch
def test_true_kernels_without_mismatch_are_the_resampled_calibration():
    scales = torch.tensor([0.3, 1.0, 1.7])
    true = TrueKernels(HALF)(scales)
    assert torch.allclose(true, calibration_bank(HALF)(scales), atol=1e-6)


def test_scale_error_magnifies_each_cell_by_its_own_error():
    true = TrueKernels(HALF, scale_error=0.05, rng=np.random.default_rng(3))
    errors = true.scale_errors.reshape(-1)
    assert 0.03 < errors.std() < 0.07 and np.abs(errors).max() <= 2.5 * 0.05 + 1e-12  # drawn as configured
    kernels = true(torch.tensor([1.0, 0.5]))  # (G, 2, 2, K, K)
    calibration = fake_calibration(HALF).transpose(0, 1)
    for g in (0, 17, 47):  # the calibration cell resampled by its own scale error times the layer's scale
        for i, scale in enumerate((1.0, 0.5)):
            expected = resample_kernels(calibration[g], scale * (1 + errors[g]))
            pad = (kernels.shape[-1] - expected.shape[-1]) // 2
            assert torch.allclose(kernels[g, :, i], torch.nn.functional.pad(expected, [pad] * 4), atol=1e-6)
    ratio = kernel_radii(kernels[:, :, 0].sum(1)) / kernel_radii(calibration.sum(1))
    assert np.allclose(ratio.numpy(), 1 + errors, atol=0.025)  # (resampling adds ~1 % of interpolation blur)


def test_soft_edges_add_the_configured_blur_and_the_finer_grid_varies_within_cells():
    # a Gaussian of std s adds 2 s^2 to the second moment, 4 s^2 to the squared disk-equivalent radius
    squared = [
        kernel_radii(TrueKernels(HALF, soft_edge=soft)(torch.tensor([1.0]))[:, :, 0].sum(1))**2 for soft in (0.1, 0.2)
    ]
    radius = float(TrueKernels(HALF).radius.mean())
    assert np.allclose((squared[1] - squared[0]).numpy(), 4 * ((0.2 * radius)**2 - (0.1 * radius)**2), rtol=0.05)
    fine = TrueKernels(HALF, subgrid=2)
    assert fine.grid == (12, 16)
    radii = kernel_radii(fine(torch.tensor([1.0]))[:, :, 0].sum(1)).reshape(6, 2, 8, 2)
    assert float((radii[0, 0, 0, 0] - radii[0, 1, 0, 1]).abs()) > 0.05  # corner cell: its quarters differ


def test_shape_change_is_zero_at_the_calibrated_defocus_and_grows_away_from_it():
    shaped, plain = TrueKernels(HALF, shape_change=1.0), calibration_bank(HALF)
    scales = torch.tensor([1.0, 0.5, 0.25])
    a, b = shaped(scales), plain(scales)
    diff = (a - b).abs().sum((-2, -1)).mean((0, 1))  # L1 per scale, mean over cells and views
    assert float(diff[0]) < 1e-5 and 0.05 < float(diff[1]) < float(diff[2])
    # the DP split softens for small blur: the left and right halves lie closer together than resampling says
    split = (x_centroid(a[:, 1]) - x_centroid(a[:, 0])).mean(0) / (x_centroid(b[:, 1]) - x_centroid(b[:, 0])).mean(0)
    assert float(split[0]) == pytest.approx(1.0, abs=1e-4) and float(split[1]) < 0.95


def write_tiny(root, **kwargs):
    write_fake_pixel4(str(root), num_scenes=1, crop=TINY_CROP, seed=0, **kwargs)
    return DPRawPixel4Dataset({'dataroot': str(root), 'crop': list(TINY_CROP), 'normalize': 'none'})[0]


def test_mismatched_views_differ_from_calibration_rendered_views_by_the_configured_amounts(tmp_path):
    none = dict(scale_error=0.0, shape_change=0.0, soft_edge=0.0, subgrid=1)
    clean = write_tiny(tmp_path / 'clean', noise=(0.0, 0.0))
    same = write_tiny(tmp_path / 'same', noise=(0.0, 0.0), mismatch=none)
    assert torch.allclose(same['lq_l'], clean['lq_l'], atol=1.5 / 16383)  # no mismatch: the calibration's rendering
    psf = write_tiny(tmp_path / 'psf', noise=(0.0, 0.0), mismatch=dict(none, soft_edge=0.3, scale_error=0.1))
    assert float((psf['lq_l'] - clean['lq_l']).abs().mean()) > 10 * float((same['lq_l'] - clean['lq_l']).abs().mean())
    shot, read = 4e-4, 2e-3
    noisy = write_tiny(tmp_path / 'noisy', noise=(shot, read), mismatch=none)
    views = torch.stack([clean['lq_l'], clean['lq_r']])
    residual = torch.stack([noisy['lq_l'], noisy['lq_r']]) - views
    expected = torch.sqrt(shot * views + read**2)  # the right view's vignetting gain scales both alike, ~1.2
    assert float(residual.std() / expected.mean()) == pytest.approx(1.0, abs=0.3)
    info = json.loads((tmp_path / 'psf' / 'fake_set.json').read_text())
    assert info['mismatch']['soft_edge'] == 0.3 and len(info['mismatch']['scale_errors']) == 6


def test_mismatch_defaults_bin_the_phone_noise_and_reject_unknown_amounts(tmp_path):
    assert resolve_mismatch(None) is None and resolve_mismatch(True) == MISMATCH
    assert resolve_mismatch({'soft_edge': 0.2})['scale_error'] == MISMATCH['scale_error']
    with pytest.raises(ValueError, match='Unknown mismatch'):
        resolve_mismatch({'blur': 1})
    proc = run_python([
        str(ROOT / 'scripts' / 'make_fake_pixel4.py'), '--out',
        str(tmp_path / 'set'), '--crop', '96', '128', '--scenes', '1', '--scale-error', '0.02', '--max-scale', '1.9'
    ], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads((tmp_path / 'set' / 'fake_set.json').read_text())
    factor = 128 / 1344
    assert info['mismatch']['scale_error'] == 0.02 and info['mismatch']['soft_edge'] == MISMATCH['soft_edge']
    assert np.allclose(info['noise'], [PHONE_NOISE[0] * factor**2, PHONE_NOISE[1] * factor])
    assert info['max_scale'] == 1.9 and 'mismatched PSFs' in proc.stdout


# ---------------------------------------------------------------------- the solver's options
def test_tiled_blur_equals_the_grid_blur_with_its_gradient():
    torch.manual_seed(0)
    for size, grid, k in (((25, 31), (2, 3), 9), ((48, 64), (6, 8), 11), ((20, 20), (1, 1), 5)):
        layers = torch.rand(1, 1, 3, 2, *size, dtype=torch.float64, requires_grad=True)
        kernels = torch.rand(grid[0] * grid[1], 2, 3, k, k, dtype=torch.float64)
        kernels /= kernels.sum((-2, -1), keepdim=True)
        for pad in ('reflect', 'replicate'):
            tiled = blur_layers_tiled(layers, kernels, grid, pad, {})
            reference = blur_layers_grid(layers, kernels, grid, 'fft', pad)
            assert torch.allclose(tiled, reference, atol=1e-12)
            weight = torch.rand_like(tiled)
            grads = [torch.autograd.grad((out * weight).sum(), layers)[0] for out in (tiled, reference)]
            assert torch.allclose(*grads, atol=1e-12)


def test_tiled_rendering_and_a_whole_solve_match_the_fft_path():
    torch.manual_seed(0)
    colors, alphas = torch.rand(1, 3, 1, 24, 32), torch.rand(1, 3, 1, 24, 32)
    alphas[:, 0] = 1
    kernels = dp_psf(torch.tensor([3.0, 1.5, 0.0]), 9).expand(6, -1, -1, -1, -1)
    outs = [render_mpi(colors, alphas, kernels, (2, 3), m, 'replicate', False, True) for m in ('fft', 'tiled')]
    for key in ('views', 'weights', 'layer_colors'):
        assert torch.allclose(outs[0][key], outs[1][key], atol=1e-5)
    # a square at 0.5 px in front of a smooth texture at 3 px, under a 2x3 grid of kernels
    sharp = F.avg_pool2d(torch.rand(1, 1, 28, 36), 3, 1)[None] * 0.8 + 0.1
    square = torch.zeros(1, 1, 1, 26, 34)
    square[..., 6:20, 16:] = 1
    bank = ResampledKernelBank(dp_psf(torch.linspace(2, 3, 6), 11).transpose(0, 1)[None], [2.5], (2, 3))
    views = render_mpi(
        sharp.expand(1, 2, 1, -1, -1), torch.cat([torch.ones_like(square), square], 1), bank(torch.tensor([3.0, 0.5])),
        (2, 3), 'fft', 'replicate')
    common = dict(preset='fast_v1', num_layers=4, max_radius=4, levels=[{'scale': 1.0, 'iters': 6}])
    results = [DPJointSolver(bank, blur_method=m, **common)(views[:, 0], views[:, 1]) for m in ('fft', 'tiled')]
    # float32 roundoff differs between the two paths; Adam amplifies it a little where gradients are ~0
    for key in ('aif', 'defocus'):
        assert float((results[0][key] - results[1][key]).abs().max()) < 2e-3


def test_robust_data_term_is_the_release_term_for_small_errors_and_linear_above_its_scale():
    small, large = (torch.tensor(v**2, dtype=torch.float64) for v in (1e-4, 0.05))
    assert torch.equal(robust_sq(large, 0.1, None), charbonnier_sq(large, 0.1))
    assert float(robust_sq(small, 0.1, 0.005) / charbonnier_sq(small, 0.1)) == pytest.approx(1.0, rel=1e-3)
    # an error well above the scale: doubling it doubles the penalty, where the release's (still quadratic) is ~3.5x
    assert float(robust_sq(4 * large, 0.1, 0.005) / robust_sq(large, 0.1, 0.005)) == pytest.approx(2.0, rel=0.1)
    assert float(charbonnier_sq(4 * large, 0.1) / charbonnier_sq(large, 0.1)) > 3


def test_alpha_learning_rate_and_carried_adam_moments():
    img = torch.rand(1, 1, 32, 32)
    bank = ResampledKernelBank(dp_psf([2.0], 9).transpose(0, 1)[:, None], [2.0])
    left, right = img, torch.roll(img, 1, -1)
    moves = {}
    for name, options in (('fresh', {}), ('slow', {'alpha_lr': 0.1}), ('carried', {'carry_adam': True})):
        solver = DPJointSolver(
            bank,
            preset='fast_v1',
            num_layers=4,
            levels=[{
                'scale': 0.5,
                'iters': 8
            }, {
                'scale': 1.0,
                'iters': 1
            }],
            min_level_radius=0,
            early_stop=None,
            **options)
        record = {}
        solver(
            left,
            right, (0.0, 3.0),
            callback=lambda state: record.update({
                (state['level'], state['iteration']): [p.detach().clone() for p in state['params']]
            }))
        # the first full-resolution step, from the upsampled result of the 1/2-scale level
        start = [torch.nn.functional.interpolate(p[0], size=(32, 32), mode='bilinear') for p in record[(0, 8)]]
        moves[name] = [float((after[0] - before).abs().median()) for after, before in zip(record[(1, 1)], start)]
    lr = PRESETS['fast_v1']['lr'][0]
    assert moves['fresh'] == pytest.approx([lr, lr], rel=0.1)  # a fresh Adam moves every logit by ~lr
    assert moves['slow'] == pytest.approx([lr, 0.1 * lr], rel=0.1)  # colours, alphas
    assert max(moves['carried']) < 0.5 * lr  # steps scaled by the gradients' history


def test_per_cell_cross_search_follows_each_cells_kernels():
    torch.manual_seed(1)
    radii = torch.tensor([2.0, 2.6, 3.2, 2.3, 2.9, 3.5])  # a calibration whose cells differ in scale
    cells = dp_psf(radii, 15)  # (2, 6, K, K)
    bank = ResampledKernelBank(cells.transpose(0, 1)[None], [float(radii.mean())], (2, 3))
    sharp = torch.rand(1, 1, 1, 1, 60, 90)
    # a fronto-parallel scene at the reference radius: each cell blurred by its own kernels at scale 1
    views = blur_layers_grid(sharp, cells.transpose(0, 1)[:, :, None], (2, 3), 'fft', 'reflect')[0, :, 0]
    maps = {}
    for per_cell in (False, True):
        radius, _ = cross_defocus(views[0:1], views[1:2], bank, 5.0, step=0.25, per_cell=per_cell)
        maps[per_cell] = torch.stack(
            [radius[0, 0, i * 30 + 8:i * 30 + 22, j * 30 + 8:j * 30 + 22].median() for i in range(2) for j in range(3)])
    reference = float(radii.mean())
    assert float((maps[True] - reference).abs().max()) <= 0.25  # every cell at the calibration's radius
    assert float((maps[False] - reference).abs().max()) > 0.4  # the cell average reads the cells' spread instead
    same = ResampledKernelBank(cells[:, :1].expand(-1, 6, -1, -1).transpose(0, 1)[None], [2.0], (2, 3))
    a, b = (cross_defocus(views[0:1], views[1:2], same, 5.0, per_cell=p)[0] for p in (False, True))
    assert torch.equal(a, b)  # identical cells: the same search either way


def test_fast_preset_is_fast_v1_with_named_changes_and_release_is_unchanged():
    changed = {
        k
        for k in set(PRESETS['fast']) | set(PRESETS['fast_v1']) if PRESETS['fast'].get(k) != PRESETS['fast_v1'].get(k)
    }
    assert changed == {'levels', 'blur_method', 'carry_adam', 'alpha_lr', 'data_gamma'}
    release = DPJointSolver(ResampledKernelBank(dp_psf([2.0], 9).transpose(0, 1)[:, None], [2.0]), preset='release')
    assert (release.blur_method, release.carry_adam, release.cross_cells, release.alpha_lr, release.data_gamma) == \
        ('fft', False, False, 1.0, None)
    with pytest.raises(ValueError, match='blur_method'):
        DPJointSolver(release.bank, blur_method='fast')
    with pytest.raises(ValueError, match='data_gamma'):
        DPJointSolver(release.bank, data_gamma=0.03)  # the plugin objective has no such term
