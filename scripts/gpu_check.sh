#!/usr/bin/env bash
# One prepared GPU check (scripts/gpu_check.py): generator inference, training of every recipe with and without AMP,
# the joint DP optimiser and a 1-process nccl DDP run; writes <out>/gpu_check.json and <out>/gpu_check.md.
#
#   scripts/gpu_check.sh [--out DIR]       # on a GPU host: under 8 minutes on one GPU, nothing downloaded
#   scripts/gpu_check.sh --dry-run         # on the CPU, tiny sizes (what the tests run)
#
# The Python used: $PYTHON, else the repository's .venv/bin/python, else python3 (it needs torch, basicsr and this
# plugin; the repository is put first on PYTHONPATH so that an uninstalled checkout works too).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${PYTHON:-}" ]]; then
  py="$PYTHON"
elif [[ -x "$root/.venv/bin/python" ]]; then
  py="$root/.venv/bin/python"
else
  py="$(command -v python3 || command -v python)"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "$py" "$root/scripts/gpu_check.py" "$@"
