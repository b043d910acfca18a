#!/usr/bin/env bash
# GPU checks for EchoSeg, in one short run (a few minutes on one H100/H200):
#   1. torch-CUDA fp32/fp16 parity against CPU for the lite and paper presets,
#   2. TensorRT engine build + run + comparison with ONNX Runtime, when tensorrt is importable,
#   3. the conv-vs-matmul calibration benchmark on CUDA,
#   4. model latency of every GPU backend (lite, paper; batch 1-32) and a streaming capacity
#      figure with the server and its WebSocket clients on this machine (benchmarks.run_all
#      --device cuda; the streaming part is skipped with a note when the server's dependencies
#      are not installed), rendered into $OUT/performance-gpu.md.
# Results go to $OUT (or benchmarks/results/ when OUT is unset) as JSON.
# Runs with the system python3 (torch with CUDA, onnx, onnxruntime); nothing is installed.
# ECHOSEG_SKIP_GPU=1 skips every GPU part (still writes gpu_check.json), e.g. to test the script.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-$REPO/benchmarks/results}"
mkdir -p "$OUT"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export OUT
cd "$REPO"

status=0
echo "== environment"
"$PYTHON" -c "import torch, onnxruntime; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'ort', onnxruntime.__version__)"

echo "== parity and TensorRT"
timeout 300 "$PYTHON" -m benchmarks.gpu.check --out "$OUT" || status=$?

has_cuda=$("$PYTHON" -c "import torch; print(int(torch.cuda.is_available()))")
if [[ "${ECHOSEG_SKIP_GPU:-0}" != "1" && "$has_cuda" == "1" ]]; then
    echo "== calibration forms on CUDA"
    timeout 180 "$PYTHON" -m benchmarks.export_forms --device cuda --budget-s 3 \
        --out "$OUT/export_forms-cuda.json" || status=$?
else
    echo "== calibration forms on CUDA: skipped (no GPU in use)"
fi
if [[ "${ECHOSEG_SKIP_GPU:-0}" != "1" && "$has_cuda" == "1" ]]; then
    echo "== model latency and streaming capacity on CUDA"
    timeout 240 "$PYTHON" -m benchmarks.run_all --device cuda --sections model stream --budget-s 2 \
        --out-dir "$OUT" --docs "$OUT/performance-gpu.md" || status=$?
else
    echo "== model latency and streaming on CUDA: skipped (no GPU in use)"
fi
echo "== done (status $status); JSON in $OUT"
exit "$status"
