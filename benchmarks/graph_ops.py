"""The calibration summaries' two graph forms, side by side: ONNX node count, ORT ms/frame, ORT profile.

    .venv/bin/python -m benchmarks.graph_ops                               # lite and unet-lite
    .venv/bin/python -m benchmarks.graph_ops --presets lite --batches 1 16 --budget-s 20

For each preset the same seeded network is exported twice per calibration form: with the
summaries written as static slices (``slices``, the form exported before) and as masked maxima
(``masked-max``, :func:`training.model.calibration.summarize`); both give the same logits (checked
here on the timing inputs). ONNX Runtime (CPU, ``--threads`` intra-op threads, the service's
session options) runs the files interleaved repetition by repetition at each batch size, so a
noisy shared machine slows all alike; the figures that count are the ratios inside one run.
``matmul`` files have a dynamic batch; ``conv`` files are exported per batch size. One profiled
run per file (batch 1) gives the share of kernel time per op type.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.common import TimingCap, document, summarize_ms, time_interleaved, write_result
from echoseg.presets import get_preset
from echoseg.runtime.onnxruntime import OnnxRuntime
from export.onnx import export_onnx
from export.source import build_untrained, untrained_run_id

SUMMARIES = ("slices", "masked-max")


def export_form(preset: str, summary: str, calibration: str, batch, folder: Path) -> Path:
    """The untrained ``preset`` (seed 0) exported with its summaries written as ``summary``."""
    from training.model.calibration import SemanticCalibration

    path = folder / f"{preset}-{summary}-{calibration}-{batch}.onnx"
    if not path.exists():
        model = build_untrained(preset, seed=0)
        for module in model.modules():
            if isinstance(module, SemanticCalibration):
                module.summary = summary
        meta = {"run_id": untrained_run_id(preset, 0), "preset": preset}
        export_onnx(model, path, calibration=calibration, batch=batch, meta=meta)
    return path


def node_counts(path: Path) -> dict:
    import onnx

    nodes = onnx.load_model(str(path), load_external_data=False).graph.node
    return {"nodes": len(nodes), "by_op": dict(Counter(n.op_type for n in nodes).most_common())}


def profile_shares(path: Path, x: np.ndarray, threads: int, runs: int = 20) -> dict:
    """Per op type: share of the kernel time of ``runs`` profiled runs (ONNX Runtime's profiler)."""

    runtime = OnnxRuntime(path, "cpu", threads)
    options = runtime.session_options()
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        session.run(None, {"frames": x})
    trace = json.loads(Path(session.end_profiling()).read_text())
    per_op: Counter = Counter()
    for event in trace:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"]
    total = sum(per_op.values()) or 1
    return {op: round(100.0 * us / total, 1) for op, us in per_op.most_common(8)}


def run_preset(preset: str, forms: list[str], batches: list[int], args, folder: Path) -> list[dict]:

    config = get_preset(preset)
    rows = []
    for batch in batches:
        rng = np.random.default_rng(batch)
        x = rng.standard_normal((batch, config.num_frames, config.input_size, config.input_size), np.float32)
        calls, files = {}, {}
        for form in forms:
            for summary in SUMMARIES:
                path = export_form(preset, summary, form, "dynamic" if form == "matmul" else batch, folder)
                runtime = OnnxRuntime(path, "cpu", args.threads)
                runtime.load()
                calls[(form, summary)] = functools.partial(runtime.infer, x)
                files[(form, summary)] = path
        outputs = {key: call() for key, call in calls.items()}
        cap = TimingCap(budget_s=args.budget_s, max_reps=args.max_reps, min_reps=3)
        times, report = time_interleaved({f"{f}/{s}": c for (f, s), c in calls.items()}, cap)
        for form in forms:
            before, after = (f"{form}/{s}" for s in SUMMARIES)
            p50 = {s: float(np.median(times[f"{form}/{s}"])) for s in SUMMARIES}
            row = {
                "preset": preset,
                "calibration": form,
                "batch": batch,
                "max_abs_difference": float(
                    np.abs(outputs[(form, "slices")] - outputs[(form, "masked-max")]).max()
                ),
                "timing": report,
                "speedup_p50": round(p50["slices"] / p50["masked-max"], 2),
            }
            for summary, key in zip(SUMMARIES, (before, after), strict=True):
                ms = summarize_ms(times[key])
                row[summary] = {
                    **node_counts(files[(form, summary)]),
                    "batch_ms": ms,
                    "frame_ms_p50": round(ms["p50"] / batch, 3),
                }
                if batch == 1 and args.profile:
                    row[summary]["profile_pct"] = profile_shares(files[(form, summary)], x, args.threads)
            print(
                f"{preset} {form} b{batch}: nodes {row['slices']['nodes']} -> {row['masked-max']['nodes']}, "
                f"ms/frame p50 {row['slices']['frame_ms_p50']} -> {row['masked-max']['frame_ms_p50']} "
                f"({row['speedup_p50']}x), max |diff| {row['max_abs_difference']:.1e}",
                flush=True,
            )
            rows.append(row)
    return rows


def markdown(doc: dict) -> str:
    lines = [
        "# Calibration summaries: static slices vs masked maxima",
        "",
        f"Command: `{doc['command']}`  ",
        f"ONNX Runtime CPU, {doc['threads']} intra-op thread(s), untrained networks (seed 0), the two "
        f"forms interleaved in one run; load average at the start {doc['machine'].get('load_average')}.",
        "",
        "| preset | form | batch | nodes, slices | nodes, masked-max | ms/frame p50, slices | masked-max | "
        "slices / masked-max | max abs diff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| `{r['preset']}` | {r['calibration']} | {r['batch']} | {r['slices']['nodes']} | "
            f"{r['masked-max']['nodes']} | {r['slices']['frame_ms_p50']} | "
            f"{r['masked-max']['frame_ms_p50']} | {r['speedup_p50']}× | {r['max_abs_difference']:.1e} |"
        )
    profiled = [r for r in doc["rows"] if "profile_pct" in r["slices"]]
    if profiled:
        lines += ["", "ORT profile, batch 1: share of kernel time per op type (top 8)", ""]
        for r in profiled:
            for s in SUMMARIES:
                shares = ", ".join(f"{op} {pct} %" for op, pct in r[s]["profile_pct"].items())
                lines.append(f"- `{r['preset']}` {r['calibration']} {s}: {shares}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.graph_ops", description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["lite", "unet-lite"])
    p.add_argument("--forms", nargs="+", default=["matmul", "conv"], choices=["matmul", "conv"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--budget-s", type=float, default=15.0, help="timing budget per preset and batch")
    p.add_argument("--max-reps", type=int, default=200)
    p.add_argument("--no-profile", dest="profile", action="store_false")
    p.add_argument("--out-dir", type=Path, default=None)
    p.add_argument("--name", default="graph_ops")
    args = p.parse_args(argv)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="echoseg-graph-ops-") as tmp:
        rows = []
        for preset in args.presets:
            rows += run_preset(preset, args.forms, args.batches, args, Path(tmp))
    doc = document("graph_ops", argv, started, threads=args.threads, rows=rows)
    path = write_result(doc, args.out_dir, args.name)
    path.with_suffix(".md").write_text(markdown(doc))
    print(markdown(doc))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
