"""``echoseg export onnx`` + ``echoseg export check`` round trip, and checks that fail when they should."""

from __future__ import annotations

import pytest

from echoseg.cli import main
from export.onnx import read_metadata
from export.source import build_untrained
from training.model.io import save_pretrained


@pytest.fixture(scope="module")
def cli_export(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "tiny.onnx"
    assert main(["export", "onnx", "--preset", "tiny", "--out", str(path)]) == 0
    return path


def test_export_then_check_round_trip(cli_export, synthetic_root, capsys):
    config, props = read_metadata(cli_export)
    assert props["echoseg.calibration"] == "matmul"  # a dynamic batch always gets matmul
    assert config.preset == "tiny"
    capsys.readouterr()
    assert main(["export", "check", str(cli_export), "--data", str(synthetic_root), "--samples", "4"]) == 0
    out = capsys.readouterr().out
    assert "random" in out and "clips" in out
    assert "PASS" in out


def test_export_from_checkpoint_and_check_against_it(tmp_path, capsys):
    checkpoint = tmp_path / "ckpt"
    save_pretrained(build_untrained("tiny", seed=3), checkpoint, meta={"run_id": "run-42"})
    out = tmp_path / "ckpt.onnx"
    assert main(["export", "onnx", "--checkpoint", str(checkpoint), "--out", str(out), "--batch", "2"]) == 0
    _, props = read_metadata(out)
    assert props["echoseg.run_id"] == "run-42"
    assert props["echoseg.batch"] == "2"
    assert main(["export", "check", str(out), "--checkpoint", str(checkpoint), "--samples", "3"]) == 0
    capsys.readouterr()
    # without the checkpoint there is nothing to compare a trained run with: a clear refusal
    assert main(["export", "check", str(out)]) == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_check_fails_against_a_different_network(cli_export, tmp_path, capsys):
    other = tmp_path / "other"
    save_pretrained(build_untrained("tiny", seed=1), other)
    assert main(["export", "check", str(cli_export), "--checkpoint", str(other), "--samples", "2"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_conv_with_dynamic_batch_is_a_clear_error(tmp_path, capsys):
    out = str(tmp_path / "x.onnx")
    code = main(["export", "onnx", "--preset", "tiny", "--calibration", "conv", "--out", out])
    assert code == 2
    assert "fixed batch" in capsys.readouterr().err


def test_readiness_command(cli_export, capsys):
    assert main(["export", "readiness", str(cli_export)]) == 0
    assert '"ok": true' in capsys.readouterr().out
