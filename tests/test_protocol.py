"""Protocol labels next to every validation/test metric, and val.bit_depth (scoring at 8 or 16 bits)."""
import cv2
import logging
import numpy as np
import pytest
import re
import torch
from conftest import load_options, run_test, tiny_options

from defocusgan_plugin.metrics.protocol import MetricImages, ValProtocol, metric_label, reads_label
from defocusgan_plugin.models.robust_base_model import RobustBaseModel
from defocusgan_plugin.utils.img_io import decode_image, encode_image

LINE = re.compile(r'# (\w+): (-?[\d.]+|inf|nan) \[(.*?)\](?=\t|\s*$)', re.MULTILINE)


def test_labels_of_typical_metric_blocks():
    dpdd = {'type': 'calculate_dpdd_psnr'}
    assert metric_label(dpdd, 16, {16}, 'combined-view input') == \
        '16-bit reads, scored 16-bit, combined-view input, full image, crop 0'
    # BasicSR's own PSNR: always 8-bit, says its channel and crop
    basicsr_psnr = {'type': 'calculate_psnr', 'crop_border': 4, 'test_y_channel': True}
    assert metric_label(basicsr_psnr, 8, {16}, 'DP-pair input') == \
        '16-bit reads, scored 8-bit, DP-pair input, full image, crop 4, Y channel'
    assert metric_label({'type': 'calculate_ssim', 'crop_border': 0}, 8).endswith('crop 0, RGB')
    # LPIPS names its backbone first (alex when not given)
    assert metric_label({'type': 'calculate_lpips', 'net': 'squeeze'}, 16, {16}) == \
        'squeeze, 16-bit reads, scored 16-bit, full image, crop 0'
    assert metric_label({'type': 'calculate_lpips'}, 8).startswith('alex, scored 8-bit')
    # defocus-map metrics see float maps whatever val.bit_depth is
    assert metric_label({'type': 'calculate_aiwe1', 'crop_border': 2}, 8, {16}, 'DP-pair input') == \
        'float defocus maps, DP-pair input, full image, crop 2'
    assert reads_label({8}) == '8-bit reads' and reads_label({8, 16}) == '8/16-bit reads'
    assert reads_label({32}) == 'float data' and reads_label({0}) == 'unknown read depth'
    assert reads_label({16, 0}) == '16-bit reads + unknown read depth'


def test_val_protocol_scores_plugin_metrics_at_16_bits_and_basicsr_metrics_at_8():
    val = ValProtocol({'bit_depth': 16})
    val.add_sample({'bit_depth': torch.tensor([16])})
    assert val.label({'type': 'calculate_mae'}) == '16-bit reads, scored 16-bit, full image, crop 0'
    assert val.label({'type': 'calculate_psnr', 'crop_border': 0}) == \
        '16-bit reads, scored 8-bit, full image, crop 0, RGB'
    assert ValProtocol({}).bit_depth == 8
    basicsr_like = type('PairedImageDataset', (), {'__module__': 'basicsr.data.paired_image_dataset'})()
    no_key = ValProtocol({}, basicsr_like)  # BasicSR's loaders decode 8-bit (imfrombytes, IMREAD_COLOR)
    no_key.add_sample({'lq': torch.zeros(1, 3, 4, 4)})
    assert no_key.label({'type': 'calculate_mae'}).startswith('8-bit reads, scored 8-bit')
    other = ValProtocol({}, object())
    other.add_sample({})
    assert other.label({'type': 'calculate_mae'}).startswith('unknown read depth, scored 8-bit')
    for bad in (12, '16', True):
        with pytest.raises(ValueError, match='val.bit_depth'):
            ValProtocol({'bit_depth': bad})


def test_16_bit_images_are_quantised_as_a_16_bit_png_write(tmp_path):
    rng = np.random.default_rng(0)
    rgb = torch.from_numpy(rng.random((1, 3, 5, 7)).astype(np.float32))
    images = MetricImages(rgb, rgb * 0.5)
    img16 = images.for_metric({'type': 'calculate_dpdd_psnr'}, 16)['img']
    bgr = rgb[0].numpy().transpose(1, 2, 0)[..., ::-1]
    written, depth = decode_image(encode_image(bgr, 16), channels=3)
    assert img16.dtype == np.uint16 and depth == 16
    assert np.array_equal(img16, (written * 65535).round().astype(np.uint16))
    assert images.for_metric({'type': 'calculate_psnr'}, 16)['img'].dtype == np.uint8  # BasicSR's: 0..255
    assert images.for_metric({'type': 'calculate_dpdd_psnr'}, 8)['img'].dtype == np.uint8
    gray = MetricImages(rgb[:, :1]).at(16)
    assert set(gray) == {'img'} and gray['img'].shape == (5, 7)


