"""Bad input: every case must fail with a clear error naming the file or option key, and overwrite nothing.

Each case is a function ``case(tmp_path, data_root)`` that prepares the bad input (files, option file, a previous
run's checkpoint) and returns the bad action, a function without arguments. The test snapshots every file under
``tmp_path`` and the shared data set (path, size, mtime), runs the action, checks the exception type and the
fragments its message must contain (the table below), and checks that no file of the snapshot was modified, moved
or deleted. Add a case by adding a function and a table row.
"""
import contextlib
import cv2
import io
import numpy as np
import os
import pytest
import torch
import yaml
from conftest import FAST, run_train, tiny_options
from pathlib import Path

SPLIT_FOLDERS = ('train_c/source', 'train_c/target', 'train_l/source', 'train_r/source')
SRMODEL = 'train_srmodel_single_synthetic.yml'
SRMODEL_NAME = 'srmodel_edsr_single_synthetic'
CLI_NET = {'type': 'DefocusGANGenerator', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': [8, 8, 8]}


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


def _previous_run(tmp_path, name=SRMODEL_NAME):
    """A checkpoint of an earlier run of the same experiment: an option error must leave it where it is (BasicSR
    renames the experiment folder only once the options are accepted)."""
    models = tmp_path / 'experiments' / name / 'models'
    models.mkdir(parents=True)
    torch.save({'params': {'w': torch.ones(2)}}, models / 'net_g_latest.pth')


def _train_opt(tmp_path, data_root, option=SRMODEL, previous=True, **overrides):
    if previous:
        _previous_run(tmp_path)
    return tiny_options(option, tmp_path, data_root, dict(FAST, **{'datasets:train:gt_size': 32}, **overrides))


def _raw_opt(tmp_path, data_root, mutate, previous=True):
    """Writes the tiny training options after ``mutate(opt_dict)`` edited them (for deletions)."""
    path = _train_opt(tmp_path, data_root, previous=previous)
    opt = yaml.safe_load(path.read_text())
    mutate(opt)
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return path


def _train(opt, tmp_path, *args):
    return lambda: run_train(opt, tmp_path, *args)


def _cli_weights(tmp_path):
    """(checkpoint, option file) of a small DefocusGAN generator for the defocusgan-deblur command."""
    from defocusgan_plugin.archs.defocusgan_arch import DefocusGANGenerator
    torch.manual_seed(0)
    net = DefocusGANGenerator(**{k: v for k, v in CLI_NET.items() if k != 'type'}).eval()
    torch.nn.init.normal_(net.conv_last.weight, std=0.02)  # the real one starts as the identity
    torch.save({'params': net.state_dict()}, tmp_path / 'net_g.pth')
    (tmp_path / 'net.yml').write_text(yaml.safe_dump({'network_g': CLI_NET}))
    return net, ['--weights', str(tmp_path / 'net_g.pth'), '--opt', str(tmp_path / 'net.yml'), '--device', 'cpu']


def _cli(args):
    """Runs defocusgan-deblur; its exit (argparse style, message on stderr) becomes a SystemExit carrying both."""
    from defocusgan_plugin.deblur import main
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            return main(args)
        except SystemExit as exit_:
            raise SystemExit(f'exit status {exit_.code}: {stderr.getvalue()}') from None


# ----------------------------------------------------------------------------------------------- data layer
def missing_dataroot(tmp_path, data_root):
    return lambda: _dataset(tmp_path / 'nowhere')


def empty_folder(tmp_path, data_root):
    _dpdd(tmp_path)
    for f in (tmp_path / 'train_c/target').iterdir():
        f.unlink()
    return lambda: _dataset(tmp_path)


def count_mismatch(tmp_path, data_root):
    _dpdd(tmp_path)
    (tmp_path / 'train_c/target/1.png').unlink()
    return lambda: _dataset(tmp_path)


def corrupt_png(tmp_path, data_root):
    _dpdd(tmp_path)
    (tmp_path / 'train_c/source/0.png').write_bytes(b'\x89PNG\r\n\x1a\nthis is not a png')
    return lambda: _dataset(tmp_path, phase='val')[0]


def zero_byte_file(tmp_path, data_root):
    _dpdd(tmp_path)
    (tmp_path / 'train_l/source/0.png').write_bytes(b'')
    return lambda: _dataset(tmp_path, phase='val')[0]


def left_right_size_differ(tmp_path, data_root):
    _dpdd(tmp_path)
    cv2.imwrite(str(tmp_path / 'train_r/source/0.png'), np.zeros((16, 18, 3), np.uint8))
    return lambda: _dataset(tmp_path, phase='val', input='dual')[0]


def views_differ_from_combined(tmp_path, data_root):
    _dpdd(tmp_path)
    for view in ('l', 'r'):
        cv2.imwrite(str(tmp_path / f'train_{view}/source/0.png'), np.zeros((20, 16, 3), np.uint8))
    return lambda: _dataset(tmp_path, phase='val')[0]


def crop_larger_than_image(tmp_path, data_root):
    _dpdd(tmp_path)
    return lambda: _dataset(tmp_path, gt_size=64)[0]


def rotation_with_dual_input(tmp_path, data_root):
    _dpdd(tmp_path)
    return lambda: _dataset(tmp_path, input='dual', use_rot=True)


def unknown_input_mode(tmp_path, data_root):
    _dpdd(tmp_path)
    return lambda: _dataset(tmp_path, input='triple')


def only_one_view_folder(tmp_path, data_root):
    _dpdd(tmp_path)
    for f in (tmp_path / 'train_r/source').iterdir():
        f.unlink()
    (tmp_path / 'train_r/source').rmdir()
    return lambda: _dataset(tmp_path)


def nan_in_float_image(tmp_path, data_root):
    _dpdd(tmp_path)
    img = np.full((16, 16, 3), 0.5, np.float32)
    img[3, 3, 1] = np.nan
    (tmp_path / 'train_c/source/0.png').unlink()
    assert cv2.imwrite(str(tmp_path / 'train_c/source/0.tif'), img)
    return lambda: _dataset(tmp_path, phase='val')[0]


def defocus_map_bad_shape(tmp_path, data_root):
    _dpdd(tmp_path)
    (tmp_path / 'train_defocus').mkdir()
    for i in range(2):  # H x W and C x H x W are maps; a 4-D array is not
        np.save(tmp_path / 'train_defocus' / f'{i}.npy', np.zeros((1, 2, 16, 16), np.float32))
    return lambda: _dataset(tmp_path, phase='val')[0]


def synthetic_coc_cap_not_positive(tmp_path, data_root):
    from defocusgan_plugin.data.synthetic_dp_dataset import SyntheticDPDataset
    return lambda: SyntheticDPDataset(dict(name='s', type='SyntheticDPDataset', phase='train', coc_max=-1))


# ----------------------------------------------------------------------------------------------- options
def missing_option_file(tmp_path, data_root):
    return _train(tmp_path / 'missing.yml', tmp_path)


def yaml_syntax_error(tmp_path, data_root):
    bad = tmp_path / 'broken.yml'
    bad.write_text('name: x\ndatasets: [unclosed\n')
    return _train(bad, tmp_path)


def missing_num_gpu(tmp_path, data_root):
    return _train(_raw_opt(tmp_path, data_root, lambda o: o.pop('num_gpu')), tmp_path)


def unknown_arch_type(tmp_path, data_root):
    return _train(_train_opt(tmp_path, data_root, **{'network_g:type': 'EDSRR'}), tmp_path)


def unknown_model_type(tmp_path, data_root):
    return _train(_train_opt(tmp_path, data_root, model_type='SRModle'), tmp_path)


def unknown_dataset_type(tmp_path, data_root):
    return _train(_train_opt(tmp_path, data_root, **{'datasets:train:type': 'DPDDataset'}), tmp_path)


def unknown_loss_type(tmp_path, data_root):
    return _train(_train_opt(tmp_path, data_root, **{'train:pixel_opt:type': 'L1Los'}), tmp_path)


def unknown_metric_type(tmp_path, data_root):
    return _train(_train_opt(tmp_path, data_root, **{'val:metrics:psnr:type': 'calculate_psrn'}), tmp_path)


def unknown_optimizer_type(tmp_path, data_root):
    opt = _train_opt(
        tmp_path, data_root, 'train_mccnet_synthetic.yml', previous=False, **{'train:optim_g:type': 'AdamWW'})
    _previous_run(tmp_path, 'mccnet_synthetic')
    return _train(opt, tmp_path)


def optimizer_basicsr_model_cannot_build(tmp_path, data_root):
    # torch has AdamW, but BasicSR's SRModel builds Adam only: refused here, not at model building
    return _train(_train_opt(tmp_path, data_root, **{'train:optim_g:type': 'AdamW'}), tmp_path)


def unknown_scheduler_type(tmp_path, data_root):
    return _train(_train_opt(tmp_path, data_root, **{'train:scheduler:type': 'CosineAnnealingLR'}), tmp_path)


def negative_anneal_iters(tmp_path, data_root):
    opt = tiny_options(
        'train_defocusgan_synthetic.yml', tmp_path, data_root,
        dict(
            FAST, **{
                'datasets:train:gt_size': 32,
                'network_g:num_feat': [8, 8, 8],
                'network_d:num_feat': 8,
                'train:guidance:anneal_iters': -5
            }))
    return _train(opt, tmp_path)


def defocus_map_cap_not_positive(tmp_path, data_root):
    opt = tiny_options('train_defocus_map_synthetic.yml', tmp_path, data_root,
                       dict(FAST, **{
                           'datasets:train:gt_size': 32,
                           'network_map:cap': 0,
                           'network_map:num_feat': 8
                       }))
    return _train(opt, tmp_path)


def block_without_type(tmp_path, data_root):
    return _train(_raw_opt(tmp_path, data_root, lambda o: o['network_g'].pop('type')), tmp_path)


def missing_pretrain_file(tmp_path, data_root):
    return _train(
        _train_opt(tmp_path, data_root, **{'path:pretrain_network_g': str(tmp_path / 'net_g_missing.pth')}), tmp_path)


def missing_resume_state(tmp_path, data_root):
    return _train(_train_opt(tmp_path, data_root, **{'path:resume_state': str(tmp_path / '7.state')}), tmp_path)


def dual_input_with_three_channel_arch(tmp_path, data_root):
    return _train(
        _train_opt(tmp_path, data_root, **{
            'datasets:train:input': 'dual',
            'datasets:val:input': 'dual'
        }), tmp_path)


def unknown_dataset_phase(tmp_path, data_root):

    def mutate(o):
        o['datasets']['valid'] = o['datasets'].pop('val')

    # found when the loaders are built, after BasicSR made (and would archive) the experiment folder: no previous run
    return _train(_raw_opt(tmp_path, data_root, mutate, previous=False), tmp_path)


def launcher_without_torchrun_env(tmp_path, data_root):
    opt = _train_opt(tmp_path, data_root)

    def action():
        with pytest.MonkeyPatch.context() as mp:
            for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
                mp.delenv(key, raising=False)
            run_train(opt, tmp_path, '--launcher', 'pytorch')

    return action


def nccl_without_cuda(tmp_path, data_root):
    from defocusgan_plugin.utils.dist_util import init_dist
    if torch.cuda.is_available():
        pytest.skip('CUDA present: nccl is valid here')

    def action():
        with pytest.MonkeyPatch.context() as mp:
            for key, value in dict(RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1', MASTER_PORT='29599').items():
                mp.setenv(key, value)
            init_dist('pytorch', backend='nccl')

    return action


# ----------------------------------------------------------------------------------------------- command line
def cli_folder_without_images(tmp_path, data_root):
    _, weights = _cli_weights(tmp_path)
    (tmp_path / 'notes').mkdir()
    (tmp_path / 'notes' / 'readme.txt').write_text('not an image')
    (tmp_path / 'notes' / 'scene.npy').write_bytes(b'')
    return lambda: _cli([str(tmp_path / 'notes'), '-o', str(tmp_path / 'out'), *weights])


# ----------------------------------------------------------------------------------------------- weights / outputs
def lpips_weights_missing(tmp_path, data_root):
    from basicsr.metrics import calculate_metric
    img = np.zeros((8, 8, 3), np.uint8)
    return lambda: calculate_metric(
        dict(img=img, img2=img), dict(type='calculate_lpips', alexnet_path=str(tmp_path / 'alex.pth')))


def truncated_checkpoint(tmp_path, data_root):
    from defocusgan_plugin.utils.checkpoint import load_checkpoint
    path = tmp_path / 'net_g_10.pth'
    torch.save({'params': {'w': torch.zeros(3)}}, path)
    path.write_bytes(path.read_bytes()[:20])
    return lambda: load_checkpoint(str(path))


def checkpoint_shape_mismatch(tmp_path, data_root):
    from defocusgan_plugin.models.robust_base_model import RobustBaseModel
    model = RobustBaseModel(dict(num_gpu=0, is_train=False, dist=False, path={}))
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 3, 3))
    path = tmp_path / 'net_g_1.pth'
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 3, 3))
    torch.save({'params': other.state_dict()}, path)
    return lambda: model.load_network(net, str(path), strict=True)


