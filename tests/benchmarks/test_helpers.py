"""Pure helpers of the benchmarks: histogram quantiles between two scrapes, percentiles, caps."""

from __future__ import annotations

import itertools

import pytest

from benchmarks.common import TimingCap, bucket_quantiles, summarize_ms, time_interleaved
from benchmarks.rest import server_timing
from benchmarks.streaming import parse_scenario


def test_bucket_quantiles_of_the_observations_between_two_scrapes():
    before = {0.001: 5.0, 0.002: 5.0, 0.004: 5.0, float("inf"): 5.0}  # 5 old observations under 1 ms
    after = {0.001: 5.0, 0.002: 15.0, 0.004: 25.0, float("inf"): 25.0}  # 10 in (1, 2] ms, 10 in (2, 4] ms
    q = bucket_quantiles(after, before)
    assert q["n"] == 20
    assert q["p50"] == pytest.approx(2.0)  # rank 10 is the top of the (1, 2] bucket
    assert q["p95"] == pytest.approx(2.0 + 2.0 * 9 / 10)  # rank 19: 9 of 10 into (2, 4]
    assert bucket_quantiles(before, before)["p99"] is None


def test_summarize_ms_and_empty():
    s = summarize_ms([1.0, 2.0, 3.0, 4.0])
    assert (s["n"], s["p50"], s["min"], s["max"], s["mean"]) == (4, 2.5, 1.0, 4.0, 2.5)
    assert summarize_ms([])["p50"] is None


def test_time_interleaved_respects_the_repetition_cap_and_counts_calls():
    counter = itertools.count()
    calls = {"a": lambda: next(counter), "b": lambda: next(counter)}
    times, report = time_interleaved(calls, TimingCap(budget_s=60, max_reps=4, min_reps=1, warmup=1))
    assert report["reps"] == 4 and report["stopped_by"] == "max_reps"
    assert len(times["a"]) == len(times["b"]) == 4
    assert next(counter) == 2 * (1 + 4)  # one warm-up and four timed calls each


def test_time_interleaved_stops_on_the_budget_after_min_reps():
    _, report = time_interleaved({"a": lambda: None}, TimingCap(budget_s=0.0, max_reps=100, min_reps=2))
    assert report["reps"] == 2 and report["stopped_by"] == "budget_s"


def test_parsers():
    assert parse_scenario("4x25") == (4, 25.0)
    with pytest.raises(ValueError, match="STREAMSxFPS"):
        parse_scenario("four")
    assert server_timing("decode;dur=1.5, encode;dur=0.25") == {"decode": 1.5, "encode": 0.25}
