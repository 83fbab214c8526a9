#!/usr/bin/env bash
# End-to-end demo on the embedded synthetic DP set, CPU only (about 15 minutes on 2 cores after installation):
#   1. sets up .venv (first run only) and writes the synthetic set to datasets/synthetic_dpdd (DPDD layout, 16-bit);
#   2. stage 1: trains DefocusMapNet + LearnableBlurKernel (unsupervised reblur loss), tests the maps, deconvolves
#      (the paper's per-pixel Wiener baseline, and our occlusion-aware deconvolution);
#   3. stage 2: trains DefocusGAN (map guidance annealed away; VGG19 weights are not needed: pretrained: false);
#   4. trains MCCNet on the DP views; runs the joint DP optimiser (no training) on the test images;
#   5. runs the joint optimiser's fast preset on a fake raw Pixel-4-layout set;
#   6. prints one table of test metrics (and the blurred input's) and writes it to demo_output/metrics.{md,json}.
# Every step runs a plugin entry point exactly as a user would (python -m defocusgan_plugin.train / .test); the logs
# are in demo_output/logs, the images in results/<name>/visualization. DEMO_FAST=1 trains for a few iterations only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1091
. scripts/setup_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
DATA=datasets/synthetic_dpdd
LOGS=demo_output/logs
mkdir -p "$LOGS"

if [ ! -f "$DATA/.complete" ]; then
  python scripts/make_synthetic_dpdd.py --out "$DATA"
  touch "$DATA/.complete"
fi

FORCE=()
if [ "${DEMO_FAST:-0}" = 1 ]; then  # smoke run: every stage, a handful of iterations
  FORCE=(--force_yml train:total_iter=4 val:val_freq=4 logger:save_checkpoint_freq=4 logger:print_freq=2)
fi

step() {  # step <train|test> <option file stem> [extra flags]: runs one entry point, log kept in $LOGS
  local kind=$1 name=$2
  shift 2
  echo "[demo] $kind $name"
  local start=$SECONDS
  if ! python -m "defocusgan_plugin.$kind" -opt "options/$kind/$name.yml" "$@" >"$LOGS/$name.log" 2>&1; then
    tail -n 30 "$LOGS/$name.log"
    echo "[demo] $kind $name failed; full log: $LOGS/$name.log" >&2
    exit 1
  fi
  echo "[demo]   done in $((SECONDS - start)) s"
}

# Training runs overwrite nothing: BasicSR renames an existing experiments/<name> folder with a timestamp.
step train train_defocus_map_synthetic "${FORCE[@]}"
step test test_defocus_map_synthetic
step test test_defocus_deconv_synthetic
step test test_defocus_deconv_occlusion_synthetic
step train train_defocusgan_synthetic "${FORCE[@]}"
step test test_defocusgan_synthetic
step train train_mccnet_synthetic "${FORCE[@]}"
step test test_mccnet_synthetic
if [ "${DEMO_FAST:-0}" = 1 ]; then
  step test test_dp_joint_synthetic --force_yml "dp_joint:solver:levels=[{'scale': 0.5, 'iters': 5}]"
else
  step test test_dp_joint_synthetic
fi

# The joint optimiser's fast preset on raw DP captures in the Pixel-4 release layout: a fake set at 1/6 scale (the
# same scenes and 6x8 calibration as full size, kernels ~2.6 px), preprocessed as the release (black level,
# vignetting, centre crop, joint max).
PIXEL4=datasets/pixel4_demo
if [ ! -f "$PIXEL4/.complete" ]; then
  python scripts/make_fake_pixel4.py --out "$PIXEL4" --scenes 2 --crop 168 224 >/dev/null
  touch "$PIXEL4/.complete"
fi
step test test_dp_joint_pixel4 --force_yml "datasets:test_1:dataroot=$PIXEL4" "datasets:test_1:crop=[168, 224]" \
  "dp_joint:kernels:left=$PIXEL4/calibration/blur_kernels_left.npy" \
  "dp_joint:kernels:right=$PIXEL4/calibration/blur_kernels_right.npy" \
  "dp_joint:kernels:frame_size=[168, 224]" dp_joint:solver:max_radius=4.9

python scripts/demo_summary.py --data "$DATA" --out demo_output \
  test_defocus_map_synthetic test_defocus_deconv_synthetic test_defocus_deconv_occlusion_synthetic \
  test_defocusgan_synthetic test_mccnet_synthetic \
  test_dp_joint_synthetic
echo "[demo] joint DP optimisation, fast preset, on the fake Pixel-4-layout set ($PIXEL4; log $LOGS/test_dp_joint_pixel4.log):"
grep -E '# (input_)?(psnr|aiwe1):' "$LOGS/test_dp_joint_pixel4.log" | sed -E 's/^[[:space:]]+//; s/\t.*//'
