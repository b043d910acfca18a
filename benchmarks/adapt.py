"""Adaptation acceptance: ``echoseg adapt`` on the simulated site domain (``training.data.site``).

    nice -n 10 python -m benchmarks.adapt                       # 3 runs of 600 steps, 100 site clips
    python -m benchmarks.adapt --runs 1 --steps 20 --adapt-clips 10 --eval-clips 6 --dev --name adapt-pilot

Everything below is fixed here before any scoring:

- the site clips adapted on (unlabelled: only their ``Videos/`` folder is given to ``echoseg adapt``):
  ``--adapt-clips`` clips of ``training.data.site`` rendered with seed :data:`ADAPT_SEED`;
- the site clips scored (labels used for scoring only, never seen by adaptation): ``--eval-clips``
  clips with seed :data:`EVAL_SEED`; ``--dev`` uses :data:`DEV_SEEDS` instead (a pilot set for
  choosing settings, so that the acceptance clips are never used to choose anything);
- the adaptation runs' seeds: :data:`RUN_SEEDS`;
- with ``--traced-clips N``, N site clips with tracings (seed :data:`TRACED_SEED`) given to
  ``echoseg adapt --traced``: the gate refuses a run whose Dice on them drops; the report says how
  often the gate's decision agreed with the scored clips (written when the Dice rose).

Per run: ``echoseg adapt`` as a child process (``--threads``, default 1; with its defaults, so the
simulator is fitted to the site's unlabelled clips first, ``training.adapt.fit``, and the fit is
reported), its wall time and peak resident memory (``wait4``); then the unadapted and the adapted
model (the run's kept network, from ``best/`` or, when the gate refused it, from ``last/``) are
evaluated on the scored site clips
(``training.evaluate``: Dice at ED/ES, EF correlation). Reported: per run and across runs the
paired Dice differences (per clip, ED and ES averaged) with 95 % CIs (bootstrap over clips per
run; t over runs), EF correlation before/after, the source-domain Dice before/after (held-out
simulated clips, from the run's report), and the correlation across runs between each label-free
signal's change (held-out site clips, no labels) and the Dice change on the scored clips.

Writes ``benchmarks/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, document, shown_path, write_result
from training.adapt.signals import SIGNALS
from training.data.site import SITE, generate_site
from training.evaluate import evaluate
from training.model.io import load_pretrained

log = logging.getLogger("benchmarks.adapt")

ADAPT_SEED = 1  # the site's unlabelled clips
EVAL_SEED = 2  # the site's scored clips
DEV_SEEDS = (3, 4)  # a pilot's (adapt, eval) clips, for choosing settings
TRACED_SEED = 5  # the site's few traced clips (--traced-clips), given to the gate; 6 with --dev
RUN_SEEDS = (0, 1, 2)
DICE_TARGET_GAIN = 0.03
SOURCE_MARGIN = 0.01
BOOTSTRAP = 2000


def _render(folder: Path, clips: int, seed: int, frames: int, workers: int) -> Path:
    if (folder / "FileList.csv").is_file():
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    generate_site(tmp, clips, frames=frames, seed=seed, workers=workers)
    tmp.rename(folder)
    return folder


def kept_network(run: Path, kept: str) -> Path:
    """A refused run's kept network as ``best/`` would have held it (the teacher with the student's
    normalisation statistics, :func:`training.adapt.run.student_statistics`), in ``RUN/kept``."""
    from training.adapt.run import student_statistics
    from training.trainer import checkpoint as ckpt

    student = load_pretrained(run / "last", which="student")[0]
    model = load_pretrained(run / "last", which=kept)[0]
    if kept == "teacher":
        student_statistics(model, student)
    ckpt.save_checkpoint(run / "kept", model, None, {"run_id": run.name, "mode": "adapted"})
    return run / "kept"


def run_adapt(argv: list[str], log_path: Path, timeout_s: float) -> dict:
    """``echoseg adapt`` as a child: exit status, wall seconds and peak resident memory (MiB)."""
    start = time.perf_counter()
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "echoseg.cli", "--log-level", "WARNING", "adapt", *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
        )
        deadline = time.monotonic() + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.5)
    return {
        "exit_status": os.waitstatus_to_exitcode(status),
        "wall_s": round(time.perf_counter() - start, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
    }


def per_clip_dice(metrics_dir: Path) -> dict[str, float]:
    """Mean Dice of the traced frames (ED and ES) per clip, from ``per_case.csv`` of ``training.evaluate``."""
    frames: dict[str, list[float]] = {}
    with open(metrics_dir / "per_case.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            frames.setdefault(row["clip"], []).append(float(row["dice"]))
    return {name: float(np.mean(d)) for name, d in frames.items()}


def score(model_path, data: Path, out: Path) -> dict:
    """Evaluate a checkpoint on every scored site clip; Dice at ED/ES, EF, and per-clip Dice."""
    model = load_pretrained(model_path)[0]
    metrics = evaluate(model, data, split="ALL", out_dir=out)
    return {
        "dice": metrics["traced"]["dice"]["mean"],
        "dice_ed": metrics["traced_by_phase"]["ED"]["dice"]["mean"],
        "dice_es": metrics["traced_by_phase"]["ES"]["dice"]["mean"],
        "ef_corr": metrics["ef"]["predicted"]["corr"],
        "ef_mae": metrics["ef"]["predicted"]["mae"],
        "per_clip": per_clip_dice(out),
    }


def paired(before: dict[str, float], after: dict[str, float], seed: int) -> dict:
    """Mean paired difference (after - before) over clips with a 95 % bootstrap CI."""
    names = sorted(before)
    d = np.array([after[n] - before[n] for n in names])
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), (BOOTSTRAP, len(d)))].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {
        "mean": round(float(d.mean()), 5),
        "ci95": [round(float(lo), 5), round(float(hi), 5)],
        "clips": len(d),
    }


def t_interval(values: list[float]) -> dict:
    from scipy.stats import t

    x = np.asarray(values, np.float64)
    if len(x) < 2:
        return {"mean": round(float(x.mean()), 5), "ci95": None, "runs": len(x)}
    half = float(t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return {
        "mean": round(float(x.mean()), 5),
        "ci95": [round(float(x.mean() - half), 5), round(float(x.mean() + half), 5)],
        "runs": len(x),
    }


def _corr(a: list[float], b: list[float]) -> float | None:
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return None
    return round(float(np.corrcoef(a, b)[0, 1]), 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.adapt", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO / "models" / "default"))
    parser.add_argument("--runs", type=int, default=len(RUN_SEEDS))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--adapt-clips", type=int, default=100)
    parser.add_argument("--eval-clips", type=int, default=48)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument(
        "--traced-clips",
        type=int,
        default=0,
        help="site clips with tracings given to `echoseg adapt --traced` (its gate); 0: none",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="processes rendering the site clips")
    parser.add_argument(
        "--dev", action="store_true", help="pilot clips (DEV_SEEDS), not the acceptance clips"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--work", default=None, help="folder for data and runs (default: a temporary one)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per adaptation run")
    parser.add_argument("--name", default="adapt")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.time()
    work = Path(args.work or Path(os.environ.get("TMPDIR", "/tmp")) / "echoseg-adapt-bench")
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ECHOSEG_CACHE", str(work / "cache"))
    adapt_seed, eval_seed = DEV_SEEDS if args.dev else (ADAPT_SEED, EVAL_SEED)
    site = _render(
        work / f"site-{adapt_seed}-{args.adapt_clips}",
        args.adapt_clips,
        adapt_seed,
        args.frames,
        args.workers,
    )
    scored = _render(
        work / f"site-{eval_seed}-{args.eval_clips}", args.eval_clips, eval_seed, args.frames, args.workers
    )

    traced, traced_seed = None, TRACED_SEED + 1 if args.dev else TRACED_SEED
    if args.traced_clips:
        traced = _render(
            work / f"site-{traced_seed}-{args.traced_clips}", args.traced_clips, traced_seed, args.frames, 1
        )
    before = score(args.model, scored, work / "scores" / "unadapted")
    log.info(
        "unadapted: Dice %.4f (ED %.4f, ES %.4f), EF corr %.3f",
        before["dice"],
        before["dice_ed"],
        before["dice_es"],
        before["ef_corr"],
    )
    runs = []
    for seed in RUN_SEEDS[: args.runs]:
        run = work / "runs" / f"{args.name}-seed{seed}"
        shutil.rmtree(run, ignore_errors=True)
        cmd = ["--unlabelled", str(site / "Videos"), "--from", args.model, "--out", str(run)]
        cmd += [
            "--steps",
            str(args.steps),
            "--seed",
            str(seed),
            "--threads",
            str(args.threads),
            "--no-progress",
        ]
        if traced is not None:
            cmd += ["--traced", str(traced)]
        for o in args.overrides:
            cmd += ["--set", o]
        cost = run_adapt(cmd, work / f"{args.name}-seed{seed}.log", args.timeout)
        report = json.loads((run / "adapt.json").read_text())
        kept = report["kept"]
        adapted = run / "best" if report["best"] else run / "last"
        which = "student" if report["best"] else kept
        if which != "student":  # a refused run: score its kept network from last/ anyway
            adapted = kept_network(run, kept)
        after = score(adapted, scored, work / "scores" / run.name)
        gain = paired(before["per_clip"], after["per_clip"], seed)
        entry = {
            "seed": seed,
            "cost": cost,
            "gate": report["gate"],
            "best_written": report["best"] is not None,
            "source_dice": {
                "before": report["before"]["source_dice"],
                "after": report["after"][kept]["source_dice"],
            },
            "site_signals": {"before": report["before"]["site"], "after": report["after"][kept]["site"]},
            "site_signals_student": report["after"]["student"]["site"],
            "source_dice_student": report["after"]["student"]["source_dice"],
            "scored": {k: v for k, v in after.items() if k != "per_clip"},
            "dice_gain": gain,
            "training_seconds": report["seconds"],
        }
        fitted = report.get("simulator_fit")
        if fitted:  # the simulator fitted to the site (training.adapt.fit), without its folder
            entry["simulator_fit"] = {k: v for k, v in fitted.items() if k != "root"}
        if traced is not None:
            traced_after = report["after"][kept]["traced"]
            entry["traced_dice"] = {"before": report["before"]["traced"], "after": traced_after}
        log.info(
            "run seed %d: Dice %.4f -> %.4f (gain %.4f, CI %s), source %.4f -> %.4f, %s s, %s MiB",
            seed,
            before["dice"],
            after["dice"],
            gain["mean"],
            gain["ci95"],
            entry["source_dice"]["before"],
            entry["source_dice"]["after"],
            cost["wall_s"],
            cost["peak_rss_mib"],
        )
        runs.append(entry)

    gains = [r["dice_gain"]["mean"] for r in runs]
    source_drops = [r["source_dice"]["before"] - r["source_dice"]["after"] for r in runs]
    signal_corr = {
        name: _corr(
            [r["site_signals"]["after"][name] - r["site_signals"]["before"][name] for r in runs], gains
        )
        for name in SIGNALS
    }
    if traced is not None:
        changes = [r["traced_dice"]["after"]["dice"] - r["traced_dice"]["before"]["dice"] for r in runs]
        signal_corr["traced_dice"] = _corr(changes, gains)
    summary = {
        "unadapted_dice": round(before["dice"], 5),
        "dice_gain_over_runs": t_interval(gains),
        "source_drop_over_runs": t_interval(source_drops),
        "ef_corr": {"before": before["ef_corr"], "after": [r["scored"]["ef_corr"] for r in runs]},
        "target": {
            "dice_gain": DICE_TARGET_GAIN,
            "source_margin": SOURCE_MARGIN,
            "unadapted_below_90": before["dice"] < 0.90,
            "met": bool(
                before["dice"] < 0.90
                and runs
                and min(gains) >= DICE_TARGET_GAIN
                and max(source_drops) <= SOURCE_MARGIN
            ),
        },
        "signal_vs_dice_corr_across_runs": signal_corr,
        "gate": {
            "written": [r["best_written"] for r in runs],
            "right": sum(r["best_written"] == (r["dice_gain"]["mean"] > 0) for r in runs),
            "runs": len(runs),
        },
        "wall_s": [r["cost"]["wall_s"] for r in runs],
        "peak_rss_mib": [r["cost"]["peak_rss_mib"] for r in runs],
    }
    doc = document(
        "adapt",
        argv,
        started,
        model=shown_path(Path(args.model)),
        site=SITE,
        seeds={
            "adapt_clips": adapt_seed,
            "scored_clips": eval_seed,
            "traced_clips": traced_seed if traced is not None else None,
            "runs": list(RUN_SEEDS[: args.runs]),
        },
        settings={
            "steps": args.steps,
            "threads": args.threads,
            "adapt_clips": args.adapt_clips,
            "eval_clips": args.eval_clips,
            "traced_clips": args.traced_clips,
            "frames": args.frames,
            "overrides": args.overrides,
            "dev": args.dev,
        },
        unadapted={k: v for k, v in before.items() if k != "per_clip"},
        runs=runs,
        summary=summary,
    )
    path = write_result(doc, args.out, args.name)
    print(json.dumps(summary, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
