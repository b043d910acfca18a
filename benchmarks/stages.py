"""Where the time of one streamed frame goes, and what each optimisation of the path buys.

    .venv/bin/python -m benchmarks.stages                  # 480x640 and 112x112 frames, all variants
    .venv/bin/python -m benchmarks.stages --sizes 112x112 --variants baseline optimised

One stream at ``--fps`` runs against ``benchmarks.stage_server`` (the product's server with
timers on the streaming path) for each variant of the server's settings. Per frame:

| stage | measured as |
|---|---|
| receive | client sent the frame -> the session got the message (one monotonic clock) |
| decode | ``decode_frame`` (gray8 bytes -> array) |
| resize | ``preprocess``: resize to the model's input size and normalise |
| queue wait | time in the micro-batcher before the frame's batch ran |
| inference | backend time of that batch |
| resize back | ``logits_to_masks``: sigmoid, resize to the frame's size, threshold |
| encode | ``encode_mask`` at the frame's size |
| send | handing the mask message to the WebSocket + its way to the client |
| other | the rest of the end-to-end mean: event loop scheduling, thread hops, window building |

End to end is the client's view: from sending the last frame a mask needs (frame t+1 for the
centred window) to receiving the mask. Variants: the service defaults before optimisation, each
optimisation alone, and the combination that helped. Every variant has its own server, all
started before timing; the stream then visits them in short bursts, round after round (the order
reversed every other round), so the drift of a shared machine falls on all variants alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import struct
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.common import CLIPS, REPO, document, export_preset, served, summarize_ms, write_result

log = logging.getLogger(__name__)

STAGES = ("receive", "decode", "resize", "queue_wait", "inference", "resize_back", "encode", "send")
WARMUP_FRAMES = 10


@dataclass(frozen=True)
class Variant:
    """One configuration of the streaming path: the export form, the client's mask encoding, settings."""

    form: str = "matmul"
    mask_encoding: str = "png"
    env: dict = field(default_factory=dict)
    note: str = ""


# The streaming path as it was before these optimisations; each variant below changes one thing.
BEFORE = {"ECHOSEG_STREAM_FAST_PATH": "0", "ECHOSEG_WS_DEFLATE": "1"}
VARIANTS: dict[str, Variant] = {
    "baseline": Variant(
        env=BEFORE,
        note="matmul export, WebSocket per-message deflate, Pillow PNG masks in a worker thread, 1.5 ms wait",
    ),
    "no_deflate": Variant(env={**BEFORE, "ECHOSEG_WS_DEFLATE": "0"}, note="no per-message deflate"),
    "fast_path": Variant(
        env={**BEFORE, "ECHOSEG_STREAM_FAST_PATH": "1"},
        note="zlib 1-bit PNG masks on the event loop; a batch stops waiting once every open stream is in",
    ),
    "conv_form": Variant(form="conv", env=BEFORE, note="conv calibration form (static batch 1)"),
    "gray8_masks": Variant(
        mask_encoding="gray8", env=BEFORE, note="the client asks for raw 0/1 masks, not PNG"
    ),
    "one_thread": Variant(
        env={**BEFORE, "ECHOSEG_THREADS": "1"}, note="1 ONNX Runtime intra-op thread (not 2)"
    ),
    "no_batch_wait": Variant(env={**BEFORE, "ECHOSEG_MAX_BATCH_WAIT_MS": "0"}, note="max_batch_wait_ms=0"),
    "optimised": Variant(note="the new defaults: no per-message deflate, fast path; matmul form, PNG masks"),
    "before": Variant(
        note="the new defaults, served by the --before source tree (the product before a change)"
    ),
}


