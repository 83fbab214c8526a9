"""Registration helpers shared by the plugin's subpackages."""
import difflib
import importlib
from basicsr.utils import scandir
from os import path as osp


def import_modules_by_suffix(package, package_file, suffix):
    """Imports all modules of a package folder whose file name ends with ``suffix`` (e.g. ``_arch.py``).

    Args:
        package (str): Dotted package name (``__name__`` of the package ``__init__``).
        package_file (str): ``__file__`` of the package ``__init__``.
        suffix (str): File-name suffix to import.

    Returns:
        list[str]: The imported module names, sorted (stable registration order).
    """
    folder = osp.dirname(osp.abspath(package_file))
    names = sorted(osp.splitext(v)[0] for v in scandir(folder) if v.endswith(suffix))
    for name in names:
        importlib.import_module(f'{package}.{name}')
    return names


def close_names_hint(name, candidates, n=5):
    """`` Did you mean: a, b?`` for the candidates closest to a misspelt ``name`` (empty when none is close)."""
    close = difflib.get_close_matches(str(name), list(candidates), n=n, cutoff=0.5)
    return f' Did you mean: {", ".join(close)}?' if close else ''


def unknown_type_message(kind, name, registry):
    """Builds the error text for an unknown ``type`` in an option block, listing the closest registered names.

    Args:
        kind (str): Option block kind shown to the user (e.g. ``network_g``).
        name (str): The unknown type name.
        registry (basicsr.utils.registry.Registry): Registry searched.

    Returns:
        str: Message naming the option, the bad value and close matches.
    """
    hint = close_names_hint(name, registry.keys())
    return f"{kind}: type '{name}' is not registered in BasicSR's {registry._name} registry.{hint}"
