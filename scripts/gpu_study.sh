#!/usr/bin/env bash
# The depth study on one GPU in one call (issue 12 item 6): the shipped recipe (dfd_log_pre) on the
# three time folds and on all captures (f/2.8 and f/8), five runs side by side on the GPU, then the
# cross-validation table. Writes to OUT (at most 8 files): table.txt, results.json (every run's
# meta and held-out figures), dfd-n2.8.pt and dfd-n8.pt (shipped format, flip TTA), log.txt.
#
# Usage: scripts/gpu_study.sh DATA [STEPS]
#   DATA: paper 1's training release (N2_8/ N8/ depth/, imported first) or a dataset folder (train/)
#   STEPS: Adam steps per run (default 8000, the CPU models' budget)
# Env: PYTHON (python3), DEVICE (cuda), PRECISION (bf16), THREADS (2 per run), OUT (out/gpu_study),
#      STUDY_ARGS: more `rig depth-study run` flags for every run (e.g. "--batch 16 --crop 256").
# Tiny CPU check: DEVICE=cpu PRECISION=fp32 STUDY_ARGS="--batch 2 --crop 32 --synth-per-image 1
#      --procedural 1" scripts/gpu_study.sh DATASET 2   (tests/test_recipe.py runs this)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: scripts/gpu_study.sh DATA [STEPS]}
STEPS=${2:-8000}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
PRECISION=${PRECISION:-bf16}
THREADS=${THREADS:-2}
OUT=${OUT:-out/gpu_study}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_study.XXXXXX")
LOG="$OUT/log.txt"
: >"$LOG"
echo "work folder (run folders, checkpoints, logs): $WORK" >>"$LOG"
rig() { "$PY" -m rig.cli "$@"; }

{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true; } >>"$LOG"
if [ -d "$DATA/train" ]; then
    DS=$DATA
else
    DS=$WORK/dfd
    rig import-dfd "$DATA" --out "$DS" >>"$LOG" 2>&1
fi
t0=$(date +%s)
mkdir -p "$WORK/study/dfd_log_pre"
run() {  # NAME FOLD INPUT
    # shellcheck disable=SC2086
    rig depth-study run --data "$DS" --recipe dfd_log_pre --fold "$2" --input "$3" --steps "$STEPS" \
        --precision "$PRECISION" --device "$DEVICE" --threads "$THREADS" ${STUDY_ARGS:-} \
        --out "$WORK/$1" >"$WORK/$(basename "$1").log" 2>&1
}
pids=()
for k in 0 1 2; do run "study/dfd_log_pre/f$k" "$k" N2_8 & pids+=($!); done
run final_n28 all N2_8 & pids+=($!)
run final_n8 all N8 & pids+=($!)
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
for f in "$WORK"/*.log; do
    { echo "== $f"; tail -n 5 "$f"; } >>"$LOG"
done
echo "five runs: $(( $(date +%s) - t0 )) s, rc $rc" >>"$LOG"
[ "$rc" = 0 ] || { echo "gpu_study: a run failed; see $LOG" >&2; exit 1; }
rig depth-study table "$WORK/study" >"$OUT/table.txt"
rig depth-study ship "$WORK/final_n28/model.pt" --out "$OUT/dfd-n2.8.pt" --flip-tta >>"$LOG"
rig depth-study ship "$WORK/final_n8/model.pt" --out "$OUT/dfd-n8.pt" --flip-tta >>"$LOG"
"$PY" - "$WORK" "$OUT/results.json" <<'PYEOF'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
runs = {str(p.parent.relative_to(work)): json.loads(p.read_text()) for p in sorted(work.rglob("result.json"))}
Path(sys.argv[2]).write_text(json.dumps(runs, indent=1))
PYEOF
cat "$OUT/table.txt"
echo "wrote $OUT: table.txt results.json dfd-n2.8.pt dfd-n8.pt log.txt"
