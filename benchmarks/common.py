"""Helpers shared by the benchmarks: machine description, timing, percentiles, JSON, a served model.

Every benchmark writes one JSON document into ``benchmarks/results/`` with the command line, the
machine (CPU model, cores, load average before and after, library versions) and its figures.
These machines are shared and noisy, so figures that are compared are measured side by side in
one run (interleaved where possible) and reported as ratios.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import platform
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.onnx import export_onnx
from export.source import build_untrained, untrained_run_id
from training.evaluate import evaluate

log = logging.getLogger(__name__)

# Idle OpenMP threads of torch spin by default; on a few shared cores that makes 2-thread torch
# 5-30x slower than 1 thread (measured: lite batch 1, 100 ms passive vs 300-3800 ms spinning).
# ONNX Runtime runs with spinning off (as the service does), so torch gets the same here. It must
# be set before torch is first imported, which the benchmarks do only inside their functions.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
BUDGET_MS = 32.0  # the per-frame latency budget of the service

PACKAGES = ("torch", "onnxruntime", "onnxruntime-gpu", "numpy", "pillow", "fastapi", "uvicorn", "websockets")


# -- the machine -------------------------------------------------------------------------------
def shown_path(path: Path) -> str:
    """A path as a result file shows it: relative to the repository when inside it (no user's
    folders in committed results)."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def gpu_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except Exception:  # a broken CUDA install must not stop a CPU benchmark
        return None


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), as the service counts its threads."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def machine_info() -> dict:
    """What the figures were measured on; ``load_average`` is the 1/5/15-minute load now."""
    affinity = usable_cpus()
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "load_average": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "gpu": gpu_name(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "git_commit": git_commit(),
    }


# -- timing ------------------------------------------------------------------------------------
def summarize_ms(values_ms: list[float]) -> dict:
    """p50/p95/p99/mean/min/max (ms) and the count of a list of timings; NaN-free for JSON."""
    if not values_ms:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "mean": None, "min": None, "max": None}
    a = np.asarray(values_ms, dtype=np.float64)
    return {
        "n": int(a.size),
        "p50": round(float(np.percentile(a, 50)), 3),
        "p95": round(float(np.percentile(a, 95)), 3),
        "p99": round(float(np.percentile(a, 99)), 3),
        "mean": round(float(a.mean()), 3),
        "min": round(float(a.min()), 3),
        "max": round(float(a.max()), 3),
    }


@dataclass
class TimingCap:
    """How long one cell of a benchmark may run: at least ``min_reps``, at most ``max_reps``/``budget_s``."""

    budget_s: float = 5.0
    max_reps: int = 50
    min_reps: int = 3
    warmup: int = 2


def time_interleaved(calls: dict[str, Callable[[], object]], cap: TimingCap) -> tuple[dict, dict]:
    """Time ``calls`` in turn, repetition by repetition, so a noisy machine slows all of them alike.

    Returns ``(times_ms by name, cap report)``; the report says how many repetitions ran and
    whether the time budget (rather than ``max_reps``) ended the run.
    """
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        for _ in range(cap.warmup):
            call()
    started = time.perf_counter()
    stopped_by = "max_reps"
    for rep in range(cap.max_reps):
        if rep >= cap.min_reps and time.perf_counter() - started > cap.budget_s:
            stopped_by = "budget_s"
            break
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - t0) * 1e3)
    report = {
        "reps": len(next(iter(times.values()))) if times else 0,
        "stopped_by": stopped_by,
        "budget_s": cap.budget_s,
        "max_reps": cap.max_reps,
        "elapsed_s": round(time.perf_counter() - started, 2),
    }
    return times, report


def geomean(values: list[float]) -> float | None:
    values = [v for v in values if v and v > 0]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


# -- results -----------------------------------------------------------------------------------
def held_out_scores(model, root, split: str = "TEST") -> dict[str, Any]:
    """``training.evaluate`` of a checkpoint on ``split`` of ``root``, as a benchmark row: Dice at the
    traced ED/ES frames (mean, std, min, %) and over every frame with a true mask, Hausdorff
    distance (px) and the EF agreement of the predicted masks at the traced frames."""
    m = evaluate(model, root, split=split)
    traced, every, ef = m["traced"], m.get("all_frames") or {}, m["ef"]["predicted"]
    return {
        "clips": m.get("n_clips"),
        "traced_frames": traced["n_frames"],
        "traced_dice_pct": 100.0 * traced["dice"]["mean"],
        "traced_dice_std_pct": 100.0 * traced["dice"]["std"],
        "traced_dice_min_pct": 100.0 * traced["dice"]["min"] if "min" in traced["dice"] else None,
        "traced_hd_px": traced["hd"]["mean"],
        "all_frames_dice_pct": None if not every else 100.0 * every["dice"]["mean"],
        "all_frames": None if not every else every["n_frames"],
        "ef_corr": ef["corr"],
        "ef_bias": ef["bias"],
        "ef_std": ef["std"],
    }


