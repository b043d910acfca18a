"""benchmarks.bundled_models: arguments and the side-by-side table (the scoring is training.evaluate's)."""

from __future__ import annotations

import argparse

import pytest

from benchmarks import bundled_models


def test_named_arguments_and_the_table():
    assert bundled_models._named("new=models/default", "--model") == ("new", "models/default")
    with pytest.raises(argparse.ArgumentTypeError, match="NAME=VALUE"):
        bundled_models._named("models/default", "--model")
    row = {
        "data": "a4c", "model": "new", "clips": 32, "traced_dice_pct": 96.789, "traced_dice_std_pct": 2.5,
        "traced_dice_min_pct": 84.58, "traced_hd_px": 5.52, "all_frames_dice_pct": None, "ef_corr": 0.9805,
        "ef_bias": -2.34, "ef_std": 2.78,
    }  # fmt: skip
    doc = {
        "command": "python -m benchmarks.bundled_models",
        "rows": [row],
        "data": {"a4c": "x:ALL"},
        "models": {},
    }
    text = bundled_models.markdown(doc)
    assert "| a4c | new | 32 | 96.79 ± 2.50 | 84.58 | 5.52 | – | 0.981 | -2.3 | 2.8 |" in text
