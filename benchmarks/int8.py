"""INT8 against fp32 on the CPU: ms/frame in one run, and Dice / EF on held-out A4C clips.

    .venv/bin/python -m benchmarks.int8 --model models/default --data data/a4c-test:ALL

The checkpoint is exported to ONNX (``matmul`` form, dynamic batch) and quantized to INT8 QDQ
(``export.quantize``: ranges from simulated A4C frames of another seed than the held-out clips).
Both files run in ONNX Runtime (CPU, ``--threads`` intra-op threads, the service's session
options), interleaved repetition by repetition at each batch size. Both are then scored by
``training.evaluate`` (the product's preprocessing; masks mapped back to each clip's frame) with
the ONNX file standing in for the network, so the only difference between the rows is the file.
The CPU's instruction sets are recorded: ONNX Runtime's int8 kernels are fastest with AVX-512
VNNI / AVX-VNNI and fall back to AVX2 sequences without them.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import (
    TimingCap,
    document,
    held_out_scores,
    summarize_ms,
    time_interleaved,
    write_result,
)
from echoseg.runtime.onnxruntime import OnnxRuntime
from export.onnx import export_onnx
from export.quantize import calibration_windows, quantize_int8
from export.source import load_source

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags() -> dict[str, bool]:
    try:
        words = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return {}
    return {flag: flag in words for flag in FLAGS}


def runtime_net(path: Path, threads: int):
    """The ONNX file behind the surface ``training.evaluate`` drives (``config``, ``forward``)."""
    import torch

    class RuntimeNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.runtime = OnnxRuntime(path, "cpu", threads)
            self.runtime.load()
            self.config = self.runtime.config
            self.anchor = torch.nn.Parameter(torch.zeros(0), requires_grad=False)  # says "cpu"

        def forward(self, windows: torch.Tensor) -> torch.Tensor:  # (B, k, S, S) -> (B, 1, S, S)
            return torch.from_numpy(self.runtime.infer(windows.numpy()))

    return RuntimeNet()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.int8", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="models/default", help="checkpoint directory")
    p.add_argument("--data", default=None, help="held-out folder[:SPLIT] for Dice/EF (default: timing only)")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--budget-s", type=float, default=15.0)
    p.add_argument("--max-reps", type=int, default=200)
    p.add_argument("--out-dir", type=Path, default=None)
    p.add_argument("--name", default="int8")
    args = p.parse_args(argv)
    started = time.time()
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="echoseg-int8-") as tmp:
        model, meta = load_source(checkpoint=args.model)
        files = {"fp32": export_onnx(model, Path(tmp) / "fp32.onnx", meta=meta)}
        windows = calibration_windows(model.config)
        t0 = time.perf_counter()
        files["int8"] = quantize_int8(files["fp32"], Path(tmp) / "int8.onnx", windows)
        quantize_s = time.perf_counter() - t0
        runtimes = {k: OnnxRuntime(v, "cpu", args.threads) for k, v in files.items()}
        for r in runtimes.values():
            r.load()
        config = model.config
        timing = []
        for batch in args.batches:
            x = windows[np.arange(batch) % len(windows)]
            calls = {k: functools.partial(r.infer, x) for k, r in runtimes.items()}
            times, report = time_interleaved(calls, TimingCap(args.budget_s, args.max_reps, 3))
            row = {"batch": batch, "timing": report}
            for k in runtimes:
                ms = summarize_ms(times[k])
                row[k] = {"batch_ms": ms, "frame_ms_p50": round(ms["p50"] / batch, 3)}
            row["speedup_p50"] = round(row["fp32"]["frame_ms_p50"] / row["int8"]["frame_ms_p50"], 2)
            print(
                f"batch {batch}: fp32 {row['fp32']['frame_ms_p50']} ms/frame, int8 "
                f"{row['int8']['frame_ms_p50']} ms/frame ({row['speedup_p50']}x)",
                flush=True,
            )
            timing.append(row)
        accuracy = []
        if args.data:
            root, _, split = args.data.partition(":")
            for k, path in files.items():
                scores = held_out_scores(runtime_net(path, args.threads), root, split or "TEST")
                accuracy.append({"precision": k, **scores})
                dice, corr = scores["traced_dice_pct"], scores["ef_corr"]
                print(f"{k}: Dice {dice:.2f} %, EF corr {corr:.3f}", flush=True)
    doc = document(
        "int8",
        argv,
        started,
        model=args.model,
        model_preset=config.preset,
        data=args.data,
        threads=args.threads,
        cpu_flags=cpu_flags(),
        calibration_windows=len(windows),
        quantize_s=round(quantize_s, 1),
        timing=timing,
        accuracy=accuracy,
    )
    print(f"wrote {write_result(doc, args.out_dir, args.name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
