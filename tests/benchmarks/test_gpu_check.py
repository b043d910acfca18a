"""The GPU check's CPU dry run: every step runs its CPU-runnable part and writes its JSON line.

No figure is asserted (the CPU stands in for the GPU); what is checked is that the script's steps
run through the runtime layer, record what they did or why they skipped, and gather a summary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_dry_run_writes_a_line_per_step(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "ECHOSEG_GPU_DRY_RUN": "1"}
    env["ECHOSEG_CACHE_DIR"] = str(tmp_path / "cache")
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks/gpu/check.sh")], env=env, capture_output=True, text=True, timeout=500
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [json.loads(line) for line in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == ["env", "torch", "ort", "tensorrt", "serve"]
    steps = {r["step"]: r for r in json.loads((tmp_path / "gpu_check.json").read_text())["steps"]}
    assert steps["env"]["environment"]["onnxruntime"]
    for name in ("torch", "ort"):  # trained weights on synthetic clips: masks that say something
        assert steps[name]["ok"] is True, steps[name]
        assert all(r["informative"] for r in steps[name]["results"])
    assert steps["tensorrt"]["ok"] is None and "skipped" in steps["tensorrt"]
    assert steps["serve"]["ok"] is True and steps["serve"]["result"]["frames_lost"] == 0
