#!/usr/bin/env bash
# One leased GPU session, as one command (a lease is minutes long and each start costs one):
#   1. the cross-device exact-decoding check: files written on this CPU (benchmarks/cross_device.py
#      write gpu-check) decode to the same pixels, and re-encode to the same bytes, on the GPU
#      machine's CPU and on its GPU;
#   2. meanwhile (so the check's decode times are measured beside training), medvae-ctx's
#      alternative weights trained on, fitted into MINUTES of wall time
#      (configs/gpu-medvae-ctx-256.yaml, data from tools/pack_training_data.py in gpu-data).
# What it needs beside the working tree (ignored here, named in the device tool's carry): .whl
# (cp312 wheels of compressai, pydicom, pylibjpeg with its libjpeg and openjpeg plugins,
# pytorch-msssim and nibabel, which that image lacks),
# gpu-data and gpu-check. Results go to $OUT: cross_device.txt, train.log, the run's TensorBoard
# events and gpu-medvae-ctx-256.pt (the last weights without optimizer state, loadable by
# medvae.load and benchmarks/ship.py).
# The working tree that travels is limited (64 MiB with what is carried): the optional ladder's
# weights (36 MB, packages/medvae-ladder) are not needed there, so they were taken out of the
# index for the call (git rm -r --cached ...; a line in .git/info/exclude) and put back after.
#   MINUTES=7.5 DEVICE=cuda OUT=/tmp/out benchmarks/gpu_session.sh [config overrides, e.g. data.batch_size=2]
set -u -o pipefail
MINUTES=${MINUTES:-7.5}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-/tmp/gpu-session}
mkdir -p "$OUT"
if [ -d .whl ]; then
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

run=runs/gpu-medvae-ctx-256
status=0
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
if [ -n "$check" ]; then
    wait $check
    echo "cross-device check exit status: $?" >>"$OUT/cross_device.txt"
    cat "$OUT/cross_device.txt"
fi
tail -n 20 "$OUT/train.log"
exit $status
