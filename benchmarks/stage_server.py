"""``echoseg serve`` with per-stage timers on the streaming path, for ``benchmarks.stages`` only.

    python -m benchmarks.stage_server serve --model lite.onnx --port 8123

The server is the product's own app (``service.main.create_app``, the same settings and the
same drain) given a stage hook (``service.core.stages``: what each name records is listed
there), plus one extra route, ``GET /bench/stages``, that returns what was recorded
(``DELETE`` clears it). Nothing of the product is patched.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections import defaultdict

from echoseg.runtime import BACKENDS, DEVICES

RECORDS: dict[str, list] = defaultdict(list)
_LOCK = threading.Lock()


def _record(name: str, value) -> None:
    with _LOCK:
        RECORDS[name].append(value)


def serve(model: str, host: str, port: int, overrides: dict) -> None:
    from service.core.config import Settings
    from service.main import create_app
    from service.server import DrainingServer, uvicorn_config

    settings = Settings(model=model, **overrides)
    app = create_app(settings, stage_hook=_record)

    @app.get("/bench/stages")
    def stages() -> dict:
        with _LOCK:
            return {k: list(v) for k, v in RECORDS.items()}

    @app.delete("/bench/stages")
    def clear() -> dict:
        with _LOCK:
            RECORDS.clear()
        return {"cleared": True}

    DrainingServer(uvicorn_config(app, settings, host, port), app.state.service).run()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.stage_server", description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["serve"])
    p.add_argument("--model", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", choices=DEVICES, default=None)
    p.add_argument("--backend", choices=BACKENDS, default=None)
    args = p.parse_args(argv)
    overrides = {k: v for k, v in (("device", args.device), ("backend", args.backend)) if v is not None}
    serve(args.model, args.host, args.port, overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
