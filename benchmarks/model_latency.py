"""Model latency: every backend available here × presets × batch sizes, side by side in one run.

    .venv/bin/python -m benchmarks.model_latency                     # CPU: torch eager, ONNX Runtime
    python3 -m benchmarks.model_latency --device cuda --batches 1 4 16 32   # GPU backends too

For each preset and batch size the backends run interleaved, repetition by repetition, so a
noisy machine slows them alike; each backend's speed is reported as a ratio to torch eager from
the same cells. Per frame = per call / batch. A cell's repetitions are capped by a time budget;
a cell whose estimated call time (from the smaller batch) exceeds ``--max-call-s`` is skipped
and recorded as capped. The untrained network of each preset is used: weights do not change the
time.

Backends (what runs depends on what is installed):

- ``torch`` — eager fp32 on the device, the calibration form torch uses by default there;
- ``onnxruntime-matmul`` — ONNX Runtime, ``matmul`` form, dynamic batch (the service's export);
- ``onnxruntime-conv`` — ONNX Runtime, ``conv`` form, one static-batch file per batch size;
- GPU only (instead of the CPU ONNX Runtime rows): ``torch-fp16-graph`` (fp16 weights, one CUDA
  graph per batch), ``onnxruntime-cuda``, ``onnxruntime-trt`` (TensorRT execution provider, fp16)
  and ``tensorrt-fp16`` (an engine built by ``export.tensorrt``) when TensorRT is installed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.common import (
    TimingCap,
    document,
    export_preset,
    summarize_ms,
    time_interleaved,
    usable_cpus,
    write_result,
)
from echoseg.forms import DEFAULT_CALIBRATION
from echoseg.presets import get_preset
from echoseg.runtime import DEVICES, RuntimeUnavailable
from echoseg.runtime.cuda import TorchCuda
from echoseg.runtime.onnxruntime import CUDA_PROVIDER, TRT_PROVIDER, OnnxRuntime
from echoseg.runtime.tensorrt import TensorRTRuntime, require_tensorrt
from echoseg.runtime.torch import TorchRuntime
from export.onnx import export_onnx
from export.source import build_untrained
from export.tensorrt import BuildSettings, build_engine
from training.model import build_model

log = logging.getLogger(__name__)

CPU_BACKENDS = ("torch", "onnxruntime-matmul", "onnxruntime-conv")
GPU_BACKENDS = ("torch-fp16-graph", "onnxruntime-cuda", "onnxruntime-trt", "tensorrt-fp16")
BASELINE = "torch"


class Skip(Exception):
    """This backend cannot run this cell here; the message says why."""


# -- backends: each factory returns a zero-argument call that runs one batch ---------------------
class Cell:
    """Everything the factories need for one (preset, batch)."""

    def __init__(self, model, batch: int, folder: Path, threads: int, device: str) -> None:
        self.model = model
        self.config = model.config
        self.batch = batch
        self.folder = folder
        self.threads = threads
        self.device = device
        c = self.config
        rng = np.random.default_rng(batch)
        self.x = rng.standard_normal((batch, c.num_frames, c.input_size, c.input_size), dtype=np.float32)


def _loaded(runtime):
    """Load ``runtime``; a runtime that cannot run here is a :class:`Skip` with its reason."""
    try:
        runtime.load()
    except RuntimeUnavailable as e:
        raise Skip(str(e)) from None
    return runtime


def _torch_eager(cell: Cell) -> Callable[[], object]:
    """fp32 eager in the calibration form torch uses by default on the device; host in, host out."""
    form = DEFAULT_CALIBRATION[f"torch-{cell.device}"]
    runtime = TorchRuntime(
        cell.model, cell.device, cell.threads, precision="fp32", cuda_graphs=False, calibration=form
    )
    return _loaded(runtime) and (lambda: runtime.infer(cell.x))


def _onnxruntime(cell: Cell, form: str, provider: str = "cpu", **options) -> Callable[[], object]:
    """An :class:`OnnxRuntime` of the preset's export in ``form``; :class:`Skip` when the provider
    is missing (checked before any export) or did not load."""
    import onnxruntime as ort

    wanted = {"cpu": "CPUExecutionProvider", "cuda": CUDA_PROVIDER, "tensorrt": TRT_PROVIDER}[provider]
    if wanted not in ort.get_available_providers():
        raise Skip(f"onnxruntime {ort.__version__} lacks {wanted} (has {ort.get_available_providers()})")
    batch = "dynamic" if form == "matmul" else cell.batch
    path = export_preset(cell.config.preset, cell.folder, form, batch)
    device = "cpu" if provider == "cpu" else "cuda"
    runtime = _loaded(
        OnnxRuntime(
            path, device, cell.threads, provider=provider, cache_dir=cell.folder / "trt-ep-cache", **options
        )
    )
    if runtime.providers[0] != wanted:
        raise Skip(f"{wanted} did not load (session providers {runtime.providers})")
    return lambda: runtime.infer(cell.x)


def _ort_matmul(cell: Cell) -> Callable[[], object]:
    return _onnxruntime(cell, "matmul")


def _ort_conv(cell: Cell) -> Callable[[], object]:
    return _onnxruntime(cell, "conv")


def _ort_cuda(cell: Cell) -> Callable[[], object]:
    return _onnxruntime(cell, "matmul", "cuda")


def _ort_trt(cell: Cell) -> Callable[[], object]:
    # a profile of 1..2B is tuned for B (echoseg.runtime.profile_batches), the batch timed here
    return _onnxruntime(cell, "matmul", "tensorrt", fp16=True, profile_max_batch=2 * cell.batch)


def _torch_graph(cell: Cell) -> Callable[[], object]:
    """fp16 CUDA graphs of the conv form, host windows in and host logits out, as the service runs."""
    runtime = TorchRuntime(
        cell.model, "cuda", cell.threads, precision="fp16", calibration="conv", graph_max_batch=cell.batch
    )
    _loaded(runtime).warmup(cell.batch)  # captures the graphs
    return lambda: runtime.infer(cell.x)


_ENGINES: dict[tuple[str, int], object] = {}


def _tensorrt(cell: Cell, max_batch: int) -> Callable[[], object]:
    key = (cell.config.preset, max_batch)
    try:
        require_tensorrt()  # before the export: say so at once when TensorRT is missing
        TorchCuda()
        if key not in _ENGINES:
            onnx_path = export_preset(cell.config.preset, cell.folder, "matmul", "dynamic")
            plan = cell.folder / f"{cell.config.preset}-fp16-b{max_batch}.plan"
            settings = BuildSettings(fp16=True, min_batch=1, opt_batch=min(4, max_batch), max_batch=max_batch)
            build_engine(onnx_path, plan, settings)
            _ENGINES[key] = _loaded(TensorRTRuntime(plan, "cuda"))
    except RuntimeUnavailable as e:
        raise Skip(str(e)) from None
    runtime = _ENGINES[key]
    return lambda: runtime.infer(cell.x)


def factories(device: str, max_batch: int) -> dict[str, Callable[[Cell], Callable[[], object]]]:
    table = {"torch": _torch_eager, "onnxruntime-matmul": _ort_matmul, "onnxruntime-conv": _ort_conv}
    if device == "cuda":  # ONNX Runtime on the CPU is left out: `paper` takes seconds per call there
        table = {
            "torch": _torch_eager,
            "torch-fp16-graph": _torch_graph,
            "onnxruntime-cuda": _ort_cuda,
            "onnxruntime-trt": _ort_trt,
            "tensorrt-fp16": lambda cell: _tensorrt(cell, max_batch),
        }
    return table


# -- one preset --------------------------------------------------------------------------------
def _estimate_s(per_frame_ms: dict[str, float], backends, batch: int) -> float:
    """Seconds one interleaved round at ``batch`` would take, from the per-frame times measured so far."""
    return sum(per_frame_ms.get(b, 0.0) for b in backends) * batch / 1e3


def run_preset(
    preset: str,
    batches: list[int],
    backends: list[str],
    device: str,
    threads: int,
    cap: TimingCap,
    max_call_s: float,
    folder: Path,
) -> list[dict]:
    model = build_untrained(preset, seed=0)
    table = factories(device, max(batches))
    rows: list[dict] = []
    per_frame: dict[str, float] = {}
    for batch in sorted(batches):
        cell = Cell(model, batch, folder, threads, device)
        estimate = _estimate_s(per_frame, backends, batch)
        if estimate > max_call_s:
            reason = f"capped: one round estimated at {estimate:.1f} s > max_call_s={max_call_s}"
            rows += [dict(preset=preset, batch=batch, backend=b, skipped=reason) for b in backends]
            log.info("%s b=%d skipped (%s)", preset, batch, reason)
            continue
        calls, skipped = {}, {}
        for name in backends:
            if name not in table:
                skipped[name] = f"backend {name!r} is not available on {device}; valid: {sorted(table)}"
                continue
            try:
                calls[name] = table[name](cell)
            except Skip as e:
                skipped[name] = str(e)
            except Exception as e:  # a backend that fails here must not stop the others
                log.exception("backend %s failed to start", name)
                skipped[name] = f"failed: {type(e).__name__}: {e}"
        times, report = time_interleaved(calls, cap) if calls else ({}, {})
        base = np.median(times[BASELINE]) if BASELINE in times else None
        for name in backends:
            if name in skipped:
                rows.append(dict(preset=preset, batch=batch, backend=name, skipped=skipped[name]))
                continue
            call_ms = summarize_ms(times[name])
            frame_ms = {
                k: (round(v / batch, 3) if k != "n" and v is not None else v) for k, v in call_ms.items()
            }
            per_frame[name] = frame_ms["p50"]
            rows.append(
                dict(
                    preset=preset,
                    batch=batch,
                    backend=name,
                    input_size=model.config.input_size,
                    per_call_ms=call_ms,
                    per_frame_ms=frame_ms,
                    frames_per_s=round(batch * 1e3 / call_ms["p50"], 1),
                    speedup_vs_torch=round(base / call_ms["p50"], 3) if base else None,
                    timing=report,
                )
            )
            print(
                f"{preset:6s} b={batch:<3d} {name:20s} {frame_ms['p50']:9.2f} ms/frame p50 "
                f"{frame_ms['p99']:9.2f} p99  ({call_ms['n']} reps, {report['stopped_by']})",
                flush=True,
            )
    return rows


# -- the variants that decide the `lite` preset and the ONNX Runtime options ---------------------
def _time_ort_variants(preset: str, variants: dict, cap: TimingCap, folder: Path) -> dict:
    """Interleaved batch-1 timing of ONNX Runtime sessions ``{name: (form, ort_options kwargs)}``."""
    c = get_preset(preset)
    x = np.random.default_rng(0).standard_normal(
        (1, c.num_frames, c.input_size, c.input_size), dtype=np.float32
    )
    calls = {}
    for name, (form, opts) in variants.items():
        path = export_preset(preset, folder, form, "dynamic" if form == "matmul" else 1)
        runtime = OnnxRuntime(path, "cpu", **opts)
        runtime.load()
        calls[name] = lambda r=runtime: r.infer(x)
    times, report = time_interleaved(calls, cap)
    base = np.median(next(iter(times.values())))
    rows = []
    for name, ms in times.items():
        s = summarize_ms(ms)
        rows.append(dict(variant=name, per_frame_ms=s, speed_vs_service_default=round(base / s["p50"], 3)))
        print(f"ort options {preset}: {name:48s} {s['p50']:8.2f} ms p50", flush=True)
    return dict(preset=preset, batch=1, timing=report, variants=rows)


def ort_option_variants(preset: str, threads: int, cap: TimingCap, folder: Path) -> list[dict]:
    """Batch-1 ONNX Runtime latency of one preset under different session options and forms.

    The first variant of each block is the reference of its ratios: the service's default on a
    CPU. Spinning gets a block of its own: threads left spinning after a run slow whatever runs
    next, which would taint the other variants of an interleaved block.
    """
    default = (f"matmul, {threads} threads (service default)", ("matmul", dict(threads=threads)))
    options = dict(
        [
            default,
            (f"conv, {threads} threads", ("conv", dict(threads=threads))),
            ("matmul, 1 thread", ("matmul", dict(threads=1))),
            ("conv, 1 thread", ("conv", dict(threads=1))),
            (
                f"matmul, {threads} threads, basic graph optimisation",
                ("matmul", dict(threads=threads, optimization="basic")),
            ),
            (
                f"matmul, {threads} threads, parallel execution",
                ("matmul", dict(threads=threads, parallel=True)),
            ),
        ]
    )
    spinning = dict(
        [default, (f"matmul, {threads} threads, spinning", ("matmul", dict(threads=threads, spinning=True)))]
    )
    return [
        _time_ort_variants(preset, options, cap, folder),
        _time_ort_variants(preset, spinning, cap, folder),
    ]


# name -> (preset, overrides): the candidates for the ResNet-family `lite` preset (one dilation,
# eq. 3's A · G), and the first family's lite that the bundled model was trained as, for reference.
LITE_VARIANTS = {
    "unet-lite (first family: U-Net width 4, ASSC levels 3-4)": ("unet-lite", {}),
    "width 4, BSSF stages 2-3": ("lite", {"width": 4}),
    "width 8, BSSF stages 2-3": ("lite", {"width": 8}),
    "width 8, BSSF stage 3": ("lite", {"width": 8, "calibrated_levels": (3,)}),
    "width 8, BSSF all 4 stages": ("lite", {"width": 8, "calibrated_levels": (0, 1, 2, 3)}),
    "width 16, BSSF stage 3": ("lite", {"width": 16, "calibrated_levels": (3,)}),
    "width 16, BSSF stages 2-3": ("lite", {"width": 16}),
    "width 8, no ASSC (plain fusion)": ("lite", {"width": 8, "bssf": False}),
}


def lite_variants(threads: int, cap: TimingCap, folder: Path) -> dict:
    """ONNX Runtime batch-1 latency of ``lite``'s candidates (width, calibrated stages)."""
    import torch

    calls, params, flops = {}, {}, {}
    x = np.random.default_rng(0).standard_normal((1, 3, 112, 112), dtype=np.float32)
    for i, (name, (preset, changes)) in enumerate(LITE_VARIANTS.items()):
        from training.model.summary import count_flops

        torch.manual_seed(0)
        model = build_model(get_preset(preset, **changes)).eval()
        params[name] = sum(p.numel() for p in model.parameters())
        flops[name] = count_flops(model)
        path = folder / f"lite-variant-{i}-conv-b1.onnx"
        export_onnx(model, path, calibration="conv", batch=1)
        for t in sorted({1, threads}):
            runtime = OnnxRuntime(path, "cpu", t)
            runtime.load()
            calls[f"{name} | {t} thread{'s' if t > 1 else ''}"] = lambda r=runtime: r.infer(x)
    times, report = time_interleaved(calls, cap)
    rows = []
    for key, ms in times.items():
        name, threads_label = key.split(" | ")
        s = summarize_ms(ms)
        rows.append(
            dict(
                variant=name,
                threads=threads_label,
                parameters=params[name],
                flops=flops[name],
                per_frame_ms=s,
            )
        )
        print(f"lite variant {key:64s} {s['p50']:8.2f} ms p50", flush=True)
    return dict(backend="onnxruntime-conv", batch=1, timing=report, variants=rows)


