"""Write the service's OpenAPI schema (what ``GET /openapi.json`` serves) to a file.

    python -m service.openapi --out docs/openapi.json

The schema is generated from the code (routes, ``service.api.schemas``); ``docs/openapi.json`` is
the committed copy integrators read, and ``tests/service/test_openapi.py`` fails when the two
drift apart. Building the app loads no model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def schema() -> dict:
    from service.core.config import Settings
    from service.main import create_app

    return create_app(Settings()).openapi()


def render() -> str:
    return json.dumps(schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="service.openapi", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/openapi.json"))
    args = parser.parse_args(argv)
    args.out.write_text(render())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
