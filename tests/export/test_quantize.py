"""INT8 QDQ files: made from an fp32 export with simulated frames, described by their metadata,
symmetric (TensorRT's explicit quantization), served by ONNX Runtime, and refused when they cannot be."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from echoseg.cli import main
from echoseg.runtime.onnxruntime import OnnxRuntime
from export.onnx import read_metadata
from export.quantize import QUANTIZED_OPS, calibration_windows, quantize_int8


@pytest.fixture(scope="module")
def windows(untrained):
    return calibration_windows(untrained("tiny").config, clips=1, frames=6)


@pytest.fixture(scope="module")
def int8_file(exported, windows, tmp_path_factory):
    return quantize_int8(
        exported("tiny", "matmul"), tmp_path_factory.mktemp("int8") / "tiny-int8.onnx", windows
    )


def test_calibration_windows_are_preprocessed_simulator_windows(untrained, windows):
    config = untrained("tiny").config
    assert windows.shape == (6, config.num_frames, config.input_size, config.input_size)
    assert windows.dtype == np.float32
    lowest = (0.0 - config.mean) / config.std  # a black pixel, normalised
    assert windows.min() >= lowest - 1e-5 and windows.max() > 0.0  # real frames: dark and bright


def test_int8_file_says_what_it_holds(exported, int8_file):
    config, props = read_metadata(int8_file)
    fp32_config, fp32_props = read_metadata(exported("tiny", "matmul"))
    assert config == fp32_config
    assert props["echoseg.precision"] == "int8"
    assert props["echoseg.batch"] == fp32_props["echoseg.batch"] == "dynamic"
    assert json.loads(props["echoseg.graph"]) == json.loads(fp32_props["echoseg.graph"])
    how = json.loads(props["echoseg.quantization"])
    assert how["format"] == "QDQ" and how["ops"] == list(QUANTIZED_OPS)
    assert "A4C simulator" in how["calibration"]


def test_int8_file_is_symmetric_qdq_on_conv_and_matmul(int8_file):
    graph = onnx.load(str(int8_file)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    dequantized = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    consumers = {n.op_type for n in graph.node if any(i in dequantized for i in n.input)}
    assert set(QUANTIZED_OPS) <= consumers  # Conv and MatMul read int8 tensors
    zero_points = [inits[n.input[2]] for n in dequantized.values() if len(n.input) > 2]
    assert zero_points and not any(z.any() for z in zero_points)  # symmetric: every zero point is 0
    assert {str(z.dtype) for z in zero_points} <= {"int8", "int32"}  # int8 tensors, int32 biases


def test_int8_runs_in_onnxruntime_close_to_fp32(exported, int8_file, windows):
    fp32, int8 = OnnxRuntime(exported("tiny", "matmul"), "cpu"), OnnxRuntime(int8_file, "cpu")
    fp32.load()
    int8.load()
    assert (fp32.precision, int8.precision) == ("fp32", "int8")
    a, b = fp32.infer(windows), int8.infer(windows)
    assert b.shape == a.shape and np.isfinite(b).all()
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9


def test_int8_is_made_from_fp32_only(int8_file, tmp_path):
    with pytest.raises(ValueError, match="quantized from an fp32 export"):
        quantize_int8(int8_file, tmp_path / "again.onnx")


def test_cli_exports_int8_and_refuses_int8_with_fp16(tmp_path, capsys):
    out = tmp_path / "tiny-int8.onnx"
    assert main(["export", "onnx", "--preset", "tiny", "--int8", "--out", str(out)]) == 0
    assert read_metadata(out)[1]["echoseg.precision"] == "int8"
    assert "int8" in capsys.readouterr().out
    assert (
        main(["export", "onnx", "--preset", "tiny", "--int8", "--fp16", "--out", str(tmp_path / "x.onnx")])
        == 2
    )
    assert "exclude each other" in capsys.readouterr().err


def test_service_quantizes_once_into_its_cache(exported, tmp_path, monkeypatch):
    from service.core.config import Settings
    from service.export_cache import servable_onnx

    calls = []
    import export.quantize

    real = export.quantize.quantize_int8
    monkeypatch.setattr(export.quantize, "quantize_int8", lambda *a: calls.append(a) or real(*a))
    settings = Settings(int8=True, cache_dir=str(tmp_path))
    first = servable_onnx(exported("tiny", "matmul"), "onnx", settings)
    again = servable_onnx(exported("tiny", "matmul"), "onnx", settings)
    assert first == again and len(calls) == 1
    assert read_metadata(first)[1]["echoseg.precision"] == "int8"
    assert servable_onnx(first, "onnx", settings) == first  # an int8 file is served as it is
    plain = Settings(cache_dir=str(tmp_path))
    assert servable_onnx(exported("tiny", "matmul"), "onnx", plain) == exported("tiny", "matmul")


def test_int8_serving_is_refused_on_another_backend():
    from pathlib import Path

    from service.backends import create_backend
    from service.core.config import Settings

    bundled = Path(__file__).resolve().parents[2] / "models" / "default"
    with pytest.raises(ValueError, match="int8 serving runs on ONNX Runtime, not on the torch backend"):
        create_backend(Settings(model=str(bundled), backend="torch", int8=True))
