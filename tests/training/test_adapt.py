"""``echoseg adapt``: mean-teacher adaptation from a checkpoint to a plain folder of unlabelled clips.

Tiny preset, a few steps: the run is written, resuming gives the weights of a straight run, the
source-domain gate refuses ``best/`` when told to, and the artefact records counts and digests
but no file name.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from echoseg.cli import main as echoseg_main
from echoseg.presets import get_preset
from training.adapt.signals import periodicity
from training.data.folder import ClipFolderSource
from training.data.site import SITE_SIZE, render_site_clip
from training.data.sources import detect_kind
from training.data.synthetic import generate
from training.model import build_model
from training.model.io import save_pretrained

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A labelled synthetic set, a site folder of six AVI clips (no tables) and a tiny checkpoint."""
    base = tmp_path_factory.mktemp("adapt")
    labelled = generate(base / "sim", videos=8, frames=12, size=32, seed=3)
    other = generate(base / "other", videos=6, frames=12, size=32, seed=5)
    site = base / "site" / "Patient Doe, John"  # a file and folder name that must not leak
    site.mkdir(parents=True)
    for i, avi in enumerate(sorted((other / "Videos").glob("*.avi"))):
        shutil.copy(avi, site / f"DOE_JOHN_{i}.avi")
    torch.manual_seed(0)
    start = base / "start"
    save_pretrained(build_model(get_preset("tiny")), start, meta={"run_id": "start"})
    return {"labelled": labelled, "site": site.parent, "start": start}


def _adapt(data, out, *extra: str) -> int:
    argv = ["adapt", "--unlabelled", str(data["site"]), "--labelled", str(data["labelled"])]
    argv += ["--from", str(data["start"]), "--out", str(out), "--steps", "4", "--seed", "1", "--no-progress"]
    argv += ["--set", "batch_size=2", "--set", "unlabelled_batch_size=2", "--set", "lr=0.001"]
    argv += ["--fit-candidates", "6", "--fit-clips", "4", *extra]
    return echoseg_main(argv)


def test_a_plain_folder_of_clips_is_a_source_split_by_name(data):
    assert detect_kind(data["site"]) == "clips"
    source = ClipFolderSource(data["site"])
    names = source.names()
    assert len(names) == 6 and all(n.startswith("clip-") for n in names)
    assert len(source.names("VAL")) == 2 and len(source.names("TRAIN")) == 4  # ceil(20 % of 6)
    clip = source.load(names[0])
    assert clip.frames.dtype == np.uint8 and clip.frames.shape == (12, 32, 32) and not clip.traced


