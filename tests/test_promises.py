"""Promises the README makes that no other test checks: partial loading with ``strict_load: false``, refusal of
pickled objects in weight files, the synthetic set's split and determinism, the DPDD pairing warning, and no network
access during a train + test run."""
import cv2
import logging
import numpy as np
import pytest
import socket
import torch
from basicsr.models import build_model
from conftest import FAST, ROOT, run_python, run_test, run_train, tiny_options

from defocusgan_plugin.archs.defocusgan_arch import DefocusGANGenerator
from defocusgan_plugin.data.dp_synthesis import embedded_scenes, write_synthetic_dpdd
from defocusgan_plugin.data.dpdd_dataset import DPDDDataset
from defocusgan_plugin.utils.options import parse_options

TINY_G = [8, 8, 8]


@pytest.fixture
def basicsr_log():
    """Messages of BasicSR's logger at INFO and above (it does not propagate, so caplog does not see them)."""
    messages = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append((record.levelno, record.getMessage()))
    logger = logging.getLogger('basicsr')
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield messages
    logger.removeHandler(handler)
    logger.setLevel(level)


def _test_model(tmp_path, data_root, overrides):
    """A DefocusGANModel built by the test entry point's option parser (tiny generator); loads its weights."""
    opt_path = tiny_options('test_defocusgan_synthetic.yml', tmp_path, data_root,
                            dict({'network_g:num_feat': TINY_G}, **overrides))
    opt, _ = parse_options(str(tmp_path), is_train=False, argv=['-opt', str(opt_path)])
    return build_model(opt)


# ----------------------------------------------------------------------------------- strict_load_<net>: false
def test_strict_load_false_loads_what_matches_and_logs_the_rest(tmp_path, synthetic_root, basicsr_log):
    torch.manual_seed(123)  # not the option file's manual_seed: the tensors differ from the network's own
    other = DefocusGANGenerator(num_feat=(8, 8, 12)).state_dict()  # the 1/8 scale is wider than the network's
    other['extra.weight'] = torch.zeros(2)
    torch.save({'params': other}, tmp_path / 'other.pth')
    weights = {'path:pretrain_network_g': str(tmp_path / 'other.pth')}
    with pytest.raises(ValueError, match=r'does not match.*shape.*strict_load'):
        _test_model(tmp_path, synthetic_root, weights)  # strict by default

    # the network as initialised (the option parser seeds it with the file's manual_seed)
    fresh = _test_model(tmp_path, synthetic_root, {'path:pretrain_network_g': None}).net_g.state_dict()
    basicsr_log.clear()
    loaded = _test_model(tmp_path, synthetic_root, dict(weights, **{'path:strict_load_g': False})).net_g.state_dict()
    matching = [k for k in loaded if k in other and other[k].shape == loaded[k].shape]
    skipped = [k for k in loaded if k not in matching]
    assert len(matching) > 100 and any(k.startswith('dgb8.') for k in skipped)
    assert sum(not torch.equal(fresh[k], other[k]) for k in matching) > 100  # so that loading is visible
    for key in matching:
        assert torch.equal(loaded[key], other[key]), key  # every tensor that fits was loaded ...
    for key in skipped:
        assert torch.equal(loaded[key], fresh[key]), key  # ... and the others kept their initialisation
    warnings = [m for level, m in basicsr_log if level == logging.WARNING and 'non-strictly' in m]
    assert len(warnings) == 1 and 'extra.weight' in warnings[0] and skipped[0] in warnings[0], basicsr_log


def test_force_yml_overrides_are_checked_as_the_run_will_use_them(tmp_path, synthetic_root):
    """A missing checkpoint in the file is fine when ``--force_yml`` replaces it; a missing one given there is not."""
    missing = {'path:pretrain_network_g': str(tmp_path / 'gone.pth')}
    opt_path = tiny_options('test_defocusgan_synthetic.yml', tmp_path, synthetic_root, missing)
    with pytest.raises(FileNotFoundError, match='pretrain_network_g.*gone.pth'):
        parse_options(str(tmp_path), is_train=False, argv=['-opt', str(opt_path)])
    opt, _ = parse_options(
        str(tmp_path),
        is_train=False,
        argv=['-opt', str(opt_path), '--force_yml', 'path:pretrain_network_g=~', 'name=forced'])
    assert opt['path']['pretrain_network_g'] is None and opt['name'] == 'forced'
    ok = tiny_options('test_defocusgan_synthetic.yml', tmp_path, synthetic_root, file_name='ok.yml')
    with pytest.raises(FileNotFoundError, match='pretrain_network_g.*gone.pth'):
        parse_options(
            str(tmp_path),
            is_train=False,
            argv=['-opt', str(ok), '--force_yml', f'path:pretrain_network_g={tmp_path / "gone.pth"}'])


