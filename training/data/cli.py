"""``echoseg data synth`` (a synthetic EchoNet-format dataset), ``data check`` and ``data prepare``."""

from __future__ import annotations

import argparse


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
    synth.add_argument("--frames", type=int, default=96, help="frames per clip")
    synth.add_argument("--size", type=int, default=112, help="frame height and width in pixels")
    synth.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files")
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
    import time

    from training.data.synthetic import generate

    start = time.perf_counter()
    out = generate(args.out, args.videos, frames=args.frames, size=args.size, seed=args.seed)
    print(f"wrote {args.videos} clips to {out} in {time.perf_counter() - start:.1f} s")
    return 0


def run_check(args) -> int:
    import json

    from training.data.check import check_dataset, format_report

    report = check_dataset(args.root)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["ok"] else 1


def run_prepare(args) -> int:
    import json

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
