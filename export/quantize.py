"""INT8: static quantization of an fp32 ONNX export into a QDQ graph, calibrated on synthetic frames.

The fp32 file is quantized with ONNX Runtime's tools (``quantize_static``): QuantizeLinear /
DequantizeLinear pairs around the inputs of the ops in :data:`QUANTIZED_OPS`, weights per output
channel, activations per tensor, both signed and symmetric (zero point 0). That is the form
TensorRT's explicit quantization takes, so the same file serves ONNX Runtime's CPU kernels and is
what a TensorRT INT8 engine is built from (``echoseg export tensorrt --onnx model-int8.onnx``).

Activation ranges come from windows of the apical four-chamber simulator only
(:func:`calibration_windows`: scanner-size frames with furniture and cropped 112 x 112 ones, each
through the product's region crop and resize), never from real recordings. The result carries the
fp32 file's metadata with ``echoseg.precision = int8`` and an ``echoseg.quantization`` entry that
says how it was made.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from echoseg.artifacts import METADATA_PREFIX, read_onnx_metadata
from echoseg.preprocess import clip_windows, preprocess
from echoseg.region import detect_region
from export.onnx import INPUT_NAME, read_metadata
from training.data.a4c import render_a4c_clip

log = logging.getLogger(__name__)

# Ops whose inputs are quantized. Conv and MatMul carry the arithmetic; the rest of the graph
# (the summaries' masked maxima with their -inf constants, sigmoid, adds) stays fp32.
QUANTIZED_OPS = ("Conv", "MatMul")
# (height, width) of the simulated frames the ranges are taken from; 112 x 112 is a cropped clip.
CALIBRATION_SIZES = ((112, 112), (600, 800), (480, 640), (768, 1024))
CALIBRATION_SEED = 3  # the training data uses seed 1, the held-out clips seed 2
CALIBRATION_CLIPS = 8
CALIBRATION_FRAMES = 12
CALIBRATION_BATCH = 8


def calibration_windows(
    config, clips: int = CALIBRATION_CLIPS, frames: int = CALIBRATION_FRAMES, seed: int = CALIBRATION_SEED
) -> np.ndarray:
    """``(N, k, S, S) float32``: windows of simulated A4C clips, preprocessed as the service does."""

    if clips < 1 or frames < 4:
        raise ValueError(f"calibration needs at least 1 clip of at least 4 frames, got {clips} x {frames}")
    rng = np.random.default_rng(seed)
    windows = []
    for i in range(clips):
        height, width = CALIBRATION_SIZES[i % len(CALIBRATION_SIZES)]
        clip = render_a4c_clip(rng, frames=frames, height=height, width=width)
        gray = clip.gray()
        x = preprocess(gray, config, detect_region(gray))  # (T, H, W) uint8 -> (T, S, S) float32
        windows.append(clip_windows(x, config))  # (T, k, S, S)
    return np.concatenate(windows).astype(np.float32)


class _Windows:
    """``onnxruntime.quantization.CalibrationDataReader`` over fixed windows, in batches."""

    def __init__(self, input_name: str, windows: np.ndarray, batch: int | None) -> None:
        step = batch or CALIBRATION_BATCH
        self.batches = [windows[i : i + step] for i in range(0, len(windows), step)]
        if batch:  # a fixed-batch export takes exactly that batch
            self.batches = [b for b in self.batches if len(b) == batch]
        self.input_name = input_name
        self._next = iter(self.batches)

    def get_next(self):
        chunk = next(self._next, None)
        return None if chunk is None else {self.input_name: chunk}

    def rewind(self) -> None:
        self._next = iter(self.batches)


def quantize_int8(fp32_path: str | Path, out_path: str | Path, windows: np.ndarray | None = None) -> Path:
    """Quantize the fp32 export ``fp32_path`` to INT8 QDQ at ``out_path``; returns ``out_path``.

    ``windows`` (N, k, S, S): the calibration inputs (default :func:`calibration_windows`).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    config, props = read_metadata(fp32_path)
    precision = props[METADATA_PREFIX + "precision"]
    if precision != "fp32":
        raise ValueError(f"{fp32_path} is {precision}; INT8 is quantized from an fp32 export")
    batch = props[METADATA_PREFIX + "batch"]
    if windows is None:
        windows = calibration_windows(config)
    reader = _Windows(INPUT_NAME, windows, None if batch == "dynamic" else int(batch))
    if not reader.batches:
        raise ValueError(f"no calibration batch of {batch} windows among {len(windows)}")
    log.info("quantizing %s to INT8 on %d simulated windows", fp32_path.name, len(windows))
    with tempfile.TemporaryDirectory(prefix="echoseg-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        quantize_static(
            str(prepared),
            str(out_path),
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )
    model = onnx.load_model(str(out_path))
    description = {
        "format": "QDQ",
        "activations": "int8 per tensor, symmetric",
        "weights": "int8 per output channel, symmetric",
        "ops": list(QUANTIZED_OPS),
        "calibration": f"MinMax on {len(windows)} windows of the A4C simulator (seed {CALIBRATION_SEED})",
    }
    values = {**read_onnx_metadata(fp32_path), METADATA_PREFIX + "precision": "int8"}
    values[METADATA_PREFIX + "quantization"] = json.dumps(description, sort_keys=True)
    del model.metadata_props[:]
    for key, value in values.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save_model(model, str(out_path))
    return out_path
