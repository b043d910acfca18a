"""Arguments of ``echoseg train``, shared with ``python -m training.train`` (what torchrun launches).

A module of its own, importing only argparse: the CLI registers these without importing torch,
and the training entry point uses them without importing the CLI.
"""

from __future__ import annotations

import argparse


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``echoseg train`` (also ``python -m training.train``, what torchrun launches)."""
    parser.add_argument("--config", help="training YAML (configs/*.yaml); optional with --resume")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set steps=500 --set data.root=/data/echonet",
    )
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last/")
    return parser
