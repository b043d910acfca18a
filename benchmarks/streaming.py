"""Streaming end to end: a real ``echoseg serve`` process and real WebSocket clients on loopback.

    .venv/bin/python -m benchmarks.streaming                         # 1x50, 4x25, 8x30 fps + capacity
    .venv/bin/python -m benchmarks.streaming --scenarios 2x30 --seconds 5 --no-capacity

Each scenario runs N streams at F frames/s for T seconds (stream starts staggered evenly over
one frame interval, as independent scanners would be). Reported per scenario: client-side
latency (from sending the last frame a mask needs to receiving the mask, as the reference
client measures it), the server's own ``echoseg_frame_latency_seconds{transport="ws"}``
histogram over the scenario (difference of two /metrics scrapes), frames lost (sent but never
answered), budget misses (client latency above 32 ms; the server's counter too), and errors.

The capacity search finds the most concurrent 30-frame/s streams (``--capacity-fps``) held with
client p99 within the budget and no frame lost: doubling from 1 stream, then bisecting, bounded by
``--max-streams``, ``--max-trials`` and ``--capacity-budget-s``.

The server serves the untrained network of ``--preset`` exported to ONNX (``--form``); settings
may be given as ``--env ECHOSEG_X=value`` and are recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import (
    BUDGET_MS,
    bucket_quantiles,
    counter_value,
    document,
    histogram_buckets,
    model_for,
    moving_disc_clip,
    resolve_form,
    scrape,
    served,
    summarize_ms,
    wait_idle,
    write_result,
)
from echoseg.runtime import BACKENDS, DEVICES

log = logging.getLogger(__name__)

DEFAULT_SCENARIOS = ("1x50", "4x25", "8x30")
CLIENT_SLACK_S = 20.0  # a stream that has not finished this long after its last frame is abandoned


def parse_scenario(text: str) -> tuple[int, float]:
    try:
        n, fps = text.lower().split("x")
        return int(n), float(fps)
    except ValueError:
        raise ValueError(f"a scenario is STREAMSxFPS such as 4x25, got {text!r}") from None


async def _one_stream(url: str, frames: np.ndarray, fps: float, delay_s: float, mask_encoding: str):
    from service.client import stream_frames

    await asyncio.sleep(delay_s)
    timeout = len(frames) / fps + CLIENT_SLACK_S
    try:
        return await asyncio.wait_for(stream_frames(frames, url, fps, "gray8", mask_encoding), timeout)
    except (asyncio.TimeoutError, OSError) as e:
        return e


def run_scenario(
    url: str, streams: int, fps: float, seconds: float, size: tuple[int, int], mask_encoding: str
) -> dict:
    """``streams`` concurrent clients at ``fps`` for ``seconds``; latency, losses, misses."""
    count = max(1, round(fps * seconds))
    clip = moving_disc_clip(min(count, 100), *size)
    frames = clip[np.arange(count) % len(clip)]  # (count, H, W), the clip looped
    settled_s = wait_idle(url)
    before = scrape(url)
    started = time.perf_counter()

    async def all_streams():
        delays = [i / (fps * streams) for i in range(streams)]
        return await asyncio.gather(*(_one_stream(url, frames, fps, d, mask_encoding) for d in delays))

    reports = asyncio.run(all_streams())
    wall = time.perf_counter() - started
    after = scrape(url)
    latencies: list[float] = []
    lost, errors = 0, []
    for rep in reports:
        if isinstance(rep, BaseException):
            lost += count
            errors.append(f"{type(rep).__name__}: {rep}")
            continue
        latencies += [s * 1e3 for s in rep.latencies_s]
        lost += count - len(set(rep.indices))
        if rep.error:
            errors.append(rep.error.get("code", str(rep.error)))
    client = summarize_ms(latencies)
    ws = {"transport": "ws"}
    server = bucket_quantiles(
        histogram_buckets(after, "echoseg_frame_latency_seconds", ws),
        histogram_buckets(before, "echoseg_frame_latency_seconds", ws),
    )
    misses_server = counter_value(after, "echoseg_budget_misses_total", ws) - counter_value(
        before, "echoseg_budget_misses_total", ws
    )
    batch = bucket_quantiles(
        histogram_buckets(after, "echoseg_batch_size"),
        histogram_buckets(before, "echoseg_batch_size"),
        scale=1,
    )
    ok = client["p99"] is not None and client["p99"] <= BUDGET_MS and lost == 0 and not errors
    row = dict(
        streams=streams,
        fps=fps,
        seconds=seconds,
        frame_size=list(size),
        mask_encoding=mask_encoding,
        frames_sent=count * streams,
        frames_lost=lost,
        errors=errors,
        client_latency_ms=client,
        server_latency_ms=server,
        budget_misses_client=sum(1 for v in latencies if v > BUDGET_MS),
        budget_misses_server=int(misses_server),
        batch_size_quantiles={k: v for k, v in batch.items() if k != "n"},
        wall_s=round(wall, 2),
        waited_for_idle_s=settled_s,
        within_budget=ok,
    )
    print(
        f"stream {streams:3d} x {fps:4.0f} fps: client p50 {client['p50']} p99 {client['p99']} ms, "
        f"server p99 {server['p99']} ms, lost {lost}, errors {len(errors)} -> "
        f"{'OK' if ok else 'MISS'}",
        flush=True,
    )
    return row


def capacity_search(
    url: str,
    fps: float,
    seconds: float,
    size,
    mask_encoding: str,
    max_streams: int,
    max_trials: int,
    budget_s: float,
) -> dict:
    """Most concurrent ``fps`` streams within the budget: doubling, then bisection."""
    trials: list[dict] = []
    started = time.monotonic()
    best, worst = 0, max_streams + 1  # best passing, smallest failing
    n = 1
    stopped_by = "converged"
    while best + 1 < worst:
        if len(trials) >= max_trials:
            stopped_by = "max_trials"
            break
        if time.monotonic() - started > budget_s:
            stopped_by = "budget_s"
            break
        row = run_scenario(url, n, fps, seconds, size, mask_encoding)
        trials.append(row)
        if row["within_budget"]:
            best = n
            n = min(n * 2, max_streams) if worst > max_streams else (best + worst) // 2
        else:
            worst = n
            n = (best + worst) // 2
        if n <= best or n >= worst:
            break
    return dict(
        fps=fps,
        criterion=f"client p99 <= {BUDGET_MS} ms and no frame lost",
        streams_held=best,
        first_failing=worst if worst <= max_streams else None,
        searched_up_to=max_streams,
        stopped_by=stopped_by,
        trials=trials,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks.streaming", description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="lite")
    p.add_argument(
        "--model", type=Path, default=None, help="serve this model instead of the untrained preset"
    )
    p.add_argument(
        "--form",
        choices=("auto", "matmul", "conv"),
        default="auto",
        help="calibration form of the export (auto: as the service exports a checkpoint on --device)",
    )
    p.add_argument("--scenarios", nargs="*", default=list(DEFAULT_SCENARIOS), help="STREAMSxFPS, e.g. 4x25")
    p.add_argument("--seconds", type=float, default=10.0, help="duration of each scenario")
    p.add_argument("--size", type=int, nargs=2, default=[112, 112], metavar=("H", "W"), help="frame size")
    p.add_argument("--mask-encoding", choices=("png", "gray8"), default="png")
    p.add_argument("--no-capacity", action="store_true")
    p.add_argument("--capacity-seconds", type=float, default=5.0)
    p.add_argument("--capacity-fps", type=float, default=30.0, help="frame rate of each stream in the search")
    p.add_argument("--max-streams", type=int, default=32)
    p.add_argument("--max-trials", type=int, default=7)
    p.add_argument("--capacity-budget-s", type=float, default=90.0)
    p.add_argument("--device", choices=DEVICES, default="cpu")
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    p.add_argument("--env", nargs="*", default=[], help="extra server settings, ECHOSEG_X=value")
    p.add_argument("--out-dir", type=Path, default=None)
    p.add_argument("--name", default="streaming", help="result file name (without .json)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    scenarios = [parse_scenario(s) for s in args.scenarios]
    env = dict(kv.split("=", 1) for kv in args.env)
    env.setdefault("ECHOSEG_MAX_STREAMS", str(max([args.max_streams, *(n for n, _ in scenarios)])))
    # every stream comes from this one anonymous client: its per-caller quota is the whole server
    env.setdefault("ECHOSEG_MAX_STREAMS_PER_CLIENT", env["ECHOSEG_MAX_STREAMS"])
    env.setdefault("ECHOSEG_LOG_LEVEL", "WARNING")
    size = tuple(args.size)
    with tempfile.TemporaryDirectory(prefix="echoseg-bench-") as tmp:
        model = args.model or model_for(args.preset, Path(tmp), args.backend, args.form, args.device)
        extra = ("--device", args.device, "--backend", args.backend)
        with served(model, env, extra_args=extra) as server:
            import httpx

            model_info = httpx.get(f"{server.url}/v1/models", timeout=10).json()["models"][0]
            rows = [
                run_scenario(server.url, n, f, args.seconds, size, args.mask_encoding) for n, f in scenarios
            ]
            capacity = None
            if not args.no_capacity:
                capacity = capacity_search(
                    server.url,
                    args.capacity_fps,
                    args.capacity_seconds,
                    size,
                    args.mask_encoding,
                    args.max_streams,
                    args.max_trials,
                    args.capacity_budget_s,
                )
                print(
                    f"capacity: {capacity['streams_held']} streams at {args.capacity_fps:.0f} fps", flush=True
                )
    doc = document(
        "streaming",
        argv,
        started,
        model=model_info,
        model_source=str(args.model)
        if args.model
        else f"untrained {args.preset} (seed 0), "
        + ("checkpoint" if args.backend == "torch" else f"{resolve_form(args.form, args.device)} form"),
        backend=args.backend,
        server_settings=env,
        client="service.client.stream_frames (gray8 frames), all clients in one asyncio process",
        budget_ms=BUDGET_MS,
        scenarios=rows,
        capacity=capacity,
    )
    print(f"wrote {write_result(doc, args.out_dir, args.name)}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
