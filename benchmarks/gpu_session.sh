#!/usr/bin/env bash
# One leased GPU session, as one command (a lease is minutes long and each start costs one):
#   1. the cross-device exact-decoding check: files written on this CPU (benchmarks/cross_device.py
#      write gpu-check) decode to the same pixels, and re-encode to the same bytes, on the GPU
#      machine's CPU and on its GPU;
#   2. meanwhile (so the check's decode times are measured beside training), a training job
#      fitted into MINUTES of wall time:
#      JOB=ctx (the default): medvae-ctx's alternative weights trained on
#        (configs/gpu-medvae-ctx-256.yaml, data from tools/pack_training_data.py in gpu-data);
#      JOB=residual: the shipped residual model trained on, beside the same model widened to 64
#        channels with 2 residual blocks (medvae.residual.model.widened/deepened: it starts as
#        the shipped one computes), same data, steps, batch and crops: does capacity pay?
# What it needs beside the working tree (ignored here, named in the device tool's carry): .whl
# (cp312 wheels of compressai, pydicom, pylibjpeg with its libjpeg and openjpeg plugins,
# pytorch-msssim and nibabel, which that image lacks),
# gpu-data (or DATA) and gpu-check. Results go to $OUT: cross_device.txt, and for JOB=ctx train.log, the
# run's TensorBoard events and gpu-medvae-ctx-256.pt (the last weights without optimizer state,
# loadable by medvae.load and benchmarks/ship.py); for JOB=residual residual-{shipped,wide}.pt
# (residual model files, calibrated: benchmarks/residual_models.py compares them) and their logs.
# The working tree that travels is limited (64 MiB with what is carried): the optional ladder's
# weights (36 MB, packages/medvae-ladder) are not needed there, so they were taken out of the
# index for the call (git rm -r --cached ...; a line in .git/info/exclude) and put back after.
#   MINUTES=7.5 DEVICE=cuda OUT=/tmp/out [JOB=ctx|residual] benchmarks/gpu_session.sh [ctx config overrides]
set -u -o pipefail
MINUTES=${MINUTES:-7.5}
DEVICE=${DEVICE:-cuda}
JOB=${JOB:-ctx}
DATA=${DATA:-gpu-data}  # JOB=residual: gpu-data-residual (pack_training_data.py ... --modalities CT,MR) keeps the carry small
OUT=${OUT:-/tmp/gpu-session}
mkdir -p "$OUT"
if [ -d .whl ] && ! python3 -c "import compressai, pydicom" 2>/dev/null; then  # the device image lacks them
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
lscpu | grep -E "^Model name" ; nproc
python3 -c "import numpy, torch, compressai; print('numpy', numpy.__version__, 'torch', torch.__version__, 'compressai', compressai.__version__)"

check=
if [ -d gpu-check ]; then
    OMP_NUM_THREADS=4 timeout 400 python3 benchmarks/cross_device.py check gpu-check >"$OUT/cross_device.txt" 2>&1 &
    check=$!
fi

status=0
if [ "$JOB" = residual ]; then
    # The bases of the packed train and val slices, once for both runs (exact: as on any device).
    python3 - "$DEVICE" "$DATA" <<'EOF' || status=1
import sys, medvae
from medvae.io.slices import manifest_slices
from medvae.residual.training import base_pairs, save_pairs
codec = medvae.load("medvae", device=sys.argv[1])
for split in ("train", "val"):
    save_pairs(base_pairs(codec, manifest_slices(sys.argv[2] + "/MANIFEST.csv", split=split), progress=False), f"/tmp/pairs.{split}.npz")
print("pairs written")
EOF
    common=(--data "$DATA/MANIFEST.csv" --pairs /tmp/pairs --device "$DEVICE" --minutes "$MINUTES" --steps 1000000
            --batch 64 --crop 128 --lr 2.5e-4)
    # RESIDUAL_INIT: a folder holding residual-{shipped,wide}.pt of an earlier session, to go on from
    shipped_init=${RESIDUAL_INIT:+$RESIDUAL_INIT/residual-shipped.pt}
    wide_init=${RESIDUAL_INIT:+$RESIDUAL_INIT/residual-wide.pt}
    python3 -m medvae train-residual "${common[@]}" --init "${shipped_init:-medvae/weights/medvae-q5-residual-401aee23.pt}" \
        --out "$OUT/residual-shipped.pt" 2>&1 | tr '\r' '\n' \
        | grep -v -e "step/s\]$" -e "step\]$" -e Warning -e warnings.warn >"$OUT/residual-shipped.log" &
    shipped=$!
    python3 -m medvae train-residual "${common[@]}" --init "${wide_init:-medvae/weights/medvae-q5-residual-401aee23.pt}" \
        --channels 64 --blocks 2 --out "$OUT/residual-wide.pt" 2>&1 | tr '\r' '\n' \
        | grep -v -e "step/s\]$" -e "step\]$" -e Warning -e warnings.warn >"$OUT/residual-wide.log" || status=1
    wait $shipped || status=1
    tail -n 8 "$OUT/residual-shipped.log" "$OUT/residual-wide.log"
else
    run=runs/gpu-medvae-ctx-256
    python3 train.py --config configs/gpu-medvae-ctx-256.yaml --amp --device "$DEVICE" "train.minutes=$MINUTES" \
        "train.out_dir=$run" "$@" 2>&1 | tr '\r' '\n' | grep -v -e "it/s\]$" -e Warning -e warnings.warn >"$OUT/train.log" || status=1
    cp -r "$run/tb" "$OUT/tb" 2>/dev/null
    python3 - "$run/last.pt" "$OUT/gpu-medvae-ctx-256.pt" <<'EOF'
import sys, torch
record = torch.load(sys.argv[1], map_location="cpu", weights_only=False)
kept = {k: v for k, v in record.items() if k not in ("optimizer", "aux_optimizer", "scheduler", "rng")}
torch.save(kept, sys.argv[2])
print("exported step", record.get("step"), "to", sys.argv[2])
EOF
    tail -n 20 "$OUT/train.log"
fi
if [ -n "$check" ]; then
    wait $check
    echo "cross-device check exit status: $?" >>"$OUT/cross_device.txt"
    cat "$OUT/cross_device.txt"
fi
exit $status
