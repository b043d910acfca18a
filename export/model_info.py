"""``echoseg model-info``: a network's size and cost (``training.model.summary``) and, with
``--latency``, its batch-1 time on the runtimes (:mod:`export.latency`, which exports the network)."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "model-info",
        help="parameters, FLOPs per frame and configuration of a model preset or checkpoint",
        description="Print a model's parameter count, its FLOPs per output frame (measured with torch's "
        "FLOP counter on one window at batch 1) and its configuration.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", help="a registered preset (paper, lite, tiny, unet, unet-lite, ...)")
    source.add_argument("--checkpoint", help="a checkpoint directory, run directory or .safetensors file")
    parser.add_argument("--calibration", choices=("conv", "matmul"), help="count FLOPs in this form")
    parser.add_argument(
        "--latency",
        action="store_true",
        help="also time batch-1 inference (torch eager and ONNX Runtime, CPU)",
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for --latency (default 2)")
    parser.add_argument(
        "--runs", type=int, default=20, help="timed runs per measurement for --latency (default 20)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run_model_info)


def run_model_info(args: argparse.Namespace) -> int:
    from export.latency import measure_latency
    from training.model.summary import model_summary

    def latency(model) -> dict:
        return measure_latency(model, threads=args.threads, runs=args.runs)

    try:
        info = model_summary(
            preset=args.preset,
            checkpoint=args.checkpoint,
            calibration=args.calibration,
            latency=latency if args.latency else None,
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}")
        return 2
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    table7 = info["paper_table7"]
    print(f"preset      {info['preset']} ({info['architecture']} family)")
    print(f"parameters  {info['parameters']:,} ({info['parameters'] / 1e6:.2f} M; paper Table 7: 74.80 M)")
    flops = info["flops_per_frame"]
    print(f"FLOPs/frame {flops:,} ({flops / 1e9:.2f} GFLOPs, calibration form {info['calibration']})")
    print(
        f"MACs/frame  {info['macs_per_frame'] / 1e9:.2f} G multiply-adds; convolution modules only "
        f"(thop's rule) {info['conv_module_macs_per_frame'] / 1e9:.2f} G; "
        f"paper Table 7: {table7['flops'] / 1e9:.2f} G"
    )
    for name, timing in info.get("latency", {}).items():
        print(f"latency     {name:18} median {timing['median_ms']:.1f} ms, min {timing['min_ms']:.1f} ms")
    print("config")
    for key, value in info["config"].items():
        print(f"  {key:18} {value}")
    return 0
