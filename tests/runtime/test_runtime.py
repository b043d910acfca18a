"""The runtime layer without a GPU: batch splitting, ONNX Runtime providers, artefacts and model ids."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from echoseg.artifacts import ArtifactError, resolve
from echoseg.config import ModelConfig
from echoseg.runtime import InferenceError, Runtime, RuntimeUnavailable, batch_pieces, create_runtime
from echoseg.runtime.onnxruntime import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    TRT_PROVIDER,
    check_wheels,
    choose_providers,
    trt_provider_options,
)


class Doubler(Runtime):
    """Returns twice the target frame; takes ``low..high`` windows per call and records the calls."""

    name = "doubler"

    def __init__(self, low: int, high: int | None) -> None:
        super().__init__()
        self.config = ModelConfig(width=2, depth=3, calibrated_levels=(), input_size=8)
        self.model_min_batch, self.model_max_batch = low, high
        self.calls: list[int] = []

    def load(self) -> None:
        self.model_id = "doubler-0"

    def _run(self, batch: np.ndarray) -> np.ndarray:
        assert self.model_min_batch <= batch.shape[0] <= (self.model_max_batch or batch.shape[0])
        self.calls.append(batch.shape[0])
        return 2 * batch[:, 1:2]


@pytest.mark.parametrize(
    ("n", "low", "high", "pieces"),
    [
        (5, 1, None, [(0, 5, 5)]),
        (5, 4, 4, [(0, 4, 4), (4, 5, 4)]),
        (10, 1, 4, [(0, 4, 4), (4, 8, 4), (8, 10, 2)]),
        (3, 2, 8, [(0, 3, 3)]),
        (1, 2, 8, [(0, 1, 2)]),
    ],
)
def test_batch_pieces(n, low, high, pieces):
    assert batch_pieces(n, low, high) == pieces


def test_infer_splits_and_pads_into_the_batch_range():
    runtime = Doubler(2, 4)
    runtime.load()
    batch = np.random.default_rng(0).standard_normal((7, 3, 8, 8)).astype(np.float32)
    out = runtime.infer(batch)
    assert runtime.calls == [4, 3]
    np.testing.assert_array_equal(out, 2 * batch[:, 1:2])
    runtime.calls.clear()
    runtime.infer(batch[:1])
    assert runtime.calls == [2]  # one window padded up to the smallest batch
    with pytest.raises(ValueError, match=r"windows must be \(B, 3, 8, 8\)"):
        runtime.infer(batch[:, :2])


def test_wrong_output_shape_is_an_inference_error():
    class Broken(Doubler):
        def _run(self, batch):
            return batch[:, :1, :4]

    runtime = Broken(1, None)
    with pytest.raises(InferenceError, match=r"returned logits of shape \(2, 1, 4, 8\)"):
        runtime.infer(np.zeros((2, 3, 8, 8), np.float32))


def test_providers_for_each_device_and_choice():
    every = [TRT_PROVIDER, CUDA_PROVIDER, CPU_PROVIDER]
    options = {"trt_fp16_enable": True}
    assert choose_providers("cpu", every) == [CPU_PROVIDER]
    assert choose_providers("cuda", every, "auto", options) == [
        (TRT_PROVIDER, options),
        CUDA_PROVIDER,
        CPU_PROVIDER,
    ]
    assert choose_providers("cuda", every, "cuda") == [CUDA_PROVIDER, CPU_PROVIDER]
    assert choose_providers("cuda", [CUDA_PROVIDER, CPU_PROVIDER]) == [CUDA_PROVIDER, CPU_PROVIDER]
    with pytest.raises(RuntimeUnavailable, match="no TensorRT provider"):
        choose_providers("cuda", [CUDA_PROVIDER, CPU_PROVIDER], "tensorrt")
    with pytest.raises(RuntimeUnavailable, match="needs onnxruntime-gpu"):
        choose_providers("cuda", [CPU_PROVIDER])
    with pytest.raises(ValueError, match="provider must be one of"):
        choose_providers("cuda", every, "rocm")


def test_tensorrt_provider_options(exported, conv_batch, tmp_path):
    dynamic = resolve(exported("tiny", "matmul"))
    opts = trt_provider_options(dynamic, tmp_path / "cache", fp16=True, profile_max_batch=16)
    assert opts["trt_engine_cache_enable"] and opts["trt_engine_cache_path"] == str(tmp_path / "cache")
    assert opts["trt_timing_cache_enable"] and opts["trt_fp16_enable"] is True
    assert (
        opts["trt_profile_min_shapes"],
        opts["trt_profile_opt_shapes"],
        opts["trt_profile_max_shapes"],
    ) == (
        "frames:1x3x32x32",
        "frames:8x3x32x32",
        "frames:16x3x32x32",
    )
    assert (tmp_path / "cache").is_dir()
    fixed = resolve(exported("tiny", "conv"))
    opts = trt_provider_options(fixed, tmp_path / "cache", fp16=False, profile_max_batch=16)
    assert opts["trt_profile_min_shapes"] == opts["trt_profile_max_shapes"] == f"frames:{conv_batch}x3x32x32"
    assert opts["trt_fp16_enable"] is False


def test_both_onnxruntime_wheels_are_refused_on_a_gpu():
    with pytest.raises(RuntimeUnavailable, match="both onnxruntime and onnxruntime-gpu are installed"):
        check_wheels("cuda", ["onnxruntime", "onnxruntime-gpu"])
    check_wheels("cpu", ["onnxruntime", "onnxruntime-gpu"])  # the CPU provider is there either way
    check_wheels("cuda", ["onnxruntime-gpu"])


def test_onnxruntime_runtime_runs_fixed_batch_exports_in_pieces(exported, untrained, conv_batch):
    from export.check import torch_logits

    runtime = create_runtime("onnxruntime", exported("tiny", "conv"), "cpu")
    runtime.load()
    assert runtime.static_batch == conv_batch and runtime.info()["batch_range"] == [conv_batch, conv_batch]
    windows = np.random.default_rng(1).standard_normal((5, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(runtime.infer(windows), torch_logits(untrained("tiny"), windows), atol=1e-4)


# -- artefacts and model ids -------------------------------------------------------------------------
def save_run(untrained, root, seed: int):
    """A training-run layout: ``root/best/{config.json,student.safetensors}``."""
    import torch

    from training.model.io import save_pretrained

    model = untrained("tiny")
    if seed:
        torch.manual_seed(seed)
        model = type(model)(model.config)
    save_pretrained(model, root / "best", meta={"run_id": root.name})
    return root


def test_model_id_follows_the_weights(untrained, tmp_path):
    run_a = save_run(untrained, tmp_path / "run-a", seed=0)
    run_b = save_run(untrained, tmp_path / "run-b", seed=1)
    assert resolve(run_a).model_id() == resolve(run_a / "best").model_id()
    assert resolve(run_a).path == run_a / "best"
    assert resolve(run_a).model_id() != resolve(run_b).model_id()
    copy = tmp_path / "copy"
    shutil.copytree(run_a / "best", copy)
    assert resolve(copy).model_id() == resolve(run_a).model_id()  # the same weights, the same id
    assert resolve(run_a).model_id().startswith("tiny-") and len(resolve(run_a).digest()) == 12


def test_torch_runtime_ids_differ_per_run(untrained, tmp_path):
    run_a = save_run(untrained, tmp_path / "run-a", seed=0)
    run_b = save_run(untrained, tmp_path / "run-b", seed=1)
    ids = []
    for run in (run_a, run_b, run_a / "best"):
        runtime = create_runtime("torch", run, "cpu")
        runtime.load()
        ids.append(runtime.model_id)
    assert ids[0] != ids[1] and ids[0] == ids[2]


def test_resolver_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve(tmp_path / "missing.onnx")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="cannot tell what model"):
        resolve(tmp_path / "weights.bin")
    (tmp_path / "model.plan").write_bytes(b"x")
    (tmp_path / "model.plan.json").write_text(json.dumps({"onnx": {}}))
    with pytest.raises(ArtifactError, match="has no 'metadata' object"):
        resolve(tmp_path / "model.plan")
    (tmp_path / "model.plan.json").write_text(json.dumps({"metadata": {"echoseg.preset": "x"}}))
    with pytest.raises(ArtifactError, match=r"metadata .* missing"):
        resolve(tmp_path / "model.plan")
