"""Offline evaluation of a checkpoint on an EchoNet-Dynamic-format split (``echoseg eval``).

The model segments every frame of every clip with the same sliding windows the service uses
(:func:`training.model.inference.predict_clip`). Then:

- at the traced frames (ED and ES, the only labelled frames in EchoNet-Dynamic and CAMUS, which
  is how the paper evaluates): Dice, Hausdorff distance and HD95 (pixels; also mm when the clips
  carry a pixel spacing other than the EchoNet placeholder 1 x 1), pixel AUC — mean ± std over
  frames;
- over every frame of clips that have full per-frame ground truth (``Masks/`` of the synthetic
  generator): the same metrics;
- LVEF from single-plane method-of-discs volumes of the *predicted* masks at the traced ED/ES
  frames, against the reference EF of ``FileList.csv``: correlation, bias, std. For context the
  same figures are given for the EF of the *reference* masks (how well the volume method alone
  reproduces the reference EF) and for the EF found fully automatically from the predicted area
  curve, as the service does.

With ``out_dir`` the report is written there: ``metrics.json``, ``metrics.md``, ``per_case.csv``,
``bland_altman_ef.png``, ``dice_histogram.png`` and ``overlay_{best,median,worst}.png``.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from echoseg.cardiac import summarize_clip
from training import metrics
from training.data.source import ClipSource

logger = logging.getLogger(__name__)

FRAME_METRICS = ("dice", "hd", "hd95", "hd_mm", "hd95_mm", "auc")
OVERLAY_CASES = ("best", "median", "worst")


@dataclass
class FrameScore:
    """Metrics of one predicted frame against its reference mask."""

    frame: int
    phase: str  # "ED", "ES" or "" for an untraced frame
    dice: float
    hd: float
    hd95: float
    hd_mm: float
    hd95_mm: float
    auc: float


@dataclass
class ClipResult:
    """Everything the report needs about one clip (predicted masks kept only at traced frames)."""

    name: str
    ed: int
    es: int
    spacing: tuple[float, float]
    ef_reference: float
    ef_predicted: float
    ef_reference_masks: float
    ef_auto: float
    traced: list[FrameScore] = field(default_factory=list)
    all_frames: list[FrameScore] = field(default_factory=list)
    traced_pred: dict[int, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0
    num_frames: int = 0


def score_frame(
    prob: np.ndarray, pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, float], frame: int, phase: str
) -> FrameScore:
    """All per-frame metrics of ``(H, W)`` probabilities/mask against a reference mask."""
    hd, hd95 = metrics.hausdorff_percentiles(pred, gt)
    hd_mm, hd95_mm = (hd, hd95) if spacing == (1.0, 1.0) else metrics.hausdorff_percentiles(pred, gt, spacing)
    return FrameScore(
        frame=frame,
        phase=phase,
        dice=metrics.dice(pred, gt),
        hd=hd,
        hd95=hd95,
        hd_mm=hd_mm,
        hd95_mm=hd95_mm,
        auc=metrics.pixel_auc(prob, gt),
    )


def evaluate_clip(model, clip, batch_size: int = 16) -> ClipResult:
    """Segment one :class:`training.data.echonet.Clip` and score it."""
    from training.model.inference import predict_clip

    start = time.perf_counter()
    prob = predict_clip(model, clip.frames, batch_size=batch_size)  # (T, H, W) float32
    seconds = time.perf_counter() - start
    masks = (prob > model.config.threshold).astype(np.uint8)  # (T, H, W)
    spacing = tuple(float(s) for s in clip.spacing)

    phases = {clip.ed: "ED", clip.es: "ES"}
    traced = [
        score_frame(prob[t], masks[t], gt, spacing, t, phases.get(t, ""))
        for t, gt in sorted(clip.traced.items())
    ]
    all_frames = []
    if clip.true_masks is not None:
        all_frames = [
            score_frame(prob[t], masks[t], clip.true_masks[t], spacing, t, phases.get(t, ""))
            for t in range(min(len(masks), len(clip.true_masks)))
        ]
    # ED/ES are -1 when a clip has fewer than two traced frames: its traced-frame EFs are undefined.
    has_pair = clip.ed in clip.traced and clip.es in clip.traced
    nan = float("nan")
    return ClipResult(
        name=clip.name,
        ed=clip.ed,
        es=clip.es,
        spacing=spacing,
        ef_reference=float(clip.ef) if clip.ef is not None else nan,
        ef_predicted=metrics.ef_from_masks(masks[clip.ed], masks[clip.es], spacing) if has_pair else nan,
        ef_reference_masks=(
            metrics.ef_from_masks(clip.traced[clip.ed], clip.traced[clip.es], spacing) if has_pair else nan
        ),
        ef_auto=summarize_clip(masks, spacing, clip.fps).ef,
        traced=traced,
        all_frames=all_frames,
        traced_pred={t: masks[t].astype(bool) for t in clip.traced},
        seconds=seconds,
        num_frames=len(clip.frames),
    )


def summarize_frames(scores: list[FrameScore], with_mm: bool) -> dict[str, Any]:
    """Mean/std/median/min/max (and undefined counts) of each per-frame metric."""
    names = [m for m in FRAME_METRICS if with_mm or not m.endswith("_mm")]
    out: dict[str, Any] = {"n_frames": len(scores)}
    for name in names:
        out[name] = metrics.summarize(getattr(s, name) for s in scores)
    return out


def aggregate(results: list[ClipResult], split: str) -> dict[str, Any]:
    """The metrics dictionary of a split (what ``metrics.json`` holds)."""
    spacing_known = any(r.spacing != (1.0, 1.0) for r in results)
    traced = [s for r in results for s in r.traced]
    full = [s for r in results for s in r.all_frames]
    ref = [r.ef_reference for r in results]
    frames = sum(r.num_frames for r in results)
    seconds = sum(r.seconds for r in results)
    return {
        "split": split,
        "n_clips": len(results),
        "spacing_known": spacing_known,
        "traced": summarize_frames(traced, spacing_known),
        "traced_by_phase": {
            phase: summarize_frames([s for s in traced if s.phase == phase], spacing_known)
            for phase in ("ED", "ES")
        },
        "all_frames": summarize_frames(full, spacing_known) if full else None,
        "ef": {
            "predicted": metrics.ef_agreement([r.ef_predicted for r in results], ref),
            "reference_masks": metrics.ef_agreement([r.ef_reference_masks for r in results], ref),
            "auto_ed_es": metrics.ef_agreement([r.ef_auto for r in results], ref),
        },
        "timing": {"frames": frames, "seconds": seconds, "ms_per_frame": 1000.0 * seconds / max(frames, 1)},
    }


def load_model(checkpoint_or_model):
    """A ready-to-run model and its checkpoint meta from a path or an ``EchoSegNet``."""
    if isinstance(checkpoint_or_model, (str, Path)):
        from training.model.io import load_pretrained

        model, _, meta = load_pretrained(checkpoint_or_model)
    else:
        model, meta = checkpoint_or_model, {}
        if not hasattr(model, "config"):
            raise ValueError(
                "checkpoint_or_model must be a checkpoint path (directory, run directory or .safetensors) "
                f"or an EchoSegNet, got {type(checkpoint_or_model).__name__}"
            )
    model.eval()
    return model, dict(meta or {})


def evaluate(
    checkpoint_or_model, data_root, split: str | None = "TEST", out_dir=None, batch_size: int = 16
) -> dict[str, Any]:
    """Evaluate a checkpoint (path) or model on ``split`` of ``data_root``; see the module docstring.

    ``data_root`` is an EchoNet-Dynamic folder, a CAMUS folder or a frame store; ``split`` is
    TRAIN, VAL, TEST, or ALL / None for every clip. Clips are read and scored one at a time, so
    memory does not grow with the split (the report's overlays read their three clips again).

    Returns the metrics dictionary; with ``out_dir`` also writes the report files there.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    model, meta = load_model(checkpoint_or_model)
    every_split = split is None or str(split).upper() == "ALL"
    source = ClipSource(data_root, None if every_split else split)
    if not len(source):
        raise ValueError(f"no clips in split {split!r} of {data_root}; splits are TRAIN, VAL, TEST or ALL")
    split = "ALL" if every_split else split
    return evaluate_clips(model, source, split, out_dir, batch_size, meta, reload=source.load)


def evaluate_clips(
    model,
    clips,
    split: str,
    out_dir=None,
    batch_size: int = 16,
    meta: dict[str, Any] | None = None,
    reload: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """:func:`evaluate` on an iterable of ``Clip`` objects, scored one at a time.

    ``reload(name) -> Clip`` gives the report's overlay figures their frames again; without it
    ``clips`` must be a sequence (e.g. a list of clips already in memory).
    """
    if reload is None:
        if not isinstance(clips, Sequence):
            raise ValueError("evaluate_clips needs reload= when clips is not a sequence")
        reload = {c.name: c for c in clips}.__getitem__
    n = len(clips) if hasattr(clips, "__len__") else None
    logger.info("evaluating %s clips of split %s", n if n is not None else "the", split)
    results = [evaluate_clip(model, clip, batch_size) for clip in clips]
    out = aggregate(results, split)
    out["model"] = {"config": model.config.to_dict(), "meta": dict(meta or {})}
    if out_dir is not None:
        write_report(out, results, reload, Path(out_dir))
    return out


# -- report ------------------------------------------------------------------------------------


def pick_cases(results: list[ClipResult]) -> dict[str, tuple[ClipResult, FrameScore]]:
    """The best, median and worst traced frames by Dice (ties broken by clip order)."""
    ranked = sorted(((s.dice, i, j) for i, r in enumerate(results) for j, s in enumerate(r.traced)))
    if not ranked:
        return {}
    picks = {"worst": ranked[0], "median": ranked[(len(ranked) - 1) // 2], "best": ranked[-1]}
    return {case: (results[i], results[i].traced[j]) for case, (_, i, j) in picks.items()}


def write_report(
    out: dict[str, Any], results: list[ClipResult], reload: Callable[[str], Any], out_dir: Path
) -> None:
    """metrics.json, metrics.md, per_case.csv and the PNG figures (``reload(name)`` gives a clip)."""
    from training import eval_plots

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(out, indent=2, sort_keys=False) + "\n")
    (out_dir / "metrics.md").write_text(metrics_markdown(out))
    write_per_case(results, out_dir / "per_case.csv")

    eval_plots.bland_altman_ef(
        [r.ef_predicted for r in results], [r.ef_reference for r in results], out_dir / "bland_altman_ef.png"
    )
    eval_plots.dice_histogram(
        {phase: [s.dice for r in results for s in r.traced if s.phase == phase] for phase in ("ED", "ES")},
        [s.dice for r in results for s in r.all_frames] or None,
        out_dir / "dice_histogram.png",
    )
    for case, (result, score) in pick_cases(results).items():
        clip = reload(result.name)
        eval_plots.overlay(
            clip.frames[score.frame],
            clip.traced[score.frame],
            result.traced_pred[score.frame],
            f"{case}: Dice {score.dice:.3f}, HD {score.hd:.1f} px ({score.phase or 'frame'} {score.frame})",
            out_dir / f"overlay_{case}.png",
        )
    logger.info("evaluation report written to %s", out_dir)


def write_per_case(results: list[ClipResult], path: Path) -> None:
    fields = ["clip", "frame", "phase", *FRAME_METRICS, "ef_reference", "ef_predicted"]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(fields)
        for r in results:
            for s in r.traced:
                values = [f"{getattr(s, m):.4f}" for m in FRAME_METRICS]
                efs = [f"{r.ef_reference:.2f}", f"{r.ef_predicted:.2f}"]
                writer.writerow([r.name, s.frame, s.phase, *values, *efs])


def fmt_pm(stats: dict[str, Any] | None, scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± std`` of a metric summary for a table (scaled, e.g. by 100 for percent)."""
    if not stats or stats.get("mean") is None:
        return "–"
    text = f"{stats['mean'] * scale:.{digits}f} ± {stats['std'] * scale:.{digits}f}"
    if stats.get("n_undefined"):
        text += f" ({stats['n_undefined']} undefined)"
    return text


def fmt_num(x: float | None, digits: int = 3) -> str:
    """A number for a table; an en dash where it is undefined."""
    return "–" if x is None else f"{x:.{digits}f}"


def metrics_markdown(out: dict[str, Any]) -> str:
    """The metrics dictionary as markdown tables (segmentation, then EF)."""
    groups = [("traced ED/ES", out["traced"])]
    groups += [(f"traced {p}", out["traced_by_phase"][p]) for p in ("ED", "ES")]
    if out.get("all_frames"):
        groups.append(("every frame", out["all_frames"]))
    rows = [("Dice (%)", "dice", 100.0), ("HD (px)", "hd", 1.0), ("HD95 (px)", "hd95", 1.0)]
    if out["spacing_known"]:
        rows += [("HD (mm)", "hd_mm", 1.0), ("HD95 (mm)", "hd95_mm", 1.0)]
    rows.append(("AUC (%)", "auc", 100.0))
    lines = [
        f"# Evaluation on split {out['split']} ({out['n_clips']} clips)",
        "",
        "| frames | n | " + " | ".join(r[0] for r in rows) + " |",
        "|---|---|" + "---|" * len(rows),
    ]
    for label, g in groups:
        cells = [fmt_pm(g.get(key), scale) for _, key, scale in rows]
        lines.append(f"| {label} | {g['n_frames']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Mean ± std over frames. HD is the symmetric boundary Hausdorff distance; undefined where "
        "exactly one mask is empty (counted, left out of the mean).",
        "",
        "| LVEF vs reference | n | corr | bias (%) | std (%) | MAE (%) |",
        "|---|---|---|---|---|---|",
    ]
    labels = {
        "predicted": "predicted masks at traced ED/ES",
        "reference_masks": "reference masks at traced ED/ES",
        "auto_ed_es": "predicted masks, automatic ED/ES",
    }
    for key, label in labels.items():
        e = out["ef"][key]
        n = f"{e['n']}" + (f" (+{e['n_undefined']} undefined)" if e["n_undefined"] else "")
        lines.append(
            f"| {label} | {n} | {fmt_num(e['corr'])} | {fmt_num(e['bias'], 2)} | {fmt_num(e['std'], 2)} "
            f"| {fmt_num(e['mae'], 2)} |"
        )
    t = out["timing"]
    lines += ["", f"Inference: {t['frames']} frames, {t['ms_per_frame']:.1f} ms/frame (this machine).", ""]
    return "\n".join(lines)


def format_summary(out: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    tr = out["traced"]
    e = out["ef"]["predicted"]
    lines = [
        f"split {out['split']}: {out['n_clips']} clips, {tr['n_frames']} traced frames",
        f"  Dice {fmt_pm(tr['dice'], 100.0)} %  HD {fmt_pm(tr['hd'])} px  HD95 {fmt_pm(tr['hd95'])} px  "
        f"AUC {fmt_pm(tr['auc'], 100.0)} %",
        f"  EF corr {fmt_num(e['corr'])}  bias {fmt_num(e['bias'], 2)}  std {fmt_num(e['std'], 2)}",
    ]
    if out.get("all_frames"):
        lines.append(f"  every frame: Dice {fmt_pm(out['all_frames']['dice'], 100.0)} %")
    return "\n".join(lines)
