"""The tiny models (both families) export to ONNX (matmul form, dynamic batch); ONNX Runtime agrees.

Uses the TorchScript-based exporter (``dynamo=False``): with torch 2.13 it exports the network in
seconds, while the torch.export-based exporter also works but takes about two minutes on 2 cores.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from training.model import build_model, get_preset

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module", params=["tiny", "unet-tiny"])
def model(request):
    torch.manual_seed(0)
    return build_model(get_preset(request.param)).eval().set_calibration("matmul")


@pytest.fixture(scope="module")
def onnx_path(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about the static spatial size, deprecation
        torch.onnx.export(
            model,
            (torch.randn(2, 3, 32, 32),),
            str(path),
            dynamo=False,
            input_names=["frames"],
            output_names=["logits"],
            dynamic_axes={"frames": {0: "batch"}, "logits": {0: "batch"}},
        )
    return path


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_runtime_matches_torch(model, onnx_path, batch):
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"
    torch.manual_seed(batch)
    frames = torch.randn(batch, 3, 32, 32)
    with torch.no_grad():
        expected = model(frames).numpy()
    (logits,) = session.run(["logits"], {"frames": frames.numpy()})
    assert logits.shape == (batch, 1, 32, 32)
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
