"""Figures of the evaluation report: EF Bland–Altman, Dice histogram, contour overlays.

Drawn with matplotlib's object API on the Agg canvas (no pyplot state, no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

REFERENCE_COLOR = "#2ca02c"  # green
PREDICTION_COLOR = "#d62728"  # red


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def bland_altman_ef(predicted: Sequence[float], reference: Sequence[float], path: Path) -> Path:
    """Scatter of predicted vs reference EF and the Bland–Altman plot (difference vs mean)."""
    p = np.asarray(predicted, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    ok = np.isfinite(p) & np.isfinite(r)
    p, r = p[ok], r[ok]
    fig = _figure(10, 4.5)
    ax_sc, ax_ba = fig.subplots(1, 2)

    ax_sc.scatter(r, p, s=14, alpha=0.7)
    lo = float(min(r.min(), p.min(), 0.0)) if p.size else 0.0
    hi = float(max(r.max(), p.max(), 100.0)) if p.size else 100.0
    ax_sc.plot([lo, hi], [lo, hi], "k--", lw=1, label="identity")
    corr = np.corrcoef(p, r)[0, 1] if p.size >= 2 and p.std() > 0 and r.std() > 0 else float("nan")
    ax_sc.set(xlabel="reference EF (%)", ylabel="predicted EF (%)", title=f"EF, n={p.size}, r={corr:.3f}")
    ax_sc.legend(loc="upper left")

    mean, diff = (p + r) / 2.0, p - r
    ax_ba.scatter(mean, diff, s=14, alpha=0.7)
    if diff.size:
        bias = float(diff.mean())
        sd = float(diff.std(ddof=1)) if diff.size > 1 else 0.0
        ax_ba.axhline(bias, color="k", lw=1, label=f"bias {bias:+.2f}")
        for sign in (-1, 1):
            ax_ba.axhline(bias + sign * 1.96 * sd, color="k", ls="--", lw=1)
        ax_ba.plot([], [], "k--", lw=1, label=f"±1.96 SD ({1.96 * sd:.2f})")
        ax_ba.legend(loc="best", fontsize=8)
    ax_ba.set(
        xlabel="mean of predicted and reference EF (%)",
        ylabel="predicted − reference EF (%)",
        title="Bland–Altman",
    )
    fig.tight_layout()
    return _save(fig, path)


def dice_histogram(
    traced_by_phase: dict[str, Sequence[float]], all_frames: Sequence[float] | None, path: Path
) -> Path:
    """Histogram of Dice at the traced frames (ED and ES stacked) and, if given, over every frame."""
    panels = 2 if all_frames else 1
    fig = _figure(5 * panels, 4)
    axes = np.atleast_1d(fig.subplots(1, panels))
    values = [v for vs in traced_by_phase.values() for v in vs] + list(all_frames or [])
    finite = [v for v in values if np.isfinite(v)]
    lo = np.floor(min(finite, default=0.0) * 20.0) / 20.0  # zoom on the populated range
    bins = np.linspace(min(lo, 0.95), 1.0, 41)
    labels = [p for p, v in traced_by_phase.items() if len(v)]
    axes[0].hist([traced_by_phase[p] for p in labels], bins=bins, stacked=True, label=labels)
    n = sum(len(traced_by_phase[p]) for p in labels)
    axes[0].set(xlabel="Dice", ylabel="frames", title=f"Traced frames (n={n})")
    if labels:
        axes[0].legend(loc="upper left")
    if all_frames:
        axes[1].hist(all_frames, bins=bins, color="gray")
        axes[1].set(xlabel="Dice", ylabel="frames", title=f"Every frame (n={len(all_frames)})")
    for ax in axes:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return _save(fig, path)


def overlay(frame: np.ndarray, reference: np.ndarray, prediction: np.ndarray, title: str, path: Path) -> Path:
    """The echo frame with the reference (green) and predicted (red) LV contours."""
    fig = _figure(5, 5.4)
    ax = fig.subplots()
    ax.imshow(frame, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    for mask, color in ((reference, REFERENCE_COLOR), (prediction, PREDICTION_COLOR)):
        mask = np.asarray(mask, dtype=np.float32)
        if mask.max() > 0:
            ax.contour(mask, levels=[0.5], colors=[color], linewidths=1.5)
    handles = [
        Line2D([], [], color=REFERENCE_COLOR, lw=2, label="reference"),
        Line2D([], [], color=PREDICTION_COLOR, lw=2, label="prediction"),
    ]
    if not np.asarray(prediction).any():
        handles[1].set_label("prediction (empty)")
    ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.8)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    fig.tight_layout()
    return _save(fig, path)
