#!/usr/bin/env bash
# Trains the shipped `medvae` weights (issue 6) on the corpus, 1 CPU thread per run.
#
# 1. Base run, λ = 0.3 from scratch (configs/corpus-cpu-medvae.yaml: N=64, M=96, 128² crops,
#    batch 8, Adam 5e-4, ×0.1 at 85 % and 95 % of 60,000 steps), resumable from its committed
#    state:
#      python train.py --config configs/corpus-cpu-medvae.yaml \
#          train.out_dir=training-state/corpus-cpu-medvae-l0.3 --resume
#    Its step-52,000 weights (lowest validation loss) are kept (model only) as $BASE.
# 2. The base's last weights continued at λ = 1.2 for 30,000 steps (lr 2e-4, ×0.1 at 80 %),
#    resumable from its committed state:
#      python train.py --config configs/corpus-cpu-medvae.yaml loss.lmbda=1.2 optim.lr=2e-4 \
#          "optim.milestones=[0.8]" train.iterations=30000 \
#          train.init_from=training-state/corpus-cpu-medvae-l0.3/last.pt \
#          train.out_dir=training-state/base2-l1.2
#    Its last weights ($BASE2) are q6 as they are.
# 3. The rest of the ladder (this script): each λ fine-tuned for $STEPS steps at lr 1e-4 (1e-5
#    for the last 20 %), validated on the val split every 500 steps, into
#    runs/shipped/medvae-l<λ>. The low rates (q1–q3) start from $BASE, the high rates (q4, q5)
#    from $BASE2, whose longer training codes high rates better; the low rates were trained
#    before $BASE2 existed and are close to JPEG 2000 already. Quality numbers follow λ.
# 4. The top quality: $BASE2 with its latent widened from M=96 to M=256 (train.init_from with
#    a larger model.M), fine-tuned at λ = 20 for $TOP_STEPS steps. At M=96 a higher λ bought
#    bytes but hardly any PSNR.
# 5. Export the ladder:  benchmarks/export_shipped.sh
# Two runs go at once (one per core); re-running the script resumes unfinished runs and skips
# finished ones.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p logs
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
BASE=${BASE:-training-state/medvae-l0.3-step52000.pt}
BASE2=${BASE2:-training-state/base2-l1.2/last.pt}
STEPS=${STEPS:-2500}
TOP_STEPS=${TOP_STEPS:-4000}
LOW_LAMBDAS=${LOW_LAMBDAS:-"0.003 0.01 0.03"}
HIGH_LAMBDAS=${HIGH_LAMBDAS:-"0.1 0.3"}

source benchmarks/run_training.sh
CONFIG=(--config configs/corpus-cpu-medvae.yaml train.val_interval=500 train.checkpoint_interval=500)

ladder() {  # base λ ...
  local base=$1; shift
  for lmbda in "$@"; do
    run "runs/shipped/medvae-l$lmbda" "${CONFIG[@]}" loss.lmbda="$lmbda" optim.lr=1e-4 "optim.milestones=[0.8]" \
        train.iterations="$STEPS" train.init_from="$base"
  done
}

# shellcheck disable=SC2086  # λ lists split on spaces
ladder "$BASE" $LOW_LAMBDAS > logs/shipped-low.log 2>&1 &
low=$!
# shellcheck disable=SC2086
ladder "$BASE2" $HIGH_LAMBDAS > logs/shipped-high.log 2>&1
run runs/shipped/medvae-M256-l20 "${CONFIG[@]}" model.M=256 loss.lmbda=20 optim.lr=1e-4 "optim.milestones=[0.8]" \
    train.iterations="$TOP_STEPS" train.init_from="$BASE2" > logs/shipped-top.log 2>&1
wait $low
