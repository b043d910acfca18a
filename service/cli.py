"""``echoseg serve``, ``echoseg segment``, ``echoseg stream`` and ``echoseg keys``: run the service,
talk to one, or manage its key file."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import ssl
from pathlib import Path

import numpy as np

from echoseg.runtime import BACKENDS, DEVICES
from service.api.outputs import OUTPUTS

log = logging.getLogger(__name__)

TLS_SETTINGS = ("ssl_certfile", "ssl_keyfile", "ssl_ca_certs", "ssl_client_cert", "api_key_file", "audit_log")


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="run the inference service (REST + WebSocket) under uvicorn")
    p.add_argument(
        "--model", help="a .onnx file, a TensorRT engine or a checkpoint dir (default: ECHOSEG_MODEL)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--backend", choices=BACKENDS)
    p.add_argument("--device", choices=DEVICES)
    p.add_argument(
        "--max-batch", type=int, dest="max_batch", help="largest batch of windows the batcher gathers"
    )
    p.add_argument("--threads", type=int, help="intra-op threads (default: the CPUs this process may use)")
    p.add_argument(
        "--int8", action="store_const", const=True, help="serve the model quantized to INT8 (ONNX Runtime)"
    )
    tls = p.add_argument_group("TLS and authentication (default: the ECHOSEG_ settings of the same name)")
    tls.add_argument("--ssl-certfile", help="PEM certificate chain: serve HTTPS and wss://")
    tls.add_argument("--ssl-keyfile", help="PEM private key of the certificate")
    tls.add_argument("--ssl-ca-certs", help="CA bundle client certificates must chain to (mutual TLS)")
    tls.add_argument(
        "--ssl-client-cert", choices=["none", "optional", "required"], help="client certificates (mutual TLS)"
    )
    tls.add_argument("--api-key-file", help="JSON key file: key id -> sha256 and scopes (echoseg keys)")
    tls.add_argument("--audit-log", help="file for the audit trail (one JSON line per request and stream)")
    p.set_defaults(func=serve)

    p = subparsers.add_parser("segment", help="upload a clip to a running service and save its masks")
    p.add_argument("file", help="clip: .avi, .mp4, .dcm or .npy")
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--out", default=".", help="directory for the result (default: current)")
    p.add_argument(
        "--output",
        choices=list(OUTPUTS),
        default="json",
        help="; ".join(f"{row.name}: {row.summary}" for row in OUTPUTS.values()),
    )
    p.add_argument("--api-key", default=None, help="bearer key (default: ECHOSEG_API_KEY)")
    _tls_client_args(p)
    p.set_defaults(func=segment)

    p = subparsers.add_parser("stream", help="stream a clip frame by frame over WebSocket and report latency")
    p.add_argument("file", help="clip: .avi, .mp4, .dcm or .npy")
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--fps", type=float, default=25.0, help="send rate (0 = as fast as possible)")
    p.add_argument("--encoding", choices=["gray8", "png", "jpeg"], default="gray8")
    p.add_argument("--mask-encoding", choices=["png", "gray8"], default="png")
    p.add_argument("--out", default=None, help="save the received masks as <out>/<clip>.masks.npz")
    p.add_argument(
        "--region",
        default=None,
        help="where the ultrasound image is, as x0,y0,x1,y1 pixels (end exclusive) or a JSON object "
        'such as a REST answer\'s "region" (default: the server detects it)',
    )
    p.add_argument(
        "--flags",
        action="store_true",
        help="ask for each mask's quality flag and confidence (mask_format 2) and report them",
    )
    p.add_argument("--api-key", default=None, help="bearer key (default: ECHOSEG_API_KEY)")
    _tls_client_args(p)
    p.set_defaults(func=stream)

    p = subparsers.add_parser("keys", help="add or remove an API key in a key file (ECHOSEG_API_KEY_FILE)")
    p.add_argument("action", choices=["new", "remove"])
    p.add_argument("--file", required=True, help="the key file (created if missing)")
    p.add_argument("--id", required=True, dest="key_id", help="the key id logs and the audit trail show")
    p.add_argument(
        "--scopes", default="segment,stream", help="comma-separated: segment, stream, read-metrics"
    )
    p.set_defaults(func=keys)


def _tls_client_args(p) -> None:
    p.add_argument("--ca-bundle", help="PEM CA bundle that verifies an https:// server (default: system CAs)")
    p.add_argument("--client-cert", help="PEM client certificate (mutual TLS)")
    p.add_argument("--client-key", help="PEM key of the client certificate (if not in it)")


def _tls_context(args: argparse.Namespace):
    """A verifying TLS context for https:// / wss:// URLs (None for plain http://)."""
    from service.core.tls import client_context

    if not args.url.startswith(("https://", "wss://")):
        if args.ca_bundle or args.client_cert:
            raise SystemExit("error: --ca-bundle and --client-cert need an https:// or wss:// --url")
        return None
    try:
        return client_context(args.ca_bundle, args.client_cert, args.client_key)
    except (ValueError, OSError) as exc:
        raise SystemExit(f"error: {exc}") from None


