"""ONNX export of the student network, with the metadata that makes a ``.onnx`` file servable alone.

The graph takes ``frames (B, k, S, S)`` (float32, or float16 for an fp16 export), already
normalised with the model's mean/std, and returns ``logits (B, 1, S, S)`` for the window's target
frame. Everything the service needs to prepare frames and read masks (preset, window, input
size, normalisation, threshold, calibration form, batch, precision, training run) is written into
the file's metadata properties (``echoseg.*``), with ``echoseg.graph`` saying how the graph was
written (the summaries' form, its node count); :func:`read_metadata` reads it back.

The calibration kernels differ per sample, which decides how the graph may be batched:

- ``matmul``: 9 per-tap batched MatMuls per dilation. The batch axis is dynamic; every runtime
  (ONNX Runtime CPU/CUDA, TensorRT) accepts it.
- ``conv``: one grouped Conv whose weight is computed at run time and whose ``group`` attribute
  is the batch. ONNX attributes are static, so the batch is fixed when the graph is exported
  (one file, or one TensorRT profile, per batch size).

The graph is captured with torch's TorchScript-based ONNX exporter (``dynamo=False``): on these
graphs it is about 30 times faster than the ``torch.export``-based one (tiny preset on 2 CPU
cores: 8 s against 220 s) and gives the same numbers; ``exporter="dynamo"`` selects the other.
fp16 files are exported in fp32 and converted with
ONNX Runtime's float16 converter (weights and compute in fp16, input and output float16; ops
without an fp16 kernel keep fp32 compute behind Casts).
"""

from __future__ import annotations

import copy
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

from echoseg.artifacts import (
    METADATA_KEYS,
    METADATA_PREFIX,
    build_metadata,
    parse_metadata,
    read_onnx_metadata,
)
from echoseg.config import ModelConfig
from echoseg.forms import check_form, parse_batch

logger = logging.getLogger(__name__)

INPUT_NAME = "frames"
OUTPUT_NAME = "logits"
BATCH_SYMBOL = "batch"
DEFAULT_OPSET = 20  # the highest opset every TensorRT 10.x parser accepts (10.0: opset 9-20)


class ExportError(ValueError):
    """An exported graph failed validation (ONNX checker, shape inference or its I/O contract)."""


EXPORTERS = ("torchscript", "dynamo")


def _capture(model, example, batch: str | int, opset: int, exporter: str = "torchscript"):
    """Trace ``model`` into an ``onnx.ModelProto``.

    ``torchscript`` (``dynamo=False``) is the default: on the EchoSeg graphs it exports the tiny
    preset in seconds where the ``torch.export``-based exporter took minutes (measured when the
    summaries were hundreds of static slices), with the same numbers.
    """
    import onnx
    import torch

    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    common = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            dynamic = None
            if batch == "dynamic":
                dynamic = {"frames": {0: torch.export.Dim(BATCH_SYMBOL, min=1, max=1024)}}
            program = torch.onnx.export(
                model, (example,), None, dynamo=True, dynamic_shapes=dynamic, external_data=False, **common
            )
            return program.model_proto
        buffer = io.BytesIO()
        dynamic_axes = None
        if batch == "dynamic":
            dynamic_axes = {INPUT_NAME: {0: BATCH_SYMBOL}, OUTPUT_NAME: {0: BATCH_SYMBOL}}
        torch.onnx.export(model, (example,), buffer, dynamo=False, dynamic_axes=dynamic_axes, **common)
    return onnx.load_model_from_string(buffer.getvalue())


