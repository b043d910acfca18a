"""The bundled model before and after: every model on every held-out set, side by side.

    .venv/bin/python -m benchmarks.bundled_models \
        --model old=/path/to/old/models/default --model new=models/default \
        --data a4c=data/a4c-test:ALL --data simple=data/synth-test:TEST

Each model is scored with ``training.evaluate`` (the product's preprocessing: region, crop, pad,
resize, masks mapped back to each clip's own frame size) on each data set: Dice at the traced
ED/ES frames and over every frame with a true mask, Hausdorff distance, EF from the predicted masks
at the traced frames against the reference. Writes ``bundled_models.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import document, write_result
from training.evaluate import fmt_num

RESULTS = Path(__file__).resolve().parent / "results"


def _named(text: str, what: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"{what} must be NAME=VALUE, got {text!r}")
    return name, value


def score(model: str, root: str, split: str) -> dict[str, Any]:
    from training.evaluate import evaluate

    m = evaluate(model, root, split=split)
    traced, every, ef = m["traced"], m.get("all_frames") or {}, m["ef"]["predicted"]
    return {
        "clips": m.get("n_clips"),
        "traced_frames": traced["n_frames"],
        "traced_dice_pct": 100.0 * traced["dice"]["mean"],
        "traced_dice_std_pct": 100.0 * traced["dice"]["std"],
        "traced_dice_min_pct": 100.0 * traced["dice"]["min"] if "min" in traced["dice"] else None,
        "traced_hd_px": traced["hd"]["mean"],
        "all_frames_dice_pct": None if not every else 100.0 * every["dice"]["mean"],
        "all_frames": None if not every else every["n_frames"],
        "ef_corr": ef["corr"],
        "ef_bias": ef["bias"],
        "ef_std": ef["std"],
    }


def markdown(doc: dict) -> str:
    lines = [
        "# The bundled model, before and after",
        "",
        f"Command: `{doc['command']}`",
        "",
        "| data | model | clips | Dice ED/ES (%) | min | HD (px) | Dice all frames (%) | EF corr | EF bias "
        "| EF std |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        cells = [r["data"], r["model"], r["clips"]]
        cells.append(f"{fmt_num(r['traced_dice_pct'], 2)} ± {fmt_num(r['traced_dice_std_pct'], 2)}")
        cells += [fmt_num(r[k], 2) for k in ("traced_dice_min_pct", "traced_hd_px", "all_frames_dice_pct")]
        cells += [fmt_num(r["ef_corr"], 3), fmt_num(r["ef_bias"], 1), fmt_num(r["ef_std"], 1)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "Data sets:", ""] + [f"- `{k}`: `{v}`" for k, v in doc["data"].items()]
    lines += ["", "Models:", ""] + [f"- `{k}`: `{v}`" for k, v in doc["models"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="NAME=checkpoint dir (repeat)")
    parser.add_argument("--data", action="append", required=True, help="NAME=folder[:SPLIT] (repeat)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="bundled_models")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    started = time.time()
    import torch

    torch.set_num_threads(args.threads)
    models = dict(_named(m, "--model") for m in args.model)
    data = dict(_named(d, "--data") for d in args.data)
    rows = []
    for data_name, spec in data.items():
        root, _, split = spec.partition(":")
        for model_name, path in models.items():
            rows.append({"data": data_name, "model": model_name, **score(path, root, split or "TEST")})
            print(f"{data_name} / {model_name}: Dice {rows[-1]['traced_dice_pct']:.2f} %", flush=True)
    doc = document("bundled_models", argv, started, models=models, data=data, rows=rows)
    path = write_result(doc, args.out, args.name)
    (args.out / f"{args.name}.md").write_text(markdown(doc))
    print(markdown(doc))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
