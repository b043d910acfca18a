"""``echoseg bench``: run the benchmarks of ``benchmarks/`` from a source checkout.

    echoseg bench                      # all of them (= make bench), then docs/performance.md
    echoseg bench all --quick          # a few minutes
    echoseg bench model --presets lite --batches 1 4
    echoseg bench stream --scenarios 4x25 --seconds 5
    echoseg bench rest | tls | stages | data | startup

The arguments after the benchmark's name go to it unchanged (``echoseg bench model --help``).
The benchmarks live beside the package in the repository, not in the installed wheel.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

MODULES = {
    "all": "benchmarks.run_all",
    "model": "benchmarks.model_latency",
    "stream": "benchmarks.streaming",
    "rest": "benchmarks.rest",
    "tls": "benchmarks.tls",
    "stages": "benchmarks.stages",
    "data": "benchmarks.data_pipeline",
    "startup": "benchmarks.startup",
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="run the benchmarks (model, stream, REST, TLS, stages, data pipeline, startup) from a checkout",
        description=__doc__.splitlines()[0],
    )
    p.add_argument(
        "which", nargs="?", default="all", choices=list(MODULES), help="which benchmark (default all)"
    )
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for that benchmark")
    p.set_defaults(func=bench)


def find_benchmarks() -> bool:
    """Make ``benchmarks`` importable: it sits in the repository root next to ``echoseg/``."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / "run_all.py").exists():
        return False
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return True


def bench(args: argparse.Namespace) -> int:
    if not find_benchmarks():
        print("error: echoseg bench needs a source checkout (the benchmarks/ folder beside echoseg/)")
        return 2
    module = importlib.import_module(MODULES[args.which])
    return int(module.main(list(args.args)) or 0)
