"""defocusgan_plugin: dual-pixel defocus deblurring for BasicSR.

Importing the package registers its archs, losses, models, datasets and metrics into BasicSR's registries. The
torchvision compatibility alias is installed first, because basicsr 1.4.2 imports a torchvision module that newer
torchvision releases no longer have.
"""
from ._startup import install_torchvision_alias

install_torchvision_alias()

import basicsr  # noqa: E402,F401  (registers BasicSR's own names first; ours must not clash with them)

from . import archs, data, losses, metrics, models, ops  # noqa: E402,F401
from .utils.dist_util import patch_basicsr_init_dist  # noqa: E402
from .version import __version__  # noqa: E402,F401

patch_basicsr_init_dist()  # BasicSR's train.py under torchrun then works on CPU (gloo) as well as GPU
