"""The paper's ablation (Wu et al. 2022, Table 2) and number of encoders (Table 5) on synthetic echoes.

    .venv/bin/python -m benchmarks.ablation            # 7 rows x 3 training seeds (~20 min, 2 CPU cores)
    .venv/bin/python -m benchmarks.ablation --quick    # smoke run of the same pipeline, one seed

Every row trains the same preset for the same number of steps, from the same seed, on the same
synthetic EchoNet-Dynamic-format clips, where — as in EchoNet-Dynamic — only the traced ED and ES
frames of each clip are labelled and every other frame is unlabelled. Each trained student
(its best-by-validation checkpoint) is then evaluated with ``training.evaluate`` on a held-out
synthetic set generated with another seed: Dice, Hausdorff distance and pixel AUC at the traced
ED/ES frames and the EF correlation. Inference time per frame is measured for k = 1, 3, 5 on this
machine, interleaved, so that the ratios are comparable inside one run.

Writes ``ablation.json`` and ``ablation.md`` into ``--out`` (default ``benchmarks/results``;
``--quick`` writes ``ablation_quick.*``). Paper figures are EchoNet-Dynamic's, for context only:
the data, scale and budget differ by orders of magnitude.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from training.data.a4c import generate_a4c, parse_sizes
from training.data.synthetic import generate
from training.evaluate import evaluate, fmt_num, fmt_pm
from training.model import build_model, get_preset

logger = logging.getLogger("benchmarks.ablation")

RESULTS = Path(__file__).resolve().parent / "results"
SEEDS = "seeds"  # per-seed reports go to <out>/seeds/, beside the table over seeds in <out>

# EchoNet-Dynamic columns of the paper: Dice %, HD mm, AUC % (Table 2; Table 5 adds ms/frame).
PAPER_TABLE2 = {
    "U-Net": (89.34, 4.36, 95.21),
    "Baseline": (90.67, 3.92, 96.13),
    "Baseline+TCE": (91.69, 3.51, 97.38),
    "Baseline+BSSF": (91.33, 3.27, 97.15),
    "Baseline+TCE+BSSF": (92.87, 2.93, 98.20),
}
PAPER_TABLE5 = {1: (90.67, 3.92, 96.13, 12.0), 3: (92.87, 2.93, 98.20, 32.0), 5: (93.04, 2.90, 98.16, 51.0)}
PAPER_EF_FULL = {"corr": 0.861, "bias": 1.8, "std": 7.5}  # Table 6, EchoNet-Dynamic


@dataclass(frozen=True)
class Row:
    """One trained configuration: a paper row and the switches that realise it."""

    key: str
    label: str
    paper: str | None  # the Table 2 row it stands for
    mode: str  # "supervised" or "mean_teacher"
    overrides: dict[str, Any]
    how: str


ROWS = (
    Row("unet", "U-Net (supervised only)", "U-Net", "supervised", {"num_frames": 1},
        "k=1: the target frame alone through one U-Net; no teacher, labelled ED/ES windows only"),
    Row("baseline", "Baseline (k=1)", "Baseline", "mean_teacher", {"num_frames": 1},
        "k=1: one shared encoder on the target frame; mean teacher (the design's k=1 Baseline)"),
    Row("baseline3", "Baseline (3 frames, shared encoder)", "Baseline", "mean_teacher",
        {"num_frames": 3, "tce": False, "bssf": False},
        "3 frames through one shared encoder, plain 1x1 fusion; mean teacher "
        "(the paper's text: a U-Net 'roughly fusing three continuous frames')"),
    Row("tce", "Baseline+TCE", "Baseline+TCE", "mean_teacher", {"num_frames": 3, "tce": True, "bssf": False},
        "3 frames, 3 independent encoders, plain 1x1 fusion; mean teacher"),
    Row("bssf", "Baseline+BSSF", "Baseline+BSSF", "mean_teacher",
        {"num_frames": 3, "tce": False, "bssf": True},
        "3 frames through one shared encoder, ASSC calibration + BSSF fusion; mean teacher"),
    Row("full", "Baseline+TCE+BSSF (full)", "Baseline+TCE+BSSF", "mean_teacher",
        {"num_frames": 3, "tce": True, "bssf": True},
        "3 frames, 3 independent encoders, ASSC + BSSF; mean teacher (the paper's model)"),
    Row("k5", "Full model, k=5", None, "mean_teacher", {"num_frames": 5, "tce": True, "bssf": True},
        "5 frames, 5 independent encoders, ASSC + BSSF on the 4 neighbours; mean teacher"),
    Row("elementwise", "Full, W = A ⊙ G", None, "mean_teacher",
        {"num_frames": 3, "tce": True, "bssf": True, "aggregation": "elementwise"},
        "the full model with the first family's element-wise kernel A ⊙ G instead of eq. (3)'s A · G"),
    Row("noscale", "Full, released scaling", None, "mean_teacher",
        {"num_frames": 3, "tce": True, "bssf": True, "scaling": "none"},
        "the full model without 1/sqrt(84) and the kernel fan-in (the released code's sigmoid(Q'K'^T) · G)"),
)  # fmt: skip
TABLE5_ROWS = {1: "baseline", 3: "full", 5: "k5"}


@dataclass
class Budget:
    """Data and optimisation budget shared by every row.

    The default fits about 20 minutes of a 2-core machine for 9 rows x 3 seeds: the ``tiny``
    preset (ResNet family, BSSF on its three stages) at 48x48, 240 steps of 4 labelled + 4
    unlabelled windows.
    """

    preset: str = "tiny"
    input_size: int | None = 48  # override of the preset's input size
    train_videos: int = 16
    test_videos: int = 8
    frames: int = 40
    size: int = 112
    steps: int = 240
    batch_size: int = 4
    unlabelled_batch_size: int = 4
    windows_per_video: int = 4
    lr: float = 3e-3
    eval_every: int = 80
    seed: int = 0  # training seed (initialisation, batches, augmentation)
    data_seed: int = 0  # synthetic training clips; the test clips use data_seed + 1000
    threads: int = 2
    timing_repeats: int = 30
    model_overrides: dict[str, Any] = field(default_factory=dict)
    data: str = "simple"  # or "a4c": the realistic apical four-chamber simulator (scanner frames)
    sizes: str = "112x112,240x320"  # a4c: frame sizes drawn per clip
    flips: str = "hvt"  # augmentation flips (a4c: "h", apex up)


FULL = Budget()
# The realistic simulator (issue "Real echoes", item 5): single frames lose walls to dropout and
# shadowing there, which is where temporal context should help. Larger input (the LV spans about a
# quarter of the fan), more clips and steps; five training seeds for paired comparisons.
A4C = Budget(
    preset="tiny", input_size=64, train_videos=48, test_videos=16, frames=40, steps=600, eval_every=150,
    windows_per_video=4, lr=3e-3, threads=1, data="a4c", flips="h",
)  # fmt: skip
QUICK = Budget(
    preset="tiny", train_videos=6, test_videos=4, frames=24, size=64, steps=4, batch_size=4,
    unlabelled_batch_size=4, windows_per_video=2, eval_every=2, timing_repeats=3,
)  # fmt: skip


# -- data ----------------------------------------------------------------------------------------


def make_data(work: Path, budget: Budget) -> tuple[Path, Path]:
    """Training set (TRAIN/VAL/TEST splits of one seed) and a held-out test set (another seed)."""
    train = work / f"{budget.data}-train"
    test = work / f"{budget.data}-test"
    for root, videos, seed in ((train, budget.train_videos, 0), (test, budget.test_videos, 1000)):
        if (root / "FileList.csv").is_file():
            continue
        if budget.data == "a4c":
            generate_a4c(root, videos, frames=budget.frames, sizes=parse_sizes(budget.sizes),
                         seed=budget.data_seed + seed, workers=min(2, os.cpu_count() or 1))  # fmt: skip
        else:
            generate(root, videos, frames=budget.frames, size=budget.size, seed=budget.data_seed + seed)
    return train, test


# -- one row ---------------------------------------------------------------------------------------


def model_overrides(row: Row, budget: Budget) -> dict[str, Any]:
    overrides = {**budget.model_overrides, **row.overrides}
    if budget.input_size is not None:
        overrides["input_size"] = budget.input_size
    return overrides


def train_row(row: Row, budget: Budget, train_root: Path, runs: Path) -> tuple[Path, float]:
    """Train one row; returns its run directory and the wall time of training."""
    from training.train import TrainConfig, run

    cfg = TrainConfig.from_dict(
        {
            "model": {"preset": budget.preset, "overrides": model_overrides(row, budget)},
            "data": {
                "root": str(train_root),
                "windows_per_video": budget.windows_per_video,
                "augment": True,
                "flips": budget.flips,
            },
            "mode": row.mode,
            "steps": budget.steps,
            "batch_size": budget.batch_size,
            "unlabelled_batch_size": budget.unlabelled_batch_size,
            "lr": budget.lr,
            "seed": budget.seed,
            "device": "cpu",
            "amp": "off",
            "threads": budget.threads,
            "eval_every": budget.eval_every,
            "log_every": max(1, budget.eval_every // 5),
            "out_dir": str(runs),
            "run_name": row.key,
            "progress": False,
        }
    )
    start = time.perf_counter()
    run_dir = run(cfg)
    return run_dir, time.perf_counter() - start


def evaluate_row(run_dir: Path, test_root: Path, out_dir: Path) -> tuple[dict[str, Any], list[float]]:
    """Metrics of the run's best checkpoint on every clip of the held-out set, and per-frame Dice."""
    metrics = evaluate(run_dir, test_root, split="ALL", out_dir=out_dir)
    with (out_dir / "per_case.csv").open() as f:
        dice = [float(r["dice"]) for r in csv.DictReader(f)]
    return metrics, dice


