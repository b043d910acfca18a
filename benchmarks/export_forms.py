"""Which calibration form is faster: ``conv`` vs ``matmul``, in torch and ONNX Runtime, side by side.

    .venv/bin/python -m benchmarks.export_forms            # CPU: benchmarks/results/export_forms-cpu.json
    python3 -m benchmarks.export_forms --device cuda       # GPU: export_forms-cuda.json

For each preset (default ``lite`` and ``paper``) and batch size (1 and 8) the same seeded network
runs in both forms, interleaved repetition by repetition so that a noisy shared machine slows
both alike; the figure that counts is the ratio conv/matmul inside this one run. ONNX Runtime
runs the exported files: one ``matmul`` file with a dynamic batch, one ``conv`` file per batch
size. The JSON records the machine, every timing, the ratios, and the recommended default form per
backend (conv when its geometric-mean ratio is below 1), which ``export/forms.py`` copies.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from echoseg.runtime import DEVICES
from echoseg.runtime.onnxruntime import OnnxRuntime
from echoseg.runtime.torch import TorchRuntime
from export.onnx import export_onnx
from export.source import build_untrained

FORMS = ("conv", "matmul")
RESULTS = Path(__file__).resolve().parent / "results"


def machine_info(device: str) -> dict:
    import onnxruntime as ort
    import torch

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "torch_threads": torch.get_num_threads(),
        "ort_providers": ort.get_available_providers(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def time_interleaved(
    calls: dict, budget_s: float, max_reps: int, min_reps: int = 2
) -> dict[str, list[float]]:
    """Warm up every call once, then time them in turn until ``budget_s`` is spent (min..max reps).

    A call whose warm-up alone exceeds the budget (the paper preset at batch 8 on 2 CPU cores) is
    not repeated: its warm-up is its one timing, since one-off costs are small against it.
    """
    times: dict[str, list[float]] = {name: [] for name in calls}
    warmup = {}
    for name, call in calls.items():
        start = time.perf_counter()
        call()
        warmup[name] = (time.perf_counter() - start) * 1e3
    if min(warmup.values()) > budget_s * 1e3:
        return {name: [t] for name, t in warmup.items()}
    started = time.perf_counter()
    for rep in range(max_reps):
        if rep >= min_reps and time.perf_counter() - started > budget_s:
            break
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def torch_runtimes(model, device: str, threads: int) -> dict:
    """``form -> TorchRuntime`` in fp32 eager (the runtime the service and checks use)."""
    runtimes = {}
    for form in FORMS:
        runtime = TorchRuntime(model, device, threads, precision="fp32", cuda_graphs=False, calibration=form)
        runtime.load()
        runtimes[form] = runtime
    return runtimes


def ort_runtimes(model, batches, folder: Path, provider: str, threads: int) -> dict:
    """``(form, batch) -> OnnxRuntime``: one dynamic matmul file, one conv file per batch."""
    preset = model.config.preset
    files = {("matmul", b): folder / f"{preset}-matmul.onnx" for b in batches}
    files |= {("conv", b): folder / f"{preset}-conv-b{b}.onnx" for b in batches}
    runtimes = {}
    for (form, b), path in files.items():
        if not path.exists():
            export_onnx(model, path, calibration=form, batch="dynamic" if form == "matmul" else b)
        device = "cpu" if provider == "cpu" else "cuda"
        runtimes[(form, b)] = OnnxRuntime(path, device, threads, provider=provider)
        runtimes[(form, b)].load()
    return runtimes


def run_preset(name: str, batches, device: str, backends, budget_s: float, max_reps: int, folder: Path):
    import torch

    model = build_untrained(name, seed=0)
    config = model.config
    size, k = config.input_size, config.num_frames
    rows = []
    sessions = {}
    threads = torch.get_num_threads()
    ort_backend = next((b for b in backends if b.startswith("onnxruntime")), None)
    if ort_backend:
        provider = "cuda" if ort_backend.endswith("cuda") else "cpu"
        sessions = ort_runtimes(model, batches, folder, provider, threads)
    eager = torch_runtimes(model, device, threads) if any(b.startswith("torch") for b in backends) else {}
    for batch in batches:
        x = np.random.default_rng(batch).standard_normal((batch, k, size, size), dtype=np.float32)
        for backend in backends:
            if backend.startswith("torch"):  # host windows in, host logits out, as the service runs
                calls = {f: (lambda r=eager[f], x=x: r.infer(x)) for f in FORMS}
            else:
                calls = {f: (lambda r=sessions[(f, batch)], x=x: r.infer(x)) for f in FORMS}
            times = time_interleaved(calls, budget_s, max_reps)
            for form in FORMS:
                median = statistics.median(times[form])
                rows.append(
                    dict(
                        preset=name,
                        backend=backend,
                        batch=batch,
                        form=form,
                        median_ms=round(median, 3),
                        per_window_ms=round(median / batch, 3),
                        times_ms=[round(t, 3) for t in times[form]],
                    )
                )
                print(
                    f"{name:6s} {backend:17s} b={batch:<2d} {form:6s} {median:10.2f} ms "
                    f"({len(times[form])} reps)",
                    flush=True,
                )
    return rows


def summarise(rows: list[dict]) -> tuple[dict, dict]:
    """Ratios conv/matmul per backend and case, and the recommended form per backend."""
    ratios: dict[str, dict[str, float]] = {}
    by_key = {(r["preset"], r["backend"], r["batch"], r["form"]): r["median_ms"] for r in rows}
    for preset, backend, batch, form in by_key:
        if form != "conv":
            continue
        ratio = by_key[(preset, backend, batch, "conv")] / by_key[(preset, backend, batch, "matmul")]
        ratios.setdefault(backend, {})[f"{preset}/b{batch}"] = round(ratio, 3)
    recommended = {}
    for backend, cases in ratios.items():
        geo = math.exp(statistics.fmean(math.log(v) for v in cases.values()))
        recommended[backend] = {
            "form": "conv" if geo < 1 else "matmul",
            "geomean_conv_over_matmul": round(geo, 3),
        }
    return ratios, recommended


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=DEVICES, default="cpu")
    parser.add_argument("--presets", nargs="+", default=["lite", "paper"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--budget-s", type=float, default=6.0, help="timing budget per case and backend")
    parser.add_argument("--max-reps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch/ORT intra-op threads (default: all)")
    parser.add_argument("--out", help="output JSON (default benchmarks/results/export_forms-<device>.json)")
    args = parser.parse_args(argv)

    import onnxruntime as ort
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu", file=sys.stderr)
        return 2
    backends = [f"torch-{args.device}"]
    if args.device == "cpu":
        backends.append("onnxruntime-cpu")
    elif "CUDAExecutionProvider" in ort.get_available_providers():
        backends.append("onnxruntime-cuda")
    started = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            rows += run_preset(
                preset, args.batches, args.device, backends, args.budget_s, args.max_reps, Path(tmp)
            )
    ratios, recommended = summarise(rows)
    document = {
        "benchmark": "export_forms",
        "command": "python -m benchmarks.export_forms "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(args.device),
        "backends": backends,
        "wall_s": round(time.time() - started, 1),
        "results": rows,
        "ratio_conv_over_matmul": ratios,
        "recommended": recommended,
    }
    out = Path(args.out) if args.out else RESULTS / f"export_forms-{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps({"ratio_conv_over_matmul": ratios, "recommended": recommended}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
