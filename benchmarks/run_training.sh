# Sourced by the benchmarks/train_*.sh scripts: one resumable training run.
#   run OUT_DIR train.py-arguments...
# A finished run (last.pt at its last step) is skipped, an unfinished one resumed.
run() {
  local out=$1; shift
  local resume=()
  if [ -f "$out/last.pt" ]; then
    if python -c "import sys, torch; s = torch.load('$out/last.pt', weights_only=False); sys.exit(s['step'] < s['config']['train']['iterations'])" 2>/dev/null; then
      echo "== $out is finished"; return 0
    fi
    resume=(--resume)
  fi
  echo "== $out"
  python train.py "$@" train.out_dir="$out" "${resume[@]}"
}
