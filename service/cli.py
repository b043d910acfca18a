"""``echoseg serve``, ``echoseg segment`` and ``echoseg stream``: run the service, or talk to one."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="run the inference service (REST + WebSocket) under uvicorn")
    p.add_argument(
        "--model", help="a .onnx file, a TensorRT engine or a checkpoint dir (default: ECHOSEG_MODEL)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--backend", choices=["auto", "onnxruntime", "torch", "tensorrt"])
    p.add_argument("--device", choices=["cpu", "cuda"])
    p.add_argument("--max-batch", type=int, dest="max_batch")
    p.add_argument("--threads", type=int, help="intra-op threads (default: the CPUs this process may use)")
    p.set_defaults(func=serve)

    p = subparsers.add_parser("segment", help="upload a clip to a running service and save its masks")
    p.add_argument("file", help="clip: .avi, .mp4, .dcm or .npy")
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--out", default=".", help="directory for the result (default: current)")
    p.add_argument(
        "--output",
        choices=["json", "npz", "mp4", "dicom-seg", "dicom-sr"],
        default="json",
        help="dicom-seg / dicom-sr: a DICOM Segmentation / measurement report (DICOM uploads only)",
    )
    p.add_argument("--api-key", default=None, help="bearer key (default: ECHOSEG_API_KEY)")
    p.set_defaults(func=segment)

    p = subparsers.add_parser("stream", help="stream a clip frame by frame over WebSocket and report latency")
    p.add_argument("file", help="clip: .avi, .mp4, .dcm or .npy")
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--fps", type=float, default=25.0, help="send rate (0 = as fast as possible)")
    p.add_argument("--encoding", choices=["gray8", "png", "jpeg"], default="gray8")
    p.add_argument("--mask-encoding", choices=["png", "gray8"], default="png")
    p.add_argument("--out", default=None, help="save the received masks as <out>/<clip>.masks.npz")
    p.add_argument("--api-key", default=None, help="bearer key (default: ECHOSEG_API_KEY)")
    p.set_defaults(func=stream)


def serve(args: argparse.Namespace) -> int:
    from pathlib import Path

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
        }.items()
        if v is not None
    }
    settings = Settings(**overrides)
    logging.getLogger().setLevel(settings.log_level)
    if not Path(settings.model).exists():
        print(f"error: model {settings.model} does not exist (pass --model or set ECHOSEG_MODEL)")
        return 2
    run_server(settings, args.host, args.port)
    return 0


def _api_key(args: argparse.Namespace) -> str | None:
    import os

    return args.api_key or os.environ.get("ECHOSEG_API_KEY") or None


def segment(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from service.client import media_type_for, segment_bytes

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise here
    path, out_dir = Path(args.file), Path(args.out)
    resp = segment_bytes(path.read_bytes(), media_type_for(path), args.url, args.output, _api_key(args))
    if resp.status_code != 200:
        print(f"error {resp.status_code}: {resp.text}")
        return 1
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = {"dicom-seg": "seg.dcm", "dicom-sr": "sr.dcm"}.get(args.output, args.output)
    out = out_dir / f"{path.stem}.{suffix}"
    out.write_bytes(resp.content)
    print(f"saved {out}")
    if args.output == "json":
        body = json.loads(resp.content)
        t = body["timings_ms"]
        print(f"frames {body['frames']}  ED {body['ed_frames']}  ES {body['es_frames']}  EF {body['ef']}")
        print("timings ms: " + "  ".join(f"{k} {v:.1f}" for k, v in t.items()))
        print(f"per frame: {t['total'] / max(1, body['frames']):.2f} ms (whole request / frames)")
    return 0


def stream(args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    import numpy as np

    from service.client import load_clip_file, percentiles, stream_frames

    path = Path(args.file)
    frames = load_clip_file(path)
    report = asyncio.run(
        stream_frames(frames, args.url, args.fps or None, args.encoding, args.mask_encoding, _api_key(args))
    )
    if report.error:
        print(f"server error: {report.error} (close {report.close_code})")
    n = len(report.indices)
    complete = report.indices == list(range(len(frames)))
    print(f"sent {len(frames)} frames, received {n} masks, indices complete and in order: {complete}")
    p = percentiles(report.latencies_s)
    print(f"latency ms  p50 {p['p50']:.1f}  p95 {p['p95']:.1f}  p99 {p['p99']:.1f}")
    if report.summary:
        s = report.summary
        print(f"summary: frames {s['frames']}  ED {s['ed_frames']}  ES {s['es_frames']}  EF {s['ef']}")
    if args.out and report.masks:
        out = Path(args.out) / f"{path.stem}.masks.npz"
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out, masks=np.stack(report.masks), index=np.asarray(report.indices))
        print(f"saved {out}")
    return 0 if report.error is None and n == len(frames) else 1
