"""Bad input: every case must fail with a clear error naming the file or option key, and overwrite nothing.

Each case is a function ``case(tmp_path, data_root)`` that performs the bad action; the table below gives the
exception type and the fragments the message must contain. Add a case by adding a function and a table row.
"""
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import FAST, run_test, run_train, tiny_options

SPLIT_FOLDERS = ('train_c/source', 'train_c/target', 'train_l/source', 'train_r/source')


def _dpdd(root, size=(16, 16), n=2, dtype=np.uint8):
    for folder in SPLIT_FOLDERS:
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cv2.imwrite(str(root / folder / f'{i}.png'), np.full((*size, 3), 100, dtype))
    return root


def _dataset(root, **opt):
    from defocusgan_plugin.data.dpdd_dataset import DPDDDataset
    base = dict(name='bad', type='DPDDDataset', dataroot=str(root), phase='train', split='train')
    base.update(opt)
    return DPDDDataset(base)


def _train_opt(tmp_path, data_root, **overrides):
    return tiny_options('train_srmodel_single_synthetic.yml', tmp_path, data_root,
                        dict(FAST, **{'datasets:train:gt_size': 32}, **overrides))


def _raw_opt(tmp_path, data_root, mutate):
    """Writes the tiny training options after ``mutate(opt_dict)`` edited them (for deletions)."""
    path = _train_opt(tmp_path, data_root)
    opt = yaml.safe_load(path.read_text())
    mutate(opt)
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return path


# ----------------------------------------------------------------------------------------------- data layer
def missing_dataroot(tmp_path, data_root):
    _dataset(tmp_path / 'nowhere')


def empty_folder(tmp_path, data_root):
    _dpdd(tmp_path)
    for f in (tmp_path / 'train_c/target').iterdir():
        f.unlink()
    _dataset(tmp_path)


def count_mismatch(tmp_path, data_root):
    _dpdd(tmp_path)
    (tmp_path / 'train_c/target/1.png').unlink()
    _dataset(tmp_path)


def corrupt_png(tmp_path, data_root):
    _dpdd(tmp_path)
    (tmp_path / 'train_c/source/0.png').write_bytes(b'\x89PNG\r\n\x1a\nthis is not a png')
    _dataset(tmp_path, phase='val')[0]


def zero_byte_file(tmp_path, data_root):
    _dpdd(tmp_path)
    (tmp_path / 'train_l/source/0.png').write_bytes(b'')
    _dataset(tmp_path, phase='val')[0]


def left_right_size_differ(tmp_path, data_root):
    _dpdd(tmp_path)
    cv2.imwrite(str(tmp_path / 'train_r/source/0.png'), np.zeros((16, 18, 3), np.uint8))
    _dataset(tmp_path, phase='val', input='dual')[0]


def views_differ_from_combined(tmp_path, data_root):
    _dpdd(tmp_path)
    for view in ('l', 'r'):
        cv2.imwrite(str(tmp_path / f'train_{view}/source/0.png'), np.zeros((20, 16, 3), np.uint8))
    _dataset(tmp_path, phase='val')[0]


def crop_larger_than_image(tmp_path, data_root):
    _dpdd(tmp_path)
    _dataset(tmp_path, gt_size=64)[0]


def rotation_with_dual_input(tmp_path, data_root):
    _dpdd(tmp_path)
    _dataset(tmp_path, input='dual', use_rot=True)


def unknown_input_mode(tmp_path, data_root):
    _dpdd(tmp_path)
    _dataset(tmp_path, input='triple')


def only_one_view_folder(tmp_path, data_root):
    _dpdd(tmp_path)
    for f in (tmp_path / 'train_r/source').iterdir():
        f.unlink()
    (tmp_path / 'train_r/source').rmdir()
    _dataset(tmp_path)


def nan_in_float_image(tmp_path, data_root):
    _dpdd(tmp_path)
    img = np.full((16, 16, 3), 0.5, np.float32)
    img[3, 3, 1] = np.nan
    (tmp_path / 'train_c/source/0.png').unlink()
    assert cv2.imwrite(str(tmp_path / 'train_c/source/0.tif'), img)
    _dataset(tmp_path, phase='val')[0]


def defocus_map_not_2d(tmp_path, data_root):
    _dpdd(tmp_path)
    (tmp_path / 'train_defocus').mkdir()
    for i in range(2):
        np.save(tmp_path / 'train_defocus' / f'{i}.npy', np.zeros((2, 16, 16), np.float32))
    _dataset(tmp_path, phase='val')[0]


def synthetic_coc_cap_not_positive(tmp_path, data_root):
    from defocusgan_plugin.data.synthetic_dp_dataset import SyntheticDPDataset
    SyntheticDPDataset(dict(name='s', type='SyntheticDPDataset', phase='train', coc_max=-1))


