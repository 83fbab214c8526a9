"""Test entry point with BasicSR's flags, rooted at the current working directory.

    python -m defocusgan_plugin.test -opt options/test/test_defocusgan.yml

It runs BasicSR's own test pipeline with the plugin's option parsing: ``results/`` is created under the working
directory (an existing folder is renamed with a timestamp, never deleted), option files are checked first (unknown
types, missing files), ``--local-rank`` is accepted and ``--launcher pytorch`` works on CPU (gloo).
"""
import basicsr.test as basicsr_test
import os
import sys

# Running this module imported the defocusgan_plugin package first (torchvision alias, registrations).
from defocusgan_plugin.utils.options import parse_options, patched


def test_pipeline(root_path, argv=None):
    with patched(basicsr_test, 'parse_options', lambda root, is_train: parse_options(root, is_train, argv)):
        basicsr_test.test_pipeline(root_path)


def main(argv=None):
    test_pipeline(os.getcwd(), argv)


if __name__ == '__main__':
    sys.exit(main())
