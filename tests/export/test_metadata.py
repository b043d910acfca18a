"""A .onnx file alone carries what the service needs; impossible options fail clearly."""

from __future__ import annotations

import json

import onnx
import pytest

from echoseg.config import ModelConfig
from export.onnx import METADATA_KEYS, export_onnx, parse_batch, read_metadata


def test_metadata_read_back_from_the_file_alone(untrained, exported):
    model = untrained("tiny")
    config, props = read_metadata(exported("tiny", "matmul"))
    assert isinstance(config, ModelConfig)
    assert config == model.config.replace(calibration="matmul")
    assert set(props) == {f"echoseg.{k}" for k in METADATA_KEYS} | {"echoseg.graph"}
    graph = json.loads(props["echoseg.graph"])  # what the file holds: the summaries' form, its size
    assert graph["summaries"] == "slices"  # the default form (training.model.calibration.SUMMARY_DEFAULT)
    assert graph["nodes"] == len(onnx.load(str(exported("tiny", "matmul"))).graph.node)
    assert json.loads(props["echoseg.config"])["input_size"] == model.config.input_size
    assert props["echoseg.preset"] == "tiny"
    assert props["echoseg.batch"] == "dynamic"
    assert props["echoseg.precision"] == "fp32"
    assert props["echoseg.calibration"] == "matmul"
    assert props["echoseg.run_id"] == "untrained:tiny:seed=0"
    assert float(props["echoseg.mean"]) == model.config.mean
    assert float(props["echoseg.std"]) == model.config.std
    assert int(props["echoseg.num_frames"]) == model.config.num_frames
    _, conv_props = read_metadata(exported("tiny", "conv"))
    assert conv_props["echoseg.batch"] == "2"
    assert conv_props["echoseg.calibration"] == "conv"


def test_file_without_echoseg_metadata_is_refused(exported, tmp_path):
    model = onnx.load(str(exported("tiny", "matmul")))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "bare.onnx"))
    with pytest.raises(ValueError, match="not an EchoSeg export"):
        read_metadata(tmp_path / "bare.onnx")


def test_conv_form_with_dynamic_batch_is_refused(untrained, tmp_path):
    with pytest.raises(ValueError, match=r"fixed batch.*--batch N.*matmul"):
        export_onnx(untrained("tiny"), tmp_path / "x.onnx", calibration="conv", batch="dynamic")
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("bad", ["0", "-1", "two", 0, 1.5, True])
def test_bad_batch_values(bad):
    with pytest.raises(ValueError, match="'dynamic' or a positive integer"):
        parse_batch(bad)


def test_bad_calibration_and_opset(untrained, tmp_path):
    with pytest.raises(ValueError, match="calibration must be one of"):
        export_onnx(untrained("tiny"), tmp_path / "x.onnx", calibration="fft")
    with pytest.raises(ValueError, match="opset"):
        export_onnx(untrained("tiny"), tmp_path / "x.onnx", opset=7)
