#!/usr/bin/env bash
# GPU checks for EchoSeg in one short run on one GPU (see benchmarks/gpu/check.py for each step):
#   env       versions, GPU, ONNX Runtime providers, TensorRT                        30 s
#   torch     torch CUDA fp32/fp16 (eager and CUDA graphs) vs CPU, trained weights    100 s
#   ort       ONNX Runtime CUDA / TensorRT provider vs CPU (skipped without them)      60 s
#   tensorrt  fp16 and INT8 (QDQ) engines: build + parity + latency at batch 1/8/32   240 s
#             (skipped without TensorRT)
#   serve     echoseg serve on the GPU, 32 streams x 50 fps for 20 s                   90 s
# The timeouts add up to 520 s (< 9 minutes). Each step appends one JSON line to
# $OUT/gpu_check.jsonl as soon as it ends (a step cut by its timeout gets a line saying so),
# and $OUT/gpu_check.json gathers them at the end. Nothing is installed: it runs with the system
# python3 (torch with CUDA, onnx, onnxruntime). Imports are checked first.
# ECHOSEG_GPU_DRY_RUN=1 runs every step's CPU-runnable part with the CPU standing in (CI does).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-$REPO/benchmarks/results}"
mkdir -p "$OUT"
rm -f "$OUT/gpu_check.jsonl"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export OUT
cd "$REPO"
DRY=()
if [[ "${ECHOSEG_GPU_DRY_RUN:-0}" == "1" ]]; then DRY=(--dry-run-cpu); fi

echo "== imports"
if ! timeout 60 "$PYTHON" -c "import numpy, torch, onnx, onnxruntime, av, safetensors, yaml, echoseg.runtime, export.tensorrt, training.model"; then
    echo "{\"step\": \"imports\", \"ok\": false, \"error\": \"an import failed (see the log)\"}" >> "$OUT/gpu_check.jsonl"
    "$PYTHON" -m benchmarks.gpu.check summary --out "$OUT"
    exit 1
fi

status=0
run_step() {  # run_step NAME TIMEOUT_S
    local name=$1 limit=$2 rc
    echo "== $name (at most $limit s)"
    timeout --kill-after=5 "$limit" "$PYTHON" -m benchmarks.gpu.check "$name" --out "$OUT" "${DRY[@]}"
    rc=$?
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then
        echo "{\"step\": \"$name\", \"ok\": false, \"error\": \"timed out after $limit s\"}" >> "$OUT/gpu_check.jsonl"
    fi
    if [[ $rc -ne 0 ]]; then status=1; fi
}

run_step env 30
run_step torch 100
run_step ort 60
run_step tensorrt 240
run_step serve 90
"$PYTHON" -m benchmarks.gpu.check summary --out "$OUT" || status=1
echo "== done (status $status); results in $OUT/gpu_check.json"
exit "$status"
