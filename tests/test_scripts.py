"""The helpers behind the README's numbers: the demo's metric table and the SGBM baseline."""
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
