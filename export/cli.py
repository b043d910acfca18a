"""``echoseg export onnx | check | readiness | tensorrt``: turn a checkpoint into servable files."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

from echoseg.runtime.base import DEFAULT_MAX_BATCH

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser("export", help="export the student network (ONNX, TensorRT) and check it")
    sub = parser.add_subparsers(dest="export_command", required=True, metavar="EXPORT_COMMAND")
    _register_onnx(sub)
    _register_check(sub)
    _register_readiness(sub)
    _register_tensorrt(sub)


# -- onnx -------------------------------------------------------------------------------------
def _register_onnx(sub) -> None:
    from echoseg.forms import DEFAULT_BACKEND, DEFAULT_CALIBRATION

    p = sub.add_parser("onnx", help="export the student network to ONNX with its metadata")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="training run or checkpoint directory (its student is exported)")
    source.add_argument("--preset", help="export an untrained preset (paper, lite, tiny), seeded with --seed")
    p.add_argument("--out", required=True, help="output .onnx path")
    p.add_argument(
        "--calibration",
        choices=("conv", "matmul"),
        default=None,
        help="calibration form (default: matmul for a dynamic batch, else the --backend default)",
    )
    p.add_argument("--batch", default="dynamic", help="'dynamic' (matmul form only) or a fixed batch size N")
    p.add_argument(
        "--backend",
        default=DEFAULT_BACKEND,
        choices=sorted(DEFAULT_CALIBRATION),
        help=f"backend the file is for; picks the default calibration (default {DEFAULT_BACKEND})",
    )
    p.add_argument("--fp16", action="store_true", help="float16 weights, compute, input and output")
    p.add_argument(
        "--int8",
        action="store_true",
        help="quantize to INT8 (QDQ; ranges from simulated A4C frames): for ONNX Runtime's CPU and TensorRT",
    )
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 20)")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed for --preset (default 0)")
    p.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript")
    p.set_defaults(func=run_onnx)


def run_onnx(args: argparse.Namespace) -> int:
    from echoseg.forms import default_calibration
    from export.onnx import export_onnx, parse_batch, read_metadata
    from export.readiness import check_tensorrt_readiness
    from export.source import load_source

    try:
        if args.int8 and args.fp16:
            raise ValueError("--int8 and --fp16 exclude each other (INT8 is quantized from the fp32 graph)")
        batch = parse_batch(args.batch)
        calibration = args.calibration or default_calibration(args.backend, batch)
        model, meta = load_source(checkpoint=args.checkpoint, preset=args.preset, seed=args.seed)
        with tempfile.TemporaryDirectory(prefix="echoseg-export-") as tmp:
            fp32_out = Path(tmp) / "fp32.onnx" if args.int8 else Path(args.out)
            path = export_onnx(
                model,
                fp32_out,
                calibration=calibration,
                batch=batch,
                fp16=args.fp16,
                opset=args.opset,
                meta=meta,
                exporter=args.exporter,
            )
            if args.int8:
                from export.quantize import quantize_int8

                path = quantize_int8(path, args.out)
    except (ValueError, FileNotFoundError) as e:
        print(f"echoseg export onnx: {e}", file=sys.stderr)
        return 2
    _, props = read_metadata(path)
    readiness = check_tensorrt_readiness(path)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    for key in ("preset", "calibration", "batch", "precision", "input_size", "num_frames", "run_id"):
        print(f"  {key:12s} {props['echoseg.' + key]}")
    print(
        f"  TensorRT readiness: {'ok' if readiness.ok else 'NOT READY'} ({len(readiness.op_types)} op types)"
    )
    for problem in readiness.problems:
        print(f"    - {problem}")
    return 0


# -- check ------------------------------------------------------------------------------------
def _register_check(sub) -> None:
    p = sub.add_parser("check", help="compare an exported .onnx with its torch network (ONNX Runtime)")
    p.add_argument("onnx", help="the exported .onnx file")
    p.add_argument("--checkpoint", help="the run/checkpoint it came from (not needed for preset exports)")
    p.add_argument("--data", help="EchoNet-format folder: also compare on its clips")
    p.add_argument("--samples", type=int, default=8, help="random windows to compare (default 8)")
    p.add_argument("--max-clips", type=int, default=4, help="clips of --data to use (default 4)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    from export.check import FP16_MIN_DICE, FP32_MAX_ABS, INT8_MIN_DICE, check_parity
    from export.onnx import read_metadata
    from export.source import reference_model

    try:
        _, props = read_metadata(args.onnx)
        model = reference_model(props, args.checkpoint)
        results, ok = check_parity(args.onnx, model, args.data, args.samples, args.max_clips)
    except (ValueError, FileNotFoundError) as e:
        print(f"echoseg export check: {e}", file=sys.stderr)
        return 2
    precision = props["echoseg.precision"]
    rules = {"fp16": f"mask Dice >= {FP16_MIN_DICE}", "int8": f"mask Dice >= {INT8_MIN_DICE}"}
    rule = rules.get(precision, f"max-abs <= {FP32_MAX_ABS:g}")
    print(f"{args.onnx}: {precision}, {props['echoseg.calibration']} form, batch {props['echoseg.batch']}")
    print(f"  {'inputs':8s} {'windows':>8s} {'max-abs':>10s} {'mean-abs':>10s} {'dice':>8s} {'mask %':>7s}")
    for r in results:
        print(
            f"  {r.source:8s} {r.samples:8d} {r.max_abs:10.2e} {r.mean_abs:10.2e} {r.dice:8.5f} "
            f"{100 * r.positive_fraction:6.1f}%"
        )
    if any(not r.informative for r in results):
        print(
            "  note: some reference masks are almost empty or full (an untrained network, or random "
            "frames?): their Dice says nothing and is not gated; give a trained checkpoint and --data"
        )
    print(f"  {'PASS' if ok else 'FAIL'} ({rule})")
    if args.json:
        document = {"onnx": str(args.onnx), "precision": precision, "ok": ok, "rule": rule}
        document["results"] = [r.to_dict() for r in results]
        with open(args.json, "w") as f:
            json.dump(document, f, indent=2)
    return 0 if ok else 1


# -- readiness --------------------------------------------------------------------------------
def _register_readiness(sub) -> None:
    p = sub.add_parser(
        "readiness", help="check a .onnx against the ONNX-TensorRT parser's rules (no TensorRT)"
    )
    p.add_argument("onnx", help="the exported .onnx file")
    p.set_defaults(func=run_readiness)


def run_readiness(args: argparse.Namespace) -> int:
    from export.readiness import check_tensorrt_readiness, supported_ops

    report = check_tensorrt_readiness(args.onnx)
    source = supported_ops()["source"]
    print(json.dumps(report.to_dict(), indent=2))
    print(f"rules: ONNX-TensorRT {source['tensorrt_version']} operator matrix ({source['url']})")
    return 0 if report.ok else 1


# -- tensorrt ---------------------------------------------------------------------------------
def _register_tensorrt(sub) -> None:
    p = sub.add_parser(
        "tensorrt", help="build a TensorRT engine from an exported .onnx (needs TensorRT + GPU)"
    )
    p.add_argument("--onnx", required=True, help="the exported .onnx file")
    p.add_argument("--out", required=True, help="output engine (.plan); metadata goes to <out>.json")
    p.add_argument("--fp16", action="store_true", help="allow fp16 kernels for an fp32 .onnx")
    p.add_argument("--min-batch", type=int, default=1, help="engine profile: smallest batch (default 1)")
    p.add_argument("--opt-batch", type=int, help="engine profile: batch tuned for (default half of max)")
    p.add_argument(
        "--max-batch",
        type=int,
        default=DEFAULT_MAX_BATCH,
        help=f"engine profile: largest batch (default {DEFAULT_MAX_BATCH})",
    )
    p.add_argument("--timing-cache", help="timing cache file (read if present, written after the build)")
    p.add_argument(
        "--workspace-mb", type=int, default=2048, help="builder workspace limit in MiB (default 2048)"
    )
    p.add_argument("--check", action="store_true", help="run the engine and compare it with ONNX Runtime")
    p.add_argument(
        "--data", help="with --check: EchoNet-format folder whose clips the comparison runs on (else random)"
    )
    p.set_defaults(func=run_tensorrt)


def run_tensorrt(args: argparse.Namespace) -> int:
    from export.tensorrt import BuildSettings, TensorRTUnavailable, build_engine, check_engine

    try:
        settings = BuildSettings(
            fp16=args.fp16,
            min_batch=args.min_batch,
            opt_batch=args.opt_batch,
            max_batch=args.max_batch,
            workspace_mb=args.workspace_mb,
            timing_cache=args.timing_cache,
        )
        plan = build_engine(args.onnx, args.out, settings)
        print(f"wrote {plan} and {plan}.json")
        if args.check:
            report = check_engine(plan, args.onnx, data=args.data)
            print(json.dumps(report, indent=2))
            return 0 if report["ok"] else 1
    except TensorRTUnavailable as e:
        print(f"echoseg export tensorrt: {e}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"echoseg export tensorrt: {e}", file=sys.stderr)
        return 2
    return 0
