"""The TensorRT path: a clear message without TensorRT; a real build and check where it exists."""

from __future__ import annotations

import importlib.util
import json

import pytest

from echoseg.cli import main
from export.tensorrt import BuildSettings, TensorRTUnavailable, build_engine, check_engine, metadata_path

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_without_tensorrt_the_message_names_the_gpu_extra(exported, tmp_path, capsys):
    with pytest.raises(TensorRTUnavailable, match=r"pip install 'echoseg\[gpu\]'"):
        build_engine(exported("tiny", "matmul"), tmp_path / "x.plan")
    onnx_path, plan = str(exported("tiny", "matmul")), str(tmp_path / "x.plan")
    code = main(["export", "tensorrt", "--onnx", onnx_path, "--out", plan])
    assert code == 3
    err = capsys.readouterr().err
    assert "TensorRT is not installed" in err and "echoseg[gpu]" in err
    assert not (tmp_path / "x.plan").exists()


def test_build_settings_are_checked():
    with pytest.raises(ValueError, match="min-batch <= opt-batch <= max-batch"):
        BuildSettings(min_batch=4, opt_batch=2, max_batch=8).validate()


@pytest.mark.tensorrt
@pytest.mark.parametrize("form", ["matmul", "conv"])
def test_engine_builds_runs_and_matches_onnxruntime(form, trained_tiny, synthetic_root, tmp_path):
    from export.onnx import export_onnx

    batch = "dynamic" if form == "matmul" else 2
    onnx_path = export_onnx(trained_tiny, tmp_path / f"{form}.onnx", calibration=form, batch=batch)
    plan = build_engine(
        onnx_path,
        tmp_path / f"{form}.plan",
        BuildSettings(min_batch=1, opt_batch=2, max_batch=4, timing_cache=str(tmp_path / "cache.bin")),
    )
    meta = json.loads(metadata_path(plan).read_text())
    assert meta["metadata"]["echoseg.calibration"] == form
    assert meta["tensorrt_version"]
    report = check_engine(plan, onnx_path, data=synthetic_root)
    assert report["ok"], report
