"""TensorRT readiness: the default export passes; graphs TensorRT would reject fail."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from export.readiness import check_tensorrt_readiness, supported_ops


def test_op_table_names_its_source():
    table = supported_ops()
    assert "onnx-tensorrt" in table["source"]["url"]
    assert table["source"]["tensorrt_version"].startswith("10.")
    assert {"Conv", "MatMul", "ReduceMax", "Slice", "Resize"} <= set(table["supported"])
    assert not set(table["supported"]) & set(table["unsupported"])


@pytest.mark.parametrize("preset", ["tiny", "lite"])
def test_default_export_is_ready(preset, exported):
    report = check_tensorrt_readiness(exported(preset, "matmul"))
    assert report.ok, report.problems
    assert report.batch == "dynamic"
    assert {"MatMul", "Conv"} <= set(report.op_types)


def test_conv_form_with_fixed_batch_is_ready(exported):
    report = check_tensorrt_readiness(exported("tiny", "conv"))
    assert report.ok, report.problems
    assert report.batch == 2
    assert any("runtime weight" in n for n in report.notes)


def test_conv_form_made_dynamic_is_not_ready(exported):
    model = onnx.load(str(exported("tiny", "conv")))
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = "batch"  # pretend the batch were dynamic
    del model.graph.value_info[:]
    report = check_tensorrt_readiness(model)
    assert not report.ok
    assert any("computed weight in a dynamic-batch graph" in p for p in report.problems)


def _graph(node, input_dims, opset=17):
    x = helper.make_tensor_value_info("frames", TensorProto.FLOAT, input_dims)
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)
    graph = helper.make_graph([node], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_unsupported_op_is_not_ready():
    model = _graph(helper.make_node("Det", ["frames"], ["logits"]), ["batch", 3, 4, 4])
    report = check_tensorrt_readiness(model)
    assert not report.ok
    assert any("Det" in p for p in report.problems)


def test_custom_domain_op_is_not_ready():
    node = helper.make_node("Calibrate", ["frames"], ["logits"], domain="com.echoseg")
    model = _graph(node, ["batch", 3, 4, 4])
    model.opset_import.append(helper.make_opsetid("com.echoseg", 1))
    report = check_tensorrt_readiness(model)
    assert any("com.echoseg" in p for p in report.problems)


def test_dynamic_spatial_dimension_is_not_ready():
    model = _graph(helper.make_node("Relu", ["frames"], ["logits"]), ["batch", 3, "height", 4])
    report = check_tensorrt_readiness(model)
    assert any("besides the batch" in p for p in report.problems)


def test_opset_outside_the_parser_range_is_not_ready():
    model = _graph(helper.make_node("Relu", ["frames"], ["logits"]), [1, 3, 4, 4], opset=8)
    report = check_tensorrt_readiness(model)
    assert any("opset 8" in p for p in report.problems)
