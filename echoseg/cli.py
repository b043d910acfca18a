"""The ``echoseg`` command: one entry point whose subcommands drive training, export and serving.

Each part of the product registers its own subcommands; heavy imports (torch, onnxruntime)
happen inside the commands, so ``echoseg --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Modules that expose ``register(subparsers)``; order is the order of ``echoseg --help``.
COMMAND_MODULES = (
    "training.data.cli",  # data synth | data check
    "export.model_info",  # model-info
    "training.cli",  # train | eval
    "export.cli",  # export onnx | check | tensorrt
    "service.cli",  # serve | segment | stream
    "echoseg.bench",  # bench
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="echoseg", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
