"""``echoseg data check``: validate an EchoNet-Dynamic or CAMUS folder before anyone trains on it.

The report lists the videos per split and, per video, the ED and ES frames and the area (pixels)
of their masks exactly as the loaders build them, and every problem found, naming the file and
the CSV line: a missing or corrupt video, a wrong header, tracings for a file FileList.csv does
not list, traced frames outside the video, tracing points outside the frame. Where the folder
has true masks (``Masks/`` of synthetic data, CAMUS half sequences) the traced masks are compared
with them. Things that do not stop training (a video without tracings) are warnings.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np

from echoseg.video import VideoError, read_video
from training.data import camus
from training.data.echonet import (
    EchoNetIndex,
    Problem,
    ed_es,
    load_true_masks,
    read_index,
    traced_masks,
    tracing_problems,
)

logger = logging.getLogger(__name__)

MIN_AGREEMENT_DICE = 0.9  # below this a tracing and the true mask disagree


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * (a & b).sum() / total)


def detect_layout(root: Path) -> str:
    """``'echonet'``, ``'camus'`` or ``'unknown'``."""
    if (root / "FileList.csv").is_file() or (root / "VolumeTracings.csv").is_file():
        return "echonet"
    if camus.is_camus(root):
        return "camus"
    return "unknown"


def compare_true(record: dict, masks: dict[int, np.ndarray], true: np.ndarray) -> dict:
    """ED/ES and areas from the true masks at the traced frames, and the Dice of each traced mask."""
    true_areas = {f: int(true[f].sum()) for f in masks}
    ed = max(true_areas, key=true_areas.get)
    es = min(true_areas, key=true_areas.get)
    dices = {f: dice(m, true[f]) for f, m in masks.items()}
    return {
        "ed": ed,
        "es": es,
        "ed_area": true_areas[ed],
        "es_area": true_areas[es],
        "dice": {str(f): round(d, 4) for f, d in dices.items()},
        "agrees": ed == record["ed"] and es == record["es"] and min(dices.values()) >= MIN_AGREEMENT_DICE,
    }


def _frame_counts(index: EchoNetIndex, name: str, shape, problems: list[Problem]) -> None:
    entry = index.videos[name]
    declared = {"NumberOfFrames": (entry.num_frames, shape[0])}
    for column, (listed, actual) in declared.items():
        if listed is not None and listed != actual:
            msg = f"{entry.file}: {column} {listed} but the video has {actual}"
            problems.append(Problem("FileList.csv", msg, entry.line))


def check_video(index: EchoNetIndex, name: str, problems: list[Problem], warnings: list[Problem]) -> dict:
    entry = index.videos[name]
    record = {"name": name, "split": entry.split, "line": entry.line, "status": "ok"}
    path = index.video_path(name)
    where = f"Videos/{entry.file}"
    if not path.is_file():
        problems.append(Problem(where, "listed in FileList.csv but not found", entry.line, "missing"))
        return {**record, "status": "missing"}
    try:
        frames, fps = read_video(path)
    except VideoError as exc:
        problems.append(Problem(where, f"corrupt or unreadable video ({exc})", entry.line, "corrupt"))
        return {**record, "status": "corrupt"}
    t, h, w = frames.shape
    _frame_counts(index, name, frames.shape, problems)
    traced = index.tracings.get(name, {})
    found = tracing_problems(name, traced, frames.shape)
    problems += found
    masks = {f: m for f, m in traced_masks(traced, h, w).items() if 0 <= f < t}
    ed, es = ed_es(masks)
    record.update(frames=t, height=h, width=w, fps=round(fps, 3), traced_frames=sorted(traced), ed=ed, es=es)
    record.update(
        ed_area=int(masks[ed].sum()) if ed >= 0 else None, es_area=int(masks[es].sum()) if es >= 0 else None
    )
    if found:
        record["status"] = "invalid"
    if len(masks) < 2:
        warnings.append(
            Problem(where, f"{len(masks)} usable traced frame(s); ED/ES unknown, not used for training")
        )
    try:
        true = load_true_masks(index.root, name, frames.shape)
    except ValueError as exc:
        problems.append(Problem(f"Masks/{name}.npy", str(exc)))
        true = None
    if true is not None and masks and ed >= 0:
        record["true"] = compare_true(record, masks, true)
        if not record["true"]["agrees"]:
            problems.append(Problem(where, f"tracings disagree with Masks/{name}.npy: {record['true']}"))
    return record


def check_echonet(root: Path) -> dict:
    index = read_index(root)
    problems = [*index.problems, *index.unknown_tracings()]
    warnings: list[Problem] = []
    videos = [check_video(index, name, problems, warnings) for name in index.videos]
    if (root / "Videos").is_dir():
        listed = {e.file.lower() for e in index.videos.values()}
        for path in sorted((root / "Videos").iterdir()):
            if path.is_file() and path.name.lower() not in listed:
                warnings.append(Problem(f"Videos/{path.name}", "not listed in FileList.csv"))
    counts = Counter(e.split for e in index.videos.values())
    return _report(root, "echonet", counts, videos, problems, warnings)


def check_camus(root: Path) -> dict:
    problems: list[Problem] = []
    videos = []
    for folder in camus.find_patients(root):
        for view in camus.VIEWS:
            clip, found = camus.camus_clip(folder, view)
            problems += found
            if clip is None:
                videos.append(
                    {
                        "name": f"{folder.name}_{view}",
                        "split": camus.split_of(folder.name),
                        "status": "invalid",
                    }
                )
                continue
            t, h, w = clip.frames.shape
            record = {
                "name": clip.name,
                "split": clip.split,
                "status": "ok",
                "frames": t,
                "height": h,
                "width": w,
            }
            record.update(
                spacing=list(clip.spacing), traced_frames=sorted(clip.traced), ed=clip.ed, es=clip.es
            )
            record.update(ed_area=int(clip.traced[clip.ed].sum()), es_area=int(clip.traced[clip.es].sum()))
            if clip.true_masks is not None:
                record["true"] = compare_true(record, clip.traced, clip.true_masks)
                if not record["true"]["agrees"]:
                    problems.append(
                        Problem(f"{folder.name}/{clip.name}", "ED/ES gt disagree with the sequence gt")
                    )
            videos.append(record)
    counts = Counter(v["split"] for v in videos)
    return _report(root, "camus", counts, videos, problems, [])


def _report(root, layout, counts, videos, problems, warnings) -> dict:
    return {
        "root": str(root),
        "layout": layout,
        "counts": {s: counts.get(s, 0) for s in sorted(counts)},
        "videos": videos,
        "problems": [p.to_dict() for p in problems],
        "warnings": [p.to_dict() for p in warnings],
        "ok": not problems,
    }


def check_dataset(root) -> dict:
    """Validate the dataset folder ``root``; the report is a JSON-ready dict (``ok`` False on any problem)."""
    root = Path(root)
    if not root.is_dir():
        problem = Problem(str(root), "dataset folder not found", kind="missing")
        return _report(root, "unknown", Counter(), [], [problem], [])
    layout = detect_layout(root)
    if layout == "echonet":
        return check_echonet(root)
    if layout == "camus":
        return check_camus(root)
    msg = (
        "neither EchoNet-Dynamic (FileList.csv, VolumeTracings.csv, Videos/) nor CAMUS (patientNNNN/) layout"
    )
    return _report(root, "unknown", Counter(), [], [Problem(str(root), msg, kind="missing")], [])


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
