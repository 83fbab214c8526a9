"""Imports every `*_dataset.py` module of this folder so that its classes register themselves (BasicSR's pattern)."""
from defocusgan_plugin.utils.registry_util import import_modules_by_suffix

__all__ = import_modules_by_suffix(__name__, __file__, '_dataset.py')
