"""The data-pipeline benchmark: its helpers, and one small run end to end (store vs baseline)."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks import data_pipeline as bench
from benchmarks.run_all import parse_args, section_args


def test_repeated_sets_name_every_clip_apart(tmp_path, monkeypatch):
    from training.data.echonet import read_index
    from training.data.store import prepare

    monkeypatch.setenv("ECHOSEG_CACHE", str(tmp_path))
    root = bench.dataset(videos=5, size=32, frames=8, unique=2)
    index = read_index(root)
    assert not index.problems and len(index.names()) == 5
    assert all(len(index.tracings[n]) == 2 for n in index.names())  # each copy keeps its ED/ES tracings
    report = prepare(root, tmp_path / "store")
    assert report.decoded == 5 and not report.problems


def test_pss_of_a_process_tree_and_quarters():
    pss, n = bench.tree_pss_mb(os.getpid())
    assert pss > 1.0 and n >= 1
    samples = [[t, 100.0 + t, 1] for t in range(0, 101)]
    assert bench.quarters(samples) == [125.0, 150.0, 175.0, 200.0]
    assert bench.quarters([]) is None


def test_run_all_has_the_data_section():
    args = parse_args(["--sections", "data", "--quick"])
    assert args.sections == ["data"] and section_args("data", args) == ["--quick"]


@pytest.mark.slow
def test_small_run_measures_store_and_baseline(tmp_path, monkeypatch):
    monkeypatch.setenv("ECHOSEG_CACHE", str(tmp_path / "cache"))
    argv = ["--videos", "4", "8", "--unique", "4", "--sizes", "112", "--frames", "8", "--workers", "0"]
    argv += ["--mem-workers", "1", "--wpv", "2", "--seconds", "1", "--skip", "eval", "gpu"]
    argv += ["--out-dir", str(tmp_path)]
    assert bench.main(argv) == 0
    doc = json.loads((tmp_path / "data_pipeline.json").read_text())
    assert doc["prepare"]["8x112"]["clips"] == 8 and doc["prepare"]["8x112"]["ms_per_clip"] > 0
    assert {(t["input_px"], t["workers"]) for t in doc["throughput"]} == {(112, 0), (256, 0)}
    assert all(t["windows"] > 0 for t in doc["throughput"])
    runs = {(m["pipeline"], m["clips"]): m for m in doc["memory"]}
    assert set(runs) == {("store", 4), ("baseline", 4), ("store", 8), ("baseline", 8)}
    for m in runs.values():  # both streams over a whole unlabelled epoch, PSS sampled on the way
        assert m["stopped"] is None and m["windows"] > 0 and m["pss_peak_mb"] > 0
