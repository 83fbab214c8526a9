"""Test entry point with BasicSR's flags, rooted at the current working directory.

    python -m defocusgan_plugin.test -opt options/test/test_defocusgan.yml

It runs BasicSR's own test pipeline with the plugin's option parsing: ``results/`` is created under the working
directory (an existing folder is renamed with a timestamp, never deleted), option files are checked first (unknown
types, missing files), ``--local-rank`` is accepted and ``--launcher pytorch`` works on CPU (gloo).
"""
import os
import sys

from defocusgan_plugin._startup import install_torchvision_alias

install_torchvision_alias()

import basicsr.test as basicsr_test  # noqa: E402
import defocusgan_plugin  # noqa: E402,F401  (registers the plugin)

from defocusgan_plugin.utils.options import parse_options, patched  # noqa: E402


def test_pipeline(root_path, argv=None):
    with patched(basicsr_test, 'parse_options', lambda root, is_train: parse_options(root, is_train, argv)):
        basicsr_test.test_pipeline(root_path)


def main(argv=None):
    test_pipeline(os.getcwd(), argv)


if __name__ == '__main__':
    sys.exit(main())