def document(benchmark: str, argv: list[str] | None, started: float, **body) -> dict:
    """The common envelope of a result file."""
    args = sys.argv[1:] if argv is None else argv
    return {
        "benchmark": benchmark,
        "command": f"python -m benchmarks.{benchmark} " + " ".join(args),
        "machine": machine_info(),
        "wall_s": round(time.time() - started, 1),
        **body,
    }


def write_result(doc: dict, out_dir: Path | None, name: str | None = None) -> Path:
    out_dir = Path(out_dir) if out_dir else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name or doc['benchmark']}.json"
    path.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    return path


SERVER_MODULES = ("fastapi", "uvicorn", "websockets", "httpx", "prometheus_client", "pydantic_settings")


def missing_server_modules() -> list[str]:
    """The modules a served benchmark needs that this Python lacks (a bare GPU machine may lack them)."""
    return [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]


# -- models to serve ---------------------------------------------------------------------------
def export_preset(
    preset: str, folder: Path, calibration: str = "matmul", batch: str | int = "dynamic"
) -> Path:
    """An ONNX file of the untrained ``preset`` (seed 0); the weights do not change the latency."""
    name = f"{preset}-{calibration}-{batch}.onnx"
    path = Path(folder) / name
    if not path.exists():
        model = build_untrained(preset, seed=0)
        meta = {"run_id": untrained_run_id(preset, 0), "preset": preset}
        export_onnx(model, path, calibration=calibration, batch=batch, meta=meta)
    return path


def checkpoint_preset(preset: str, folder: Path) -> Path:
    """A checkpoint directory of the untrained ``preset`` (seed 0), for the torch backend (no export)."""
    from training.model.io import save_pretrained

    path = Path(folder) / f"{preset}-checkpoint"
    if not (path / "config.json").exists():
        save_pretrained(build_untrained(preset, seed=0), path, meta={"run_id": untrained_run_id(preset, 0)})
    return path


def resolve_form(form: str, device: str = "cpu") -> str:
    """``auto`` -> the form the service exports a checkpoint to (``matmul``, dynamic batch, on every
    device: batching several streams needs it; ``conv`` is static)."""
    return "matmul" if form == "auto" else form


def model_for(
    preset: str, folder: Path, backend: str = "auto", form: str = "auto", device: str = "cpu"
) -> Path:
    """What a benchmark server serves: a checkpoint for the torch backend, else an ONNX export.

    ``form`` ``auto`` is what the service exports a checkpoint to (see :func:`resolve_form`).
    """
    if backend == "torch":
        return checkpoint_preset(preset, folder)
    form = resolve_form(form, device)
    return export_preset(preset, folder, form, "dynamic" if form == "matmul" else 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path


@contextlib.contextmanager
def served(
    model: Path,
    env: dict[str, str] | None = None,
    module: str = "echoseg.cli",
    ready_timeout_s: float = 180.0,
    extra_args: tuple[str, ...] = (),
    launcher: list[str] | None = None,
    code: Path = REPO,
    poll_s: float = 0.25,
    ca_bundle: str | None = None,
) -> Iterator[Server]:
    """Run ``echoseg serve`` (or a module with the same arguments) on a free 127.0.0.1 port.

    ``launcher`` replaces ``python -m module`` (e.g. a script that sets up the process first);
    ``code`` is the source tree put first on ``PYTHONPATH`` (and the working directory).
    Waits for ``/readyz`` (polling every ``poll_s``); on exit sends SIGTERM (the drain) and kills
    after a bounded wait. ``ca_bundle``: the server serves TLS (``--ssl-certfile`` in ``extra_args``);
    its URL is https:// and the readiness probe verifies it against this CA.
    """
    import httpx

    port = free_port()
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "ECHOSEG_DRAIN_TIMEOUT_S": "1", **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), full_env.get("PYTHONPATH")]))
    cmd = [*(launcher or [sys.executable, "-m", module]), "serve", "--model", str(model), "--port", str(port)]
    cmd += list(extra_args)
    with tempfile.NamedTemporaryFile("wb", prefix="echoseg-bench-", suffix=".log", delete=False) as log_file:
        log_path = Path(log_file.name)
        proc = subprocess.Popen(cmd, env=full_env, stdout=log_file, stderr=subprocess.STDOUT, cwd=code)
    url = f"{'https' if ca_bundle else 'http'}://127.0.0.1:{port}"
    verify = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=2, verify=verify).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the server did not become ready; its log ends:\n{tail}")
            time.sleep(poll_s)
        yield Server(url, proc, log_path)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log_path.unlink(missing_ok=True)