def row_summary(row: Row, metrics: dict[str, Any], train_seconds: float, params: int) -> dict[str, Any]:
    tr, ef = metrics["traced"], metrics["ef"]["predicted"]

    def ms(name: str, scale: float = 1.0) -> dict[str, float | None]:
        s = tr[name]
        return {
            "mean": None if s["mean"] is None else s["mean"] * scale,
            "std": None if s["std"] is None else s["std"] * scale,
            "n_undefined": s["n_undefined"],
        }

    every = metrics.get("all_frames") or {}
    return {
        "key": row.key,
        "label": row.label,
        "paper_row": row.paper,
        "mode": row.mode,
        "model_overrides": row.overrides,
        "how": row.how,
        "params": params,
        "train_seconds": round(train_seconds, 1),
        "frames_evaluated": tr["n_frames"],
        "dice_pct": ms("dice", 100.0),
        "hd_px": ms("hd"),
        "hd95_px": ms("hd95"),
        "auc_pct": ms("auc", 100.0),
        "ef": {k: ef[k] for k in ("corr", "bias", "std", "n", "n_undefined")},
        "every_frame_dice_pct": None
        if not every
        else {"mean": every["dice"]["mean"] * 100.0, "std": every["dice"]["std"] * 100.0},
        "paper": None
        if row.paper is None
        else dict(zip(("dice_pct", "hd_mm", "auc_pct"), PAPER_TABLE2[row.paper], strict=True)),
    }


