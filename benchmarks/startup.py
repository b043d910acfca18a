"""Start-to-ready time and memory of ``echoseg serve`` on ONNX Runtime: this tree against a baseline.

    .venv/bin/python -m benchmarks.startup          # baseline: the commit before the runtime layer
    .venv/bin/python -m benchmarks.startup --baseline REF --rounds 5

Both servers serve the same ``.onnx`` export of the bundled model (``models/default``), so no
export happens at start. The baseline is a ``git worktree`` of ``REF`` run with this tree's
Python environment; the two alternate, round after round (order reversed every other round), so
the drift of a shared machine falls on both alike. Per start: seconds from spawning the process
to the first ``/readyz`` 200 (the model loaded and warmed), the resident memory then
(``VmRSS`` from ``/proc``, and its high-water mark ``VmHWM``), and whether torch's shared library
is mapped into the process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, document, served, summarize_ms, write_result
from export.onnx import export_onnx
from export.source import load_source

BASELINE = "29b27e5"  # the last commit before echoseg.runtime (the service imported training and torch)


def proc_status(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of a process, in kB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def torch_mapped(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def start_once(code: Path, model: Path, threads: int) -> dict:
    """Spawn ``echoseg serve`` from ``code``; measure it once ready; stop it."""
    env = {"ECHOSEG_THREADS": str(threads), "ECHOSEG_LOG_LEVEL": "WARNING"}
    extra = ("--backend", "onnxruntime", "--device", "cpu")
    started = time.perf_counter()
    with served(model, env, extra_args=extra, code=code, poll_s=0.02) as server:
        ready_s = time.perf_counter() - started
        status = proc_status(server.process.pid)
        return {
            "ready_s": ready_s,
            "rss_mb": status["VmRSS"] / 1024,
            "hwm_mb": status["VmHWM"] / 1024,
            "torch_loaded": torch_mapped(server.process.pid),
        }


def export_default(folder: Path) -> Path:
    model, meta = load_source(checkpoint=REPO / "models" / "default")
    return export_onnx(model, folder / "default.onnx", calibration="matmul", batch="dynamic", meta=meta)


def summarize(runs: list[dict]) -> dict:
    return {
        "ready_s": summarize_ms([r["ready_s"] for r in runs]),
        "rss_mb": summarize_ms([r["rss_mb"] for r in runs]),
        "hwm_mb": summarize_ms([r["hwm_mb"] for r in runs]),
        "torch_loaded": sorted({r["torch_loaded"] for r in runs}),
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.startup", description=__doc__.splitlines()[0])
    p.add_argument("--baseline", default=BASELINE, help=f"git ref to compare with (default {BASELINE})")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out-dir", type=Path, default=None)
    args = p.parse_args(argv)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="echoseg-startup-") as tmp:
        tmp = Path(tmp)
        baseline = tmp / "baseline"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(baseline), args.baseline], cwd=REPO, check=True
        )
        try:
            model = export_default(tmp)
            codes = {"baseline": baseline, "this tree": REPO}
            runs: dict[str, list[dict]] = {name: [] for name in codes}
            for i in range(args.rounds):
                order = list(codes) if i % 2 == 0 else list(reversed(codes))
                for name in order:
                    runs[name].append(start_once(codes[name], model, args.threads))
                    r = runs[name][-1]
                    print(
                        f"round {i} {name:10s} ready {r['ready_s']:.2f} s, RSS {r['rss_mb']:.0f} MB, "
                        f"torch {r['torch_loaded']}"
                    )
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=REPO, check=False)
    results = {name: summarize(r) for name, r in runs.items()}
    base, this = results["baseline"], results["this tree"]
    ratios = {
        "ready_s_p50": round(this["ready_s"]["p50"] / base["ready_s"]["p50"], 3),
        "rss_mb_p50": round(this["rss_mb"]["p50"] / base["rss_mb"]["p50"], 3),
    }
    doc = document(
        "startup",
        argv,
        started,
        baseline_ref=args.baseline,
        model="models/default exported to ONNX (matmul, dynamic batch), served by ONNX Runtime on the CPU",
        threads=args.threads,
        results=results,
        ratios_this_over_baseline=ratios,
    )
    print(f"ratios (this tree / baseline, p50): {ratios}")
    print(f"wrote {write_result(doc, args.out_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
