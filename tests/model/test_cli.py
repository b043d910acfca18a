"""echoseg model-info."""

from __future__ import annotations

import json

import pytest

from echoseg.cli import main
from echoseg.config import ModelConfig
from training.model import build_model, get_preset
from training.model.io import save_pretrained


def run_json(capsys, *argv) -> dict:
    assert main(["model-info", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("preset", ["paper", "lite", "tiny", "unet", "unet-lite"])
def test_model_info_json(capsys, preset):
    info = run_json(capsys, "--preset", preset)
    assert info["preset"] == preset == info["config"]["preset"]
    assert info["parameters"] > 0 and info["flops_per_frame"] > 0
    assert info["macs_per_frame"] == info["flops_per_frame"] // 2
    # the convolution modules are most of the work, but not ASSC's per-sample convolution
    assert 0 < info["conv_module_macs_per_frame"] < info["macs_per_frame"]
    assert info["paper_table7"]["parameters"] == 74.798e6


def test_paper_size_and_cost(capsys):
    """The authors' network: ResNet-18 x 3 (31.5 M), G 6.3 M, T_q/T_k 12.5 M, fusion and decoder."""
    info = run_json(capsys, "--preset", "paper")
    assert info["architecture"] == "resnet"
    assert 53e6 < info["parameters"] < 54.5e6
    assert 44e9 < info["macs_per_frame"] < 46e9
    assert 37e9 < info["conv_module_macs_per_frame"] < 38e9


def test_matmul_form_saves_the_per_dilation_products(capsys):
    # unet-tiny calibrates with two dilations (the ResNet family with one)
    conv = run_json(capsys, "--preset", "unet-tiny")
    matmul = run_json(capsys, "--preset", "unet-tiny", "--calibration", "matmul")
    assert conv["calibration"] == "conv" and matmul["calibration"] == "matmul"
    config = ModelConfig.from_dict(conv["config"])
    # conv applies the C x C x 3 x 3 kernel once per dilation, matmul once (views summed first)
    extra_dilations = len(config.dilations) - 1
    assert extra_dilations > 0
    per_level = [
        2 * 9 * config.level_width(i) ** 2 * config.level_size(i) ** 2 for i in config.calibrated_levels
    ]
    neighbours = config.num_frames - 1
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
