"""``echoseg data synth`` (a synthetic EchoNet-format dataset), ``data check`` and ``data prepare``."""

from __future__ import annotations

import argparse
import json
import time


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="create or validate echo datasets")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    synth = sub.add_parser(
        "synth",
        help="write synthetic echo clips in the EchoNet-Dynamic layout, with per-frame true masks",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    synth.add_argument("--out", required=True, help="output folder (created if needed)")
    synth.add_argument("--videos", type=int, required=True, help="number of clips")
    synth.add_argument(
        "--mode",
        choices=("simple", "a4c", "zoo", "site"),
        default="simple",
        help="simple: one cavity in a ring, square frames; a4c: apical four-chamber scanner frames; "
        "zoo: A4C clips in the scanner zoo's layouts (training.data.zoo), in turn; site: A4C clips as a "
        "scanner unlike the training recipe shows them (training.data.site), a target for `echoseg adapt`",
    )
    synth.add_argument(
        "--frames", type=int, default=None, help="frames per clip (default: 96 simple, 48 a4c)"
    )
    synth.add_argument("--size", type=int, default=112, help="simple mode: frame height and width in pixels")
    synth.add_argument(
        "--sizes",
        default="112x112,240x320,480x640,600x800,708x1016",
        help="a4c mode: HEIGHTxWIDTH frame sizes drawn per clip (a square <= 128 is an EchoNet-style crop)",
    )
    synth.add_argument(
        "--layouts", default=None, help="zoo mode: comma-separated layout names (default: all of them)"
    )
    synth.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files")
    synth.add_argument(
        "--workers", type=int, default=1, help="a4c, zoo and site modes: processes rendering clips"
    )
    synth.add_argument(
        "--append",
        action="store_true",
        help="add the clips to the folder's FileList.csv and VolumeTracings.csv instead of replacing them "
        "(e.g. zoo clips into an A4C training set; clip names must not repeat)",
    )
    synth.set_defaults(func=run_synth)

    check = sub.add_parser(
        "check",
        help="validate an EchoNet-Dynamic or CAMUS folder; exit status 1 when problems are found",
    )
    check.add_argument("root", help="dataset folder")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(func=run_check)

    prepare = sub.add_parser(
        "prepare",
        help="decode an EchoNet-Dynamic or CAMUS folder once into a frame store that training reads",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    prepare.add_argument("root", help="dataset folder (FileList.csv, or CAMUS patientNNNN/ folders)")
    prepare.add_argument(
        "--out", default=None, help="store folder (default: $ECHOSEG_CACHE or ~/.cache/echoseg/stores/<name>)"
    )
    prepare.add_argument("--workers", type=int, default=1, help="processes decoding clips in parallel")
    prepare.add_argument(
        "--verify", action="store_true", help="re-hash every source file instead of trusting size and mtime"
    )
    prepare.add_argument("--json", action="store_true", help="print the report as JSON")
    prepare.set_defaults(func=run_prepare)


def run_synth(args) -> int:
    start = time.perf_counter()
    if args.mode == "site":
        from training.data.site import generate_site

        out = generate_site(
            args.out, args.videos, frames=args.frames or 48, seed=args.seed, workers=args.workers
        )
    elif args.mode == "zoo":
        from training.data.zoo import LAYOUT_NAMES, generate_zoo

        out = generate_zoo(
            args.out,
            args.videos,
            frames=args.frames or 48,
            layouts=args.layouts.split(",") if args.layouts else LAYOUT_NAMES,
            seed=args.seed,
            workers=args.workers,
            append=args.append,
        )
    elif args.mode == "a4c":
        from training.data.a4c import generate_a4c

        out = generate_a4c(
            args.out,
            args.videos,
            frames=args.frames or 48,
            sizes=args.sizes,
            seed=args.seed,
            workers=args.workers,
            append=args.append,
        )
    else:
        from training.data.synthetic import generate

        out = generate(
            args.out,
            args.videos,
            frames=args.frames or 96,
            size=args.size,
            seed=args.seed,
            append=args.append,
        )
    print(f"wrote {args.videos} clips to {out} in {time.perf_counter() - start:.1f} s")
    return 0


def run_check(args) -> int:
    from training.data.check import check_dataset, format_report

    report = check_dataset(args.root)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["ok"] else 1


def run_prepare(args) -> int:
    from training.data.store import default_store_dir, prepare

    out = args.out or default_store_dir(args.root)
    report = prepare(args.root, out, workers=args.workers, verify=args.verify, progress=not args.json)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(
            f"store {report.store}: {report.decoded} clips decoded, {report.unchanged} unchanged, "
            f"{report.removed} removed in {report.seconds:.1f} s; {report.bytes / 1e6:.1f} MB"
        )
        for problem in report.problems:
            print(f"problem: {problem}")
    return 1 if report.problems else 0