# ----------------------------------------------------------------------------------------------- options
def missing_option_file(tmp_path, data_root):
    run_train(tmp_path / 'missing.yml', tmp_path)


def yaml_syntax_error(tmp_path, data_root):
    bad = tmp_path / 'broken.yml'
    bad.write_text('name: x\ndatasets: [unclosed\n')
    run_train(bad, tmp_path)


def missing_num_gpu(tmp_path, data_root):
    run_train(_raw_opt(tmp_path, data_root, lambda o: o.pop('num_gpu')), tmp_path)


def unknown_arch_type(tmp_path, data_root):
    run_train(_train_opt(tmp_path, data_root, **{'network_g:type': 'EDSRR'}), tmp_path)


def unknown_model_type(tmp_path, data_root):
    run_train(_train_opt(tmp_path, data_root, model_type='SRModle'), tmp_path)


def unknown_dataset_type(tmp_path, data_root):
    run_train(_train_opt(tmp_path, data_root, **{'datasets:train:type': 'DPDDataset'}), tmp_path)


def unknown_loss_type(tmp_path, data_root):
    run_train(_train_opt(tmp_path, data_root, **{'train:pixel_opt:type': 'L1Los'}), tmp_path)


def unknown_metric_type(tmp_path, data_root):
    run_train(_train_opt(tmp_path, data_root, **{'val:metrics:psnr:type': 'calculate_psrn'}), tmp_path)


def block_without_type(tmp_path, data_root):
    run_train(_raw_opt(tmp_path, data_root, lambda o: o['network_g'].pop('type')), tmp_path)


def missing_pretrain_file(tmp_path, data_root):
    run_train(_train_opt(tmp_path, data_root, **{'path:pretrain_network_g': str(tmp_path / 'net_g_missing.pth')}),
              tmp_path)


def missing_resume_state(tmp_path, data_root):
    run_train(_train_opt(tmp_path, data_root, **{'path:resume_state': str(tmp_path / '7.state')}), tmp_path)


def dual_input_with_three_channel_arch(tmp_path, data_root):
    run_train(_train_opt(tmp_path, data_root, **{'datasets:train:input': 'dual', 'datasets:val:input': 'dual'}),
              tmp_path)


def unknown_dataset_phase(tmp_path, data_root):
    def mutate(o):
        o['datasets']['valid'] = o['datasets'].pop('val')
    run_train(_raw_opt(tmp_path, data_root, mutate), tmp_path)


def launcher_without_torchrun_env(tmp_path, data_root):
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        os.environ.pop(key, None)
    run_train(_train_opt(tmp_path, data_root), tmp_path, '--launcher', 'pytorch')


def nccl_without_cuda(tmp_path, data_root):
    from defocusgan_plugin.utils.dist_util import init_dist
    if torch.cuda.is_available():
        pytest.skip('CUDA present: nccl is valid here')
    env = dict(RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1', MASTER_PORT='29599')
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        init_dist('pytorch', backend='nccl')
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


# ----------------------------------------------------------------------------------------------- weights / outputs
def lpips_weights_missing(tmp_path, data_root):
    from basicsr.metrics import calculate_metric
    img = np.zeros((8, 8, 3), np.uint8)
    calculate_metric(dict(img=img, img2=img), dict(type='calculate_lpips', alexnet_path=str(tmp_path / 'alex.pth')))


def truncated_checkpoint(tmp_path, data_root):
    from defocusgan_plugin.utils.checkpoint import load_checkpoint
    path = tmp_path / 'net_g_10.pth'
    torch.save({'params': {'w': torch.zeros(3)}}, path)
    path.write_bytes(path.read_bytes()[:20])
    load_checkpoint(str(path))


def checkpoint_shape_mismatch(tmp_path, data_root):
    from defocusgan_plugin.models.dp_base_model import DPBaseModel
    model = DPBaseModel(dict(num_gpu=0, is_train=False, dist=False, path={}))
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 3, 3))
    path = tmp_path / 'net_g_1.pth'
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 3, 3))
    torch.save({'params': other.state_dict()}, path)
    model.load_network(net, str(path), strict=True)


def read_only_output_folder(tmp_path, data_root):
    from defocusgan_plugin.utils import img_io
    target = tmp_path / 'locked' / 'out.png'
    target.parent.mkdir()
    target.parent.chmod(0o500)
    try:
        if os.access(target.parent, os.W_OK):  # root ignores permission bits: make the write itself fail
            real = img_io.tempfile.mkstemp

            def deny(*args, **kwargs):
                raise PermissionError(13, 'Permission denied')
            img_io.tempfile.mkstemp = deny
            try:
                img_io.write_image(str(target), np.zeros((4, 4, 3), np.float32))
            finally:
                img_io.tempfile.mkstemp = real
        else:
            img_io.write_image(str(target), np.zeros((4, 4, 3), np.float32))
    finally:
        target.parent.chmod(0o700)