# -- Prometheus histograms ---------------------------------------------------------------------
def histogram_buckets(
    metrics_text: str, name: str, labels: dict[str, str] | None = None
) -> dict[float, float]:
    """Cumulative bucket counts ``{le: count}`` of histogram ``name`` (summed over matching series)."""
    from prometheus_client.parser import text_string_to_metric_families

    labels = labels or {}
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == f"{name}_bucket" and all(s.labels.get(k) == v for k, v in labels.items()):
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
    return buckets


def counter_value(metrics_text: str, name: str, labels: dict[str, str] | None = None) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    labels = labels or {}
    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def bucket_quantiles(
    after: dict[float, float], before: dict[float, float] | None = None, qs=(0.5, 0.95, 0.99), scale=1000.0
) -> dict:
    """Quantiles of the observations between two scrapes, interpolated inside buckets, times ``scale``.

    The same estimate as PromQL's ``histogram_quantile``: only as fine as the buckets. The
    default ``scale`` turns seconds into milliseconds.
    """
    before = before or {}
    edges = sorted(after)
    counts = [after[le] - before.get(le, 0.0) for le in edges]
    total = counts[-1] if counts else 0.0
    out: dict = {"n": int(total)}
    for q in qs:
        key = f"p{round(q * 100)}"
        if total <= 0:
            out[key] = None
            continue
        rank, prev_le, prev_count = q * total, 0.0, 0.0
        for le, count in zip(edges, counts, strict=True):
            if count >= rank:
                if math.isinf(le):
                    value = prev_le
                else:
                    value = prev_le + (le - prev_le) * (rank - prev_count) / max(count - prev_count, 1e-12)
                out[key] = round(value * scale, 3)
                break
            prev_le, prev_count = le, count
    return out


def scrape(url: str) -> str:
    import httpx

    return httpx.get(f"{url}/metrics", timeout=10).text


def wait_idle(url: str, timeout_s: float = 30.0, poll_s: float = 0.5) -> float:
    """Wait until no stream is open and the backend has stopped running batches (a backlog left by
    a previous overloaded scenario must not count against the next); returns the seconds waited."""
    started = time.monotonic()
    last = None
    while time.monotonic() - started < timeout_s:
        text = scrape(url)
        batches = counter_value(text, "echoseg_inference_seconds_count")
        if counter_value(text, "echoseg_active_streams") == 0 and batches == last:
            break
        last = batches
        time.sleep(poll_s)
    return round(time.monotonic() - started, 2)


# -- clips -------------------------------------------------------------------------------------
def moving_disc_clip(frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """``(T, H, W)`` uint8: a bright disc whose radius beats, over speckle (stands in for an echo)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    cy, cx = height / 2, width / 2
    out = np.empty((frames, height, width), np.uint8)
    for t in range(frames):
        r = min(height, width) * (0.22 + 0.08 * math.sin(2 * math.pi * t / 25))
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2) < r * r
        noise = rng.integers(0, 40, size=(height, width))
        out[t] = np.clip(noise + 170 * disc, 0, 255).astype(np.uint8)
    return out


def a4c_clip(frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """``(T, H, W)`` uint8: a clip of the apical four-chamber simulator at a scanner's frame size,
    with the screen furniture (text, ECG, scales) around the fan that the service crops away."""
    from training.data.a4c import render_a4c_clip  # see ALLOWED_INNER in tests/test_import_graph.py

    return render_a4c_clip(seed, frames=frames, height=height, width=width).gray()


CLIPS = {"disc": moving_disc_clip, "a4c": a4c_clip}  # --clip choices of the streaming benchmarks
