"""Choosing the real-time preset on evidence: Dice against latency for candidate `lite` networks.

    .venv/bin/python -m benchmarks.lite_front --steps 300                  # the default candidates
    .venv/bin/python -m benchmarks.lite_front --candidates unet-lite,w8-c23 --steps 900

Every candidate trains with the bundled model's recipe (``configs/default-model.yaml``: mean
teacher, same data, lr, batch, seed) for the same number of steps, is scored on the held-out
synthetic TEST split (another generator seed) with ``training.evaluate``, and its exported
network (``matmul`` form, dynamic batch, the service's export) is timed in ONNX Runtime on the
CPU at batch 1, every candidate interleaved with the others so that the machine's noise slows
them alike. A candidate is on the Pareto front when no other is both more accurate and faster.

Candidates are named ``w<width>-c<calibrated stages>`` for the ResNet family (``w8-c23`` is width
8 with BSSF on stages 2 and 3) and by preset for the U-Net family (``unet-lite``, the bundled
model's network). Writes ``lite_front.json`` and ``lite_front.md`` into ``--out``.

The real-time budget: one 50-fps stream needs a window every 20 ms; four 25-fps streams on two
cores leave each frame about 2 x 10 ms / 4 = 5 ms of one core... so the per-frame latency at one
intra-op thread is the figure that decides (``--threads``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    TimingCap,
    document,
    held_out_scores,
    summarize_ms,
    time_interleaved,
    write_result,
)
from echoseg.presets import PRESETS, get_preset
from echoseg.runtime.onnxruntime import OnnxRuntime
from export.onnx import export_onnx
from training.data.synthetic import generate
from training.evaluate import fmt_num
from training.model import build_model
from training.trainer.config import load_config

logger = logging.getLogger("benchmarks.lite_front")

RESULTS = Path(__file__).resolve().parent / "results"
RECIPE = Path(__file__).resolve().parents[1] / "configs" / "default-model.yaml"
SIMPLE_RECIPE = RECIPE.with_name("simple-model.yaml")  # the recipe on the simple generator (issue 11)


@dataclass(frozen=True)
class Candidate:
    name: str
    preset: str
    overrides: dict[str, Any] = field(default_factory=dict)


def parse_candidate(name: str) -> Candidate:
    """``unet-lite`` (a preset as it is) or ``w<width>-c<stages>[-d<depth>]`` of the ResNet family."""
    if name in PRESETS:
        return Candidate(name, name)
    parts = dict((p[0], p[1:]) for p in name.split("-"))
    if set(parts) - {"w", "c", "d"} or "w" not in parts or "c" not in parts:
        raise ValueError(f"candidate {name!r}: expected a preset name or w<width>-c<stages>[-d<depth>]")
    overrides: dict[str, Any] = {
        "width": int(parts["w"]),
        "calibrated_levels": tuple(int(c) for c in parts["c"]),
    }
    if "d" in parts:
        overrides["depth"] = int(parts["d"])
    return Candidate(name, "lite", overrides)


DEFAULT_CANDIDATES = "unet-lite,w4-c3,w4-c23,w8-c3,w8-c23,w8-c123"


def ensure_data(train: Path, test: Path) -> None:
    """The recipe's training set (96 clips, seed 1) and the held-out set (64 clips, seed 2)."""
    for root, videos, seed in ((train, 96, 1), (test, 64, 2)):
        if not (root / "FileList.csv").is_file():
            logger.info("generating %s (%d clips, seed %d)", root, videos, seed)
            generate(root, videos, seed=seed)