CASES = [
    # (case, exception, fragments the message must contain)
    (missing_dataroot, FileNotFoundError, ['dataroot', 'nowhere']),
    (empty_folder, ValueError, ['no images', 'train_c/target', 'dataroot_gt']),
    (count_mismatch, ValueError, ['train_c/source', 'train_c/target', '1.png']),
    (corrupt_png, ValueError, ['Cannot decode', '0.png']),
    (zero_byte_file, ValueError, ['empty', 'train_l/source/0.png']),
    (left_right_size_differ, ValueError, ['Size mismatch', 'train_r/source/0.png']),
    (views_differ_from_combined, ValueError, ['Size mismatch', 'train_l/source/0.png']),
    (crop_larger_than_image, ValueError, ['gt_size 64', '16x16']),
    (rotation_with_dual_input, ValueError, ['use_rot', 'dual']),
    (unknown_input_mode, ValueError, ["'input'", 'triple']),
    (only_one_view_folder, ValueError, ['train_l/source', 'both']),
    (nan_in_float_image, ValueError, ['NaN', '0.tif']),
    (defocus_map_not_2d, ValueError, ['Defocus map', '0.npy']),
    (synthetic_coc_cap_not_positive, ValueError, ['coc_max']),
    (missing_option_file, FileNotFoundError, ['Option file', 'missing.yml']),
    (yaml_syntax_error, ValueError, ['broken.yml', 'line']),
    (missing_num_gpu, KeyError, ['num_gpu']),
    (unknown_arch_type, KeyError, ['network_g', 'EDSRR', 'EDSR']),
    (unknown_model_type, KeyError, ['model_type', 'SRModle', 'SRModel']),
    (unknown_dataset_type, KeyError, ['datasets.train', 'DPDDataset', 'DPDDDataset']),
    (unknown_loss_type, KeyError, ['train.pixel_opt', 'L1Los', 'L1Loss']),
    (unknown_metric_type, KeyError, ['val.metrics.psnr', 'calculate_psrn', 'calculate_psnr']),
    (block_without_type, KeyError, ['network_g', 'type']),
    (missing_pretrain_file, FileNotFoundError, ['path.pretrain_network_g', 'net_g_missing.pth']),
    (missing_resume_state, FileNotFoundError, ['path.resume_state', '7.state']),
    (dual_input_with_three_channel_arch, ValueError, ['datasets.train.input', 'network_g.num_in_ch', 'EDSR']),
    (unknown_dataset_phase, ValueError, ['valid']),
    (launcher_without_torchrun_env, RuntimeError, ['RANK', 'torchrun']),
    (nccl_without_cuda, RuntimeError, ['nccl', 'gloo']),
    (lpips_weights_missing, FileNotFoundError, ['alex.pth', 'alexnet_path']),
    (truncated_checkpoint, ValueError, ['net_g_10.pth', 'truncated']),
    (checkpoint_shape_mismatch, ValueError, ['net_g_1.pth', 'shape', '0.weight']),
    (read_only_output_folder, PermissionError, ['locked']),
]


@pytest.mark.parametrize('case, exc, fragments', CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_input(case, exc, fragments, tmp_path, synthetic_root):
    before = sorted(p.name for p in Path(synthetic_root).rglob('*'))
    with pytest.raises(exc) as err:
        case(tmp_path, synthetic_root)
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message, f'{fragment!r} not in: {message}'
    assert sorted(p.name for p in Path(synthetic_root).rglob('*')) == before  # nothing written into the data


def test_mixed_bit_depths_and_gray_files_are_accepted(tmp_path):
    """Allowed input, documented: each file is normalised by its own bit depth; gray becomes RGB (or stays gray)."""
    _dpdd(tmp_path, n=1)
    cv2.imwrite(str(tmp_path / 'train_c/target/0.png'), np.full((16, 16), 65535, np.uint16))  # 16-bit gray target
    item = _dataset(tmp_path, phase='val')[0]
    assert item['gt'].shape == (3, 16, 16) and torch.all(item['gt'] == 1.0)
    assert torch.allclose(item['lq'], torch.full_like(item['lq'], 100 / 255))
    gray = _dataset(tmp_path, phase='val', color='gray')[0]
    assert gray['lq'].shape == (1, 16, 16) and gray['gt'].shape == (1, 16, 16)


def test_odd_sizes_pass_through_at_test_time(tmp_path):
    _dpdd(tmp_path, size=(15, 17), n=1)
    item = _dataset(tmp_path, phase='test', input='dual')[0]
    assert item['lq'].shape == (6, 15, 17)
