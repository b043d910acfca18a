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

from benchmarks.common import document, held_out_scores, write_result
from training.evaluate import fmt_num

RESULTS = Path(__file__).resolve().parent / "results"


def _named(text: str, what: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"{what} must be NAME=VALUE, got {text!r}")
    return name, value


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
            scores = held_out_scores(path, root, split or "TEST")
            rows.append({"data": data_name, "model": model_name, **scores})
            print(f"{data_name} / {model_name}: Dice {rows[-1]['traced_dice_pct']:.2f} %", flush=True)
    doc = document("bundled_models", argv, started, models=models, data=data, rows=rows)
    path = write_result(doc, args.out, args.name)
    (args.out / f"{args.name}.md").write_text(markdown(doc))
    print(markdown(doc))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