def test_adapt_writes_a_run_whose_artefact_names_no_file(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert _adapt(data, run, "--max-source-drop", "inf") == 0
    out = capsys.readouterr().out
    assert "source-domain Dice" in out and "written: best/" in out
    report = json.loads((run / "adapt.json").read_text())
    assert report["training"]["steps"] == 4 and report["best"] == "best"
    site = report["data"]["unlabelled"]
    assert (site["clips"], site["adapt_clips"], site["held_out_clips"]) == (6, 4, 2)
    assert len(site["adapt_clip_digests"]) == 4 and len(set(site["adapt_clip_digests"])) == 4
    for when in ("before", *(f"after.{k}" for k in ("student", "teacher"))):
        block = report
        for key in when.split("."):
            block = block[key]
        assert 0.0 <= block["source_dice"] <= 1.0 and block["site"]["clips"] == 2
        assert 0.0 <= block["site"]["flagged_share"] <= 1.0
    meta = json.loads((run / "best" / "config.json").read_text())["meta"]
    record = meta["adaptation"]
    assert (record["unlabelled_clips"], record["adapt_clips"]) == (6, 4)
    assert record["adapt_digest"] == site["adapt_digest"] and record["labelled_clips"] == 8
    # trained on clips of the simulator fitted to the site, recorded by their digest and setting
    fitted = report["simulator_fit"]
    assert fitted["clips"] == 4 and fitted["candidates"] == 6 and fitted["site_clips"] == 4
    assert record["simulator_fit"]["digest"] == fitted["digest"] and "root" not in record["simulator_fit"]
    assert len(list((run / "fitted-sim" / "Videos").glob("*.avi"))) == 4
    assert "simulator fitted to the site" in out
    for path in [run / "adapt.json", run / "best" / "config.json"]:
        text = path.read_text()
        assert "DOE" not in text.upper() and "Patient" not in text and ".avi" not in text
    # the adapted model is the teacher of the run's last step, normalised by the student's statistics
    teacher = load_file(str(run / "last" / "teacher.safetensors"))
    student = load_file(str(run / "last" / "student.safetensors"))
    kept = load_file(str(run / "best" / "student.safetensors"))
    stats = [k for k in kept if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(student[k], kept[k]) for k in stats)
    assert any(not torch.equal(teacher[k], kept[k]) for k in stats)
    assert all(torch.equal(teacher[k], kept[k]) for k in kept if k not in stats)
    # and it is not the starting point any more
    start = load_file(str(data["start"] / "student.safetensors"))
    assert any(not torch.equal(start[k], kept[k]) for k in kept if kept[k].is_floating_point())


def test_resume_gives_the_weights_of_a_straight_run(data, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert _adapt(data, straight, "--max-source-drop", "inf") == 0
    assert _adapt(data, split, "--max-source-drop", "inf", "--set", "stop_after=2") == 0
    assert not (split / "best").exists() and not (split / "adapt.json").exists()
    fit_written = (split / "simulator-fit.json").stat().st_mtime_ns
    assert _adapt(data, split, "--max-source-drop", "inf", "--resume") == 0
    assert (split / "simulator-fit.json").stat().st_mtime_ns == fit_written  # the fit is reused
    a = load_file(str(straight / "best" / "student.safetensors"))
    b = load_file(str(split / "best" / "student.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = (json.loads((r / "adapt.json").read_text()) for r in (straight, split))
    assert ra["before"] == rb["before"] and ra["after"] == rb["after"]
    assert ra["simulator_fit"]["digest"] == rb["simulator_fit"]["digest"]
    # a run started without the fit resumes without it, flag or not
    plain = tmp_path / "plain"
    assert _adapt(data, plain, "--max-source-drop", "inf", "--no-fit-simulator", "--set", "stop_after=2") == 0
    assert _adapt(data, plain, "--max-source-drop", "inf", "--resume") == 0
    assert json.loads((plain / "adapt.json").read_text())["simulator_fit"] is None
    assert not (plain / "fitted-sim").exists()


def test_the_source_domain_gate_refuses_best_and_says_why(data, tmp_path, capsys):
    run = tmp_path / "refused"
    (run / "best").mkdir(parents=True)  # a stale best/ from an earlier attempt goes too
    assert _adapt(data, run, "--max-source-drop=-inf") == 3
    assert "refused: source-domain Dice dropped" in capsys.readouterr().out
    report = json.loads((run / "adapt.json").read_text())
    assert report["best"] is None and report["gate"]["passed"] is False
    assert "not written as best/" in report["gate"]["reason"]
    assert not (run / "best").exists() and (run / "last" / "student.safetensors").is_file()


def test_the_fit_changes_what_is_trained_on_not_what_the_gate_checks(data, tmp_path):
    """With the fit the labelled windows come from ``RUN/fitted-sim``; without it from ``--labelled``.
    Either way the gate's source domain is ``--labelled``'s held-out clips."""
    fitted, plain = tmp_path / "fitted", tmp_path / "plain"
    assert _adapt(data, fitted, "--max-source-drop", "inf") == 0
    assert _adapt(data, plain, "--max-source-drop", "inf", "--no-fit-simulator") == 0
    a, b = (json.loads((r / "adapt.json").read_text()) for r in (fitted, plain))
    assert b["simulator_fit"] is None and not (plain / "fitted-sim").exists()
    assert (
        json.loads((plain / "best" / "config.json").read_text())["meta"]["adaptation"]["simulator_fit"]
        is None
    )
    assert a["source_eval_windows"] == b["source_eval_windows"] > 0
    assert a["before"]["source_dice"] == b["before"]["source_dice"]
    roots = [yaml.safe_load((r / "config.yaml").read_text())["data"]["root"] for r in (fitted, plain)]
    assert roots == [str(fitted / "fitted-sim"), str(data["labelled"])]


def test_the_sites_traced_clips_gate_refuses_best_and_are_recorded(data, tmp_path, capsys):
    """A few of the site's clips with tracings: their Dice before/after is reported, recorded in the
    artefact, and a drop beyond ``--max-traced-drop`` refuses ``best/`` even when the source holds."""
    traced = generate(tmp_path / "traced", videos=3, frames=12, size=32, seed=9)
    kept, refused = tmp_path / "kept", tmp_path / "refused"
    given = ("--max-source-drop", "inf", "--traced", str(traced))
    assert _adapt(data, kept, *given, "--max-traced-drop", "inf") == 0
    assert "Dice on the site's 3 traced clips" in capsys.readouterr().out
    report = json.loads((kept / "adapt.json").read_text())
    before, after = report["before"]["traced"], report["after"][report["kept"]]["traced"]
    assert before["clips"] == after["clips"] == 3 and 0.0 <= before["dice"] <= 1.0
    assert report["gate"]["traced_drop"] == round(before["dice"] - after["dice"], 5)
    record = json.loads((kept / "best" / "config.json").read_text())["meta"]["adaptation"]
    assert record["traced"] == {"before": before, "after": after}
    assert _adapt(data, refused, *given, "--max-traced-drop=-inf") == 3
    out = capsys.readouterr().out
    assert "refused: source-domain Dice" in out and "traced clips' Dice dropped" in out
    assert not (refused / "best").exists()
    assert json.loads((refused / "adapt.json").read_text())["gate"]["passed"] is False


def test_adapt_refuses_a_folder_without_a_held_out_slice(data, tmp_path, capsys):
    lonely = tmp_path / "one"
    lonely.mkdir()
    shutil.copy(next(data["site"].rglob("*.avi")), lonely / "a.avi")
    argv = ["adapt", "--unlabelled", str(lonely), "--labelled", str(data["labelled"]), "--from"]
    argv += [str(data["start"]), "--out", str(tmp_path / "run"), "--steps", "2", "--no-progress"]
    assert echoseg_main(argv) == 2
    assert "no held-out slice" in capsys.readouterr().out


def test_the_site_domain_is_fixed_by_its_seed():
    a, b = render_site_clip(5, frames=8), render_site_clip(5, frames=8)
    assert a.frames.shape == (8, *SITE_SIZE) and np.array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, render_site_clip(6, frames=8).frames)
    assert 45.0 < a.sector_angle_deg < 55.0 and a.masks.any()


def test_periodicity_of_an_area_curve():
    t = np.arange(48)
    beating = 100 + 20 * np.sin(2 * np.pi * t / 50.0)  # less than one beat: 1 s at 50 fps
    assert periodicity(beating, 50.0) > 0.9
    flicker = np.random.default_rng(0).normal(size=48)
    assert periodicity(flicker, 50.0) < 0.4
    assert periodicity(np.full(48, 5.0), 50.0) == 0.0