# -- the client ---------------------------------------------------------------------------------
async def stream_timed(url: str, frames: np.ndarray, fps: float, mask_encoding: str) -> dict:
    """Send gray8 frames at ``fps``; returns send times per frame, receive times per mask, lookahead."""
    from websockets.asyncio.client import connect

    height, width = frames.shape[1:]
    payloads = [f.tobytes() for f in frames]
    sent: list[float] = []
    received: dict[int, float] = {}
    ws_url = url.replace("http", "ws", 1) + "/v1/stream"
    async with connect(ws_url, max_size=2**26) as ws:
        start = {"type": "start", "width": width, "height": height, "encoding": "gray8"}
        await ws.send(json.dumps({**start, "mask_encoding": mask_encoding, "fps": fps}))
        ready = json.loads(await ws.recv())
        if ready.get("type") != "ready":
            raise RuntimeError(f"the server refused the stream: {ready}")

        async def sender() -> None:
            t0 = time.perf_counter()
            for i, payload in enumerate(payloads):
                await asyncio.sleep(max(0.0, t0 + i / fps - time.perf_counter()))
                sent.append(time.perf_counter())
                await ws.send(payload)
            await ws.send(json.dumps({"type": "end"}))

        task = asyncio.create_task(sender())
        async for message in ws:
            if isinstance(message, bytes):
                received[struct.unpack("<I", message[:4])[0]] = time.perf_counter()
        await task
    return {"sent": sent, "received": received, "lookahead": int(ready["lookahead_frames"])}


# -- analysis -----------------------------------------------------------------------------------
def frame_values(client: dict, server: dict) -> dict[str, list[float]]:
    """Per-frame ms of every stage in one burst (after its warm-up frames)."""
    sent, received, lookahead = client["sent"], client["received"], client["lookahead"]
    arrivals = server.get("arrivals", [])
    n = min(len(sent), len(arrivals))
    last = len(sent) - 1 - lookahead  # later masks wait for `end`, not for a frame
    sends = {int(i): (t0, t1) for i, t0, t1 in server.get("sends", [])}
    per: dict[str, list[float]] = {s: [] for s in (*STAGES, "end_to_end", "server")}
    per["receive"] = [(arrivals[i] - sent[i]) * 1e3 for i in range(WARMUP_FRAMES, n)]
    for t in range(WARMUP_FRAMES, last + 1):
        need = t + lookahead
        if t not in received or t not in sends or need >= n:
            continue
        t0, t1 = sends[t]
        per["send"].append((received[t] - t0) * 1e3)
        per["end_to_end"].append((received[t] - sent[need]) * 1e3)
        per["server"].append((t1 - arrivals[need]) * 1e3)
    for stage in ("decode", "resize", "queue_wait", "inference", "resize_back", "encode"):
        per[stage] = list(server.get(stage, []))[WARMUP_FRAMES:]
    per["lost"] = [float(len(sent) - len(received))]
    return per


def breakdown(per: dict[str, list[float]], batches: list[int]) -> dict:
    """Per-stage ms (mean, p50, p99, ...) and the part of the end-to-end mean no stage explains."""
    stats = {k: summarize_ms(v) for k, v in per.items() if k != "lost"}
    explained = sum(stats[s]["mean"] or 0.0 for s in STAGES)
    stats["other"] = {"mean": round((stats["end_to_end"]["mean"] or 0.0) - explained, 3)}
    stats["frames_lost"] = int(sum(per.get("lost", [])))
    stats["batch_sizes"] = sorted(set(batches))
    return stats


