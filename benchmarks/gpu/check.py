"""GPU checks, one step per call, each appending one JSON line to ``OUT/gpu_check.jsonl``.

    PYTHONPATH=. python3 -m benchmarks.gpu.check STEP --out DIR [--dry-run-cpu]
    PYTHONPATH=. python3 -m benchmarks.gpu.check summary --out DIR   # -> DIR/gpu_check.json

``benchmarks/gpu/check.sh`` runs the steps in order, each under its own timeout, so a step that
runs out of time loses only itself. Every model runs through :mod:`echoseg.runtime`, the code the
service serves with. Parity is measured on trained weights and real-looking frames (the bundled
``models/default`` and synthetic clips), so the masks compared are neither empty nor full:

- ``env``: versions, the GPU, the ONNX Runtime providers, whether TensorRT imports (and why not);
- ``torch``: torch on CUDA in fp32 (TF32 off) and fp16, both calibration forms, against torch on
  the CPU (fp32 within 1e-4 of the logits' spread; fp16 the same masks, Dice >= 0.999);
- ``ort``: ONNX Runtime's CUDA provider (and TensorRT provider when this build has it) against
  ONNX Runtime on the CPU;
- ``tensorrt``: an fp16 engine (profile 1/8/32) built from the ONNX export, checked against ONNX
  Runtime (at 1, 16, 32 and 33 windows: the runtime splits beyond the profile), and its latency
  at batch 1/8/32; then the same for an INT8 engine built from the INT8 QDQ file
  (``export.quantize``, explicit quantization), checked against ONNX Runtime on that file, and
  its speed-up over the fp16 engine;
- ``serve``: ``echoseg serve`` on the GPU with 32 streams at 50 fps for 20 s (p99, lost frames).

``--dry-run-cpu`` runs each step's CPU-runnable part with the CPU standing in for the GPU (CI
runs it so the script cannot rot); nothing it prints is a GPU figure.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO / "models" / "default"
FP32_MAX_ABS = 1e-4
FP16_MIN_DICE = 0.999
STEPS = ("env", "torch", "ort", "tensorrt", "serve")
LINES = "gpu_check.jsonl"


# -- shared ----------------------------------------------------------------------------------------
def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def synthetic_root(folder: Path) -> Path:
    """Two short synthetic clips in the EchoNet-Dynamic layout (made once per step's folder)."""
    from training.data.synthetic import generate

    root = folder / "synthetic"
    return root if (root / "Videos").is_dir() else generate(root, videos=2, frames=16, size=112, seed=0)


def synthetic_windows(config, folder: Path) -> np.ndarray:
    """Every window of the synthetic clips at the model's size: ``(N, k, S, S)``."""
    from echoseg.preprocess import clip_windows, preprocess
    from echoseg.video import read_video

    root = synthetic_root(folder)
    clips = [read_video(p)[0] for p in sorted((root / "Videos").glob("*.avi"))]
    return np.concatenate([clip_windows(preprocess(c, config), config) for c in clips])


def logits_of(runtime, windows: np.ndarray) -> np.ndarray:
    from export.check import run_all

    with runtime:
        runtime.load()
        return run_all(runtime, windows, batch_size=8)


def judged(reference: np.ndarray, candidate: np.ndarray, threshold: float, precision: str, label: str):
    """A comparison row: fp32 gates on the logits (relative to their spread), fp16 on informative masks."""
    from export.check import compare

    p = compare(reference, candidate, threshold, label)
    spread = float(reference.std())
    if precision == "fp32":
        ok = p.max_abs <= FP32_MAX_ABS * max(1.0, spread)
    else:
        ok = p.informative and p.dice >= FP16_MIN_DICE
    print(f"  {label:32s} max-abs {p.max_abs:.2e} dice {p.dice:.5f} mask {p.positive_fraction:.3f} ok={ok}")
    return {"label": label, "precision": precision, "ok": bool(ok), "logit_std": spread, **p.to_dict()}


def default_artifact():
    from echoseg.artifacts import resolve

    return resolve(DEFAULT_MODEL)


def onnx_of_default(folder: Path, fp16: bool = False) -> Path:
    from export.onnx import export_onnx
    from export.source import load_source

    model, meta = load_source(checkpoint=DEFAULT_MODEL)
    path = folder / f"default-matmul{'-fp16' if fp16 else ''}.onnx"
    return export_onnx(model, path, calibration="matmul", batch="dynamic", fp16=fp16, meta=meta)


# -- steps -----------------------------------------------------------------------------------------
def step_env(args, folder: Path) -> dict:
    import onnxruntime as ort
    import torch

    from echoseg.runtime import RuntimeUnavailable
    from echoseg.runtime.onnxruntime import installed_onnxruntime_wheels

    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "onnxruntime": ort.__version__,
        "onnxruntime_wheels": installed_onnxruntime_wheels(),
        "ort_providers": ort.get_available_providers(),
        "tensorrt_importable": importlib.util.find_spec("tensorrt") is not None,
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    if env["tensorrt_importable"]:
        from echoseg.runtime.tensorrt import require_tensorrt

        try:
            env["tensorrt"] = require_tensorrt().__version__
        except RuntimeUnavailable as e:
            env["tensorrt_error"] = str(e)
    return {"ok": True, "environment": env}


def step_torch(args, folder: Path) -> dict:
    import torch

    from echoseg.runtime.torch import TorchRuntime
    from export.source import load_source

    device = "cpu" if args.dry_run_cpu else "cuda"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model, _ = load_source(checkpoint=DEFAULT_MODEL)
    config = model.config
    windows = synthetic_windows(config, folder)[::4]
    rows = []
    for form in ("conv", "matmul"):
        reference = logits_of(TorchRuntime(model, "cpu", precision="fp32", calibration=form), windows)
        precisions = ("fp32",) if device == "cpu" else ("fp32", "fp16")
        for precision in precisions:
            runtime = TorchRuntime(model, device, precision=precision, calibration=form, cuda_graphs=False)
            candidate = logits_of(runtime, windows)
            rows.append(judged(reference, candidate, config.threshold, precision, f"{form} {precision}"))
        if device == "cuda":  # the service's path: fp16 CUDA graphs
            runtime = TorchRuntime(model, device, precision="fp16", calibration=form, graph_max_batch=8)
            with runtime:
                runtime.load()
                runtime.warmup(8)
                from export.check import run_all

                candidate = run_all(runtime, windows, batch_size=8)
            rows.append(judged(reference, candidate, config.threshold, "fp16", f"{form} fp16 CUDA graphs"))
    ok = all(r["ok"] for r in rows)
    return {"ok": ok, "model": str(DEFAULT_MODEL), "windows": len(windows), "results": rows}


def step_ort(args, folder: Path) -> dict:
    import onnxruntime as ort

    from echoseg.runtime.onnxruntime import CUDA_PROVIDER, TRT_PROVIDER, OnnxRuntime

    available = ort.get_available_providers()
    gpu = [p for p, name in (("cuda", CUDA_PROVIDER), ("tensorrt", TRT_PROVIDER)) if name in available]
    wanted = ["cpu"] if args.dry_run_cpu else gpu
    if not wanted:
        return {"ok": None, "skipped": f"onnxruntime {ort.__version__} has no GPU provider ({available})"}
    path = onnx_of_default(folder)
    config = default_artifact().config
    windows = synthetic_windows(config, folder)[::2]
    reference = logits_of(OnnxRuntime(path, "cpu"), windows)
    rows = []
    for provider in wanted:
        device = "cpu" if provider == "cpu" else "cuda"
        runtime = OnnxRuntime(
            path, device, provider=provider, cache_dir=folder / "ort-trt", profile_max_batch=8
        )
        precision = "fp32" if provider in ("cpu", "cuda") else "fp16"  # TensorRT may pick TF32 kernels
        rows.append(judged(reference, logits_of(runtime, windows), config.threshold, precision, provider))
    return {"ok": all(r["ok"] for r in rows), "results": rows}


def step_tensorrt(args, folder: Path) -> dict:
    from echoseg.runtime import RuntimeUnavailable
    from echoseg.runtime.tensorrt import require_tensorrt
    from export.tensorrt import BuildSettings

    if args.dry_run_cpu:
        return {"ok": None, "skipped": "TensorRT needs a GPU (the CPU tests drive it with a fake module)"}
    try:
        trt = require_tensorrt()
    except RuntimeUnavailable as e:
        return {"ok": None, "skipped": str(e)}
    onnx_path = onnx_of_default(folder)
    cache = str(folder / "timing.cache")
    settings = BuildSettings(fp16=True, min_batch=1, opt_batch=8, max_batch=32, timing_cache=cache)
    record = engine_record(onnx_path, folder / "default-fp16.plan", settings, folder)
    # the INT8 QDQ file (explicit quantization: TensorRT takes the file's scales), fp16 elsewhere
    from export.quantize import calibration_windows, quantize_int8

    windows = calibration_windows(default_artifact().config, clips=4)
    int8_path = quantize_int8(onnx_path, folder / "default-int8.onnx", windows)
    int8 = engine_record(int8_path, folder / "default-int8.plan", settings, folder)
    fp16_ms, int8_ms = record["latency"], int8["latency"]
    ratios = {b: round(fp16_ms[b]["p50_ms"] / int8_ms[b]["p50_ms"], 2) for b in fp16_ms}
    print(f"  int8 engine speed-up over fp16 (p50 ratio per batch): {ratios}")
    return {
        "ok": record["check"]["ok"] and int8["check"]["ok"],
        "tensorrt": trt.__version__,
        **record,
        "int8": int8,
        "int8_speedup_vs_fp16": ratios,
    }


def engine_record(onnx_path: Path, plan: Path, settings, folder: Path) -> dict:
    """Build ``plan`` from ``onnx_path``, check it against ONNX Runtime, time it at batch 1/8/32."""
    from echoseg.runtime.tensorrt import TensorRTRuntime
    from export.tensorrt import build_engine, check_engine

    started = time.perf_counter()
    build_engine(onnx_path, plan, settings)
    build_s = time.perf_counter() - started
    report = check_engine(plan, onnx_path, data=synthetic_root(folder))
    latency = {}
    with TensorRTRuntime(plan, "cuda") as runtime:
        runtime.load()
        cfg = runtime.config
        for batch in (1, 8, 32):
            shape = (batch, cfg.num_frames, cfg.input_size, cfg.input_size)
            x = np.random.default_rng(batch).standard_normal(shape, dtype=np.float32)
            for _ in range(5):
                runtime.infer(x)
            times = []
            for _ in range(50):
                t0 = time.perf_counter()
                runtime.infer(x)
                times.append((time.perf_counter() - t0) * 1e3)
            p50 = float(np.median(times))
            latency[str(batch)] = {
                "p50_ms": p50,
                "p99_ms": float(np.percentile(times, 99)),
                "frame_ms": p50 / batch,
            }
            print(f"  {plan.name} batch {batch}: {p50:.3f} ms p50 (host windows in, host logits out)")
    return {"build_s": round(build_s, 1), "check": report, "latency": latency}


def step_serve(args, folder: Path) -> dict:
    from benchmarks.common import missing_server_modules

    missing = missing_server_modules()
    if missing:
        return {"ok": None, "skipped": f"the server's modules are missing here: {missing}"}
    if args.dry_run_cpu:
        device, backend, scenario, seconds = "cpu", "onnxruntime", "2x10", "2"
    else:
        device, backend, scenario, seconds = "cuda", "torch", "32x50", "20"
    cmd = [
        sys.executable, "-m", "benchmarks.streaming", "--model", str(DEFAULT_MODEL), "--device", device,
        "--backend", backend, "--scenarios", scenario, "--seconds", seconds, "--no-capacity",
        "--out-dir", str(folder), "--name", "serve",
        "--env", "ECHOSEG_MAX_STREAMS=40", "ECHOSEG_MAX_BATCH=32",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=args.serve_timeout_s)
    if done.returncode != 0:
        log = done.stdout[-1500:] + done.stderr[-1500:]
        return {"ok": False, "error": f"benchmarks.streaming exited {done.returncode}", "log": log}
    result = json.loads((folder / "serve.json").read_text())
    row = result["scenarios"][0]
    return {
        "ok": row["frames_lost"] == 0,
        "device": device,
        "backend": backend,
        "scenario": scenario,
        "model": result.get("model"),
        "result": row,
    }


RUNNERS = {
    "env": step_env,
    "torch": step_torch,
    "ort": step_ort,
    "tensorrt": step_tensorrt,
    "serve": step_serve,
}


# -- the lines and the summary ---------------------------------------------------------------------
def append_line(out: Path, record: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LINES, "a") as f:
        f.write(json.dumps(record, default=str) + "\n")


def run_step(args) -> int:
    started = time.time()
    try:
        with tempfile.TemporaryDirectory(prefix="echoseg-gpu-") as tmp:
            if args.step != "env" and not args.dry_run_cpu and not cuda_available():
                record = {"ok": None, "skipped": "no CUDA device"}
            else:
                record = RUNNERS[args.step](args, Path(tmp))
    except Exception as e:  # record and go on: one failing step must not hide the others
        record = {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
    seconds = round(time.time() - started, 1)
    record = {"step": args.step, "dry_run_cpu": args.dry_run_cpu, "seconds": seconds, **record}
    append_line(Path(args.out), record)
    print(f"step {args.step}: ok={record.get('ok')} ({record['seconds']} s)", flush=True)
    return 1 if record.get("ok") is False else 0


def summarize(out: Path) -> int:
    lines = (out / LINES).read_text().splitlines() if (out / LINES).exists() else []
    records = [json.loads(line) for line in lines if line.strip()]
    by_step = {r["step"]: r for r in records}
    document = {
        "check": "gpu",
        "steps": [by_step.get(s, {"step": s, "ok": False, "error": "did not run"}) for s in STEPS],
        "dry_run_cpu": any(r.get("dry_run_cpu") for r in records),
    }
    verdicts = [s.get("ok") for s in document["steps"]]
    document["ok"] = False if False in verdicts else (True if True in verdicts else None)
    (out / "gpu_check.json").write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(f"wrote {out / 'gpu_check.json'} (ok={document['ok']})")
    return 1 if document["ok"] is False else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.gpu.check", description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=[*STEPS, "summary"])
    parser.add_argument("--out", default=os.environ.get("OUT") or "benchmarks/results")
    parser.add_argument("--dry-run-cpu", action="store_true", help="the CPU stands in for the GPU (CI)")
    parser.add_argument("--serve-timeout-s", type=float, default=80.0)
    args = parser.parse_args(argv)
    if args.step == "summary":
        return summarize(Path(args.out))
    return run_step(args)


if __name__ == "__main__":
    sys.exit(main())