# -- entry point -------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks.model_latency", description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=DEVICES, default="cpu")
    p.add_argument("--presets", nargs="+", default=["lite", "paper"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 4, 16])
    p.add_argument("--backends", nargs="+", default=None, help="default: every backend of the device")
    p.add_argument("--threads", type=int, default=0, help="torch/ORT intra-op threads (0: the usable CPUs)")
    p.add_argument("--budget-s", type=float, default=6.0, help="timing budget per cell (all backends)")
    p.add_argument("--max-reps", type=int, default=40)
    p.add_argument("--min-reps", type=int, default=3)
    p.add_argument(
        "--max-call-s", type=float, default=20.0, help="skip a cell whose round is estimated longer"
    )
    p.add_argument("--no-variants", action="store_true", help="skip the ORT-options and lite-variant tables")
    p.add_argument("--out-dir", type=Path, default=None)
    return p.parse_args(argv)


def preset_cap(preset: str, args: argparse.Namespace) -> TimingCap:
    """``paper`` (and the first family's ``unet``) on a CPU take seconds per call: one warm-up and
    one to three timed calls."""
    if preset in ("paper", "unet") and args.device == "cpu":
        return TimingCap(budget_s=min(args.budget_s, 10.0), max_reps=3, min_reps=1, warmup=1)
    return TimingCap(args.budget_s, args.max_reps, args.min_reps)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu", file=sys.stderr)
        return 2
    threads = args.threads or usable_cpus()
    torch.set_num_threads(threads)
    backends = args.backends or list(CPU_BACKENDS if args.device == "cpu" else factories("cuda", 1))
    rows: list[dict] = []
    extra: dict = {}
    with tempfile.TemporaryDirectory(prefix="echoseg-bench-") as tmp:
        folder = Path(tmp)
        for preset in args.presets:
            cap = preset_cap(preset, args)
            rows += run_preset(
                preset, args.batches, backends, args.device, threads, cap, args.max_call_s, folder
            )
        if not args.no_variants and args.device == "cpu":
            vcap = TimingCap(args.budget_s, args.max_reps, args.min_reps)
            extra["ort_options"] = ort_option_variants("lite", threads, vcap, folder)
            extra["lite_variants"] = lite_variants(threads, vcap, folder)
    doc = document(
        "model_latency",
        argv,
        started,
        device=args.device,
        threads=threads,
        backends=backends,
        baseline=BASELINE,
        results=rows,
        **extra,
    )
    name = "model_latency" if args.device == "cpu" else "model_latency-cuda"
    print(f"wrote {write_result(doc, args.out_dir, name)}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
