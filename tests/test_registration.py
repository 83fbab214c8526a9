"""Registration into BasicSR, the torchvision compatibility alias and the start-up hook."""
import importlib
import json
from conftest import FAST, basicsr_checkout, run_python, tiny_options

# Every name the plugin registers, per registry. Issues that add names extend these lists.
EXPECTED = {
    'dataset': ['DPDDDataset', 'SyntheticDPDataset', 'DPRawPixel4Dataset', 'DPPairsDataset'],
    'metric': [
        'calculate_mae', 'calculate_lpips', 'calculate_dpdd_psnr', 'calculate_dpdd_ssim', 'calculate_aiwe1',
        'calculate_constant_floor', 'calculate_aiwe2', 'calculate_spearman_error'
    ],
    'arch': [
        'DefocusGANGenerator', 'DefocusGANReleaseGenerator', 'PatchGANDiscriminator', 'DefocusMapNet',
        'DefocusMapReleaseNet', 'LearnableBlurKernel', 'MCCNet'
    ],
    'loss': [
        'DefocusAdversarialLoss', 'VGG19PerceptualLoss', 'MSSSIMLoss', 'MapGradientPriorLoss', 'ReblurGeometricLoss',
        'AffineInvariantMapLoss', 'ReblurSearchMapLoss'
    ],
    'model': ['DefocusGANModel', 'DefocusMapModel', 'DefocusDeconvModel', 'DPDeblurModel', 'DPJointOptimModel'],
}

_LIST_NAMES = r'''
import importlib.util, json, sys
# the alias alone, without importing the plugin package (its __init__ would register everything)
spec = importlib.util.spec_from_file_location('_startup', sys.argv[1])
startup = importlib.util.module_from_spec(spec); spec.loader.exec_module(startup)
startup.install_torchvision_alias()
from basicsr.utils import registry as r
regs = {'dataset': r.DATASET_REGISTRY, 'arch': r.ARCH_REGISTRY, 'loss': r.LOSS_REGISTRY,
        'model': r.MODEL_REGISTRY, 'metric': r.METRIC_REGISTRY}
before = {k: sorted(v.keys()) for k, v in regs.items()}
import defocusgan_plugin
after = {k: sorted(v.keys()) for k, v in regs.items()}
print(json.dumps({'before': before, 'after': after, 'loaded_by_hook': 'defocusgan_plugin' in sys.modules}))
'''


def test_registered_names_present_and_not_clashing(tmp_path):
    # With the start-up hook disabled, basicsr's own names can be listed before the plugin is imported.
    import defocusgan_plugin._startup as startup
    proc = run_python(['-c', _LIST_NAMES, startup.__file__], tmp_path, env={'DEFOCUSGAN_PLUGIN_DISABLE': '1'})
    assert proc.returncode == 0, proc.stderr
    names = json.loads(proc.stdout.strip().splitlines()[-1])
    for kind, expected in EXPECTED.items():
        before, after = set(names['before'][kind]), set(names['after'][kind])
        ours = after - before
        assert set(expected) <= ours, f'{kind}: missing {set(expected) - ours}'
        assert ours <= set(expected), f'{kind}: registered but not listed in EXPECTED: {ours - set(expected)}'
        assert before <= after  # nothing of BasicSR's was removed or replaced
        # the plugin's names must not collide with BasicSR's even through its '_basicsr' fallback
        assert not {f'{n}_basicsr' for n in ours} & before


def test_torchvision_alias_serves_missing_module():
    mod = importlib.import_module('torchvision.transforms.functional_tensor')
    import torch
    img = torch.rand(3, 4, 5)
    from torchvision.transforms import functional
    if 'Compatibility alias' in (mod.__doc__ or ''):
        assert mod.rgb_to_grayscale is functional.rgb_to_grayscale
    assert mod.rgb_to_grayscale(img).shape == (1, 4, 5)


_ALIAS_ONLY_WHEN_MISSING = r'''
import importlib, importlib.machinery, sys, types
NAME = 'torchvision.transforms.functional_tensor'
class RealLoader:
    def create_module(self, spec): return None
    def exec_module(self, module):
        from torchvision.transforms.functional import rgb_to_grayscale
        module.REAL, module.rgb_to_grayscale = True, rgb_to_grayscale
class RealFinder:  # stands for a torchvision that still ships the module
    def find_spec(self, name, path=None, target=None):
        return importlib.machinery.ModuleSpec(name, RealLoader()) if name == NAME else None
sys.meta_path.insert(0, RealFinder())
import importlib.util
spec = importlib.util.spec_from_file_location('_startup', sys.argv[1])
startup = importlib.util.module_from_spec(spec); spec.loader.exec_module(startup)
startup.install_torchvision_alias()
import basicsr  # imports the module through whichever finder answers first
mod = importlib.import_module(NAME)
print('REAL' if getattr(mod, 'REAL', False) else 'ALIAS')
'''


def test_torchvision_alias_only_when_missing(tmp_path):
    import defocusgan_plugin._startup as startup
    proc = run_python(['-c', _ALIAS_ONLY_WHEN_MISSING, startup.__file__],
                      tmp_path,
                      env={'DEFOCUSGAN_PLUGIN_DISABLE': '1'})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == 'REAL'


def test_startup_hook_is_light_and_lazy(tmp_path):
    code = "import sys; print(json.dumps(['torch' in sys.modules, 'defocusgan_plugin' in sys.modules]))"
    proc = run_python(['-c', 'import json; ' + code], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [False, False]  # nothing heavy at interpreter start
    proc = run_python(['-c', 'import json, basicsr; ' + code], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [True, True]  # the plugin follows basicsr
    # switched off: the plugin stays out (and basicsr 1.4.2 then fails on this torchvision without the alias)
    disabled = 'import json, sys\ntry:\n    import basicsr\nexcept ImportError:\n    pass\n' + code
    proc = run_python(['-c', disabled], tmp_path, env={'DEFOCUSGAN_PLUGIN_DISABLE': '1'})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[1] is False


def test_basicsr_train_entry_sees_plugin(tmp_path, synthetic_root):
    """BasicSR's unmodified ``basicsr/train.py`` trains 2 iterations with the plugin's dataset (a copy of the file
    laid out like a source checkout, so that it roots at tmp_path, not site-packages)."""
    name = 'pytest_hook'
    opt = tiny_options('train_srmodel_single_synthetic.yml', tmp_path, synthetic_root,
                       dict(FAST, name=name, **{'datasets:train:gt_size': 32}))
    checkout = basicsr_checkout(tmp_path)
    proc = run_python([str(checkout / 'basicsr' / 'train.py'), '-opt', str(opt)], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'DPDDDataset' in proc.stdout + proc.stderr
    assert (checkout / 'experiments' / name / 'models' / 'net_g_latest.pth').is_file()
