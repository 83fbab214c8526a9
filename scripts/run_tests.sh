#!/usr/bin/env bash
# Sets up the environment if needed, then runs the whole test suite (CPU only, a few minutes).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1091
. scripts/setup_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
exec python -m pytest -q tests "$@"