def test_dpdd_dataset_reports_the_read_depth(tmp_path, synthetic_root):
    from defocusgan_plugin.data.dpdd_dataset import DPDDDataset
    opt = {
        'name': 't',
        'phase': 'test',
        'dataroot': str(synthetic_root),
        'split': 'test',
        'input': 'single',
        'load_dp_views': False
    }
    assert DPDDDataset(opt)[0]['bit_depth'] == 16  # the synthetic set is written as 16-bit PNG
    for folder in ('test_c/source', 'test_c/target'):  # the same files at 8 bits
        (tmp_path / folder).mkdir(parents=True)
        for path in sorted((synthetic_root / folder).glob('*.png'))[:1]:
            img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            cv2.imwrite(str(tmp_path / folder / path.name), (img // 257).astype(np.uint8))
    assert DPDDDataset(dict(opt, dataroot=str(tmp_path)))[0]['bit_depth'] == 8
    from defocusgan_plugin.data.synthetic_dp_dataset import SyntheticDPDataset
    rendered = SyntheticDPDataset({'phase': 'val', 'max_side': 64, 'gt_size': 32, 'coc_max': 2, 'num_samples': 1})[0]
    assert rendered['bit_depth'] == 32 and reads_label({rendered['bit_depth']}) == 'float data'


# ---------------------------------------------------------------------- through python -m defocusgan_plugin.test
def _run_and_capture(option, work_dir, data_root, overrides, monkeypatch):
    """Runs the test pipeline; returns (log records, {metric: exact value}, {metric: label}) of the validation."""
    results = {}
    original = RobustBaseModel.__dict__['_log_validation_metric_values']

    def capture(self, current_iter, dataset_name, tb_logger):
        results.update(self.metric_results)
        original(self, current_iter, dataset_name, tb_logger)

    monkeypatch.setattr(RobustBaseModel, '_log_validation_metric_values', capture)
    records, logger = [], logging.getLogger('basicsr')
    handler, level = logging.Handler(), logger.level
    handler.emit = lambda record: records.append(record.getMessage())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        run_test(tiny_options(option, work_dir, data_root, overrides), work_dir)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        monkeypatch.undo()
    report = next(r for r in records if r.startswith('Validation '))
    labels = {m: label for m, _, label in LINE.findall(report)}
    return report, results, labels


def test_test_log_names_the_protocol_and_bit_depth_16_changes_only_the_plugin_metrics(
        tmp_path, synthetic_root, monkeypatch):
    """MCCNet (random weights) on the 16-bit synthetic test split, scored at 8 then at 16 bits."""
    metrics = {
        'psnr': {
            'type': 'calculate_dpdd_psnr'
        },
        'mae': {
            'type': 'calculate_mae',
            'better': 'lower'
        },
        'psnr_basicsr': {
            'type': 'calculate_psnr',
            'crop_border': 0,
            'test_y_channel': False
        }
    }
    runs = {}
    for depth in (8, 16):
        work = tmp_path / f'bits{depth}'
        work.mkdir()
        over = {
            'network_g:num_feat': 8,
            'path:pretrain_network_g': None,
            'val:metrics': metrics,
            'val:bit_depth': depth
        }
        runs[depth] = _run_and_capture('test_mccnet_synthetic.yml', work, synthetic_root, over, monkeypatch)
    (_, values8, labels8), (_, values16, labels16) = runs[8], runs[16]
    assert labels8 == {
        'psnr': '16-bit reads, scored 8-bit, DP-pair input, full image, crop 0',
        'mae': '16-bit reads, scored 8-bit, DP-pair input, full image, crop 0',
        'psnr_basicsr': '16-bit reads, scored 8-bit, DP-pair input, full image, crop 0, RGB'
    }
    assert labels16['psnr'] == labels16['mae'] == '16-bit reads, scored 16-bit, DP-pair input, full image, crop 0'
    assert labels16['psnr_basicsr'] == labels8['psnr_basicsr']
    # at 8 bits the plugin's PSNR is BasicSR's (same uint8 images); at 16 bits only the plugin's moves
    assert values8['psnr'] == pytest.approx(values8['psnr_basicsr'], rel=1e-9)
    assert values16['psnr_basicsr'] == values8['psnr_basicsr']
    assert values16['psnr'] != values8['psnr'] and values16['psnr'] == pytest.approx(values8['psnr'], abs=0.05)
    assert values16['mae'] != values8['mae']
    # the saved images follow the scoring depth
    name = load_options(tmp_path / 'bits16' / 'test_mccnet_synthetic.yml')['name']
    for depth, dtype in ((8, np.uint8), (16, np.uint16)):
        saved = sorted((tmp_path / f'bits{depth}' / 'results' / name / 'visualization').rglob('*.png'))
        assert len(saved) == 5 and cv2.imread(str(saved[0]), cv2.IMREAD_UNCHANGED).dtype == dtype


def test_map_model_labels_map_and_image_metrics(tmp_path, synthetic_root, monkeypatch):
    """DefocusMapModel (random weights): MapValidationModel's loop labels and scores at val.bit_depth."""
    runs = {}
    for depth in (8, 16):
        over = {
            'network_map:cap': 5,
            'network_map:num_feat': 8,
            'network_map:num_level': 2,
            'network_kernel:max_radius': 5,
            'path:pretrain_network_map': None,
            'path:pretrain_network_kernel': None,
            'val:bit_depth': depth,
            'val:save_img': False
        }
        (tmp_path / str(depth)).mkdir()
        runs[depth] = _run_and_capture('test_defocus_map_synthetic.yml', tmp_path / str(depth), synthetic_root, over,
                                       monkeypatch)
    (_, values8, labels8), (_, values16, labels16) = runs[8], runs[16]
    assert labels8['reblur_psnr'] == '16-bit reads, scored 8-bit, DP-pair input, full image, crop 0'
    assert labels16['reblur_psnr'] == '16-bit reads, scored 16-bit, DP-pair input, full image, crop 0'
    assert labels16['aiwe1'] == labels16['spearman'] == 'float defocus maps, DP-pair input, full image, crop 0'
    assert set(labels16) == set(values16) == {'reblur_psnr', 'aiwe1', 'aiwe2', 'spearman'}
    assert values16['reblur_psnr'] != values8['reblur_psnr']  # the reblurred image scored at 16 bits
    assert values16['aiwe1'] == values8['aiwe1']  # maps are float at any depth


def test_demo_summary_carries_the_labels(tmp_path, synthetic_root, monkeypatch):
    """scripts/demo_summary.py: the labels of the log go to metrics.json (per metric) and under the markdown table."""
    import importlib.util
    import json
    import sys
    from conftest import ROOT
    spec = importlib.util.spec_from_file_location('demo_summary', ROOT / 'scripts' / 'demo_summary.py')
    summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summary)
    (tmp_path / 'options' / 'test').mkdir(parents=True)
    (tmp_path / 'options' / 'test' / 'test_x.yml').write_text('name: x\n')
    (tmp_path / 'results' / 'x').mkdir(parents=True)
    label = "16-bit reads, scored 16-bit, DP-pair input, the files' [0, 1] encoding, full image, crop 0"  # brackets
    (tmp_path / 'results' / 'x' / 'test_x_1.log').write_text(
        '2026-12-01 07:08:16,756 INFO: Validation SyntheticDPDD_test\n'
        f'\t # psnr: 27.8289 [{label}]\tBest: 27.8289 @ x iter\n'
        '\t # lpips: 0.1180 [squeeze, 16-bit reads, scored 16-bit, DP-pair input, full image, crop 0]\n'
        '\t # ssim: 0.8000\n\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'argv', ['demo_summary', '--data', str(synthetic_root), '--out', 'out', 'test_x'])
    summary.main()
    rows = json.loads((tmp_path / 'out' / 'metrics.json').read_text())['rows']
    assert rows['x']['psnr'] == {'value': 27.8289, 'protocol': label}
    assert rows['x']['lpips']['protocol'].startswith('squeeze, ') and rows['x']['ssim']['protocol'] is None
    assert rows['input (blurred combined view)']['mae']['protocol'] == \
        '16-bit reads, scored float, the combined view itself, full image, crop 0'
    text = (tmp_path / 'out' / 'metrics.md').read_text()
    assert '| lpips |' in text and f'- x: psnr [{label}]; lpips [squeeze, ' in text
    assert 'ssim [not logged' in text


def test_joint_optimiser_labels_its_input_lines(tmp_path, synthetic_root):
    """DPJointOptimModel: the input combined view's scores (input_*) name their protocol, scored as the outputs."""
    over = {
        'dp_joint:solver:levels': [{
            'scale': 0.5,
            'iters': 3
        }],
        'dp_joint:solver:max_radius': 3,
        'dp_joint:solver:num_layers': 4,
        'val:bit_depth': 16,
        'val:save_img': False,
        'val:metrics': {
            'psnr': {
                'type': 'calculate_dpdd_psnr'
            }
        }
    }
    records, logger = [], logging.getLogger('basicsr')
    handler, level = logging.Handler(), logger.level
    handler.emit = lambda record: records.append(record.getMessage())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        run_test(tiny_options('test_dp_joint_synthetic.yml', tmp_path, synthetic_root, over), tmp_path)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    report = next(r for r in records if r.startswith('Input combined view'))
    (name, value, label), = LINE.findall(report)
    assert name == 'input_psnr' and label.startswith('16-bit reads, scored 16-bit, the combined view itself')
    assert label.endswith('full image, crop 0')
    # the 16-bit synthetic files scored at 16 bits: exactly the float score of the files' values
    from defocusgan_plugin.data.dpdd_dataset import DPDDDataset
    from defocusgan_plugin.metrics import calculate_dpdd_psnr
    data = DPDDDataset({
        'name': 't',
        'phase': 'test',
        'dataroot': str(synthetic_root),
        'split': 'test',
        'input': 'single',
        'load_dp_views': False
    })
    expected = np.mean([calculate_dpdd_psnr(item['lq'][None], item['gt'][None]) for item in data])
    assert float(value) == pytest.approx(expected, abs=1e-4)
