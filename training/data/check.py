"""``echoseg data check``: validate a dataset folder (any layout of ``training.data.sources``)
before anyone trains on it.

The report lists the videos per split and, per video, the ED and ES frames and the area (pixels)
of their masks exactly as the loaders build them, and every problem found, naming the file and
the CSV line: a missing or corrupt video, a wrong header, tracings for a file FileList.csv does
not list, traced frames outside the video, tracing points outside the frame. Where the folder
has true masks (``Masks/`` of synthetic data, CAMUS half sequences) the traced masks are compared
with them. Things that do not stop training (a video without tracings) are warnings. Each source
checks its own clips (:meth:`~training.data.base.DataSource.check`).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from training.data.base import Problem, check_report
from training.data.sources import SOURCES, detect_kind

logger = logging.getLogger(__name__)


def check_dataset(root) -> dict:
    """Validate the dataset folder ``root``; the report is a JSON-ready dict (``ok`` False on any problem)."""
    root = Path(root)
    if not root.is_dir():
        problem = Problem(str(root), "dataset folder not found", kind="missing")
        return check_report(root, "unknown", Counter(), [], [problem], [])
    kind = detect_kind(root)
    if kind is None:
        msg = f"neither {' nor '.join(cls.description for cls in SOURCES.values())} layout"
        return check_report(root, "unknown", Counter(), [], [Problem(str(root), msg, kind="missing")], [])
    return SOURCES[kind](root).check()


def _where(p: dict) -> str:
    return f"{p['file']}, line {p['line']}" if p.get("line") is not None else p["file"]


def format_report(report: dict) -> str:
    """The report as a human-readable table."""
    counts = ", ".join(f"{s} {n}" for s, n in report["counts"].items()) or "none"
    lines = [f"{report['layout']} dataset {report['root']}: {len(report['videos'])} videos ({counts})"]
    has_true = any("true" in v for v in report["videos"])
    header = f"{'video':<28} {'split':<6} {'frames':>6} {'ED':>4} {'ES':>4} {'ED area':>8} {'ES area':>8}"
    if has_true:
        header += f" {'true ED':>7} {'true ES':>7} {'min Dice':>8}"
    lines += [header + "  status", "-" * len(header)]
    for v in report["videos"]:
        row = f"{v['name']:<28} {v['split']:<6} {v.get('frames', '-')!s:>6} {v.get('ed', '-')!s:>4} "
        row += f"{v.get('es', '-')!s:>4} {v.get('ed_area', '-')!s:>8} {v.get('es_area', '-')!s:>8}"
        if has_true:
            t = v.get("true")
            row += (
                f" {t['ed']:>7} {t['es']:>7} {min(t['dice'].values()):>8.3f}"
                if t
                else f" {'-':>7} {'-':>7} {'-':>8}"
            )
        lines.append(f"{row}  {v['status']}")
    for title, items in (("warnings", report["warnings"]), ("problems", report["problems"])):
        if items:
            lines.append(f"\n{len(items)} {title}:")
            lines += [f"  [{p['kind']}] {_where(p)}: {p['message']}" for p in items]
    lines.append("\nOK" if report["ok"] else f"\nFAILED: {len(report['problems'])} problem(s)")
    return "\n".join(lines)
