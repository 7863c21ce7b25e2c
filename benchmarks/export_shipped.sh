#!/usr/bin/env bash
# Ships the trained medvae ladder as medvae/weights/medvae-q<Q>.pt (fp16) with index entries
# that record how each was trained. Run after benchmarks/train_shipped.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
FT="python train.py --config configs/corpus-cpu-medvae.yaml loss.lmbda=@L@ optim.lr=1e-4 optim.milestones=[0.8] train.iterations=2500 train.val_interval=500 train.checkpoint_interval=500 train.init_from=training-state/medvae-l0.3-step32000.pt train.out_dir=runs/shipped/medvae-l@L@"
TOP="python train.py --config configs/corpus-cpu-medvae.yaml loss.lmbda=20 optim.lr=5e-4 optim.milestones=[0.8] train.iterations=2500 train.val_interval=500 train.checkpoint_interval=500 train.init_from=runs/shipped/medvae-l5/best.pt train.out_dir=runs/shipped/medvae-l20"
BUDGET="fine-tuned 2,500 steps (1 CPU thread, ~15 min) from the lambda=0.3 base (32,000 steps from scratch, 2 CPU cores, ~2.2 h)"

export_one() {  # quality, checkpoint, command, budget [--default]
  python -m medvae.zoo "$2" --quality "$1" --note "command=$3" --note "budget=$4" "${@:5}"
}
rm -f medvae/weights/medvae-q*.pt medvae/weights/index.json
q=1
for lmbda in 0.003 0.02 0.1 0.3 1.2 5; do
  default=(); if [ "$lmbda" = 0.3 ]; then default=(--default); fi
  export_one $q runs/shipped/medvae-l$lmbda/best.pt "${FT//@L@/$lmbda}" "$BUDGET" "${default[@]}"
  q=$((q + 1))
done
export_one $q runs/shipped/medvae-l20/best.pt "$TOP" "fine-tuned 2,500 steps (1 CPU thread, ~15 min) from the lambda=5 model"
ls -la medvae/weights/