# -- time per frame (Table 5) -------------------------------------------------------------------


def time_per_frame(budget: Budget) -> dict[int, dict[str, float]]:
    """Median forward time (batch 1, eager, no grad) of the k = 1, 3, 5 networks, interleaved."""
    import torch

    torch.set_num_threads(budget.threads)
    models, inputs = {}, {}
    for k, key in TABLE5_ROWS.items():
        row = next(r for r in ROWS if r.key == key)
        config = get_preset(budget.preset, **model_overrides(row, budget))
        models[k] = build_model(config).eval()
        inputs[k] = torch.randn(1, config.num_frames, config.input_size, config.input_size)
    times: dict[int, list[float]] = {k: [] for k in models}
    with torch.no_grad():
        for k in models:  # warm-up
            for _ in range(3):
                models[k](inputs[k])
        for _ in range(budget.timing_repeats):
            for k in models:
                start = time.perf_counter()
                models[k](inputs[k])
                times[k].append(time.perf_counter() - start)
    base = statistics.median(times[1])
    return {
        k: {
            "ms_per_frame": 1000.0 * statistics.median(t),
            "ratio_to_k1": statistics.median(t) / base,
            "params": sum(p.numel() for p in models[k].parameters()),
        }
        for k, t in times.items()
    }


# -- ranking -------------------------------------------------------------------------------------