# ----------------------------------------------------------------------------------- weights_only=True
class _Payload:
    """Unpickling this object runs ``_touch(path)``: what ``torch.load(weights_only=False)`` would do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return _touch, (self.path, )


def _touch(path):
    open(path, 'w').close()


def _pickled_file(tmp_path, state):
    path = tmp_path / 'pickled.pth'
    torch.save(dict(state, note=_Payload(tmp_path / 'code_ran')), path)
    return path


def _load_network(tmp_path, data_root, path):
    _test_model(tmp_path, data_root, {'path:pretrain_network_g': str(path)})


def _deblur_cli(tmp_path, data_root, path):
    from defocusgan_plugin.deblur import build_generator
    build_generator(str(path))


def _resume_state(tmp_path, data_root, path):
    from defocusgan_plugin.train import load_resume_state
    load_resume_state({'auto_resume': False, 'path': {'resume_state': str(path)}})


def _vgg_weights(tmp_path, data_root, path):
    from defocusgan_plugin.losses.vgg_perceptual_loss import VGG19PerceptualLoss
    VGG19PerceptualLoss(vgg_path=str(path))


def _lpips_weights(tmp_path, data_root, path):
    from basicsr.metrics import calculate_metric
    img = np.zeros((16, 16, 3), np.uint8)
    calculate_metric(dict(img=img, img2=img), dict(type='calculate_lpips', alexnet_path=str(path), device='cpu'))


@pytest.mark.parametrize('load', [_load_network, _deblur_cli, _resume_state, _vgg_weights, _lpips_weights])
def test_weight_files_with_pickled_objects_are_refused(tmp_path, synthetic_root, load):
    """Every place that reads a weight or state file refuses one holding a pickled object, without running it."""
    state = {'params': DefocusGANGenerator().state_dict(), 'iter': 2, 'optimizers': [], 'schedulers': []}
    path = _pickled_file(tmp_path, state)
    with pytest.raises(ValueError, match=r'Cannot load checkpoint .*pickled.pth safely.*weights_only'):
        load(tmp_path, synthetic_root, path)
    assert not (tmp_path / 'code_ran').exists()
    torch.load(path, weights_only=False)  # the file is a working exploit: unpickling it does run the code
    assert (tmp_path / 'code_ran').exists()


# ----------------------------------------------------------------------------------- synthetic set
def _targets(root, split):
    """{scene: 16-bit RGB target} of a split of a written synthetic set (one crop per scene and split)."""
    out = {}
    for path in sorted((root / f'{split}_c' / 'target').glob('*.png')):
        scene = path.stem.rsplit('_', 1)[0]
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[..., ::-1]
        assert scene not in out or np.array_equal(out[scene], img)  # focal planes differ, the crop does not
        out[scene] = img
    return out


def test_synthetic_splits_share_no_pixel(synthetic_root):
    """Train targets are the left part of each scene, val/test targets the right part: together exactly the scene,
    and no image column of a val/test target occurs in any train target."""
    train, evals = _targets(synthetic_root, 'train'), [_targets(synthetic_root, s) for s in ('val', 'test')]
    scenes = {s['name']: s['image'] for s in embedded_scenes(max_side=96, seed=0)}  # as the fixture writes them
    assert set(train) == set(scenes) and all(set(e) == set(scenes) for e in evals)
    train_columns = {img[:, x].tobytes() for img in train.values() for x in range(img.shape[1])}
    for name, scene in scenes.items():
        scene16 = np.round(scene * 65535).astype(np.int64)
        for ev in evals:
            assert np.array_equal(ev[name], evals[0][name])  # val and test: the same held-out part
            assert train[name].shape[1] >= 2 * ev[name].shape[1] > 0  # two thirds / one third
            joined = np.concatenate([train[name], ev[name]], axis=1).astype(np.int64)
            assert joined.shape == scene16.shape and np.abs(joined - scene16).max() <= 1, name
            assert not any(ev[name][:, x].tobytes() in train_columns for x in range(ev[name].shape[1])), name


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


def test_synthetic_set_is_deterministic_for_a_seed(tmp_path):
    """Same seed: byte-identical files (the script and the function); another seed: other focal planes and noise."""
    small = dict(max_side=48, coc_max=3.0, focus_per_scene=(1, 1, 1))
    write_synthetic_dpdd(str(tmp_path / 'a'), seed=0, **small)
    write_synthetic_dpdd(str(tmp_path / 'b'), seed=0, **small)
    write_synthetic_dpdd(str(tmp_path / 'c'), seed=1, **small)
    proc = run_python([
        str(ROOT / 'scripts' / 'make_synthetic_dpdd.py'), '--out',
        str(tmp_path / 'script'), '--max-side', '48', '--coc-max', '3', '--train', '1', '--val', '1', '--test', '1',
        '--seed', '0'
    ], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, c = _files(tmp_path / 'a'), _files(tmp_path / 'c')
    assert len(a) == 5 * 3 * 5  # 5 scenes x 3 splits x (4 images + 1 map)
    assert _files(tmp_path / 'b') == a and _files(tmp_path / 'script') == a
    assert set(c) == set(a)
    differ = {name for name in a if a[name] != c[name]}
    assert differ >= {name for name in a if '/source/' in name or name.endswith('.npy')}  # every capture and map


# ----------------------------------------------------------------------------------- DPDD pairing
def _write_dpdd(root, names_by_folder, seed=0):
    rng = np.random.default_rng(seed)
    for folder, names in names_by_folder.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            cv2.imwrite(str(root / folder / name), rng.integers(0, 255, (8, 12, 3), dtype=np.uint8))


def test_pairing_by_sorted_order_warns_naming_the_folders(tmp_path, basicsr_log):
    stems = ['b', 'a', 'c']
    _write_dpdd(
        tmp_path, {
            'train_c/source': [f'{s}.png' for s in stems],
            'train_c/target': [f'{s}.png' for s in stems],
            'train_l/source': [f'{s}_L.png' for s in stems],
            'train_r/source': [f'{s}_R.png' for s in stems]
        })
    ds = DPDDDataset(dict(name='t', phase='val', dataroot=str(tmp_path), split='train'))
    warnings = [m for level, m in basicsr_log if level == logging.WARNING]
    assert len(warnings) == 1 and 'sorted order' in warnings[0], basicsr_log
    assert all(f in warnings[0] for f in ('train_c/source', 'train_l/source', 'train_r/source'))
    for i, stem in enumerate(sorted(stems)):  # the i-th file of every folder, in sorted order
        sample = {k: p.rsplit('/', 1)[-1] for k, p in ds.samples[i].items()}
        assert sample == {'lq': f'{stem}.png', 'gt': f'{stem}.png', 'lq_l': f'{stem}_L.png', 'lq_r': f'{stem}_R.png'}
        item = ds[i]
        expected = cv2.imread(str(tmp_path / 'train_l/source' / f'{stem}_L.png'))[..., ::-1]
        assert torch.allclose(item['lq_l'], torch.from_numpy(expected.copy()).permute(2, 0, 1).float() / 255)

    basicsr_log.clear()  # names that agree pair by name, silently
    (tmp_path / 'named').mkdir()
    folders = ('train_c/source', 'train_c/target', 'train_l/source', 'train_r/source')
    _write_dpdd(tmp_path / 'named', {f: [f'{s}.png' for s in stems] for f in folders})
    DPDDDataset(dict(name='t', phase='val', dataroot=str(tmp_path / 'named'), split='train'))
    assert not [m for level, m in basicsr_log if level == logging.WARNING]


# ----------------------------------------------------------------------------------- offline
@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Makes every network connection (and name lookup) fail, and records the attempts; torchvision's weight cache
    and the plugin's weight variables point at nothing, so any pretrained weights would have to be downloaded."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] if args and isinstance(args[0], socket.socket) else args)
        raise OSError('network access is blocked in this test')

    for name in ('connect', 'connect_ex', 'sendto'):
        monkeypatch.setattr(socket.socket, name, refuse)
    for name in ('getaddrinfo', 'create_connection', 'gethostbyname'):
        monkeypatch.setattr(socket, name, refuse)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'empty_torch_home'))
    for var in ('DEFOCUSGAN_VGG19_WEIGHTS', 'DEFOCUSGAN_ALEXNET_WEIGHTS'):
        monkeypatch.delenv(var, raising=False)
    # the block works: torch.hub's download of a real file fails and is recorded
    with pytest.raises(OSError):
        torch.hub.download_url_to_file(
            'https://download.pytorch.org/models/alexnet-owt-7be5be79.pth',
            str(tmp_path / 'alexnet.pth'),
            progress=False)
    assert attempts and not (tmp_path / 'alexnet.pth').exists()
    attempts.clear()
    return attempts


def test_train_and_test_run_without_network(tmp_path, synthetic_root, no_network):
    """One DefocusGAN train (perceptual and adversarial losses on) + test run in-process: no connection is tried."""
    over = dict(
        FAST, **{
            'datasets:train:gt_size': 32,
            'network_g:num_feat': TINY_G,
            'network_d:num_feat': 8,
            'train:gan_start_iter': 0
        })
    model = run_train(tiny_options('train_defocusgan_synthetic.yml', tmp_path, synthetic_root, over), tmp_path)
    assert {'l_g_percep', 'l_g_gan'} <= set(model.log_dict)
    run_test(
        tiny_options('test_defocusgan_synthetic.yml', tmp_path, synthetic_root, {'network_g:num_feat': TINY_G}),
        tmp_path)
    assert len(list((tmp_path / 'results' / 'defocusgan_synthetic' / 'visualization').rglob('*.png'))) == 5
    assert no_network == []