def to_fp16(model_proto):
    """fp32 graph -> fp16 weights and compute, float16 input and output."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_float_to_float16(model_proto, keep_io_types=False, disable_shape_infer=False)


def validate(model_proto, config: ModelConfig, batch: str | int, fp16: bool):
    """ONNX checker + strict shape inference + the I/O contract; returns the shape-inferred model."""
    import onnx

    try:
        onnx.checker.check_model(model_proto)
        inferred = onnx.shape_inference.infer_shapes(model_proto, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"the exported graph is not valid ONNX: {e}") from e
    elem = onnx.TensorProto.FLOAT16 if fp16 else onnx.TensorProto.FLOAT
    b = BATCH_SYMBOL if batch == "dynamic" else batch
    size = config.input_size
    expected = {
        INPUT_NAME: [b, config.num_frames, size, size],
        OUTPUT_NAME: [b, 1, size, size],
    }
    for value in [*inferred.graph.input, *inferred.graph.output]:
        if value.name not in expected:
            raise ExportError(f"unexpected graph input/output {value.name!r}; expected {sorted(expected)}")
        tensor = value.type.tensor_type
        dims = [d.dim_param if d.dim_param else d.dim_value for d in tensor.shape.dim]
        if tensor.elem_type != elem or dims != expected[value.name]:
            raise ExportError(
                f"{value.name}: got {onnx.TensorProto.DataType.Name(tensor.elem_type)} {dims}, "
                f"expected {onnx.TensorProto.DataType.Name(elem)} {expected[value.name]}"
            )
    return inferred


def summary_form(net) -> str:
    """How the network's calibration summaries are written (its ASSC modules' ``summary``)."""
    from training.model.calibration import SemanticCalibration

    forms = sorted({m.summary for m in net.modules() if isinstance(m, SemanticCalibration)})
    return ",".join(forms) or "none"  # a network without calibration has no summaries


def export_onnx(
    model,
    out_path: str | Path,
    *,
    calibration: str = "matmul",
    batch: str | int = "dynamic",
    fp16: bool = False,
    opset: int | None = None,
    meta: dict[str, Any] | None = None,
    exporter: str = "torchscript",
) -> Path:
    """Export ``model`` (an ``EchoSegNet``) to ``out_path`` and return the path.

    ``calibration``: ``"matmul"`` (dynamic batch allowed) or ``"conv"`` (fixed ``batch`` only).
    ``batch``: ``"dynamic"`` or a positive integer. ``fp16``: float16 weights, compute and I/O.
    ``opset``: ONNX opset (default 20). ``meta``: checkpoint meta; its ``run_id`` is recorded.
    ``exporter``: ``"torchscript"`` (default) or ``"dynamo"`` (``torch.export``; much slower here).
    The model is copied; the caller's model keeps its calibration form, device and mode.
    Raises ``ValueError`` for impossible options and :class:`ExportError` for an invalid graph.
    """
    import onnx
    import torch

    batch = parse_batch(batch)
    check_form(calibration, batch)
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if not 9 <= opset <= 24:
        raise ValueError(f"opset must lie in 9..24 (ONNX-TensorRT's range), got {opset}")
    out_path = Path(out_path)

    net = copy.deepcopy(model).float().cpu().eval()
    net.set_calibration(calibration)
    config = net.config
    example_batch = 2 if batch == "dynamic" else batch  # 1 would be specialised as a constant
    size = config.input_size
    example = torch.randn(example_batch, config.num_frames, size, size)

    logger.info("exporting %s (calibration %s, batch %s, opset %d)", config.preset, calibration, batch, opset)
    model_proto = _capture(net, example, batch, opset, exporter)
    if fp16:
        model_proto = to_fp16(model_proto)
    model_proto.producer_name = "echoseg"
    model_proto.doc_string = f"EchoSeg student network, preset {config.preset}"
    del model_proto.metadata_props[:]
    for key, value in build_metadata(config, batch, "fp16" if fp16 else "fp32", meta).items():
        model_proto.metadata_props.add(key=key, value=value)
    graph = {"summaries": summary_form(net), "nodes": len(model_proto.graph.node)}
    model_proto.metadata_props.add(key=METADATA_PREFIX + "graph", value=json.dumps(graph, sort_keys=True))
    validate(model_proto, config, batch, fp16)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model_proto, str(out_path))
    logger.info("wrote %s (%.1f MB)", out_path, out_path.stat().st_size / 1e6)
    return out_path


def read_metadata(path: str | Path) -> tuple[ModelConfig, dict[str, str]]:
    """The ``ModelConfig`` and the ``echoseg.*`` properties stored in an exported ``.onnx`` file."""
    props = read_onnx_metadata(path)
    return parse_metadata(props, Path(path).name), props


__all__ = ["METADATA_KEYS", "METADATA_PREFIX", "ExportError", "export_onnx", "read_metadata"]