def paired_difference(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean of per-frame differences a - b and its 95 % half-width (normal approximation)."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    if len(diffs) < 2:
        return (diffs[0] if diffs else 0.0), float("inf")
    return statistics.fmean(diffs), 1.96 * statistics.stdev(diffs) / len(diffs) ** 0.5


def ranking_report(rows: list[dict[str, Any]], dice: dict[str, list[float]]) -> dict[str, Any]:
    """Pairs whose order differs from the paper's, per metric; Dice differences with a 95 % CI."""
    paper_rows = [r for r in rows if r["paper"] is not None]
    metrics = (("dice_pct", "dice_pct", 1), ("hd_px", "hd_mm", -1), ("auc_pct", "auc_pct", 1))
    out: dict[str, Any] = {}
    for ours, theirs, sign in metrics:
        agree, disagree = [], []
        for a, b in combinations(paper_rows, 2):
            pa, pb = a["paper"][theirs], b["paper"][theirs]
            oa, ob = a[ours]["mean"], b[ours]["mean"]
            if pa == pb or oa is None or ob is None:
                continue
            better, worse = (a, b) if sign * (pa - pb) > 0 else (b, a)
            pair = {"paper_better": better["key"], "paper_worse": worse["key"]}
            if ours == "dice_pct":
                diff, half = paired_difference(dice[better["key"]], dice[worse["key"]])
                pair["dice_diff_pct"] = round(100.0 * diff, 2)
                pair["ci95_pct"] = round(100.0 * half, 2)
                pair["significant"] = abs(diff) > half
            same = sign * (better[ours]["mean"] - worse[ours]["mean"]) > 0
            (agree if same else disagree).append(pair)
        ranked = [r for r in paper_rows if r[ours]["mean"] is not None]
        order = sorted(ranked, key=lambda r: -sign * r[ours]["mean"])
        out[ours] = {
            "our_order": [r["key"] for r in order],
            "pairs_agreeing": len(agree),
            "pairs_disagreeing": disagree,
        }
    return out


# -- report --------------------------------------------------------------------------------------


def markdown(report: dict[str, Any]) -> str:
    b = report["budget"]
    m = report["machine"]
    size = f" at {b['input_size']}x{b['input_size']}" if b.get("input_size") else ""
    frames = report["rows"][0]["frames_evaluated"]
    lines = [
        "# Ablation on synthetic echoes (paper Tables 2 and 5)",
        "",
        f"Command: `{report['command']}`  ",
        f"Preset `{b['preset']}`{size}, {b['steps']} steps, batch {b['batch_size']} labelled +",
        f"{b['unlabelled_batch_size']} unlabelled windows, lr {b['lr']}, seed {b['seed']},",
        f"{b['threads']} threads. Training data: {b['train_videos']} {data_words(b)} clips",
        f"of {b['frames']} frames",
        f"at {frame_sizes(b)}, labels only at the traced ED/ES frames. Test: {b['test_videos']} clips",
        f"generated with another seed ({frames} traced frames). {m['cpus']} CPUs, torch {m['torch']}.",
        "",
        "## Table 2: ablation (ours on synthetic data | paper on EchoNet-Dynamic)",
        "",
        "| row | Dice (%) | HD (px) | HD95 (px) | AUC (%) | EF corr | train (s) "
        "| paper DC (%) | paper HD (mm) | paper AUC (%) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        p = r["paper"] or {}
        lines.append(
            f"| {r['label']} | {fmt_pm(r['dice_pct'])} | {fmt_pm(r['hd_px'])} | {fmt_pm(r['hd95_px'])} "
            f"| {fmt_pm(r['auc_pct'])} | {fmt_num(r['ef']['corr'])} | {r['train_seconds']:.0f} "
            f"| {fmt_num(p.get('dice_pct'), 2)} | {fmt_num(p.get('hd_mm'), 2)} "
            f"| {fmt_num(p.get('auc_pct'), 2)} |"
        )
    lines += ["", "Mean ± std over the traced test frames. How each row is configured:", ""]
    lines += [
        f"- **{r['label']}** (`{r['key']}`, {r['params']:,} parameters): {r['how']}." for r in report["rows"]
    ]
    lines += [
        "",
        "## Table 5: number of frames/encoders k",
        "",
        "| k | row | Dice (%) | HD (px) | AUC (%) | EF corr | params | ms/frame (here) | ratio to k=1 "
        "| paper DC (%) | paper ms/frame | paper ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_key = {r["key"]: r for r in report["rows"]}
    for k_text, t in report["timing"].items():
        k = int(k_text)
        r = by_key.get(TABLE5_ROWS[k])
        pd, pms = PAPER_TABLE5[k][0], PAPER_TABLE5[k][3]
        cells = (
            ["–"] * 4
            if r is None
            else [fmt_pm(r["dice_pct"]), fmt_pm(r["hd_px"]), fmt_pm(r["auc_pct"]), fmt_num(r["ef"]["corr"])]
        )
        lines.append(
            f"| {k} | {TABLE5_ROWS[k]} | "
            + " | ".join(cells)
            + f" | {t['params']:,} | {t['ms_per_frame']:.1f} "
            f"| {t['ratio_to_k1']:.2f} | {pd:.2f} | {pms:.0f} | {pms / PAPER_TABLE5[1][3]:.2f} |"
        )
    lines += [
        "",
        "Time: median eager forward pass, batch 1, no grad, on this machine's CPU with the threads above "
        "(the paper: a GTX 2080 Ti); compare the ratios, not the milliseconds.",
        "",
        "## Where the ranking differs from the paper",
        "",
    ]
    lines += ranking_lines(report["ranking"])
    if report.get("notes"):
        lines += ["", "## Notes", "", *report["notes"]]
    return "\n".join(lines) + "\n"


def ranking_lines(ranking: dict[str, Any]) -> list[str]:
    names = {"dice_pct": "Dice", "hd_px": "HD", "auc_pct": "AUC"}
    lines = []
    for metric, r in ranking.items():
        bad = r["pairs_disagreeing"]
        lines.append(
            f"- **{names[metric]}**: our order {' > '.join(r['our_order'])} (best first); "
            f"{r['pairs_agreeing']} pairs ordered as in the paper, {len(bad)} not."
        )
        for pair in bad:
            text = f"  - paper: {pair['paper_better']} better than {pair['paper_worse']}; here it is not"
            if "dice_diff_pct" in pair:
                verdict = "beyond" if pair["significant"] else "within"
                text += (
                    f" (Dice {pair['dice_diff_pct']:+.2f} ± {pair['ci95_pct']:.2f} points, paired 95 % CI "
                    f"over the test frames: {verdict} test-set noise; training-seed variance not included)"
                )
            lines.append(text)
    return lines


# -- across training seeds ----------------------------------------------------------------------


def trained_rows(reports: list[dict[str, Any]]) -> list[str]:
    """Keys of the rows any of ``reports`` trained, in the order of ``ROWS``."""
    have = {x["key"] for rep in reports for x in rep["rows"]}
    return [r.key for r in ROWS if r.key in have]


def combine_seeds(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Per row: the traced-frame means of each run (one per training seed) and their mean ± std.

    A row that some seeds did not train (a run stopped for time) keeps ``None`` for those seeds;
    its mean and std are over the seeds it has.
    """
    keys = trained_rows(reports)
    out: dict[str, Any] = {"seeds": [rep["budget"]["seed"] for rep in reports], "rows": []}
    for key in keys:
        runs = [next((x for x in rep["rows"] if x["key"] == key), None) for rep in reports]
        done = [r for r in runs if r is not None]
        first = done[0]
        entry: dict[str, Any] = {k: first[k] for k in ("key", "label", "paper_row", "how", "params", "paper")}
        entry["train_seconds"] = statistics.fmean(r["train_seconds"] for r in done)
        for metric in ("dice_pct", "hd_px", "hd95_px", "auc_pct"):
            entry[metric] = _spread([None if r is None else r[metric]["mean"] for r in runs])
            entry[metric]["n_undefined"] = sum(r[metric].get("n_undefined") or 0 for r in done)
        entry["ef_corr"] = _spread([None if r is None else r["ef"]["corr"] for r in runs])
        out["rows"].append(entry)
    return out


def _spread(values: list[float | None]) -> dict[str, Any]:
    finite = [v for v in values if v is not None]
    return {
        "per_seed": values,
        "mean": statistics.fmean(finite) if finite else None,
        "std": statistics.stdev(finite) if len(finite) > 1 else 0.0 if finite else None,
    }


def seeds_ranking(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Pairs of paper rows whose seed-mean order differs from the paper's, with the seed spread."""
    paper_rows = [r for r in rows if r["paper"] is not None]
    out: dict[str, Any] = {}
    metrics = (("dice_pct", "dice_pct", 1), ("hd_px", "hd_mm", -1), ("auc_pct", "auc_pct", 1))
    for ours, theirs, sign in metrics:
        agree, disagree = 0, []
        for a, b in combinations(paper_rows, 2):
            pa, pb = a["paper"][theirs], b["paper"][theirs]
            if pa == pb or a[ours]["mean"] is None or b[ours]["mean"] is None:
                continue
            better, worse = (a, b) if sign * (pa - pb) > 0 else (b, a)
            diff = better[ours]["mean"] - worse[ours]["mean"]
            if sign * diff > 0:
                agree += 1
                continue
            spread = max(better[ours]["std"] or 0.0, worse[ours]["std"] or 0.0)
            disagree.append(
                {
                    "paper_better": better["key"],
                    "paper_worse": worse["key"],
                    "difference": round(diff, 2),
                    "seed_std": round(spread, 2),
                    "beyond_seed_spread": abs(diff) > spread,
                }
            )
        ranked = [r for r in paper_rows if r[ours]["mean"] is not None]
        ranked.sort(key=lambda r: -sign * r[ours]["mean"])
        out[ours] = {
            "our_order": [r["key"] for r in ranked],
            "pairs_agreeing": agree,
            "pairs_disagreeing": disagree,
        }
    return out


def paired_tests(per_seed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every pair of rows, Dice paired by training seed (same data, seed, steps and test frames).

    The unit is the training run: per seed, the difference of the two rows' mean Dice over the
    traced test frames; a paired t-test over seeds gives the 95 % CI and p. A frame-level figure
    (per-frame differences pooled over seeds) is given beside it; frames of one run are not
    independent, so it understates the uncertainty and only the seed-level CI decides.
    For pairs the paper ranks (Table 2), ``paper_order``: ``holds`` when the CI lies on the
    paper's side of 0, ``reversed`` when on the other, ``undecided`` when it contains 0.
    """
    from scipy import stats

    paper = {r.key: r.paper for r in ROWS}
    frames = [{x["key"]: x["frame_dice"] for x in rep["rows"] if "frame_dice" in x} for rep in per_seed]
    out = []
    for a, b in combinations(trained_rows(per_seed), 2):
        seed_diffs, frame_diffs = [], []
        for run in frames:
            if a not in run or b not in run:
                continue
            fa, fb = run[a], run[b]
            seed_diffs.append(100.0 * (statistics.fmean(fa) - statistics.fmean(fb)))
            frame_diffs += [100.0 * (x - y) for x, y in zip(fa, fb, strict=True)]
        n = len(seed_diffs)
        if n < 2:
            continue
        mean = statistics.fmean(seed_diffs)
        sd = statistics.stdev(seed_diffs)
        half = float(stats.t.ppf(0.975, n - 1)) * sd / n**0.5
        # the paired t-test is the one-sample test of the per-seed differences against 0
        p = float(stats.ttest_1samp(seed_diffs, 0.0).pvalue) if sd > 0 else float(mean == 0.0)
        entry = {
            "a": a, "b": b, "seeds": n, "dice_diff_pct": round(mean, 3),
            "ci95_pct": [round(mean - half, 3), round(mean + half, 3)], "p": round(p, 4),
            "a_better_in_seeds": sum(d > 0 for d in seed_diffs),
            "frame_level": {
                "frames": len(frame_diffs),
                "dice_diff_pct": round(statistics.fmean(frame_diffs), 3),
                "ci95_half_pct": round(1.96 * statistics.stdev(frame_diffs) / len(frame_diffs) ** 0.5, 3),
            },
        }  # fmt: skip
        pa, pb = paper.get(a), paper.get(b)
        if pa and pb and PAPER_TABLE2[pa][0] != PAPER_TABLE2[pb][0]:
            sign = 1.0 if PAPER_TABLE2[pa][0] > PAPER_TABLE2[pb][0] else -1.0
            lo, hi = sorted(sign * x for x in entry["ci95_pct"])
            entry["paper_better"] = a if sign > 0 else b
            entry["paper_order"] = "holds" if lo > 0 else "reversed" if hi < 0 else "undecided"
        out.append(entry)
    return out


def paired_lines(pairs: list[dict[str, Any]]) -> list[str]:
    if not pairs:
        return []
    lines = [
        "## Paired comparisons (Dice, per training seed)",
        "",
        "Difference of the first row minus the second in Dice points: mean over training seeds of the",
        "per-seed difference (the same data, seed and test frames for both rows), its 95 % CI and the",
        "paired t-test's p over seeds; beside it the frame-level difference (frames x seeds pooled;",
        "not independent, shown for scale only). The paper's order is judged on the seed-level CI.",
        "",
        "| A | B | A − B (points) | 95 % CI | p | A better in | frame-level | paper says | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in pairs:
        fl = e["frame_level"]
        lo, hi = e["ci95_pct"]
        lines.append(
            f"| {e['a']} | {e['b']} | {e['dice_diff_pct']:+.2f} | [{lo:+.2f}, {hi:+.2f}] "
            f"| {e['p']:.3f} | {e['a_better_in_seeds']}/{e['seeds']} seeds "
            f"| {fl['dice_diff_pct']:+.2f} ± {fl['ci95_half_pct']:.2f} ({fl['frames']}) "
            f"| {e.get('paper_better', '–')} better | {e.get('paper_order', '–')} |"
        )
    held = [e for e in pairs if e.get("paper_order") == "holds"]
    rev = [e for e in pairs if e.get("paper_order") == "reversed"]
    und = [e for e in pairs if e.get("paper_order") == "undecided"]

    def named(pairs: list[dict[str, Any]]) -> str:
        worse = [e["b"] if e["paper_better"] == e["a"] else e["a"] for e in pairs]
        return ", ".join(f"{e['paper_better']} > {w}" for e, w in zip(pairs, worse, strict=True)) or "none"

    lines += [
        "",
        f"Of the paper's {len(held) + len(rev) + len(und)} ranked pairs at {pairs[0]['seeds']} seeds: "
        f"{len(held)} hold ({named(held)}); {len(rev)} reversed ({named(rev)}); {len(und)} undecided "
        f"({named(und)}).",
        "",
    ]
    return lines


def data_words(b: dict[str, Any]) -> str:
    if b.get("data") == "a4c":
        return f"realistic apical four-chamber (`--mode a4c`, flips {b.get('flips')!r})"
    return "synthetic"


def frame_sizes(b: dict[str, Any]) -> str:
    return b["sizes"].replace(",", ", ") if b.get("data") == "a4c" else f"{b['size']}x{b['size']}"


def header_lines(report: dict[str, Any]) -> list[str]:
    b, m = report["budget"], report["machine"]
    size = f" at {b['input_size']}x{b['input_size']}" if b.get("input_size") else ""
    return [
        f"Command: `{report['command']}`  ",
        f"Preset `{b['preset']}`{size} (overrides {b['model_overrides']}), {b['steps']} steps, batch",
        f"{b['batch_size']} labelled + {b['unlabelled_batch_size']} unlabelled windows, lr {b['lr']},",
        f"{b['threads']} threads. Training data: {b['train_videos']} {data_words(b)} clips",
        f"of {b['frames']} frames",
        f"at {frame_sizes(b)} (seed {b['data_seed']}), labels only at the traced ED/ES frames.",
        f"Test: {b['test_videos']} clips generated with seed {b['data_seed'] + 1000}.",
        f"{m['cpus']} CPUs, torch {m['torch']}.",
    ]


def combined_markdown(report: dict[str, Any]) -> str:
    """The multi-seed report: Tables 2 and 5 as mean ± std over training seeds, and the ranking."""
    seeds = report["seeds"]
    lines = ["# Ablation on synthetic echoes (paper Tables 2 and 5)", "", *header_lines(report), ""]
    lines += [
        f"Rows were trained with training seeds {seeds} (same data, steps and test set); '–' in the",
        "per-seed column marks a seed a row was not trained with. Each cell is the mean ± std over the",
        "seeds a row has of a run's mean over the traced test frames; the per-seed Dice is listed",
        "because the seed-to-seed spread is the noise floor of every comparison below.",
        "",
        "## Table 2: ablation (ours on synthetic data | paper on EchoNet-Dynamic)",
        "",
        "| row | Dice (%) | Dice per seed | HD (px) | HD95 (px) | AUC (%) | EF corr | paper DC (%) "
        "| paper HD (mm) | paper AUC (%) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        p = r["paper"] or {}
        per_seed = ", ".join("–" if v is None else f"{v:.1f}" for v in r["dice_pct"]["per_seed"])
        lines.append(
            f"| {r['label']} | {fmt_pm(r['dice_pct'])} | {per_seed} | {fmt_pm(r['hd_px'])} "
            f"| {fmt_pm(r['hd95_px'])} "
            f"| {fmt_pm(r['auc_pct'])} | {fmt_pm(r['ef_corr'], digits=3)} | {fmt_num(p.get('dice_pct'), 2)} "
            f"| {fmt_num(p.get('hd_mm'), 2)} | {fmt_num(p.get('auc_pct'), 2)} |"
        )
    rows = report["rows"]
    lines += ["", "How each row is configured:", ""]
    lines += [f"- **{r['label']}** (`{r['key']}`, {r['params']:,} params): {r['how']}." for r in rows]
    lines += [
        "",
        "## Table 5: number of frames/encoders k",
        "",
        "| k | row | Dice (%) | HD (px) | AUC (%) | params | ms/frame (here) | ratio to k=1 | paper DC (%) "
        "| paper ms/frame | paper ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_key = {r["key"]: r for r in report["rows"]}
    for k_text, t in report["timing"].items():
        k = int(k_text)
        r = by_key.get(TABLE5_ROWS[k])
        cells = ["–"] * 3 if r is None else [fmt_pm(r["dice_pct"]), fmt_pm(r["hd_px"]), fmt_pm(r["auc_pct"])]
        cells += [f"{t['params']:,}", f"{t['ms_per_frame']:.1f}", f"{t['ratio_to_k1']:.2f}"]
        pms = PAPER_TABLE5[k][3]
        cells += [f"{PAPER_TABLE5[k][0]:.2f}", f"{pms:.0f}", f"{pms / PAPER_TABLE5[1][3]:.2f}"]
        lines.append(f"| {k} | {TABLE5_ROWS[k]} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Time: median eager forward pass, batch 1, no grad, on this machine's CPU (the paper: a GTX",
        "2080 Ti); compare the ratios, not the milliseconds.",
        "",
        "## Where the ranking differs from the paper (seed means)",
        "",
        "A difference is the paper's better row minus its worse row, in the metric's unit (for HD, lower",
        "is better, so a positive difference means the paper's better row has the larger distance here).",
        "",
    ]
    names = {"dice_pct": "Dice", "hd_px": "HD", "auc_pct": "AUC"}
    for metric, r in report["ranking"].items():
        bad = r["pairs_disagreeing"]
        lines.append(
            f"- **{names[metric]}**: our order {' > '.join(r['our_order'])} (best first); "
            f"{r['pairs_agreeing']} pairs ordered as in the paper, {len(bad)} not."
        )
        for pair in bad:
            verdict = "larger" if pair["beyond_seed_spread"] else "smaller"
            lines.append(
                f"  - paper: {pair['paper_better']} better than {pair['paper_worse']}; here the difference "
                f"is {pair['difference']:+.2f}, {verdict} than the seed-to-seed std ({pair['seed_std']:.2f})"
            )
    lines += ["", *paired_lines(report.get("paired", []))]
    lines += ["Per-seed reports: " + ", ".join(f"[{n}]({n})" for n in report["per_seed_reports"]) + "."]
    if report.get("notes"):
        lines += ["", "## Notes", "", *report["notes"]]
    return "\n".join(lines) + "\n"


# -- driver --------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import torch

    return {
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def run_seed(budget: Budget, data: tuple[Path, Path], work: Path, out: Path, stem: str, command: str, keys):
    """Train and evaluate the rows for one training seed; writes ``<stem>.json`` as rows finish."""
    from training.model.io import load_pretrained

    train_root, test_root = data
    rows, dice = [], {}
    by_key = {r.key: r for r in ROWS}
    for row in (by_key[k] for k in keys):  # in the order asked for
        logger.info("seed %d, row %s: %s", budget.seed, row.key, row.how)
        run_dir, seconds = train_row(row, budget, train_root, work / "runs")
        metrics, dice[row.key] = evaluate_row(run_dir, test_root, work / "eval" / row.key)
        model, _, _ = load_pretrained(run_dir)
        params = sum(p.numel() for p in model.parameters())
        rows.append(row_summary(row, metrics, seconds, params))
        rows[-1]["frame_dice"] = [round(d, 6) for d in dice[row.key]]  # paired tests across seeds
        logger.info(
            "seed %d, row %s: Dice %.2f %%, %.0f s",
            budget.seed,
            row.key,
            rows[-1]["dice_pct"]["mean"] or 0,
            seconds,
        )
        write(out, stem, {"command": command, "budget": asdict(budget), "rows": rows, "partial": True})
    return {
        "command": command,
        "budget": asdict(budget),
        "machine": machine(),
        "rows": rows,
        "ranking": ranking_report(rows, dice),
    }


def write(out: Path, stem: str, report: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")


def run_ablation(
    budget: Budget, seeds: list[int], work: Path, out: Path, stem: str, command: str, keys
) -> dict:
    """All rows for every training seed, the timing of k = 1, 3, 5, and the reports."""
    import torch

    torch.set_num_threads(budget.threads)
    data = make_data(work, budget)
    timing = {str(k): v for k, v in time_per_frame(budget).items()}
    per_seed, names = [], []
    seed_out = out if len(seeds) == 1 else out / SEEDS
    for seed in seeds:
        budget.seed = seed
        name = stem if len(seeds) == 1 else f"{stem}_seed{seed}"
        report = run_seed(budget, data, work / f"seed{seed}", seed_out, name, command, keys)
        report["timing"] = timing
        write(seed_out, name, report)
        (seed_out / f"{name}.md").write_text(markdown(report))
        per_seed.append(report)
        names.append(f"{SEEDS}/{name}.md")
    if len(seeds) == 1:
        return per_seed[0]
    return write_combined(per_seed, names, out, stem, command)


def merge_by_seed(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One report per training seed: rows of the same seed from several runs (e.g. a run stopped
    part-way and one that trained the remaining rows) are merged, first report first."""
    merged: dict[int, dict[str, Any]] = {}
    for report in reports:
        seed = report["budget"]["seed"]
        if seed not in merged:
            merged[seed] = {**report, "rows": list(report["rows"]), "command": report["command"]}
            continue
        have = {r["key"] for r in merged[seed]["rows"]}
        merged[seed]["rows"] += [r for r in report["rows"] if r["key"] not in have]
        merged[seed]["command"] += "; " + report["command"]
        for key, value in report.items():  # e.g. the timing, which a stopped run did not write
            merged[seed].setdefault(key, value)
    return [merged[s] for s in sorted(merged)]


def write_combined(
    per_seed: list[dict[str, Any]], names: list[str], out: Path, stem: str, command: str
) -> dict[str, Any]:
    """The table over seeds from per-seed reports (one run, or one process per seed)."""
    combined = combine_seeds(per_seed)
    final = {
        "command": command,
        "budget": {**per_seed[0]["budget"], "seed": None},
        "machine": machine(),
        "seeds": combined["seeds"],
        "rows": combined["rows"],
        "timing": next((r["timing"] for r in per_seed if "timing" in r), {}),
        "ranking": seeds_ranking(combined["rows"]),
        "paired": paired_tests(per_seed),
        "per_seed_reports": names,
        "paper_ef_full_model": PAPER_EF_FULL,
    }
    write(out, stem, final)
    (out / f"{stem}.md").write_text(combined_markdown(final))
    return final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.ablation", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget, one seed: checks the pipeline")
    parser.add_argument(
        "--data",
        choices=("simple", "a4c"),
        default="simple",
        help="simple generator (the default budget) or the realistic apical four-chamber simulator "
        "(its own budget: tiny at 64x64, 48 clips of 112x112 and 240x320, 600 steps)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for ablation.json/.md")
    parser.add_argument("--work", type=Path, default=None, help="folder for data, runs and evaluations")
    parser.add_argument("--rows", default=",".join(r.key for r in ROWS), help="comma-separated row keys")
    parser.add_argument("--seeds", default=None, help="training seeds, e.g. 0,1,2 (default 0,1,2; --quick 0)")
    parser.add_argument("--steps", type=int, default=None, help="override the step budget")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 2)")
    parser.add_argument("--name", default=None, help="file stem of the results (default ablation[_quick])")
    parser.add_argument(
        "--combine",
        nargs="+",
        type=Path,
        default=None,
        help="only combine per-seed reports already written (e.g. seeds run as parallel processes: "
        "--seeds 1 --name ablation_seed1 --out benchmarks/results/seeds) into <name>.json/.md",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = "python -m benchmarks.ablation" + " ".join(["", *(argv if argv is not None else sys.argv[1:])])
    if args.combine:
        per_seed = merge_by_seed([json.loads(p.read_text()) for p in args.combine])
        # a run stopped part-way wrote only its JSON
        names = [
            os.path.relpath(p.with_suffix(".md") if p.with_suffix(".md").is_file() else p, args.out)
            for p in args.combine
        ]
        commands = sorted({r["command"] for r in per_seed})
        stem = args.name or "ablation"
        write_combined(per_seed, names, args.out, stem, "; ".join([*commands, command.strip()]))
        print((args.out / f"{stem}.md").read_text())
        return 0

    budget = QUICK if args.quick else A4C if args.data == "a4c" else FULL
    if args.quick and args.data == "a4c":
        budget = Budget(**{**asdict(QUICK), "data": "a4c", "flips": "h", "sizes": "112x112,240x320"})
    if args.steps is not None:
        budget.steps = args.steps
        budget.eval_every = max(1, args.steps // 3)
    if args.threads is not None:
        budget.threads = args.threads
    seeds = [int(x) for x in (args.seeds or ("0" if args.quick else "0,1,2")).split(",") if x.strip()]
    keys = [k.strip() for k in args.rows.split(",") if k.strip()]
    unknown = sorted(set(keys) - {r.key for r in ROWS})
    if unknown:
        parser.error(f"unknown rows {unknown}; valid rows: {[r.key for r in ROWS]}")
    stem = args.name or ("ablation_quick" if args.quick else "ablation")
    work = args.work or Path("runs") / stem
    report = run_ablation(budget, seeds, work, args.out, stem, command.strip(), keys)
    print((args.out / f"{stem}.md").read_text())
    return 0 if report["rows"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
