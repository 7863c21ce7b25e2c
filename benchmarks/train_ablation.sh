#!/usr/bin/env bash
# The equal-budget ablation (issue 6): bls2017, balle2018, bls-residual and medvae trained
# with the same data, crops, batch, optimizer and iterations, 1 CPU thread each run.
#
# Recipe, identical for every family (configs/corpus-cpu-<family>.yaml: N=64, M=96,
# 128² crops of the corpus train split, batch 8, Adam 5e-4):
#   base   λ = 0.3 from scratch, $STEPS steps (lr drops x0.1 at 85% and 95%);
#   then   λ = 0.08 and λ = 1.2, each fine-tuned from the base's last.pt for $FT_STEPS
#          steps at lr $FT_LR (x0.1 for the last 20%).
# Re-running resumes unfinished runs and skips finished ones (benchmarks/run_training.sh); raise STEPS / FT_STEPS (with
# fresh out dirs) for a larger budget.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
STEPS=${STEPS:-3000}
FT_STEPS=${FT_STEPS:-700}
FT_LR=${FT_LR:-5e-4}  # at 1e-4, 700 steps hardly move a model along its R-D curve
FAMILIES=${FAMILIES:-"bls2017 balle2018 bls-residual medvae"}
ROOT=${ROOT:-runs/ablation}

source benchmarks/run_training.sh

for family in $FAMILIES; do
  echo "== $family base: lambda 0.3, $STEPS steps"
  run "$ROOT/$family-l0.3" --config "configs/corpus-cpu-$family.yaml" train.iterations="$STEPS"
done
for family in $FAMILIES; do
  for lmbda in 0.08 1.2; do
    echo "== $family: lambda $lmbda fine-tuned from the base, $FT_STEPS steps"
    run "$ROOT/$family-l$lmbda" --config "configs/corpus-cpu-$family.yaml" \
        loss.lmbda="$lmbda" optim.lr="$FT_LR" "optim.milestones=[0.8]" \
        train.iterations="$FT_STEPS" train.val_interval=500 train.checkpoint_interval=500 \
        train.init_from="$ROOT/$family-l0.3/last.pt"
  done
done