def read_only_output_folder(tmp_path, data_root):
    from defocusgan_plugin.utils import img_io
    target = tmp_path / 'locked' / 'out.png'
    target.parent.mkdir()

    def deny(*args, **kwargs):
        raise PermissionError(13, 'Permission denied')

    def action():
        target.parent.chmod(0o500)
        try:
            with pytest.MonkeyPatch.context() as mp:
                if os.access(target.parent, os.W_OK):  # root ignores permission bits: make the write itself fail
                    mp.setattr(img_io.tempfile, 'mkstemp', deny)
                img_io.write_image(str(target), np.zeros((4, 4, 3), np.float32))
        finally:
            target.parent.chmod(0o700)

    return action


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
    (defocus_map_bad_shape, ValueError, ['Defocus map', '0.npy', 'C x H x W']),
    (synthetic_coc_cap_not_positive, ValueError, ['coc_max']),
    (missing_option_file, FileNotFoundError, ['Option file', 'missing.yml']),
    (yaml_syntax_error, ValueError, ['broken.yml', 'line']),
    (missing_num_gpu, KeyError, ['num_gpu']),
    (unknown_arch_type, KeyError, ['network_g', 'EDSRR', 'EDSR']),
    (unknown_model_type, KeyError, ['model_type', 'SRModle', 'SRModel']),
    (unknown_dataset_type, KeyError, ['datasets.train', 'DPDDataset', 'DPDDDataset']),
    (unknown_loss_type, KeyError, ['train.pixel_opt', 'L1Los', 'L1Loss']),
    (unknown_metric_type, KeyError, ['val.metrics.psnr', 'calculate_psrn', 'calculate_psnr']),
    (unknown_optimizer_type, KeyError, ['train_mccnet_synthetic.yml', 'train.optim_g', 'AdamWW',
                                        'Did you mean: AdamW']),
    (optimizer_basicsr_model_cannot_build, KeyError, ['train.optim_g', "'AdamW'", 'SRModel', '(supported: Adam)']),
    (unknown_scheduler_type, KeyError,
     ['train.scheduler', 'CosineAnnealingLR', 'Did you mean: CosineAnnealingRestartLR']),
    (negative_anneal_iters, ValueError, ['train.guidance.anneal_iters', '-5']),
    (defocus_map_cap_not_positive, ValueError, ['DefocusMapNet', 'cap must be positive', 'got 0']),
    (block_without_type, KeyError, ['network_g', 'type']),
    (missing_pretrain_file, FileNotFoundError, ['path.pretrain_network_g', 'net_g_missing.pth']),
    (missing_resume_state, FileNotFoundError, ['path.resume_state', '7.state']),
    (dual_input_with_three_channel_arch, ValueError, ['datasets.train.input', 'network_g.num_in_ch', 'EDSR']),
    (unknown_dataset_phase, ValueError, ['valid']),
    (launcher_without_torchrun_env, RuntimeError, ['RANK', 'torchrun']),
    (nccl_without_cuda, RuntimeError, ['nccl', 'gloo']),
    (cli_folder_without_images, SystemExit,
     ['exit status 2', 'defocusgan-deblur: error: Input folder contains no '
      'images', 'notes']),
    (lpips_weights_missing, FileNotFoundError, ['alex.pth', 'alexnet_path']),
    (truncated_checkpoint, ValueError, ['net_g_10.pth', 'truncated']),
    (checkpoint_shape_mismatch, ValueError, ['net_g_1.pth', 'shape', '0.weight']),
    (read_only_output_folder, PermissionError, ['locked']),
]


