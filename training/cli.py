"""``echoseg train`` and ``echoseg eval`` (registered by echoseg.cli)."""

from __future__ import annotations

import argparse
import dataclasses
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

    ad = subparsers.add_parser(
        "adapt",
        help="adapt a checkpoint to a site's unlabelled clips (mean teacher), with a source-domain gate",
        description="Mean-teacher adaptation of a checkpoint to a site's unlabelled clips: labelled "
        "simulated windows plus the site's unlabelled windows, the paper's consistency loss and ramp. "
        "Writes RUN/adapt.json, and RUN/best/ only when the source-domain Dice holds (and, with --traced, "
        "the Dice on a few of the site's traced clips).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ad.add_argument(
        "--unlabelled",
        required=True,
        help="the site's clips: a folder of AVI/MP4/DICOM files (any depth) or a prepared frame store",
    )
    ad.add_argument(
        "--labelled",
        default=None,
        help="simulated clips with labels (EchoNet-format folder or store); default: an A4C simulator "
        "set rendered once into the cache",
    )
    ad.add_argument("--from", dest="init_from", default="models/default", help="checkpoint to start from")
    ad.add_argument("--out", required=True, help="run folder (RUN)")
    ad.add_argument("--steps", type=int, default=600, help="optimisation steps")
    ad.add_argument("--seed", type=int, default=0, help="random seed of the run")
    ad.add_argument("--resume", action="store_true", help="continue the run in --out from its last/")
    ad.add_argument(
        "--max-source-drop",
        type=float,
        default=0.01,
        help="largest allowed drop of the source-domain Dice (0.01 = 1 point); =-inf always refuses",
    )
    ad.add_argument(
        "--traced",
        default=None,
        help="a few of the site's clips with LV tracings (EchoNet-format folder or store), never trained "
        "on: the adapted model is refused when their Dice at ED/ES drops",
    )
    ad.add_argument(
        "--max-traced-drop",
        type=float,
        default=0.0,
        help="largest allowed drop of the traced clips' Dice (0 = none)",
    )
    ad.add_argument(
        "--no-fit-simulator",
        dest="fit_simulator",
        action="store_false",
        help="train on the labelled set as it is, instead of on clips of the simulator fitted to the "
        "site's image statistics (training.adapt.fit)",
    )
    ad.add_argument(
        "--fit-candidates",
        type=int,
        default=300,
        help="simulator settings tried when fitting the simulator to the site",
    )
    ad.add_argument(
        "--fit-clips", type=int, default=64, help="labelled clips rendered by the fitted simulator"
    )
    ad.add_argument(
        "--keep", choices=("teacher", "student"), default="teacher", help="which network is the adapted model"
    )
    ad.add_argument("--threads", type=int, default=None, help="torch threads on CPU (default: torch's)")
    ad.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a training config value, e.g. --set lr=3.0e-4 --set consistency=5",
    )
    ad.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    ad.set_defaults(func=_adapt)


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


def _adapt(args: argparse.Namespace) -> int:
    """Exit status 0 when best/ was written, 3 when the gate refused it, 2 on bad input."""
    from training.adapt.run import AdaptOptions, adapt, format_summary

    try:
        opts = AdaptOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(AdaptOptions)})
        report = adapt(opts)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}")
        return 2
    print(format_summary(report))
    if "gate" not in report:
        return 0
    return 0 if report["best"] else 3
