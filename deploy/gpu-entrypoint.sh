#!/bin/sh
# Entry point of the GPU image. A TensorRT engine is specific to the GPU and TensorRT version, so
# it is built here rather than baked: when ECHOSEG_MODEL is a checkpoint, it is exported to ONNX
# and built into an engine once, under ECHOSEG_CACHE_DIR in a folder named by a hash of the
# checkpoint, the GPU and the batch range; later starts (and other pods sharing the volume with the
# same GPU model) reuse it. An engine or ONNX file given in ECHOSEG_MODEL is served as it is.
# ENGINE_FP16=0 builds an fp32 engine. Arguments are passed on to `echoseg serve`.
set -eu

model="${ECHOSEG_MODEL:-/models/default}"
case "$model" in
    *.engine | *.plan | *.trt | *.onnx) exec echoseg serve "$@" ;;
esac

cache="${ECHOSEG_CACHE_DIR:-/var/cache/echoseg}"
max_batch="${ECHOSEG_MAX_BATCH:-16}"
fp16="${ENGINE_FP16:-1}"
gpu="$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1 || true)"
key="$({ cat "$model/config.json" "$model"/student*.safetensors; echo "gpu=$gpu batch=$max_batch fp16=$fp16"; } \
    | sha256sum | cut -c 1-16)"
dir="$cache/tensorrt/$key"

if [ ! -f "$dir/complete" ]; then
    echo "building the TensorRT engine for $model on '${gpu:-unknown GPU}' into $dir" >&2
    mkdir -p "$dir"
    echoseg export onnx --checkpoint "$model" --out "$dir/model.onnx" \
        --calibration "${ECHOSEG_EXPORT_CALIBRATION:-matmul}" --batch dynamic
    precision=""
    if [ "$fp16" = "1" ]; then precision="--fp16"; fi
    # shellcheck disable=SC2086  # $precision is empty or one flag
    echoseg export tensorrt --onnx "$dir/model.onnx" --out "$dir/model.plan" $precision \
        --min-batch 1 --max-batch "$max_batch" --timing-cache "$cache/tensorrt/timing.cache"
    touch "$dir/complete"
fi

ECHOSEG_MODEL="$dir/model.plan"
export ECHOSEG_MODEL
exec echoseg serve "$@"