def run_size(names: list[str], size, args: argparse.Namespace, folder: Path) -> list[dict]:
    """All ``names`` variants at one frame size: one server each, interleaved bursts of one stream."""
    import httpx

    count = max(WARMUP_FRAMES + 5, round(args.fps * args.burst_seconds))
    clip = CLIPS[args.clip](min(count, 48), *size)
    frames = clip[np.arange(count) % len(clip)]
    pooled: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    batches: dict[str, list[int]] = {n: [] for n in names}
    with contextlib.ExitStack() as stack:
        servers = {}
        for n in names:
            v = VARIANTS[n]
            model = args.model or export_preset(
                args.preset, folder, v.form, "dynamic" if v.form == "matmul" else 1
            )
            code = args.before if n == "before" else REPO
            env = {"ECHOSEG_LOG_LEVEL": "WARNING", "ECHOSEG_CACHE_DIR": str(folder / f"cache-{n}"), **v.env}
            served_ = served(model, env, module="benchmarks.stage_server", code=code)
            servers[n] = stack.enter_context(served_)
        for r in range(args.rounds):
            for n in names if r % 2 == 0 else names[::-1]:
                url, v = servers[n].url, VARIANTS[n]
                httpx.delete(f"{url}/bench/stages", timeout=10)
                burst = stream_timed(url, frames, args.fps, v.mask_encoding)
                client = asyncio.run(asyncio.wait_for(burst, args.burst_seconds + 30))
                records = httpx.get(f"{url}/bench/stages", timeout=10).json()
                for k, vals in frame_values(client, records).items():
                    pooled[n].setdefault(k, []).extend(vals)
                batches[n] += records.get("batch", [])
    rows = []
    for n in names:
        v, stats = VARIANTS[n], breakdown(pooled[n], batches[n])
        e2e = stats["end_to_end"]
        print(
            f"stages {size[0]}x{size[1]} {n:15s} end-to-end p50 {e2e['p50']} mean {e2e['mean']} ms | "
            + " ".join(f"{s} {stats[s]['mean']}" for s in (*STAGES, "other")),
            flush=True,
        )
        rows.append(
            dict(
                variant=n,
                note=v.note,
                form=v.form,
                mask_encoding=v.mask_encoding,
                server_settings=v.env,
                frames=count * args.rounds,
                stages_ms=stats,
            )
        )
    return rows


def ratios(rows: list[dict]) -> dict:
    """Baseline mean end-to-end / variant mean end-to-end (> 1 is faster), and per-stage ratios."""
    base = next((r for r in rows if r["variant"] == "baseline"), None)
    if base is None:
        return {}
    out = {}
    b = base["stages_ms"]
    for r in rows:
        v = r["stages_ms"]
        per_stage = {}
        for s in (*STAGES, "end_to_end"):
            if b[s]["mean"] and v[s]["mean"]:
                per_stage[s] = round(b[s]["mean"] / v[s]["mean"], 2)
        out[r["variant"]] = per_stage
    return out


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = text.lower().split("x")
        return int(h), int(w)
    except ValueError:
        raise ValueError(f"a frame size is HxW such as 480x640, got {text!r}") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks.stages", description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="lite")
    p.add_argument("--model", type=Path, default=None, help="serve this model (else the untrained preset)")
    p.add_argument(
        "--clip", choices=sorted(CLIPS), default="disc", help="disc, or a4c: the simulator with furniture"
    )
    p.add_argument(
        "--before",
        type=Path,
        default=None,
        help="a source tree of the product before a change; the 'before' variant is served from it",
    )
    p.add_argument("--sizes", nargs="+", default=["480x640", "112x112"], help="frame sizes HxW")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument(
        "--full-sizes",
        nargs="*",
        default=["480x640"],
        help="sizes that run every variant; the others run baseline and optimised only",
    )
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--burst-seconds", type=float, default=3.0, help="one visit of the stream to a variant")
    p.add_argument("--rounds", type=int, default=3, help="visits per variant")
    p.add_argument("--out-dir", type=Path, default=None)
    p.add_argument("--name", default="stages", help="result file name (without .json)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    results = []
    with tempfile.TemporaryDirectory(prefix="echoseg-bench-") as tmp:
        for text in args.sizes:
            size = parse_size(text)
            names = [v for v in args.variants if v != "before" or args.before is not None]
            if text not in args.full_sizes:
                names = [v for v in names if v in ("baseline", "optimised", "before")] or names
            rows = run_size(names, size, args, Path(tmp))
            results.append(dict(frame_size=list(size), variants=rows, speedup_vs_baseline=ratios(rows)))
    doc = document(
        "stages",
        argv,
        started,
        model_source=str(args.model) if args.model else f"untrained {args.preset} (seed 0)",
        clip=args.clip,
        before=str(args.before) if args.before else None,
        fps=args.fps,
        burst_seconds=args.burst_seconds,
        rounds=args.rounds,
        warmup_frames=WARMUP_FRAMES,
        stages=list(STAGES),
        results=results,
    )
    print(f"wrote {write_result(doc, args.out_dir, args.name)}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sys.exit(main())
