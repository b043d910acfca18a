"""``echoseg train`` and ``echoseg eval`` (registered by echoseg.cli)."""

from __future__ import annotations

import argparse
import json
import os

from training.args import add_train_arguments


def register(subparsers) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a model (mean teacher or supervised) from a YAML config",
        description="Train EchoSeg from a YAML config; run under torchrun for several processes.",
    )
    add_train_arguments(train)
    train.set_defaults(func=_train)

    ev = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint on an EchoNet-format split (Dice, HD, AUC, EF)",
        description="Evaluate a checkpoint or run directory on an EchoNet-Dynamic-format data folder.",
    )
    ev.add_argument(
        "--checkpoint", required=True, help="checkpoint dir, run dir (uses best/) or .safetensors"
    )
    ev.add_argument("--data", required=True, help="EchoNet-Dynamic-format data folder")
    ev.add_argument("--split", default="TEST", help="TRAIN, VAL, TEST or ALL (default TEST)")
    ev.add_argument("--out", default=None, help="folder for metrics.json, tables and figures")
    ev.add_argument("--batch-size", type=int, default=16)
    ev.set_defaults(func=_eval)


def _train(args: argparse.Namespace) -> int:
    from training.train import config_from_args, run

    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    run_dir = run(cfg, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":  # one line under torchrun
        print(run_dir)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate

    metrics = evaluate(
        args.checkpoint, args.data, split=args.split, out_dir=args.out, batch_size=args.batch_size
    )
    print(json.dumps(metrics, indent=2, default=str))
    return 0
