"""The helpers behind the README's numbers: the demo's metric table, the SGBM baseline, the GAN gradient probe."""
import importlib.util
import numpy as np
import os
import pytest
from os import path as osp

SCRIPTS = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'scripts')


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, osp.join(SCRIPTS, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_summary_reads_the_last_validation_block_of_a_basicsr_log(tmp_path):
    summary = load_script('demo_summary')
    log = tmp_path / 'test_x.log'
    log.write_text('2026-12-01 07:07:16,756 INFO: Validation SyntheticDPDD_test\n'
                   '\t # psnr: 20.0010\tBest: 20.0010 @ x iter\n\t # mae: 0.0544\tBest: 0.0544 @ x iter\n\n'
                   '2026-12-01 07:08:16,756 INFO: Validation SyntheticDPDD_test\n'
                   '\t # psnr: 27.8289\tBest: 27.8289 @ x iter\n\t # aiwe1: 8.2e-01\n\n'
                   '2026-12-01 07:08:17,000 INFO: Input combined view: input_psnr: 26.7937\n')
    assert summary.parse_metrics(str(log)) == {'psnr': 27.8289, 'aiwe1': 0.82}


def test_demo_summary_finds_the_newest_test_log(tmp_path, monkeypatch):
    summary = load_script('demo_summary')
    folder = tmp_path / 'results' / 'run'
    folder.mkdir(parents=True)
    for i, stamp in enumerate(('20261201_070000', '20261201_080000')):
        (folder / f'test_run_{stamp}.log').write_text('')
        os.utime(folder / f'test_run_{stamp}.log', (1e9 + i, 1e9 + i))
    monkeypatch.chdir(tmp_path)
    assert summary.newest_test_log('run').endswith('test_run_20261201_080000.log')
    assert summary.newest_test_log('other') is None


@pytest.mark.parametrize('shift', [2, -2])
def test_sgbm_baseline_recovers_the_sign_of_a_horizontal_shift(shift):
    sgbm = load_script('sgbm_defocus')
    rng = np.random.default_rng(0)
    texture = (rng.random((64, 96)) * 255).astype(np.uint8)
    import cv2
    texture = cv2.GaussianBlur(texture, (3, 3), 0.8)
    left, right = np.roll(texture, shift, axis=1), texture  # left view moved right by `shift` px
    radius = sgbm.sgbm_defocus(left, right, max_disp=4)
    inner = radius[8:-8, 12:-12]
    assert np.sign(np.median(inner)) == np.sign(shift)  # positive: behind the focal plane
    assert abs(np.median(inner) - shift / 2) < 0.3  # the map is half the disparity


def test_benchmark_data_tiny_run_measures_every_mode(tmp_path):
    """scripts/benchmark_data.py end to end on its small temporary set (make, cache, load), so it cannot rot."""
    import json
    from conftest import run_python
    out = tmp_path / 'bench.json'
    proc = run_python([osp.join(SCRIPTS, 'benchmark_data.py'), '--tiny', '--json',
                       str(out)],
                      tmp_path,
                      env={'TMPDIR': str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rates = {r['mode']: r['patches_per_s'] for r in json.loads(out.read_text()) if r['workers'] == 0}
    assert sorted(rates) == ['before', 'cache', 'png'] and all(v > 0 for v in rates.values())
    assert '| workers | before patches/s' in proc.stdout and '| 0 |' in proc.stdout
    assert list(tmp_path.iterdir()) == [out]  # the temporary set (under TMPDIR) is removed


def run_gpu_check(tmp_path, *flags):
    """scripts/gpu_check.sh --dry-run in ``tmp_path`` with a relative --out (as the default: the DDP row's torchrun
    child runs in another folder and once could not find its option file); returns the report."""
    import json
    import subprocess
    import sys
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1', TMPDIR=str(tmp_path))
    proc = subprocess.run(['bash', osp.join(SCRIPTS, 'gpu_check.sh'), '--dry-run', '--out', 'out', *flags],
                          cwd=tmp_path,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((tmp_path / 'out' / 'gpu_check.json').read_text())


def test_gpu_check_dry_run_fills_every_row(tmp_path):
    """scripts/gpu_check.sh --dry-run (CPU, tiny networks and sizes, gloo) end to end, so the GPU check cannot rot."""
    out = tmp_path / 'out'
    report = run_gpu_check(tmp_path)
    assert report['dry_run'] and report['machine']['device'] == 'cpu'
    assert [(r['generator'], r['mode']) for r in report['inference']
            ] == [(g, m) for g in ('DefocusGANGenerator', 'DefocusGANReleaseGenerator')
                  for m in ('fp32', 'bf16', 'bf16 + channels_last', 'bf16 + channels_last + compile')]
    assert all(r['status'] == 'ok' and r['ms'] > 0 for r in report['inference'])
    training = {(r['recipe'], r['amp'], r['channels_last']): r for r in report['training']}
    assert len(training) == 13
    fp16 = training.pop(('DefocusGAN stage 2, release', 'fp16', False))
    assert fp16['status'] == 'skipped: fp16 needs CUDA' and fp16['option'] == 'train_defocusgan.yml'
    options = {r['option'] for r in training.values()}
    assert options == {
        'train_defocusgan.yml', 'train_defocusgan_slim.yml', 'train_defocus_map.yml', 'train_defocus_map_slim.yml',
        'train_mccnet.yml'
    }
    for key, row in training.items():
        assert row['status'] == 'ok' and row['it_s'] > 0 and row['losses_finite'], (key, row)
        assert row['timed_iters'] == row['iters'] - report['warmup'] >= 1
    goal = [('DefocusGAN stage 2, release', amp, cl) for amp, cl in (('off', False), ('bf16', False), ('bf16', True))]
    assert set(goal) <= set(training) and ('DefocusGAN stage 2, release, maps precomputed', 'bf16', True) in training
    assert [r['status'] for r in report['joint']] == ['ok'] and report['joint'][0]['seconds'] > 0
    assert [(r['status'], r['backend']) for r in report['ddp']] == [('ok', 'gloo')]
    table = (out / 'gpu_check.md').read_text()
    assert '| DefocusGANReleaseGenerator | 48x32 | bf16 + channels_last + compile |' in table and 'DRY RUN' in table
    assert sorted(p.name for p in out.iterdir()) == ['gpu_check.json', 'gpu_check.md']  # the work folder is removed


def test_gpu_check_rows_runs_only_the_selected_rows(tmp_path):
    """--rows: a second lease measures what the first one's budget skipped, and nothing else."""
    report = run_gpu_check(tmp_path, '--rows', '^joint')
    assert [r['status'] for r in report['joint']] == ['ok']
    others = report['inference'] + report['training'] + report['ddp']
    assert len(others) == 8 + 13 + 1 and {r['status'] for r in others} == {'not selected (--rows)'}


def test_gpu_check_names_the_child_error_of_a_failed_torchrun():
    stderr = (
        'Traceback (most recent call last):\n  File "train.py", line 194, in train_pipeline\n'
        'FileNotFoundError: Option file not found: work/ddp/ddp.yml\nE1203 elastic: failed (exitcode: 1)\n'
        'Traceback (most recent call last):\ntorch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n'
        '====\ndefocusgan_plugin.train FAILED\n')
    error, tail = load_script('gpu_check').child_error(stderr, lines=3)
    assert error == 'FileNotFoundError: Option file not found: work/ddp/ddp.yml'
    assert [line.strip() for line in tail.splitlines()] == [
        'torch.distributed.elastic.multiprocessing.errors.ChildFailedError:', '====', 'defocusgan_plugin.train FAILED'
    ]


def test_gan_gradient_ratio_scales_with_the_weight_and_ignores_the_critics_offset():
    """scripts/gan_gradient_ratio.py: the adversarial / L1 gradient ratio it reports is linear in the adversarial
    weight and blind to a constant added to the critic's scores (which changes the loss values only)."""
    import torch

    from defocusgan_plugin.archs.patchgan_arch import PatchGANDiscriminator
    from defocusgan_plugin.losses.defocus_adversarial_loss import DefocusAdversarialLoss
    probe = load_script('gan_gradient_ratio')
    torch.manual_seed(0)
    net_g, net_d = torch.nn.Conv2d(3, 3, 3, padding=1), PatchGANDiscriminator(num_feat=8, num_layers=2).eval()
    batches = [(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32), torch.rand(2, 1, 32, 32) * 5)]
    ratio, cosine, slope = probe.gradient_ratios(net_g, net_d, DefocusAdversarialLoss(0.002, weighting='paper'),
                                                 batches)
    double, _, _ = probe.gradient_ratios(net_g, net_d, DefocusAdversarialLoss(0.004, weighting='paper'), batches)
    assert torch.allclose(double, 2 * ratio) and bool((slope > 0).all()) and bool((cosine.abs() <= 1).all())

    class Offset(torch.nn.Module):

        def forward(self, x):
            return net_d(x) - 12.0

    shifted, _, _ = probe.gradient_ratios(net_g, Offset(), DefocusAdversarialLoss(0.002, weighting='paper'), batches)
    assert torch.allclose(shifted, ratio)


def test_score_map_against_depth_ranks_a_map_by_its_agreement_with_the_depth(tmp_path):
    """scripts/score_map_against_depth.py: a map affine in the inverse-depth target scores correlation 1 and ~0 of
    the floor, a constant-plus-noise map about the floor; a map of the wrong size is refused naming the file."""
    import cv2
    from conftest import run_python
    size = 48
    depth = np.where(np.arange(size)[None] < size // 2, 0.7, 2.5) * np.ones((size, 1))
    pair = tmp_path / 'box' / '001'
    pair.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for side in 'lr':
        cv2.imwrite(str(pair / f'{side}.png'), rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    grey = np.round(depth * 25.5).astype(np.uint8)  # Sdirt's grey depth: value / 255 * 10 m
    cv2.imwrite(str(pair / 'd.png'), np.dstack([grey, grey, grey, np.full_like(grey, 255)]))
    maps = {'depth': -3.0 * (1.0 - 1.0 / depth), 'noise': rng.normal(0, 1, (size, size)), 'small': np.zeros((8, 8))}
    for name, value in maps.items():
        np.save(tmp_path / f'{name}.npy', value.astype(np.float32))
    script = osp.join(SCRIPTS, 'score_map_against_depth.py')
    proc = run_python(
        [script, str(pair),
         str(tmp_path / 'depth.npy'),
         str(tmp_path / 'noise.npy'), '--border', '2'], tmp_path)
    assert proc.returncode == 0, proc.stderr
    depth_line, noise_line = proc.stdout.strip().splitlines()
    assert 'Pearson -1.000' in depth_line and 'AIWE(1) / floor 0.000' in depth_line  # negative: sign-free metrics
    assert float(noise_line.split('floor ')[1].split()[0]) > 0.9
    proc = run_python([script, str(pair), str(tmp_path / 'small.npy')], tmp_path)
    assert proc.returncode == 2 and f"{tmp_path / 'small.npy'}: a 8x8 map for 48x48 views" in proc.stderr


def test_cue_diagnostics_scores_the_cue_by_highpass(synthetic_root, tmp_path):
    """scripts/cue_diagnostics.py on the embedded set (no manifest: one family '-'): one row per high-pass radius with
    AIWE(1) below the plain L1 (the affine fit can only help); the reblur search's row, from the sharp image too, is
    better than the cue and its confidence-weighted L1 below its plain one; a split without maps refused naming it."""
    from conftest import run_python
    script = osp.join(SCRIPTS, 'cue_diagnostics.py')
    opt = osp.join(SCRIPTS, '..', 'options', 'train', 'train_defocus_map_photos.yml')
    args = ['--data', str(synthetic_root), '--split', 'test', '--opt', opt, '--highpass', '0', '3', '--threads', '1']
    proc = run_python([script] + args + ['--search', '7', '--search-highpass', '3'], tmp_path)
    assert proc.returncode == 0, proc.stderr
    cells = [[c.strip() for c in line.split('|')[1:-1]] for line in proc.stdout.splitlines() if line.startswith('| ')]
    rows = {row[0]: [float(c) if c else None for c in row[1:]] for row in cells[2:]}
    cues = [rows.pop(f'cue, match_highpass {r}') for r in ('off', '3')]
    assert '| AIWE(1) - (5) |' in proc.stdout
    assert all(0 < aiwe <= l1 and weighted is None and family == aiwe for aiwe, l1, weighted, family in cues)
    (aiwe, l1, weighted, _), = rows.values()
    assert list(rows) == ['reblur search, window 7, high-pass 3'] and aiwe < cues[1][0] and weighted < l1
    proc = run_python([script, '--data', str(synthetic_root), '--split', 'nope'], tmp_path)
    assert proc.returncode == 2 and 'no GT maps in nope_defocus/' in proc.stderr


def test_deconv_oracle_separates_depth_edges_from_the_deconvolution(synthetic_root, tmp_path):
    """scripts/deconv_oracle.py on the embedded set (no manifest: its default PSF): the uniform-blur rendering is
    explained exactly by the per-pixel model and deblurred, the depth-edged one less well; the occlusion model is the
    renderer's own and deblurs the depth-edged rendering better, fitted to both DP views better still; a split without
    maps is refused naming it."""
    from conftest import run_python
    script = osp.join(SCRIPTS, 'deconv_oracle.py')
    proc = run_python(
        [script, '--data', str(synthetic_root), '--split', 'test', '--regs', '0.01', '--threads', '1'], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {
        tuple(c.strip() for c in line.split('|')[1:3]): [c.strip() for c in line.split('|')[3:-1]]
        for line in proc.stdout.splitlines() if line.startswith('| ')
    }
    clean, uniform = ([float(c) for c in rows[k, 'wiener'][1:]] for k in ('clean', 'uniform'))
    assert uniform[0] > 50 > clean[0] and uniform[1] > 1.0 and uniform[1] > clean[1]
    assert rows['clean', 'occlusion'][1] == '> 100 (exact)'
    assert float(rows['clean', 'occlusion'][2]) > clean[1] + 0.5
    assert float(rows['stored', 'occlusion'][2]) > float(rows['stored', 'wiener'][2])
    assert rows['clean', 'occlusion_dp'][1] == '> 100 (exact)'  # both views, each by its own kernels
    assert float(rows['stored', 'occlusion_dp'][2]) > float(rows['stored', 'occlusion'][2])
    proc = run_python([script, '--data', str(synthetic_root), '--split', 'nope'], tmp_path)
    assert proc.returncode == 2 and 'no GT maps in nope_defocus/' in proc.stderr


def test_deconv_oracle_map_errors_cost_the_deconvolution(synthetic_root, tmp_path):
    """``--map-errors``: GT maps with blurred depth edges or too large radii deconvolve worse than the GT maps
    themselves; a malformed error is refused naming the option."""
    from conftest import run_python
    script = osp.join(SCRIPTS, 'deconv_oracle.py')
    common = [script, '--data', str(synthetic_root), '--split', 'test', '--threads', '1', '--limit', '2']
    proc = run_python(
        common + [
            '--methods', 'occlusion', '--conditions', 'stored', '--regs', '0.01', '--iterations', '20', '--map-errors',
            'box:7', 'scale:1.3'
        ], tmp_path)
    assert proc.returncode == 0, proc.stderr
    gains = {
        line.split('|')[1].strip(): float(line.split('|')[5])
        for line in proc.stdout.splitlines() if line.startswith('| stored')
    }
    assert set(gains) == {'stored', 'stored, GT map box 7', 'stored, GT map scale 1.3'}
    assert gains['stored'] > max(gains['stored, GT map box 7'], gains['stored, GT map scale 1.3']) + 0.5, gains
    proc = run_python(common + ['--map-errors', 'blur:3'], tmp_path)
    assert proc.returncode == 2 and "--map-errors 'blur:3'" in proc.stderr
