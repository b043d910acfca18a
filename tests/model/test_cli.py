"""echoseg model-info."""

from __future__ import annotations

import json

import pytest

from echoseg.cli import main
from training.model import build_model, get_preset
from training.model.io import save_pretrained


def run_json(capsys, *argv) -> dict:
    assert main(["model-info", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("preset", ["paper", "lite", "tiny"])
def test_model_info_json(capsys, preset):
    info = run_json(capsys, "--preset", preset)
    assert info["preset"] == preset == info["config"]["preset"]
    assert info["parameters"] > 0 and info["flops_per_frame"] > 0
    if preset == "paper":
        assert abs(info["parameters"] - 74.8e6) <= 0.15 * 74.8e6


def test_matmul_form_saves_the_per_dilation_products(capsys):
    conv = run_json(capsys, "--preset", "tiny")
    matmul = run_json(capsys, "--preset", "tiny", "--calibration", "matmul")
    assert conv["calibration"] == "conv" and matmul["calibration"] == "matmul"
    config = conv["config"]
    # conv applies the C x C x 3 x 3 kernel once per dilation, matmul once (views summed first)
    extra_dilations = len(config["dilations"]) - 1
    per_level = [
        2 * 9 * (config["width"] * 2**i) ** 2 * (config["input_size"] // 2**i) ** 2
        for i in config["calibrated_levels"]
    ]
    neighbours = config["num_frames"] - 1
    assert conv["flops_per_frame"] - matmul["flops_per_frame"] == neighbours * extra_dilations * sum(
        per_level
    )


def test_model_info_checkpoint_and_text(capsys, tiny_model, tmp_path):
    save_pretrained(tiny_model, tmp_path, meta={"run_id": "abc"})
    info = run_json(capsys, "--checkpoint", str(tmp_path))
    assert info["meta"] == {"run_id": "abc"}
    assert info["parameters"] == sum(p.numel() for p in tiny_model.parameters())
    assert main(["model-info", "--preset", "tiny"]) == 0
    assert "FLOPs/frame" in capsys.readouterr().out
    assert main(["model-info", "--checkpoint", str(tmp_path / "missing")]) == 2


def test_model_info_latency_reports_both_forms_and_runtimes(capsys, tmp_path):
    # a one-level network keeps the two in-memory ONNX exports short
    config = get_preset("tiny", depth=1, calibrated_levels=(0,), input_size=16)
    save_pretrained(build_model(config), tmp_path)
    info = run_json(capsys, "--checkpoint", str(tmp_path), "--latency", "--threads", "1", "--runs", "1")
    assert set(info["latency"]) == {"torch_conv", "torch_matmul", "onnxruntime_conv", "onnxruntime_matmul"}
    assert all(t["min_ms"] > 0 and t["median_ms"] >= t["min_ms"] for t in info["latency"].values())
    assert info["calibration"] == "conv"  # the form is restored after timing