def _snapshot(*roots):
    """{path: (size, mtime)} of every file under ``roots``."""
    files = {}
    for root in roots:
        for path in Path(root).rglob('*'):
            if path.is_file():
                stat = path.stat()
                files[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return files


@pytest.mark.parametrize('case, exc, fragments', CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_input(case, exc, fragments, tmp_path, synthetic_root):
    action = case(tmp_path, synthetic_root)
    before = _snapshot(tmp_path, synthetic_root)
    with pytest.raises(exc) as err:
        action()
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message, f'{fragment!r} not in: {message}'
    after = _snapshot(tmp_path, synthetic_root)
    touched = sorted(path for path, stat in before.items() if after.get(path) != stat)
    assert not touched, f'modified, moved or deleted: {touched}'  # new files (e.g. a log) are allowed


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


def test_one_pixel_image_to_the_cli_is_deblurred(tmp_path):
    """Allowed input: the generator pads any size, so a 1x1 image gives a 1x1 result (same bit depth, gray stays
    gray), the network's output for that pixel; an error would only stop a batch of images for no reason."""
    net, weights = _cli_weights(tmp_path)
    cv2.imwrite(str(tmp_path / 'dot.png'), np.array([[[40, 120, 200]]], np.uint8))  # BGR
    cv2.imwrite(str(tmp_path / 'dot16.png'), np.array([[30000]], np.uint16))
    assert _cli([str(tmp_path / 'dot.png'), str(tmp_path / 'dot16.png'), '-o', str(tmp_path / 'out'), *weights]) == 0
    out = cv2.imread(str(tmp_path / 'out' / 'dot.png'), cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint8 and out.shape == (1, 1, 3)
    with torch.no_grad():
        expected = net(torch.tensor([200, 120, 40], dtype=torch.float32).view(1, 3, 1, 1) / 255).clamp(0, 1)
    assert np.abs(out[0, 0, ::-1].astype(float) - expected.flatten().numpy() * 255).max() <= 0.5 + 1e-3
    gray = cv2.imread(str(tmp_path / 'out' / 'dot16.png'), cv2.IMREAD_UNCHANGED)
    assert gray.dtype == np.uint16 and gray.shape == (1, 1)
