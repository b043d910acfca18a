"""The TensorRT path's real control flow on a CPU, with a fake ``tensorrt`` and host memory.

What the exporter writes loads in the runtime the service uses; batches outside the engine's
optimisation profile are split or padded into it; a refused input shape or a failed execution
is a clear error, never uninitialised memory handed back as logits; every tensor gets the
engine's own dtype; an unsupported TensorRT version is refused by name. The fake engine runs the
ONNX file with ONNX Runtime, so its logits can be compared with the ONNX Runtime runtime's.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from echoseg.artifacts import resolve
from echoseg.preprocess import random_windows
from echoseg.runtime import InferenceError, RuntimeUnavailable
from echoseg.runtime.onnxruntime import OnnxRuntime
from echoseg.runtime.tensorrt import TensorRTRuntime, check_versions

from . import fake_tensorrt
from .fake_tensorrt import HostMemory


@pytest.fixture
def trt(monkeypatch):
    """The fake module installed as ``tensorrt`` for this test."""
    fake_tensorrt.reset()
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt)
    monkeypatch.setattr("echoseg.runtime.tensorrt.cuda_version_major", lambda: 12)
    yield fake_tensorrt
    fake_tensorrt.reset()


def build(onnx_path, plan_path, **settings):
    from export.tensorrt import BuildSettings, build_engine

    return build_engine(onnx_path, plan_path, BuildSettings(**settings), cuda=HostMemory())


def engine_runtime(plan) -> TensorRTRuntime:
    runtime = TensorRTRuntime(plan, "cuda", cuda=HostMemory())
    runtime.load()
    return runtime


def onnx_logits(onnx_path, windows) -> np.ndarray:
    with OnnxRuntime(onnx_path, "cpu") as runtime:
        runtime.load()
        return runtime.infer(windows)


def test_exported_engine_metadata_loads_in_the_runtime(trt, exported, tmp_path):
    onnx_path = exported("tiny", "matmul")
    plan = build(onnx_path, tmp_path / "tiny.plan", min_batch=1, opt_batch=2, max_batch=4)
    document = json.loads((tmp_path / "tiny.plan.json").read_text())
    assert document["metadata"]["echoseg.calibration"] == "matmul"
    assert document["build"]["profile"] == {"min": 1, "opt": 2, "max": 4}
    assert document["tensorrt_version"] == trt.__version__

    artifact = resolve(plan)
    assert artifact.kind == "engine" and artifact.config == resolve(onnx_path).config
    runtime = engine_runtime(plan)
    assert (runtime.model_min_batch, runtime.model_max_batch) == (1, 4)
    assert runtime.info()["preset"] == "tiny" and runtime.model_id.startswith("tiny-")
    windows = random_windows(runtime.config, 3, seed=2)
    np.testing.assert_allclose(runtime.infer(windows), onnx_logits(onnx_path, windows), atol=1e-6)


def test_batches_beyond_the_profile_are_split(trt, exported, tmp_path):
    onnx_path = exported("tiny", "matmul")
    runtime = engine_runtime(build(onnx_path, tmp_path / "t.plan", min_batch=1, opt_batch=2, max_batch=4))
    windows = random_windows(runtime.config, 10, seed=3)
    trt.CALLS.clear()
    out = runtime.infer(windows)
    assert [c for c in trt.CALLS if c[0] == "execute"] == [("execute", 4), ("execute", 4), ("execute", 2)]
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, onnx_logits(onnx_path, windows), atol=1e-6)


def test_a_fixed_batch_engine_gets_padded_and_split(trt, exported, conv_batch, tmp_path):
    onnx_path = exported("tiny", "conv")  # exported with a fixed batch of conv_batch (2)
    runtime = engine_runtime(build(onnx_path, tmp_path / "c.plan"))
    assert runtime.static_batch == conv_batch
    windows = random_windows(runtime.config, 3, seed=4)
    trt.CALLS.clear()
    out = runtime.infer(windows)
    assert [c[1] for c in trt.CALLS if c[0] == "execute"] == [2, 2]  # 2 + (1 padded to 2)
    np.testing.assert_allclose(out, onnx_logits(onnx_path, windows), atol=1e-6)


def test_a_refused_input_shape_is_a_clear_error(trt, exported, tmp_path):
    runtime = engine_runtime(build(exported("tiny", "matmul"), tmp_path / "t.plan", max_batch=4, opt_batch=2))
    trt.FAULTS.refuse_shapes = True
    with pytest.raises(InferenceError, match=r"refused input shape \(2, 3, 32, 32\).*profile batch 1\.\.4"):
        runtime.infer(random_windows(runtime.config, 2))
    assert not [c for c in trt.CALLS if c[0] == "execute"], "nothing may run after a refused shape"


def test_a_failed_execution_is_a_clear_error(trt, exported, tmp_path):
    runtime = engine_runtime(build(exported("tiny", "matmul"), tmp_path / "t.plan", max_batch=4, opt_batch=2))
    trt.FAULTS.fail_execute = True
    with pytest.raises(InferenceError, match="TensorRT execution failed on a batch of 2"):
        runtime.infer(random_windows(runtime.config, 2))


def test_each_tensor_gets_the_engines_dtype(trt, untrained, tmp_path):
    from export.onnx import export_onnx

    onnx_path = export_onnx(untrained("tiny"), tmp_path / "fp16.onnx", fp16=True)
    plan = build(onnx_path, tmp_path / "fp16.plan", max_batch=4, opt_batch=2)
    runtime = engine_runtime(plan)
    assert runtime.input_dtype == np.float16 and runtime.precision == "fp16"
    windows = random_windows(runtime.config, 3, seed=5)
    out = runtime.infer(windows)  # the fake asserts float16 buffers for both tensors
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, onnx_logits(onnx_path, windows), atol=1e-3)

    trt.FAULTS.output_dtype = trt.DataType.FLOAT  # fp16 in, fp32 out: the output buffer follows the engine
    runtime = engine_runtime(plan)
    assert (runtime.input_dtype, runtime.output_dtype) == (np.float16, np.float32)
    assert runtime.infer(windows).shape == (3, 1, 32, 32)


def test_an_unreadable_engine_is_refused(trt, exported, tmp_path):
    plan = build(exported("tiny", "matmul"), tmp_path / "t.plan", max_batch=4, opt_batch=2)
    plan.write_bytes(b"\x00not an engine")
    with pytest.raises(RuntimeUnavailable, match=r"could not load t\.plan"):
        engine_runtime(plan)


def test_engine_without_metadata_names_the_missing_file(trt, exported, tmp_path):
    plan = build(exported("tiny", "matmul"), tmp_path / "t.plan", max_batch=4, opt_batch=2)
    (tmp_path / "t.plan.json").unlink()
    with pytest.raises(ValueError, match=r"looked for t\.plan\.json"):
        TensorRTRuntime(plan, "cuda", cuda=HostMemory())


@pytest.mark.parametrize(
    ("version", "cuda", "message"),
    [
        ("11.0.0", 13, r"supports TensorRT 10\.x.*tensorrt-cu12>=10,<11"),
        ("10.9.0", 13, r"built for CUDA 13"),
    ],
)
def test_unsupported_versions_are_refused_by_name(version, cuda, message):
    with pytest.raises(RuntimeUnavailable, match=message):
        check_versions(version, cuda)
    check_versions("10.9.0", 12)
    check_versions("10.9.0", None)  # no torch: nothing to compare


def test_check_engine_gates_on_informative_masks(trt, trained_tiny, synthetic_root, tmp_path):
    from export.check import check_parity
    from export.onnx import export_onnx
    from export.tensorrt import check_engine

    onnx_path = export_onnx(trained_tiny, tmp_path / "t.onnx")
    plan = build(onnx_path, tmp_path / "t.plan", max_batch=4, opt_batch=2)
    report = check_engine(plan, onnx_path, data=synthetic_root, cuda=HostMemory())
    assert report["ok"], report
    assert [r["samples"] for r in report["results"]] == [1, 2, 4, 5]  # 5: beyond the profile, split
    assert all(r["informative"] for r in report["results"])
    # random frames through the same network: masks that say nothing cannot pass a mask gate
    report = check_engine(plan, onnx_path, data=None, cuda=HostMemory())
    assert not any(r["informative"] for r in report["results"]) and report["ok"] is False
    # and the ONNX parity of an fp32 file still gates on the logits
    _, ok = check_parity(onnx_path, trained_tiny)
    assert ok
