"""Will TensorRT's ONNX parser accept this graph? Checked without TensorRT.

The rules come from the ONNX-TensorRT operator support matrix kept as data in
``export/data/onnx_trt_supported_ops.json`` (its source and TensorRT version are named inside):

- every node is an ONNX-domain operator the parser supports, at an opset it parses;
- a Conv whose weight is computed at run time (the ``conv`` calibration form) appears only in a
  graph with a static batch, and its weight has a static shape;
- no dynamic dimension other than the batch: graph inputs and outputs have a dynamic axis 0 at
  most, and no intermediate dimension derives from another input dimension.

A graph that passes can still fail to build for reasons this check cannot see (memory, tactics);
``echoseg export tensorrt --check`` is the real test where TensorRT exists.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

ONNX_DOMAINS = ("", "ai.onnx")
_SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@cache
def supported_ops() -> dict[str, Any]:
    """The ONNX-TensorRT support matrix (``source``, ``opset_range``, ``supported``, ``unsupported``)."""
    text = resources.files("export").joinpath("data/onnx_trt_supported_ops.json").read_text()
    return json.loads(text)


@dataclass
class Readiness:
    """What the check found: ``ok`` is true when ``problems`` is empty."""

    op_types: list[str]
    opset: int
    batch: str | int
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "op_types": self.op_types,
            "opset": self.opset,
            "batch": self.batch,
            "problems": self.problems,
            "notes": self.notes,
        }


def _dims(value) -> list[int | str | None]:
    """Dimensions of a ValueInfo: ints, symbol names, or None when unknown."""
    out: list[int | str | None] = []
    for d in value.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(d.dim_value)
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def _all_nodes(graph):
    """Nodes of a graph and of its subgraphs (If/Loop/Scan bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                yield from _all_nodes(attr.g)
            for sub in attr.graphs:
                yield from _all_nodes(sub)


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ONNX_DOMAINS), 0)


def _batch_of(graph) -> tuple[str | int, str | None]:
    """The first input's axis 0: ``("dynamic", symbol)`` or ``(n, None)``."""
    first = _dims(graph.input[0])[0] if graph.input and _dims(graph.input[0]) else None
    if isinstance(first, int) and first > 0:
        return first, None
    return "dynamic", first


def _check_ops(nodes, opset: int, table: dict[str, Any], report: Readiness) -> None:
    low = min(r[0] for r in table["opset_range"].values())
    high = max(r[1] for r in table["opset_range"].values())
    if not low <= opset <= high:
        report.problems.append(f"opset {opset} outside the parser's range {low}..{high}")
    oldest = min(table["opset_range"], key=lambda v: tuple(int(x) for x in v.split(".")))
    if opset > table["opset_range"][oldest][1]:
        report.notes.append(f"opset {opset} needs a TensorRT newer than {oldest}")
    for node in nodes:
        if node.domain not in ONNX_DOMAINS:
            report.problems.append(f"{node.op_type} ({node.name}) is in domain {node.domain!r} (a plugin)")
        elif node.op_type not in table["supported"]:
            report.problems.append(f"{node.op_type} ({node.name}) is not supported by ONNX-TensorRT")


def _check_conv_weights(graph, shapes: dict[str, list], batch: str | int, report: Readiness) -> None:
    constants = {i.name for i in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] in constants:
            continue
        weight_dims = shapes.get(node.input[1])
        if batch == "dynamic":
            report.problems.append(
                f"Conv {node.name} has a computed weight in a dynamic-batch graph (export the conv form "
                "with a fixed batch, or use the matmul form)"
            )
        elif weight_dims is None or not all(isinstance(d, int) for d in weight_dims):
            report.problems.append(f"Conv {node.name}: computed weight of non-static shape {weight_dims}")
        else:
            report.notes.append(f"Conv {node.name} uses a runtime weight {weight_dims} (TensorRT >= 8.5)")


def _check_dynamic_dims(graph, batch_symbol: str | None, report: Readiness) -> None:
    """Inputs and outputs: only axis 0 may be dynamic. Intermediates: no symbol but the batch's.

    Shape inference cannot always follow shape arithmetic (Shape -> Gather -> Concat -> Reshape);
    dimensions it leaves unnamed or names ``unk__*`` are counted in a note, not as problems.
    """
    for value in [*graph.input, *graph.output]:
        dims = _dims(value)
        bad = [i for i, d in enumerate(dims) if not isinstance(d, int) and i != 0]
        if bad:
            report.problems.append(f"{value.name} has dynamic dimensions {bad} besides the batch: {dims}")
    allowed = {batch_symbol} if batch_symbol else set()
    input_symbols = {d for v in graph.input for d in _dims(v) if isinstance(d, str)}
    foreign: set[str] = set()
    unresolved = 0
    for value in graph.value_info:
        for d in _dims(value):
            if d is None or (isinstance(d, str) and d.startswith("unk__")):
                unresolved += 1
            elif isinstance(d, str) and set(_SYMBOL.findall(d)) & (input_symbols - allowed):
                foreign.add(f"{value.name}: {d!r}")
    if foreign:
        shown = sorted(foreign)[:5]
        report.problems.append(f"intermediate tensors depend on non-batch input dimensions: {shown}")
    if unresolved:
        report.notes.append(f"{unresolved} intermediate dimensions not resolved by ONNX shape inference")


def check_tensorrt_readiness(model: str | Path | Any) -> Readiness:
    """Check an ONNX graph (path or ``onnx.ModelProto``) against the ONNX-TensorRT parser's rules."""
    import onnx

    if isinstance(model, (str, Path)):
        model = onnx.load_model(str(model), load_external_data=False)
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    graph = inferred.graph
    table = supported_ops()
    nodes = list(_all_nodes(graph))
    batch, batch_symbol = _batch_of(graph)
    report = Readiness(op_types=sorted({n.op_type for n in nodes}), opset=_opset(inferred), batch=batch)
    _check_ops(nodes, report.opset, table, report)
    shapes = {v.name: _dims(v) for v in [*graph.value_info, *graph.input, *graph.output]}
    _check_conv_weights(graph, shapes, batch, report)
    _check_dynamic_dims(graph, batch_symbol, report)
    return report
