"""Evaluation pipeline on hand-made clips: an oracle model and an untrained ``tiny`` network."""

from __future__ import annotations

import csv
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from training import metrics
from training.evaluate import evaluate_clips, load_model, pick_cases
from training.model import build_model, get_preset

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


def beating_clip(name: str, frames: int, size: int, contraction: float, spacing=(1.0, 1.0), seed=0):
    """An elliptic bright cavity on a dark, noisy background that shrinks and grows once."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    phase = (1.0 - np.cos(2 * np.pi * np.arange(frames) / frames)) / 2.0  # 0 at ED, 1 mid-clip
    masks = np.empty((frames, size, size), dtype=np.uint8)
    for t, p in enumerate(phase):
        scale = 1.0 - contraction * p
        a, b = 0.36 * size * scale, 0.2 * size * scale
        masks[t] = ((yy - size / 2) / a) ** 2 + ((xx - size / 2) / b) ** 2 <= 1
    video = np.clip(30 + 170 * masks + rng.normal(0, 10, masks.shape), 0, 255).astype(np.uint8)
    ed, es = 0, int(np.argmax(phase))
    return SimpleNamespace(
        name=name,
        frames=video,
        fps=50.0,
        ef=metrics.ef_from_masks(masks[ed], masks[es], spacing) + rng.normal(0, 1.0),
        split="TEST",
        traced={ed: masks[ed], es: masks[es]},
        ed=ed,
        es=es,
        true_masks=masks,
        spacing=spacing,
    )


class BrightnessOracle(nn.Module):
    """Calls bright pixels of the target frame cavity: a near-perfect segmenter of these clips."""

    def __init__(self):
        super().__init__()
        self.config = get_preset("tiny")
        self.gain = nn.Parameter(torch.tensor(20.0))

    def forward(self, frames):  # (B, k, S, S) normalised -> (B, 1, S, S)
        c = self.config
        target = frames[:, c.offsets.index(0) : c.offsets.index(0) + 1]
        intensity = target * c.std + c.mean  # back to [0, 1]
        return self.gain * (intensity - 115.0 / 255.0)


@pytest.fixture
def clips():
    return [
        beating_clip("a", 16, 64, 0.35, seed=1),
        beating_clip("b", 16, 64, 0.2, seed=2),
        beating_clip("c", 12, 48, 0.45, spacing=(0.5, 0.5), seed=3),
        beating_clip("d", 12, 64, 0.1, seed=4),
    ]


def test_oracle_scores_near_perfect_and_writes_every_artefact(clips, tmp_path):
    out = evaluate_clips(BrightnessOracle(), clips, "TEST", out_dir=tmp_path, batch_size=5)

    assert out["n_clips"] == 4
    tr = out["traced"]
    assert tr["n_frames"] == 8
    assert tr["dice"]["mean"] > 0.93
    assert tr["auc"]["mean"] > 0.98
    assert tr["hd"]["max"] < 4.0 and tr["hd"]["n_undefined"] == 0
    assert tr["hd95"]["mean"] <= tr["hd"]["mean"]
    assert out["spacing_known"] is True
    assert tr["hd_mm"]["mean"] < tr["hd"]["mean"]  # the 0.5 mm clip shrinks the mm figures
    assert out["all_frames"]["n_frames"] == 16 + 16 + 12 + 12
    assert out["traced_by_phase"]["ED"]["n_frames"] == 4
    ef = out["ef"]["predicted"]
    assert ef["n"] == 4 and ef["corr"] > 0.9 and abs(ef["bias"]) < 6.0
    assert out["ef"]["reference_masks"]["corr"] > 0.95
    assert out["model"]["config"]["preset"] == "tiny"

    for name in ARTEFACTS:
        assert (tmp_path / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "metrics.json").read_text())["traced"]["dice"]["n"] == 8
    for png in (p for p in ARTEFACTS if p.endswith(".png")):
        with Image.open(tmp_path / png) as im:
            im.verify()
        with Image.open(tmp_path / png) as im:
            assert im.size[0] >= 300 and im.size[1] >= 300
            assert np.asarray(im.convert("L")).std() > 5  # not a blank canvas
    md = (tmp_path / "metrics.md").read_text()
    assert "| traced ED/ES | 8 |" in md and "HD (mm)" in md and "every frame" in md
    with (tmp_path / "per_case.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and {r["phase"] for r in rows} == {"ED", "ES"}


def test_untrained_tiny_network_runs_and_counts_undefined_distances(clips):
    torch.manual_seed(0)
    model = build_model(get_preset("tiny"))
    out = evaluate_clips(model, clips[:2], "TEST")
    tr = out["traced"]
    assert tr["n_frames"] == 4
    assert tr["dice"]["n"] == 4
    assert tr["hd"]["n"] + tr["hd"]["n_undefined"] == 4
    assert 0.0 <= tr["dice"]["mean"] <= 1.0
    assert out["spacing_known"] is False and "hd_mm" not in tr


def test_picked_cases_are_ordered_by_dice(clips):
    from training.evaluate import evaluate_clip

    model = BrightnessOracle()
    results = [evaluate_clip(model, c) for c in clips]
    results[1].traced[0].dice = 0.1  # make one case clearly the worst
    picks = pick_cases(results)
    assert picks["worst"][1].dice == 0.1
    assert picks["worst"][1].dice <= picks["median"][1].dice <= picks["best"][1].dice
    assert picks["best"][1].dice == max(s.dice for r in results for s in r.traced)


def test_load_model_rejects_other_objects():
    with pytest.raises(ValueError, match="checkpoint path"):
        load_model(42)


def test_ef_of_oracle_tracks_the_volume_method(clips):
    model = BrightnessOracle()
    out = evaluate_clips(model, clips, "TEST")
    pred = out["ef"]["predicted"]
    masks_ef = out["ef"]["reference_masks"]
    assert not math.isnan(pred["std"]) and pred["std"] < 5.0
    assert masks_ef["n"] == 4


def test_clip_without_an_ed_es_pair_has_undefined_ef(clips):
    clip = clips[0]
    clip.traced = {clip.ed: clip.traced[clip.ed]}
    clip.es = -1
    out = evaluate_clips(BrightnessOracle(), [clip, clips[1]], "TEST")
    assert out["traced"]["n_frames"] == 3
    assert out["ef"]["predicted"]["n"] == 1 and out["ef"]["predicted"]["n_undefined"] == 1
