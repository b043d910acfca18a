"""Subcommands of this part of the product (registered by echoseg.cli)."""


def register(subparsers) -> None:
    return None
