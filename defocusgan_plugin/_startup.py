"""Start-up hooks: the torchvision compatibility alias and "import the plugin right after basicsr".

Loaded by path at every interpreter start through ``defocusgan_plugin-hook.pth`` (see setup.py), so it imports only
the standard library and does nothing until ``basicsr`` is imported. Set ``DEFOCUSGAN_PLUGIN_DISABLE=1`` to switch
the basicsr hook off. How and why it works: docs/startup_hook.md.
"""
import importlib
import importlib.machinery
import os
import sys
import warnings

ALIAS_NAME = 'torchvision.transforms.functional_tensor'
ALIAS_TARGET = 'torchvision.transforms.functional'
PLUGIN_NAME = 'defocusgan_plugin'
DISABLE_ENV = 'DEFOCUSGAN_PLUGIN_DISABLE'
# Finders and loaders are duck-typed on purpose: importing importlib.abc would pull in importlib.resources and pathlib
# at every interpreter start.
# Marker attribute: this file can be loaded twice (by path from the .pth and as defocusgan_plugin._startup), so
# installed finders are recognised by this attribute rather than by class identity.
_MARK = '_defocusgan_plugin_finder'


class _AliasLoader:
    """Creates the alias module as a view of ``torchvision.transforms.functional``."""

    def create_module(self, spec):
        return None  # default module creation

    def exec_module(self, module):
        target = importlib.import_module(ALIAS_TARGET)
        module.__dict__.update({k: v for k, v in vars(target).items() if not k.startswith('__')})
        module.__doc__ = f'Compatibility alias of {ALIAS_TARGET} installed by {PLUGIN_NAME}.'


class _TorchvisionAliasFinder:
    """Last-resort finder: answers only for the removed torchvision module."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != ALIAS_NAME:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader())


class _PostImportLoader:
    """Delegates to basicsr's own loader, then imports the plugin."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):  # get_resource_reader, is_package, ... of the real loader
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        module.__loader__ = module.__spec__.loader = self._loader
        if PLUGIN_NAME in sys.modules:  # basicsr was imported by the plugin itself
            return
        try:
            importlib.import_module(PLUGIN_NAME)
        except Exception as err:  # a broken plugin must not take basicsr down with it
            warnings.warn(f'{PLUGIN_NAME} could not be imported after basicsr ({type(err).__name__}: {err}); its '
                          f'archs, models and datasets are not registered. Set {DISABLE_ENV}=1 to silence this.')


class _BasicsrImportHook:
    """First finder on ``sys.meta_path``; acts once, for the top-level ``basicsr`` package only."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != 'basicsr':
            return None
        _remove_finders('basicsr')  # one-shot: later imports of basicsr hit sys.modules anyway
        for finder in sys.meta_path:
            find = getattr(finder, 'find_spec', None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, 'exec_module'):
            install_torchvision_alias()
            spec.loader = _PostImportLoader(spec.loader)
        return spec


def _installed(kind):
    return any(getattr(f, _MARK, None) == kind for f in sys.meta_path)


def _remove_finders(kind):
    sys.meta_path[:] = [f for f in sys.meta_path if getattr(f, _MARK, None) != kind]


def install_torchvision_alias():
    """Makes ``torchvision.transforms.functional_tensor`` importable if (and only if) torchvision lacks it.

    Nothing is imported here; the alias is created lazily when something imports the missing module.
    """
    if not _installed('alias'):
        finder = _TorchvisionAliasFinder()
        setattr(finder, _MARK, 'alias')
        sys.meta_path.append(finder)


def install_basicsr_hook():
    """Arranges for ``defocusgan_plugin`` to be imported right after ``basicsr`` (no-op if basicsr is loaded)."""
    if os.environ.get(DISABLE_ENV) or 'basicsr' in sys.modules or _installed('basicsr'):
        return
    finder = _BasicsrImportHook()
    setattr(finder, _MARK, 'basicsr')
    sys.meta_path.insert(0, finder)


def install():
    """Entry called from the .pth file at interpreter start: only the basicsr hook, which does nothing until
    basicsr is imported (the torchvision alias is installed then)."""
    install_basicsr_hook()
