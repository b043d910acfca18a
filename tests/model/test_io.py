"""Weights I/O: save_pretrained / load_pretrained round trips and path forms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from training.model import build_model, get_preset
from training.model.io import load_pretrained, save_pretrained

BUNDLED = Path(__file__).resolve().parents[2] / "models" / "default"


def trained_like(model):
    """Move weights and BatchNorm statistics away from their initial values."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.train()(torch.randn(2, 3, 32, 32))  # updates running statistics
    return model.eval()


def test_round_trip_is_exact(tiny_model, tmp_path):
    model = trained_like(tiny_model)
    path = save_pretrained(model, tmp_path / "ckpt", meta={"run_id": "r1", "step": 7})
    assert path == tmp_path / "ckpt" / "student.safetensors"
    document = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert document["model"] == model.config.to_dict()
    assert document["meta"] == {"run_id": "r1", "step": 7}

    loaded, config, meta = load_pretrained(tmp_path / "ckpt")
    assert config == model.config and meta == {"run_id": "r1", "step": 7}
    assert not loaded.training
    expected, actual = model.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    frames = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(frames), loaded(frames))


def test_path_forms_and_which(tiny_model, tmp_path):
    run = tmp_path / "run"
    save_pretrained(tiny_model, run / "best", meta={"step": 1})
    teacher = build_model(tiny_model.config.replace(calibration="matmul"))
    save_pretrained(teacher, run / "best", name="teacher", meta={"step": 1})

    _, config, _ = load_pretrained(run)  # a run directory: best/ is used
    assert config.calibration == "matmul"  # one config.json per checkpoint directory
    loaded, _, _ = load_pretrained(run / "best" / "teacher.safetensors")
    assert torch.equal(
        loaded.state_dict()["decoder.head.weight"], teacher.state_dict()["decoder.head.weight"]
    )
    loaded, _, _ = load_pretrained(run / "best", which="teacher")
    assert torch.equal(
        loaded.state_dict()["decoder.head.weight"], teacher.state_dict()["decoder.head.weight"]
    )


def test_missing_checkpoint_errors_name_the_path(tiny_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_pretrained(tmp_path / "nowhere")
    save_pretrained(tiny_model, tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match=r"teacher\.safetensors.*student"):
        load_pretrained(tmp_path / "ckpt", which="teacher")
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="'model'"):
        load_pretrained(tmp_path / "ckpt")


def test_config_without_architecture_is_the_unet_family(tiny_model, tmp_path):
    """Checkpoints written before the ResNet family name no architecture, aggregation or scaling:
    they load as what they were trained as (U-Net, A ⊙ G, fan-in scaling), whatever their preset."""
    legacy = build_model(get_preset("unet-tiny").replace(preset="tiny"))
    save_pretrained(legacy, tmp_path / "old")
    document = json.loads((tmp_path / "old" / "config.json").read_text())
    for key in ("architecture", "aggregation", "scaling"):
        del document["model"][key]
    (tmp_path / "old" / "config.json").write_text(json.dumps(document))
    loaded, config, _ = load_pretrained(tmp_path / "old")
    assert (config.preset, config.architecture, config.aggregation, config.scaling) == (
        "tiny",
        "unet",
        "elementwise",
        "fanin",
    )
    frames = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(legacy.eval()(frames), loaded(frames))


def test_bundled_default_model_loads_as_the_papers_family():
    model, config, meta = load_pretrained(BUNDLED)
    assert config.preset == "lite" and config.architecture == "resnet"  # the paper's network (Sec. 3)
    assert config.aggregation == "product" and meta["run_id"]
    with torch.no_grad():
        assert model(torch.zeros(1, 3, config.input_size, config.input_size)).shape[-1] == config.input_size
