#!/usr/bin/env bash
# Trains the shipped `medvae` weights (issue 6) on the corpus, 1 CPU thread per run.
#
# 1. Base run, λ = 0.3 from scratch (configs/corpus-cpu-medvae.yaml: N=64, M=96, 128² crops,
#    batch 8, Adam 5e-4, ×0.1 at 85 % and 95 % of 60,000 steps), resumable from its committed
#    state:
#      python train.py --config configs/corpus-cpu-medvae.yaml \
#          train.out_dir=training-state/corpus-cpu-medvae-l0.3 --resume
#    The shipped ladder was fine-tuned from its step-52,000 weights (lowest validation loss),
#    kept (model only) as training-state/medvae-l0.3-step52000.pt.
# 2. The quality ladder (this script): each λ fine-tuned from the base for $STEPS steps at
#    lr 1e-4 (1e-5 for the last 20 %), validated on the val split every 500 steps, into
#    runs/shipped/medvae-l<λ>. Quality numbers follow λ (q1 = lowest rate).
# 3. The top quality: the λ = 1.2 model with its latent widened from M=96 to M=256
#    (train.init_from with a larger model.M), fine-tuned at λ = 20 for $TOP_STEPS steps.
#    At M=96 a higher λ bought bytes but hardly any PSNR.
# 4. Export the ladder:  benchmarks/export_shipped.sh
# Two runs go at once (one per core); re-running the script resumes unfinished runs and skips
# finished ones.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p logs
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
BASE=${BASE:-training-state/medvae-l0.3-step52000.pt}
STEPS=${STEPS:-2500}
TOP_STEPS=${TOP_STEPS:-4000}
LAMBDAS=${LAMBDAS:-"0.003 1.2 0.01 0.3 0.03 0.1"}   # λ = 1.2 early: the top quality starts from it

source benchmarks/run_training.sh
CONFIG=(--config configs/corpus-cpu-medvae.yaml train.val_interval=500 train.checkpoint_interval=500)

ladder() {  # λ ...
  for lmbda in "$@"; do
    run "runs/shipped/medvae-l$lmbda" "${CONFIG[@]}" loss.lmbda="$lmbda" optim.lr=1e-4 "optim.milestones=[0.8]" \
        train.iterations="$STEPS" train.init_from="$BASE"
  done
}

set -- $LAMBDAS
half=$(( ($# + 1) / 2 ))
ladder "${@:1:$half}" > logs/shipped-a.log 2>&1 &
first=$!
ladder "${@:$((half + 1))}" > logs/shipped-b.log 2>&1 &
second=$!
wait $first
run runs/shipped/medvae-M256-l20 "${CONFIG[@]}" model.M=256 loss.lmbda=20 optim.lr=1e-4 "optim.milestones=[0.8]" \
    train.iterations="$TOP_STEPS" train.init_from=runs/shipped/medvae-l1.2/best.pt > logs/shipped-top.log 2>&1
wait $second
