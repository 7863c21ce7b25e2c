#!/usr/bin/env bash
# Ships the trained medvae ladder as medvae/weights/medvae-q<Q>.pt (fp16) with index entries
# that record how each was trained. Run after benchmarks/train_shipped.sh (same BASE and BASE2).
# A quality whose checkpoint is not on this machine keeps its shipped file and index entry.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE:-training-state/medvae-l0.3-step52000.pt}
BASE2=${BASE2:-training-state/base2-l1.2/last.pt}
DEFAULT=5
TRAIN="python train.py --config configs/corpus-cpu-medvae.yaml"
RUN="train.val_interval=500 train.checkpoint_interval=500"
FT="$TRAIN loss.lmbda=@L@ optim.lr=1e-4 optim.milestones=[0.8] train.iterations=2500 $RUN train.out_dir=runs/shipped/medvae-l@L@"
BASE_STEP=${BASE##*-step}; BASE_STEP=${BASE_STEP%.pt}
BASE_NOTE="the lambda=0.3 base ($BASE: the base run's weights after $BASE_STEP steps from scratch on 2 CPU cores)"
BASE2_NOTE="the lambda=1.2 continuation ($BASE2: the lambda=0.3 base run's last weights, 60,000 steps from scratch in about 4.2 h on 2 CPU cores, then 30,000 steps at lambda=1.2 in about 3.9 h on 1-2 threads)"
FT_BUDGET="fine-tuned 2,500 steps (1 CPU thread, 15-30 min) from"

export_one() {  # quality, checkpoint, command, budget
  if [ ! -f "$2" ]; then
    echo "q$1: $2 is not here; keeping the shipped medvae-q$1.pt"; return 0
  fi
  local default=(); if [ "$1" = "$DEFAULT" ]; then default=(--default); fi
  python tools/export_weights.py "$2" --quality "$1" --note "command=$3" --note "budget=$4" "${default[@]}"
}

q=1
for lmbda in 0.003 0.01 0.03; do
  export_one $q "runs/shipped/medvae-l$lmbda/best.pt" "${FT//@L@/$lmbda} train.init_from=$BASE" "$FT_BUDGET $BASE_NOTE"
  q=$((q + 1))
done
for lmbda in 0.1 0.3; do
  export_one $q "runs/shipped/medvae-l$lmbda/best.pt" "${FT//@L@/$lmbda} train.init_from=$BASE2" "$FT_BUDGET $BASE2_NOTE"
  q=$((q + 1))
done
export_one 6 "$BASE2" \
  "$TRAIN loss.lmbda=1.2 optim.lr=2e-4 optim.milestones=[0.8] train.iterations=30000 train.init_from=training-state/corpus-cpu-medvae-l0.3/last.pt train.out_dir=training-state/base2-l1.2" \
  "$BASE2_NOTE, as it is"
export_one 7 runs/shipped/medvae-M256-l20/best.pt \
  "$TRAIN model.M=256 loss.lmbda=20 optim.lr=1e-4 optim.milestones=[0.8] train.iterations=4000 $RUN train.init_from=$BASE2 train.out_dir=runs/shipped/medvae-M256-l20" \
  "$BASE2_NOTE, its latent widened from M=96 to M=256, fine-tuned 4,000 steps (1 CPU thread, about 1 h)"
ls -la medvae/weights/
