#!/usr/bin/env bash
# Creates (once) the virtual environment .venv with the pinned torch pair, basicsr and this plugin (editable).
# Idempotent: a second call only checks that everything imports. Source it to activate: `. scripts/setup_env.sh`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
if python -c "import defocusgan_plugin, basicsr, skimage, lpips, pytest, flake8, isort, yapf, matplotlib" 2>/dev/null; then
  echo "[setup] environment ready ($VENV)"
else
  echo "[setup] installing torch, basicsr and the plugin (a few minutes the first time)"
  python -m pip install -q --upgrade pip
  # The one torch/torchvision pair that installs on the project's machines (see README, Installation).
  python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  # basicsr builds from source; without isolation its build uses the torch above instead of fetching another.
  python -m pip install -q --no-build-isolation "basicsr==1.4.2"
  python -m pip install -q --no-build-isolation -e ".[test]"
  python -c "import defocusgan_plugin, basicsr" && echo "[setup] done"
fi
