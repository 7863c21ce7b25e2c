#!/usr/bin/env bash
# Variable rate against separate models at an equal training budget (issue 18), on two λ.
#
# Every run starts from the shipped medvae q5 (λ 0.3) weights and uses the medvae-vr recipe
# (configs/corpus-cpu-medvae-vr.yaml: corpus CT+MR train split, 128² crops, batch 8, Adam
# 1e-4, bf16 autocast):
#   separate   medvae at λ 0.03 and at λ 1.2, $STEPS steps each;
#   variable   medvae-vr with exactly those two levels, 2·$STEPS steps (each sample draws a
#              level, so each λ sees as many samples as its separate model did);
#   vbr        medvae-vbr (its hyperprior reads the latent before the gain), the same way.
# AMP=0 trains in float32: bf16 autocast is 1.9x faster only on CPUs with AVX-512-BF16, and
# many times slower on those without (AVX2 alone, measured: 9–15 s a step against 0.4 s in float32).
# benchmarks/equal_budget.py then compares them on the corpus CT and MR test slices.
# Arguments are train.py overrides for every run (e.g. train.seed=1).
# Re-running resumes unfinished runs and skips finished ones (benchmarks/run_training.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-2000}
ROOT=${ROOT:-runs/equal-budget}
AMP=${AMP:-1}
COMMON=(--config configs/corpus-cpu-medvae-vr.yaml train.val_interval=1000 train.image_interval=100000)
[ "$AMP" = 1 ] && COMMON+=(--amp)
COMMON+=("$@")

source benchmarks/run_training.sh

for lmbda in 0.03 1.2; do
  run "$ROOT/medvae-l$lmbda" "${COMMON[@]}" model.name=medvae loss.lmbda="$lmbda" train.iterations="$STEPS"
done
for family in medvae-vbr medvae-vr; do
  run "$ROOT/$family" "${COMMON[@]}" model.name=$family "model.lmbdas=[0.03,1.2]" loss.lmbda=1.2 train.iterations=$((2 * STEPS))
done