def _tls_failure(exc: BaseException, args: argparse.Namespace) -> str:
    """A readable reason for a failed connection: the server's certificate, or ours, or the network."""
    from service.core.tls import explain_refusal

    seen = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"the server's certificate was refused: {seen.verify_message} (check --ca-bundle)"
        if isinstance(seen, ssl.SSLError):
            return f"TLS failed: {seen.reason or seen}"
        seen = seen.__cause__ or seen.__context__
    closed = isinstance(exc, ConnectionResetError | EOFError) or type(exc).__name__ in (
        "RemoteProtocolError",  # httpx: "Server disconnected without sending a response"
        "ReadError",
        "InvalidMessage",  # websockets: no HTTP answer to the upgrade
    )
    if closed and args.url.startswith(("https://", "wss://")):  # handshake done, then closed at once
        return explain_refusal(args.client_cert)
    return f"cannot reach {args.url}: {exc}"


def serve(args: argparse.Namespace) -> int:
    from service.core.config import Settings
    from service.server import run_server

    overrides = {
        k: v
        for k, v in {
            "model": args.model,
            "backend": args.backend,
            "device": args.device,
            "max_batch": args.max_batch,
            "threads": args.threads,
            "int8": args.int8,
        }.items()
        if v is not None
    }
    overrides.update({k: getattr(args, k) for k in TLS_SETTINGS if getattr(args, k) is not None})
    try:
        settings = Settings(**overrides)
    except ValueError as exc:
        print(f"error: invalid settings: {exc}")
        return 2
    logging.getLogger().setLevel(settings.log_level)
    if not Path(settings.model).exists():
        print(f"error: model {settings.model} does not exist (pass --model or set ECHOSEG_MODEL)")
        return 2
    try:
        run_server(settings, args.host, args.port)
    except (ValueError, OSError) as exc:  # a TLS file or the key file is missing or invalid
        print(f"error: {exc}")
        return 2
    return 0


def keys(args: argparse.Namespace) -> int:
    from service.core.keys import add_key, remove_key

    path = Path(args.file)
    try:
        if args.action == "remove":
            if not remove_key(path, args.key_id):
                print(f"error: no key id {args.key_id!r} in {path}")
                return 1
            print(f"removed {args.key_id} from {path}")
            return 0
        key = secrets.token_urlsafe(32)  # 256 random bits
        add_key(path, args.key_id, key, [s.strip() for s in args.scopes.split(",") if s.strip()])
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    print(f"added {args.key_id} to {path}; the key (shown once, the file holds only its SHA-256):")
    print(key)
    return 0


def _api_key(args: argparse.Namespace) -> str | None:
    return args.api_key or os.environ.get("ECHOSEG_API_KEY") or None


