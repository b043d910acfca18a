"""The cost of TLS: one 50-fps stream and REST clips, plain and TLS side by side in one run.

    .venv/bin/python -m benchmarks.tls             # lite on CPU: 3 rounds of a 4 s stream, 5 posts
    .venv/bin/python -m benchmarks.tls --preset tiny --rounds 2 --seconds 2

Two ``echoseg serve`` processes serve the same model, one plain and one with a certificate made
for the run (trustme); the clients verify it. Rounds alternate plain, TLS, plain, TLS, so a noisy
machine slows both alike, and the result is reported as TLS / plain ratios: per-frame latency of
the stream (client-measured, last needed frame sent -> mask received), a clip posted over a kept
connection, and a small request on a new connection each time (the handshake); and the CPU time
each server process spent per streamed frame and per round of posts (from /proc), which a busy
machine disturbs far less than latency.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import (
    document,
    load_average,
    model_for,
    moving_disc_clip,
    resolve_form,
    served,
    summarize_ms,
    write_result,
)

log = logging.getLogger(__name__)

KINDS = ("stream", "post", "new_connection")


def make_certificate(folder: Path) -> tuple[str, str]:
    """A CA and a 127.0.0.1 server certificate for this run -> (CA file, cert+key file)."""
    import trustme

    ca = trustme.CA()
    ca_file, cert_file = folder / "ca.pem", folder / "server.pem"
    ca.cert_pem.write_to_path(ca_file)
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(cert_file)
    return str(ca_file), str(cert_file)


def stream_round(url: str, frames, fps: float, tls) -> list[float]:
    from service.client import stream_frames

    # paced at fps, and never more than max_in_flight frames unanswered: on a machine that cannot
    # keep up, frames wait at the client (and count in the latency) rather than end the stream
    report = asyncio.run(stream_frames(frames, url, fps=fps, tls=tls, flow_control=True))
    if report.close_code != 1000 or len(report.indices) != len(frames):
        raise RuntimeError(f"stream to {url} ended {report.close_code}: {report.error}")
    return [s * 1e3 for s in report.latencies_s]


def rest_round(url: str, data: bytes, reps: int, tls) -> tuple[list[float], list[float]]:
    """(clip posts over one kept connection, ms; GET /v1/models on a new connection each, ms)."""
    import httpx

    verify = tls if tls is not None else True  # a prebuilt context: no CA loading per client
    posts, fresh = [], []
    with httpx.Client(timeout=300, verify=verify) as client:
        client.get(f"{url}/v1/models")
        for _ in range(reps):
            t0 = time.perf_counter()
            resp = client.post(
                f"{url}/v1/segment", content=data, headers={"Content-Type": "application/x-npy"}
            )
            posts.append((time.perf_counter() - t0) * 1e3)
            if resp.status_code != 200:
                raise RuntimeError(f"POST /v1/segment answered {resp.status_code}: {resp.text[:200]}")
    for _ in range(reps):
        t0 = time.perf_counter()
        with httpx.Client(timeout=30, verify=verify) as client:
            client.get(f"{url}/v1/models").raise_for_status()
        fresh.append((time.perf_counter() - t0) * 1e3)
    return posts, fresh


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc): what TLS costs the server,
    less sensitive to a busy machine than wall-clock latency."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def npy_bytes(frames) -> bytes:
    buf = io.BytesIO()
    np.save(buf, frames)
    return buf.getvalue()


def ratio(tls: dict, plain: dict, key: str) -> float | None:
    return round(tls[key] / plain[key], 3) if tls.get(key) and plain.get(key) else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks.tls", description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="lite")
    p.add_argument("--form", choices=("auto", "matmul", "conv"), default="auto")
    p.add_argument("--fps", type=float, default=50.0)
    p.add_argument("--seconds", type=float, default=4.0, help="length of each stream round")
    p.add_argument("--size", type=int, default=256, help="stream frames are size x size gray8")
    p.add_argument("--rounds", type=int, default=3, help="plain/TLS pairs")
    p.add_argument("--clip-frames", type=int, default=50, help="frames of the posted 112x112 clip")
    p.add_argument("--reps", type=int, default=5, help="posts (and new-connection requests) per round")
    p.add_argument("--out-dir", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from service.core.tls import client_context

    args = parse_args(argv)
    started = time.time()
    load_before = load_average()
    env = {"ECHOSEG_LOG_LEVEL": "WARNING"}
    frames = moving_disc_clip(int(args.fps * args.seconds), args.size, args.size)
    clip = npy_bytes(moving_disc_clip(args.clip_frames, 112, 112))
    times = {t: {"stream": [], "post": [], "new_connection": []} for t in ("plain", "tls")}
    rounds: list[dict] = []  # per round: each side's p50s, and their paired TLS / plain ratios
    server_cpu = {t: {"stream_ms_per_frame": [], "rest_ms_per_round": []} for t in ("plain", "tls")}
    with tempfile.TemporaryDirectory(prefix="echoseg-bench-") as tmp:
        folder = Path(tmp)
        ca_file, cert_file = make_certificate(folder)
        tls = client_context(ca_file)
        model = model_for(args.preset, folder, "auto", args.form, "cpu")
        with (
            served(model, env) as plain,
            served(model, env, extra_args=("--ssl-certfile", cert_file), ca_bundle=ca_file) as secure,
        ):
            # the same prebuilt client context for both (unused on http:// and ws://), so neither
            # side pays for loading CA files per connection
            targets = {"plain": (plain.url, tls), "tls": (secure.url, tls)}
            pids = {"plain": plain.process.pid, "tls": secure.process.pid}
            for url, ctx in targets.values():  # warm-up: one short stream and one post each
                stream_round(url, frames[: int(args.fps)], args.fps, ctx)
                rest_round(url, clip, 1, ctx)
            for r in range(args.rounds):
                this: dict = {}
                for name, (url, ctx) in targets.items():
                    cpu0 = cpu_s(pids[name])
                    latencies = stream_round(url, frames, args.fps, ctx)
                    cpu1 = cpu_s(pids[name])
                    posts, fresh = rest_round(url, clip, args.reps, ctx)
                    cpu2 = cpu_s(pids[name])
                    server_cpu[name]["stream_ms_per_frame"].append((cpu1 - cpu0) * 1e3 / len(frames))
                    server_cpu[name]["rest_ms_per_round"].append((cpu2 - cpu1) * 1e3)
                    times[name]["stream"] += latencies
                    times[name]["post"] += posts
                    times[name]["new_connection"] += fresh
                    this[name] = {
                        k: summarize_ms(v)["p50"]
                        for k, v in zip(KINDS, (latencies, posts, fresh), strict=True)
                    }
                    s = summarize_ms(latencies)
                    print(f"round {r + 1} {name:5s}: stream p50 {s['p50']} ms p99 {s['p99']} ms", flush=True)
                this["ratio"] = {k: round(this["tls"][k] / this["plain"][k], 3) for k in KINDS}
                rounds.append(this)
    summary = {t: {k: summarize_ms(v) for k, v in by.items()} for t, by in times.items()}
    ratios = {
        f"{k}_{q}": ratio(summary["tls"][k], summary["plain"][k], q)
        for k in ("stream", "post", "new_connection")
        for q in ("p50", "p99")
    }
    paired = {k: round(float(np.median([r["ratio"][k] for r in rounds])), 3) for k in KINDS}
    for k, v in ratios.items():
        print(f"TLS / plain {k}: {v}")
    print(f"TLS / plain, median of the rounds' paired p50 ratios: {paired}")
    cpu = {t: {k: round(sum(v) / len(v), 3) for k, v in by.items()} for t, by in server_cpu.items()}
    cpu_ratio = {
        k: round(cpu["tls"][k] / cpu["plain"][k], 3) if cpu["plain"][k] else None for k in cpu["tls"]
    }
    print(f"server CPU (mean of rounds): {cpu}; TLS / plain: {cpu_ratio}")
    doc = document(
        "tls",
        argv,
        started,
        model_source=f"untrained {args.preset} (seed 0), {resolve_form(args.form)} form",
        server_settings=env,
        stream={"fps": args.fps, "frames_per_round": len(frames), "size": f"{args.size}x{args.size}"},
        rest={"clip": f"npy 112x112x{args.clip_frames}", "reps_per_round": args.reps},
        rounds=args.rounds,
        load_average_before=load_before,
        load_average_after=load_average(),
        times_ms=summary,
        ratios_tls_over_plain=ratios,
        rounds_p50_ms=rounds,
        paired_ratio_median=paired,
        server_cpu_ms=cpu,
        server_cpu_ratio_tls_over_plain=cpu_ratio,
    )
    print(f"wrote {write_result(doc, args.out_dir)}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sys.exit(main())
