"""``evaluate`` end to end: synthetic EchoNet-format data on disk, an untrained ``tiny`` checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from training.data.synthetic import generate
from training.evaluate import evaluate
from training.model import build_model, get_preset
from training.model.io import save_pretrained

ARTEFACTS = (
    "metrics.json",
    "metrics.md",
    "per_case.csv",
    "bland_altman_ef.png",
    "dice_histogram.png",
    "overlay_best.png",
    "overlay_median.png",
    "overlay_worst.png",
)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("synth"), videos=3, frames=16, size=64, seed=7)


def test_evaluate_untrained_tiny_checkpoint_writes_every_artefact(synthetic, tmp_path):
    torch.manual_seed(0)
    checkpoint = tmp_path / "ckpt"
    save_pretrained(build_model(get_preset("tiny")), checkpoint, meta={"run_id": "untrained"})

    out = evaluate(checkpoint, synthetic, split="ALL", out_dir=tmp_path / "eval", batch_size=4)

    assert out["split"] == "ALL" and out["n_clips"] == 3
    assert set(out) >= {"traced", "traced_by_phase", "all_frames", "ef", "timing", "model", "spacing_known"}
    assert out["traced"]["n_frames"] == 6  # ED and ES of each clip
    assert out["all_frames"]["n_frames"] == 3 * 16  # synthetic Masks/ give every frame
    for key in ("dice", "hd", "hd95", "auc"):
        assert set(out["traced"][key]) == {"n", "n_undefined", "mean", "std", "median", "min", "max"}
        assert out["traced"][key]["n"] + out["traced"][key]["n_undefined"] == 6
    assert set(out["ef"]) == {"predicted", "reference_masks", "auto_ed_es"}
    assert out["ef"]["reference_masks"]["n"] == 3
    assert out["model"]["meta"]["run_id"] == "untrained"

    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["traced"]["n_frames"] == 6
    for name in ARTEFACTS:
        path = tmp_path / "eval" / name
        assert path.is_file() and path.stat().st_size > 0, name
        if name.endswith(".png"):
            with Image.open(path) as im:
                assert im.format == "PNG"
                assert np.asarray(im.convert("L")).std() > 5


def test_evaluate_rejects_an_unknown_split_naming_the_valid_ones(synthetic):
    model = build_model(get_preset("tiny"))
    with pytest.raises(ValueError, match="TEST"):
        evaluate(model, synthetic, split="NOPE")
