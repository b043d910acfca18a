"""The benchmark harness in a tiny configuration: it runs end to end and writes well-formed results.

No timing is asserted (benchmarks are not tests); what is checked is the structure of the JSON
and the report, so the harness cannot rot unnoticed.
"""

from __future__ import annotations

import json

import pytest

from echoseg.cli import main as echoseg_main


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    argv = [
        "bench", "all", "--sections", "model", "stream", "--out-dir", str(out),
        "--docs", str(out / "performance.md"), "--presets", "tiny", "--backends", "torch",
        "--batches", "1", "2", "--budget-s", "0.2", "--max-reps", "3", "--no-variants",
        "--stream-preset", "tiny", "--stream-backend", "torch", "--no-capacity",
        "--stream-seconds", "1", "--stream-scenarios", "1x20", "2x10",
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:  # the server inherits these: a small, quick warm-up
        mp.setenv("ECHOSEG_THREADS", "1")
        mp.setenv("ECHOSEG_MAX_BATCH", "4")
        code = echoseg_main(argv)
    return code, out


def test_run_all_succeeds_and_records_each_section(results):
    code, out = results
    assert code == 0
    summary = json.loads((out / "run_all.json").read_text())
    assert [s["section"] for s in summary["sections"]] == ["model", "stream"]
    assert all(s["error"] is None for s in summary["sections"])
    assert len(summary["machine"]["load_average"]) == 3 and summary["machine"]["cpu_count"] >= 1


def test_model_latency_rows(results):
    _, out = results
    doc = json.loads((out / "model_latency.json").read_text())
    assert doc["benchmark"] == "model_latency" and doc["command"].startswith(
        "python -m benchmarks.model_latency"
    )
    rows = doc["results"]
    assert [(r["preset"], r["batch"], r["backend"]) for r in rows] == [
        ("tiny", 1, "torch"),
        ("tiny", 2, "torch"),
    ]
    for r in rows:
        assert 1 <= r["per_call_ms"]["n"] <= 3
        assert r["per_frame_ms"]["p50"] == pytest.approx(r["per_call_ms"]["p50"] / r["batch"], abs=1e-3)
        assert r["frames_per_s"] > 0
        assert r["speedup_vs_torch"] == 1.0  # torch is the baseline
        assert r["timing"]["stopped_by"] in ("budget_s", "max_reps")


def test_streaming_rows(results):
    _, out = results
    doc = json.loads((out / "streaming.json").read_text())
    assert doc["capacity"] is None
    assert doc["model"]["preset"] == "tiny" and doc["model"]["backend"] == "torch"
    assert [(s["streams"], s["fps"]) for s in doc["scenarios"]] == [(1, 20.0), (2, 10.0)]
    for s in doc["scenarios"]:
        assert s["frames_sent"] == s["streams"] * round(s["fps"])
        assert s["frames_lost"] + s["client_latency_ms"]["n"] == s["frames_sent"]
        assert s["server_latency_ms"]["n"] >= s["client_latency_ms"]["n"] > 0
        assert s["within_budget"] in (True, False)


def test_report_has_targets_tables_and_machine(results):
    _, out = results
    text = (out / "performance.md").read_text()
    for heading in (
        "## Targets",
        "## Model latency (CPU)",
        "## Streaming end to end",
        "## Machine and commands",
    ):
        assert heading in text
    assert "| tiny | 2 | torch |" in text
    assert "not measured: no GPU" in text or "GPU: `paper`" in text
