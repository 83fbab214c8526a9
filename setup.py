"""Installs defocusgan_plugin and its start-up hook (a .pth file that imports the plugin right after basicsr).

The .pth file is added to regular wheels by ``build_py`` and to editable wheels (``pip install -e .``) by the
editable strategy: setuptools installs neither ``data_files`` nor extra ``build_lib`` files in editable mode.
"""
from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

import os

try:
    from setuptools.command.editable_wheel import editable_wheel
except ImportError:  # setuptools < 64 has no PEP 660 editable wheels
    editable_wheel = None

HOOK_PTH = 'defocusgan_plugin-hook.pth'
# Runs at every interpreter start: find the package without importing it (its __init__ imports torch), load
# _startup.py by path and install the import hook, which itself does nothing until basicsr is imported.
_HOOK_SRC = '''\
try:
    import importlib.util, os
    if not os.environ.get('DEFOCUSGAN_PLUGIN_DISABLE'):
        _s = importlib.util.find_spec('defocusgan_plugin')
        if _s is not None and _s.submodule_search_locations:
            _p = os.path.join(list(_s.submodule_search_locations)[0], '_startup.py')
            _m = importlib.util.module_from_spec(importlib.util.spec_from_file_location('_defocusgan_startup', _p))
            _m.__spec__.loader.exec_module(_m)
            _m.install()
except Exception as _e:
    sys.stderr.write(f'defocusgan_plugin start-up hook skipped: {_e}\\n')
'''
HOOK_LINE = f'import sys; exec({_HOOK_SRC!r})\n'


class BuildPyWithHook(build_py):
    """Regular builds: put the .pth file at the root of the wheel (it lands in site-packages)."""

    def run(self):
        super().run()
        with open(os.path.join(self.build_lib, HOOK_PTH), 'w') as f:
            f.write(HOOK_LINE)

    def get_outputs(self, include_bytecode=1):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, HOOK_PTH)]


cmdclass = {'build_py': BuildPyWithHook}

if editable_wheel is not None:

    class _StrategyWithHook:
        """Wraps setuptools' editable strategy and writes the .pth file into the editable wheel."""

        def __init__(self, strategy):
            self.strategy = strategy

        def __enter__(self):
            self.strategy.__enter__()
            return self

        def __exit__(self, *exc):
            return self.strategy.__exit__(*exc)

        def __call__(self, wheel, files, mapping):
            self.strategy(wheel, files, mapping)
            wheel.writestr(HOOK_PTH, HOOK_LINE)

    class EditableWheelWithHook(editable_wheel):

        def _select_strategy(self, *args, **kwargs):
            return _StrategyWithHook(super()._select_strategy(*args, **kwargs))

    cmdclass['editable_wheel'] = EditableWheelWithHook


def get_version():
    with open(os.path.join('defocusgan_plugin', 'version.py')) as f:
        namespace = {}
        exec(f.read(), namespace)
    return namespace['__version__']


setup(
    name='defocusgan_plugin',
    version=get_version(),
    description='Dual-pixel defocus deblurring for BasicSR: DefocusGAN, learnable-kernel defocus maps, MCCNet, '
    'joint DP optimisation, DPDD and synthetic DP data.',
    long_description=open('README.md').read() if os.path.exists('README.md') else '',
    long_description_content_type='text/markdown',
    python_requires='>=3.8',
    packages=find_packages(include=['defocusgan_plugin', 'defocusgan_plugin.*']),
    install_requires=[
        'basicsr>=1.4.2', 'torch', 'torchvision', 'lpips', 'pyyaml', 'opencv-python', 'scikit-image', 'scipy', 'numpy',
        'tqdm'
    ],
    # test: the suite, its linters (scripts/run_tests.sh) and the plots of the comparison scripts
    extras_require={'test': ['pytest', 'flake8==7.5.0', 'isort==9.0.2', 'yapf==0.43.0', 'matplotlib']},
    entry_points={
        'console_scripts': [
            'defocusgan-train=defocusgan_plugin.train:main',
            'defocusgan-test=defocusgan_plugin.test:main',
            'defocusgan-deblur=defocusgan_plugin.deblur:main',
            'defocusgan-dp=defocusgan_plugin.dp_cli:main',
        ]
    },
    cmdclass=cmdclass,
    zip_safe=False,
)
