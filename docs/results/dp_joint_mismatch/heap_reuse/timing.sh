#!/bin/bash
# Interleaved A/B timing (a record of the command that made timing.txt; /tmp/oldtree = git worktree of the commit before) of the fast preset on the mismatched fake Pixel-4 scene 001 (1008x1344, layers 0-24 px):
# A = HEAD before this change (/tmp/oldtree), B = the working tree. Nothing else may run.
cd /work/main && source .venv/bin/activate
OUT=/tmp/prof/timing; mkdir -p $OUT
for rep in 1 2; do
  for side in old new; do
    if [ $side = old ]; then PP=/tmp/oldtree; S=/tmp/oldtree/scripts/benchmark_dp_joint.py; else PP=/work/main; S=scripts/benchmark_dp_joint.py; fi
    PYTHONPATH=$PP python $S pixel4 --fake 1008 1344 --scenes 3 --images 1 --presets fast --threads 2 \
      --out $OUT/${side}_$rep > $OUT/${side}_$rep.log 2>&1
    echo "$side $rep $(grep '^| fast | 001' $OUT/${side}_$rep.log)"
  done
done
