#!/usr/bin/env bash
# Ships the trained medvae ladder as medvae/weights/medvae-q<Q>.pt (fp16) with index entries
# that record how each was trained. Run after benchmarks/train_shipped.sh (same BASE; BASE_NOTE
# describes another base in the recorded budget).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE:-training-state/medvae-l0.3-step52000.pt}
LAMBDAS="0.003 0.01 0.03 0.1 0.3 1.2"
DEFAULT=0.3
TRAIN="python train.py --config configs/corpus-cpu-medvae.yaml"
RUN="train.val_interval=500 train.checkpoint_interval=500"
FT="$TRAIN loss.lmbda=@L@ optim.lr=1e-4 optim.milestones=[0.8] train.iterations=2500 $RUN train.init_from=$BASE train.out_dir=runs/shipped/medvae-l@L@"
TOP="$TRAIN model.M=256 loss.lmbda=20 optim.lr=1e-4 optim.milestones=[0.8] train.iterations=4000 $RUN train.init_from=runs/shipped/medvae-l1.2/best.pt train.out_dir=runs/shipped/medvae-M256-l20"
BASE_STEP=${BASE##*-step}; BASE_STEP=${BASE_STEP%.pt}
BASE_NOTE=${BASE_NOTE:-"the lambda=0.3 base ($BASE: the base run's weights after $BASE_STEP steps from scratch on 2 CPU cores)"}
BUDGET="fine-tuned 2,500 steps (1 CPU thread, about 15 min) from $BASE_NOTE"

export_one() {  # quality, checkpoint, command, budget [--default]
  python -m medvae.zoo "$2" --quality "$1" --note "command=$3" --note "budget=$4" "${@:5}"
}
rm -f medvae/weights/medvae-q*.pt medvae/weights/index.json
q=1
for lmbda in $LAMBDAS; do
  default=(); if [ "$lmbda" = "$DEFAULT" ]; then default=(--default); fi
  export_one $q "runs/shipped/medvae-l$lmbda/best.pt" "${FT//@L@/$lmbda}" "$BUDGET" "${default[@]}"
  q=$((q + 1))
done
export_one $q runs/shipped/medvae-M256-l20/best.pt "$TOP" \
  "the lambda=1.2 model (above) with its latent widened from M=96 to M=256, fine-tuned 4,000 steps (1 CPU thread, about 25 min)"
ls -la medvae/weights/
