"""Every benchmark in one command: model latency, streaming, REST, TLS vs plain, stages, data pipeline;
then the report.

    make bench                                  # = .venv/bin/python -m benchmarks.run_all
    .venv/bin/python -m benchmarks.run_all --quick
    python3 -m benchmarks.run_all --device cuda # on a GPU machine (model latency + streaming)

Writes ``benchmarks/results/<name>.json`` per benchmark and ``docs/performance.md`` (the tables,
the targets, the command lines and the machine). A benchmark that fails is recorded in
``run_all.json`` with its error and the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
import traceback
from pathlib import Path

from benchmarks.common import REPO, RESULTS, load_average, machine_info, missing_server_modules
from benchmarks.report import write_report
from echoseg.runtime import BACKENDS, DEVICES

log = logging.getLogger(__name__)

SECTIONS = ("model", "stream", "rest", "tls", "stages", "data")


def stream_preset(args: argparse.Namespace) -> str:
    """What the server runs: ``lite`` on a CPU, the paper's network on a GPU."""
    return args.stream_preset or ("paper" if args.device == "cuda" else "lite")


def section_args(section: str, args: argparse.Namespace) -> list[str]:
    """The command line each benchmark runs with, full or ``--quick``."""
    out = [] if Path(args.out_dir).resolve() == RESULTS.resolve() else ["--out-dir", str(args.out_dir)]
    q = args.quick
    if section == "model":
        presets = args.presets or (["lite"] if q else ["lite", "paper"])
        batches = args.batches or ([1, 4] if q else ([1, 4, 16, 32] if args.device == "cuda" else [1, 4, 16]))
        out += ["--device", args.device, "--presets", *presets, "--batches", *map(str, batches)]
        out += ["--budget-s", str(args.budget_s or (2.0 if q else 6.0))]
        if args.max_reps:
            out += ["--max-reps", str(args.max_reps), "--min-reps", str(min(3, args.max_reps))]
        if args.backends:
            out += ["--backends", *args.backends]
        if q or args.no_variants:
            out += ["--no-variants"]
    elif section == "stream":
        backend = args.stream_backend or ("torch" if args.device == "cuda" else "auto")
        out += ["--preset", stream_preset(args), "--device", args.device, "--backend", backend]
        if args.device == "cuda":  # the GPU targets: the paper's network, 50-fps streams
            out += ["--name", "streaming-cuda", "--scenarios", "1x50", "8x50", "32x50", "--seconds", "5"]
            out += ["--max-streams", "128", "--mask-encoding", "gray8", "--capacity-fps", "50"]
            out += ["--capacity-seconds", "4", "--max-trials", "8", "--capacity-budget-s", "90"]
        elif q:
            out += ["--scenarios", "1x50", "4x25", "--seconds", "4", "--capacity-seconds", "3"]
            out += ["--max-trials", "3", "--capacity-budget-s", "20"]
        if args.stream_seconds:
            out += ["--seconds", str(args.stream_seconds), "--capacity-seconds", str(args.stream_seconds)]
        if args.stream_scenarios:
            out += ["--scenarios", *args.stream_scenarios]
        if args.no_capacity:
            out += ["--no-capacity"]
    elif section == "rest":
        out += ["--preset", stream_preset(args), "--reps", "1" if q else "3"]
    elif section == "tls":  # plain vs TLS side by side: one 50-fps stream, REST clips
        out += ["--preset", stream_preset(args)]
        if q:
            out += ["--rounds", "1", "--seconds", "2", "--reps", "2"]
    elif section == "data":  # the training data pipeline; no server, no model
        if q:
            out += ["--quick"]
    elif section == "stages":
        out += ["--preset", stream_preset(args)]
        if q:
            out += ["--sizes", "480x640", "--variants", "baseline", "optimised", "--rounds", "2"]
        if args.stream_seconds:
            out += ["--burst-seconds", str(args.stream_seconds)]
    return out


def run_section(section: str, argv: list[str]) -> dict:
    names = {
        "model": "model_latency",
        "stream": "streaming",
        "rest": "rest",
        "tls": "tls",
        "stages": "stages",
    }
    name = names.get(section, "data_pipeline")
    missing = missing_server_modules() if section not in ("model", "data") else []
    if missing:  # e.g. a GPU machine with torch but without the service's dependencies
        note = f"skipped: the server needs {', '.join(missing)}, not installed here"
        print(f"== {section}: {note}", flush=True)
        return {"section": section, "command": f"python -m benchmarks.{name} {' '.join(argv)}", "wall_s": 0.0,
                "error": None, "skipped": note}  # fmt: skip
    module = importlib.import_module(f"benchmarks.{name}")
    started = time.time()
    print(f"== {section}: python -m {module.__name__} {' '.join(argv)}", flush=True)
    try:
        code = module.main(argv)
        error = None if code == 0 else f"exit code {code}"
    except Exception as e:  # one failing benchmark must not lose the others' figures
        traceback.print_exc()
        error = f"{type(e).__name__}: {e}"
    return {
        "section": section,
        "command": f"python -m {module.__name__} {' '.join(argv)}",
        "wall_s": round(time.time() - started, 1),
        "error": error,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks.run_all", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few minutes: lite only, short runs")
    p.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    p.add_argument("--device", choices=DEVICES, default="cpu")
    p.add_argument("--presets", nargs="+", default=None, help="model-latency presets (default lite paper)")
    p.add_argument(
        "--stream-preset", default="lite", help="the preset the server runs (stream, rest, stages)"
    )
    p.add_argument("--backends", nargs="+", default=None, help="model-latency backends (default: all)")
    p.add_argument(
        "--stream-backend",
        choices=BACKENDS,
        default="auto",
        help="the streaming server's backend (auto: ONNX Runtime on CPU, torch on a GPU)",
    )
    p.add_argument("--batches", nargs="+", type=int, default=None)
    p.add_argument("--budget-s", type=float, default=None, help="model-latency timing budget per cell")
    p.add_argument("--max-reps", type=int, default=None)
    p.add_argument("--no-variants", action="store_true", help="skip the ORT-options and lite-variant tables")
    p.add_argument("--no-capacity", action="store_true")
    p.add_argument("--stream-seconds", type=float, default=None, help="override every streaming duration")
    p.add_argument("--stream-scenarios", nargs="+", default=None, help="STREAMSxFPS (default 1x50 4x25 8x30)")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--docs", type=Path, default=REPO / "docs" / "performance.md", help="the markdown report")
    p.add_argument("--no-docs", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    started = time.time()
    load_before = load_average()
    runs = [run_section(s, section_args(s, args)) for s in args.sections]
    summary = {
        "benchmark": "run_all",
        "command": "python -m benchmarks.run_all " + " ".join(sys.argv[1:] if argv is None else argv),
        "quick": args.quick,
        "device": args.device,
        "machine": machine_info(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "wall_s": round(time.time() - started, 1),
        "sections": runs,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    name = "run_all" if args.device == "cpu" else "run_all-cuda"
    (args.out_dir / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    if not args.no_docs:
        print(f"wrote {write_report(args.out_dir, args.docs)}")
    print(f"run_all: {summary['wall_s']} s; " + ", ".join(f"{r['section']} {r['wall_s']} s" for r in runs))
    failed = [r for r in runs if r["error"]]
    for r in failed:
        print(f"FAILED {r['section']}: {r['error']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sys.exit(main())
