"""fp32 ONNX exports match the torch network (both calibration forms), and fp16 exports its masks."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from echoseg.preprocess import random_windows
from echoseg.runtime.onnxruntime import OnnxRuntime
from export.check import FP16_MIN_DICE, FP32_MAX_ABS, compare, run_all, torch_logits
from export.onnx import export_onnx, read_metadata


def onnx_logits(path, windows):
    with OnnxRuntime(path, "cpu") as runtime:
        runtime.load()
        return run_all(runtime, windows)


@pytest.mark.parametrize("preset", ["tiny", "lite", "unet-tiny"])
@pytest.mark.parametrize("form", ["matmul", "conv"])
def test_fp32_export_matches_torch(preset, form, untrained, exported):
    model = untrained(preset)
    path = exported(preset, form)
    windows = random_windows(model.config, 5, seed=1)  # 5: the conv file runs it as 2 + 2 + (1 padded)
    reference, candidate = torch_logits(model, windows), onnx_logits(path, windows)
    parity = compare(reference, candidate, model.config.threshold, "random")
    assert parity.max_abs <= FP32_MAX_ABS, parity
    assert model.config.calibration == "conv"  # the caller's network keeps its form


@pytest.mark.parametrize("preset", ["tiny", "lite"])
def test_matmul_batch_is_dynamic_and_conv_batch_fixed(preset, untrained, exported, conv_batch):
    config = untrained(preset).config
    dynamic = ort.InferenceSession(str(exported(preset, "matmul")), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        out = dynamic.run(None, {"frames": random_windows(config, batch)})[0]
        assert out.shape == (batch, 1, config.input_size, config.input_size)
    fixed = ort.InferenceSession(str(exported(preset, "conv")), providers=["CPUExecutionProvider"])
    assert fixed.get_inputs()[0].shape[0] == conv_batch
    with pytest.raises(Exception, match=r"(?i)dimension|shape"):
        fixed.run(None, {"frames": random_windows(config, conv_batch + 1)})


def test_fp16_masks_match_fp32_on_synthetic_clips(trained_tiny, tiny_clips, tmp_path):
    path = export_onnx(trained_tiny, tmp_path / "tiny-fp16.onnx", calibration="matmul", fp16=True)
    _, props = read_metadata(path)
    assert props["echoseg.precision"] == "fp16"
    with OnnxRuntime(path, "cpu") as runtime:
        runtime.load()
        assert runtime.input_dtype == np.float16 and runtime.precision == "fp16"
    windows, _ = tiny_clips
    reference = torch_logits(trained_tiny, windows)
    parity = compare(reference, onnx_logits(path, windows), trained_tiny.config.threshold, "clips")
    assert 0.05 < parity.positive_fraction < 0.95, "the fitted network should segment part of each frame"
    assert parity.dice >= FP16_MIN_DICE, parity
    assert parity.max_abs > 0  # fp16 really changed the numbers