def segment(args: argparse.Namespace) -> int:
    from service.client import media_type_for, segment_bytes

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise here
    import httpx

    path, out_dir = Path(args.file), Path(args.out)
    tls = _tls_context(args)
    try:
        resp = segment_bytes(
            path.read_bytes(), media_type_for(path), args.url, args.output, _api_key(args), tls=tls
        )
    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
        print(f"error: {_tls_failure(exc, args)}")
        return 1
    if resp.status_code != 200:
        print(f"error {resp.status_code}: {resp.text}")
        return 1
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{path.stem}.{OUTPUTS[args.output].suffix}"
    out.write_bytes(resp.content)
    print(f"saved {out}")
    if args.output == "json":
        body = json.loads(resp.content)
        t = body["timings_ms"]
        print(f"frames {body['frames']}  ED {body['ed_frames']}  ES {body['es_frames']}  EF {body['ef']}")
        print("timings ms: " + "  ".join(f"{k} {v:.1f}" for k, v in t.items()))
        print(f"per frame: {t['total'] / max(1, body['frames']):.2f} ms (whole request / frames)")
    return 0


def parse_region(text: str | None) -> dict | None:
    """``x0,y0,x1,y1`` or a JSON object -> the ``region`` of a stream's ``start`` message."""
    if text is None:
        return None
    text = text.strip()
    if text.startswith("{"):
        try:
            region = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--region: not valid JSON ({exc.msg})") from None
        if not isinstance(region, dict):
            raise ValueError("--region: expected a JSON object")
        return region
    parts = text.split(",")
    if len(parts) != 4:
        raise ValueError(f"--region: expected x0,y0,x1,y1 (4 integers), got {len(parts)} values")
    try:
        x0, y0, x1, y1 = (int(p) for p in parts)
    except ValueError:
        raise ValueError("--region: x0,y0,x1,y1 must be integers") from None
    return {"x0": x0, "y0": y0, "x1": x1, "y1": y1}


def stream(args: argparse.Namespace) -> int:
    from websockets.exceptions import InvalidMessage

    from service.client import load_clip_file, percentiles, stream_frames

    try:
        region = parse_region(args.region)
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    path = Path(args.file)
    frames = load_clip_file(path)
    tls = _tls_context(args)
    try:
        report = asyncio.run(
            stream_frames(
                frames,
                args.url,
                args.fps or None,
                args.encoding,
                args.mask_encoding,
                _api_key(args),
                region=region,
                mask_format=2 if args.flags else 1,
                tls=tls,
            )
        )
    except (OSError, InvalidMessage) as exc:  # ssl.SSLError is an OSError
        print(f"error: {_tls_failure(exc, args)}")
        return 1
    if report.error:
        print(f"server error: {report.error} (close {report.close_code})")
    n = len(report.indices)
    complete = report.indices == list(range(len(frames)))
    print(f"sent {len(frames)} frames, received {n} masks, indices complete and in order: {complete}")
    p = percentiles(report.latencies_s)
    print(f"latency ms  p50 {p['p50']:.1f}  p95 {p['p95']:.1f}  p99 {p['p99']:.1f}")
    if report.flags:
        counts = {f: report.flags.count(f) for f in dict.fromkeys(report.flags)}
        print("flags: " + "  ".join(f"{f} {c}" for f, c in counts.items()))
    if report.summary:
        s = report.summary
        print(f"summary: frames {s['frames']}  ED {s['ed_frames']}  ES {s['es_frames']}  EF {s['ef']}")
        if s.get("ef") is None and s.get("ef_null_reason"):
            print(f"no EF: {s['ef_null_reason']}")
        if s.get("region"):
            r = s["region"]
            print(f"region ({r.get('source')}): x {r.get('x0')}-{r.get('x1')}, y {r.get('y0')}-{r.get('y1')}")
    if args.out and report.masks:
        out = Path(args.out) / f"{path.stem}.masks.npz"
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out, masks=np.stack(report.masks), index=np.asarray(report.indices))
        print(f"saved {out}")
    return 0 if report.error is None and n == len(frames) else 1
