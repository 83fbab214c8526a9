"""What a test run of a deblurring checkpoint must have written, recomputed in-process (shared by the entry-point
tests of test_defocusgan.py and test_mccnet.py)."""
import copy
import cv2
import numpy as np
import pytest
import re
import torch
from basicsr.archs import build_network
from basicsr.data import build_dataset
from basicsr.metrics import calculate_metric
from basicsr.utils import tensor2img

from defocusgan_plugin.utils.checkpoint import load_state_dict_from


def _outputs(network_opt, state, dataset):
    """uint8 BGR outputs of a network (weights ``state``, or its initialisation for None) per image name."""
    net = build_network(copy.deepcopy(network_opt))
    if state is not None:
        net.load_state_dict(state)
    net.eval()
    outputs = {}
    with torch.no_grad():
        for item in dataset:
            name = item['lq_path'].rsplit('/', 1)[-1].rsplit('.', 1)[0]
            outputs[name] = tensor2img(net(item['lq'][None]))
    return outputs


def logged_metrics(log, dataset_name, names):
    """The values of ``names`` in the last 'Validation <dataset_name>' report of a BasicSR log."""
    report = log[log.rindex(f'Validation {dataset_name}'):]
    return {m: float(re.search(rf'# {m}: (-?[0-9.]+)', report).group(1)) for m in names}


def check_test_outputs(opt, checkpoint, log, vis_dir, suffix):
    """Checks a finished test run of ``opt`` (a test option dict) against the checkpoint it was given.

    The saved images must be the checkpoint's outputs (up to one 8-bit level in a few pixels, for thread-count
    rounding), which must be unlike the untrained network's (it starts as the identity, so a run that ignored the
    weights would pass a range check); each logged metric must be the mean of that metric over the images.
    """
    dataset_opt = next(iter(opt['datasets'].values()))
    dataset = build_dataset(dict(dataset_opt, phase='test'))
    state, _ = load_state_dict_from(str(checkpoint), opt['path'].get('param_key_g', 'params'))
    expected = _outputs(opt['network_g'], state, dataset)
    untrained = _outputs(opt['network_g'], None, dataset)
    gts = {name: tensor2img(dataset[i]['gt'][None]) for i, name in enumerate(expected)}
    moved = np.mean([np.abs(expected[n].astype(int) - untrained[n]).mean() for n in expected])
    assert moved > 0.5, f'the checkpoint is {moved:.2f} 8-bit levels from the untrained network: too close to tell'
    for name, out in expected.items():
        saved = cv2.imread(str(vis_dir / f'{name}_{suffix}.png'), cv2.IMREAD_UNCHANGED)
        assert saved is not None and saved.shape == out.shape, name
        diff = np.abs(saved.astype(int) - out)
        assert diff.max() <= 1 and diff.mean() < 0.05, f'{name}: not the output of {checkpoint}'
    metrics = opt['val']['metrics']
    logged = logged_metrics(log, dataset_opt['name'], metrics)
    for metric, metric_opt in metrics.items():
        value = np.mean([calculate_metric(dict(img=expected[n], img2=gts[n]), metric_opt) for n in expected])
        assert logged[metric] == pytest.approx(value, rel=1e-4, abs=1e-4), (metric, logged, value)  # 4 decimals
    return logged, expected
