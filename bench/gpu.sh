#!/usr/bin/env bash
# The GPU checks of issue 18, item 5, in one command of at most 8 minutes:
#
#   1. the CUDA tests (every test whose name has "cuda", in the files that mention it);
#   2. bench/run.py --device cuda: fused vs cuDNN (lstm/gru/rnn main), ragged vs padded and
#      packed, scan vs loop (T=4096 and the others), GRU-D, the modern recurrences' parallel
#      forms against their loops at T=4096 (LRU, Mamba, GLA, DeltaNet);
#   3. bench/gpu_checks.py: bf16 autocast against float32 (stated tolerances), pinned-memory
#      transfers in MinibatchSource, Tree-LSTM batched vs per node;
#   4. the "## GPU checks" section of bench/README.md from the JSON in bench/results/.
#
#   bench/gpu.sh                # on a machine with an NVIDIA GPU
#   bench/gpu.sh --dry-run      # the same steps on the CPU at tiny sizes, in seconds; writes
#                               # to a temporary folder (or --out DIR), never to the README
#
# Python: .venv/bin/python when present, else python3 (with src/ on PYTHONPATH either way).
# Each step has its own timeout; a failed step is reported and the others still run; the exit
# status is 1 when any step failed.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"

DRY=0
OUT=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --out) OUT="$2"; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "bench/gpu.sh: unknown argument $1 (expected --dry-run or --out DIR)" >&2; exit 2 ;;
    esac
    shift
done

if [[ $DRY == 1 ]]; then
    DEVICE=cpu
    OUT=${OUT:-$(mktemp -d)}
    CASES=(lstm/tiny/forward gru/tiny/forward)
    CHECK_ARGS=(--dry-run)
    README="$OUT/README-gpu.md"
    T_TESTS=60 T_BENCH=60 T_CHECKS=60
else
    DEVICE=cuda
    OUT=${OUT:-bench/results}
    CASES=(lstm/main gru/main rnn/main ragged/ scan/mingru/B1-T4096 scan/minlstm/B4-T4096
           scan/mingru/B64-T100 grud modern/lru/loop/B4-T4096 modern/mamba/loop/B4-T4096
           modern/gla/loop/B4-T4096 modern/deltanet/loop/B4-T4096)
    CHECK_ARGS=()
    README=bench/README.md
    T_TESTS=90 T_BENCH=240 T_CHECKS=120
    if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "bench/gpu.sh: $PY sees no CUDA device (use --dry-run on a CPU)" >&2
        exit 2
    fi
fi
mkdir -p "$OUT"
echo "bench/gpu.sh: python $PY, device $DEVICE, results in $OUT"

failed=()

step() {  # step NAME LOG SECONDS COMMAND...: a timeout, the output in LOG, failures kept
    local name=$1 log=$2 limit=$3
    shift 3
    echo "== $name (at most ${limit}s)"
    local start=$SECONDS
    if timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$log"; then
        echo "== $name: ok in $((SECONDS - start))s"
    else
        echo "== $name: FAILED (status $?) after $((SECONDS - start))s" >&2
        failed+=("$name")
    fi
}

mapfile -t CUDA_FILES < <(grep -l -i cuda tests/test_*.py | grep -v test_gpu_script.py)
step "CUDA tests" "$OUT/gpu-tests.txt" "$T_TESTS" \
    "$PY" -m pytest -q -p no:cacheprovider -k cuda "${CUDA_FILES[@]}"

step "bench/run.py --device $DEVICE" "$OUT/gpu-run.log" "$T_BENCH" \
    "$PY" bench/run.py --quick --device "$DEVICE" --cases "${CASES[@]}" --json "$OUT/gpu-run.json"

step "bf16, pinned memory, trees" "$OUT/gpu-checks.log" "$T_CHECKS" \
    "$PY" bench/gpu_checks.py checks --device "$DEVICE" "${CHECK_ARGS[@]}" \
    --out "$OUT/gpu-checks.json"

if [[ -f "$OUT/gpu-checks.json" ]]; then
    step "report" "$OUT/gpu-report.log" 30 "$PY" bench/gpu_checks.py report --checks "$OUT/gpu-checks.json" \
        --bench "$OUT/gpu-run.json" --tests "$OUT/gpu-tests.txt" --out "$README"
    echo "bench/gpu.sh: wrote $README"
fi

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "bench/gpu.sh: failed: ${failed[*]}" >&2
    exit 1
fi
echo "bench/gpu.sh: all steps passed"