def train_candidate(
    c: Candidate, steps: int, train_root: Path, runs: Path, threads: int, recipe: Path = RECIPE
) -> tuple[Path, float]:
    from training.train import run

    sets = [
        f"model.preset={c.preset}",
        f"data.root={train_root}",
        f"steps={steps}",
        f"out_dir={runs}",
        f"run_name={c.name}",
        f"threads={threads}",
        "progress=false",
    ]
    sets += [
        f"model.overrides.{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}"
        for k, v in c.overrides.items()
    ]
    cfg = load_config(recipe, sets)
    cfg = dataclasses.replace(cfg, eval_every=min(cfg.eval_every, max(1, steps // 3)))  # >= 3 validations
    start = time.perf_counter()
    run_dir = run(cfg)
    return run_dir, time.perf_counter() - start


def latencies(cands: list[Candidate], folder: Path, threads: int, cap: TimingCap) -> tuple[dict, dict, dict]:
    """Per-frame ONNX Runtime latency (batch 1, ``matmul`` export), candidates interleaved."""
    import torch

    from training.model.summary import count_flops, count_parameters

    calls, params, gmacs = {}, {}, {}
    for c in cands:
        config = get_preset(c.preset, **c.overrides)
        torch.manual_seed(0)
        model = build_model(config).eval()
        params[c.name] = count_parameters(model)
        path = folder / f"{c.name}.onnx"
        if not path.exists():
            export_onnx(
                model, path, calibration="matmul", batch="dynamic", meta={"run_id": f"front:{c.name}"}
            )
        runtime = OnnxRuntime(path, "cpu", threads=threads)
        runtime.load()
        x = np.random.default_rng(0).standard_normal(
            (1, config.num_frames, config.input_size, config.input_size), dtype=np.float32
        )
        calls[c.name] = lambda r=runtime, x=x: r.infer(x)
        gmacs[c.name] = count_flops(model) / 2 / 1e9  # a multiply-add is 2 FLOPs
    times, report = time_interleaved(calls, cap)
    return {k: summarize_ms(v) for k, v in times.items()}, {"params": params, "gmacs": gmacs}, report


def trained_and_scored(c: Candidate, args, train_root: Path, test_root: Path) -> tuple[Path, float, dict]:
    """Train and score ``c``, or read both back from an earlier run of the same steps (so that
    candidates can train in separate processes and one final run times them all together)."""
    done = args.work / "runs" / c.name / "front.json"
    if done.is_file():
        saved = json.loads(done.read_text())
        if saved["steps"] == args.steps and saved["overrides"] == json.loads(json.dumps(c.overrides)):
            logger.info("%s: trained and scored before (%s)", c.name, done)
            return Path(saved["run"]), saved["train_s"], saved["score"]
    runs = args.work / "runs"
    run_dir, seconds = train_candidate(c, args.steps, train_root, runs, args.threads, args.recipe)
    s = held_out_scores(run_dir / "best", test_root, args.test_split)
    done.write_text(json.dumps({"steps": args.steps, "overrides": c.overrides, "run": str(run_dir),
                                "train_s": seconds, "score": s}))  # fmt: skip
    return run_dir, seconds, s


def pareto(rows: list[dict]) -> None:
    """Mark rows no other row beats on both Dice (higher) and p50 latency (lower)."""
    for r in rows:
        r["pareto"] = not any(
            o is not r
            and o["traced_dice_pct"] >= r["traced_dice_pct"]
            and o["ms_p50"] <= r["ms_p50"]
            and (o["traced_dice_pct"] > r["traced_dice_pct"] or o["ms_p50"] < r["ms_p50"])
            for o in rows
        )


def markdown(doc: dict) -> str:
    lines = [
        "# The real-time preset on a Dice / latency front",
        "",
        f"Command: `{doc['command']}`  ",
        f"{doc['steps']} training steps each with `{doc['recipe']}` on `{doc['train_root']}`; Dice on",
        f"the held-out clips of `{doc['test_root']}` (split {doc['test_split']}, another generator seed; "
        "traced ED/ES",
        f"frames); latency: ONNX Runtime CPU, batch 1, {doc['threads']} intra-op thread(s), `matmul` export,",
        f"candidates interleaved ({doc['timing']['reps']} repetitions); load average at the start "
        f"{doc['machine'].get('load_average')}.",
        "",
        "| candidate | family | params | G mult-adds | Dice ED/ES (%) | Dice all frames (%) | HD (px) "
        "| EF corr | ms/frame p50 | p99 | train (s) | Pareto |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| `{r['name']}` | {r['family']} | {r['params']:,} | {fmt_num(r['gmacs'], 3)} "
            f"| {fmt_num(r['traced_dice_pct'], 2)} ± {fmt_num(r['traced_dice_std_pct'], 2)} "
            f"| {fmt_num(r['all_frames_dice_pct'], 2)} | {fmt_num(r['traced_hd_px'], 2)} "
            f"| {fmt_num(r['ef_corr'], 3)} | {fmt_num(r['ms_p50'], 2)} | {fmt_num(r['ms_p99'], 2)} "
            f"| {r['train_s']:.0f} | {'yes' if r['pareto'] else ''} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candidates", default=DEFAULT_CANDIDATES)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in training and ORT at timing")
    parser.add_argument("--work", type=Path, default=Path("/tmp/echoseg-lite-front"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="lite_front")
    parser.add_argument("--timing-budget-s", type=float, default=30.0)
    parser.add_argument(
        "--recipe",
        type=Path,
        help="training configuration (default: configs/default-model.yaml with --train-root, else "
        "configs/simple-model.yaml, the recipe of the simple generator's clips)",
    )
    parser.add_argument(
        "--train-root", type=Path, help="training clips (default: WORK/synth-train, made if missing)"
    )
    parser.add_argument(
        "--test-root", type=Path, help="held-out clips (default: WORK/synth-test, made if missing)"
    )
    parser.add_argument("--test-split", default="TEST", help="split of --test-root scored (ALL: every clip)")
    parser.add_argument(
        "--train-only", action="store_true", help="train and score; time nothing, write nothing"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.time()
    cands = [parse_candidate(n.strip()) for n in args.candidates.split(",") if n.strip()]
    train_root = args.train_root or args.work / "synth-train"
    test_root = args.test_root or args.work / "synth-test"
    if args.train_root is None or args.test_root is None:
        ensure_data(train_root, test_root)
    args.recipe = args.recipe or (RECIPE if args.train_root else SIMPLE_RECIPE)
    rows = []
    for c in cands:
        run_dir, seconds, s = trained_and_scored(c, args, train_root, test_root)
        logger.info("%s: Dice %.2f %% after %.0f s", c.name, s["traced_dice_pct"], seconds)
        rows.append({"name": c.name, "preset": c.preset, "overrides": c.overrides, "run": str(run_dir),
                     "train_s": round(seconds, 1), **s})  # fmt: skip
    if args.train_only:
        return 0
    cap = TimingCap(warmup=3, min_reps=10, max_reps=200, budget_s=args.timing_budget_s)
    ms, sizes, report = latencies(cands, args.work, args.threads, cap)
    for r in rows:
        name = r["name"]
        r.update(
            ms_p50=ms[name]["p50"],
            ms_p99=ms[name]["p99"],
            params=sizes["params"][name],
            gmacs=sizes["gmacs"][name],
        )
        r["family"] = "U-Net" if r["preset"].startswith("unet") else "ResNet"
    pareto(rows)
    doc = document(
        "lite_front", argv, started, steps=args.steps, threads=args.threads, timing=report, rows=rows,
        recipe=str(args.recipe.relative_to(RECIPE.parents[1]) if args.recipe.is_relative_to(RECIPE.parents[1])
                   else args.recipe),
        train_root=str(train_root), test_root=str(test_root), test_split=args.test_split,
    )  # fmt: skip
    path = write_result(doc, args.out, args.name)
    (args.out / f"{args.name}.md").write_text(markdown(doc))
    print(markdown(doc))
    logger.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
