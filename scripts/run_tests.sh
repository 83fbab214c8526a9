#!/usr/bin/env bash
# Sets up the environment if needed, lints (flake8, isort, yapf with setup.cfg's settings), then runs the whole test
# suite (CPU only, a few minutes). Arguments go to pytest; LINT=0 skips the linters.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1091
. scripts/setup_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
if [ "${LINT:-1}" != 0 ]; then
  paths=(defocusgan_plugin scripts tests setup.py)
  echo "[lint] flake8, isort, yapf"
  python -m flake8 "${paths[@]}"
  python -m isort --check-only --diff "${paths[@]}"
  python -m yapf --diff --recursive --parallel "${paths[@]}"
fi
exec python -m pytest -q tests "$@"
