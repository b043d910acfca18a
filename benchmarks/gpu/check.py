"""GPU checks: torch-CUDA fp32/fp16 parity with CPU, and TensorRT when it is importable.

    PYTHONPATH=. python3 -m benchmarks.gpu.check --out DIR     # writes DIR/gpu_check.json

Parity is measured on a network fitted for a few steps to synthetic clips (an untrained
network's logits sit in a band a few hundredths wide, where any rounding flips mask pixels):
for each preset the same weights run on the CPU (fp32, the reference) and on CUDA in fp32 (TF32
off) and fp16, in both calibration forms. fp32 must match within 1e-4 (relative to the logits'
spread when they are large), fp16 must give the same masks (Dice >= 0.999).
Without CUDA (or with ECHOSEG_SKIP_GPU=1) it records the environment and what it skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

FP32_MAX_ABS = 1e-4
FP16_MIN_DICE = 0.999


def environment() -> dict:
    import onnxruntime as ort
    import torch

    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "onnxruntime": ort.__version__,
        "ort_providers": ort.get_available_providers(),
        "tensorrt_importable": importlib.util.find_spec("tensorrt") is not None,
    }
    if torch.cuda.is_available():
        env |= {"gpu": torch.cuda.get_device_name(), "cuda": torch.version.cuda}
    return env


def synthetic_windows(config, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(windows (N, k, S, S), masks (N, 1, S, S))`` of a few synthetic clips at the preset's size."""
    from training.data.echonet import load_clips
    from training.data.synthetic import generate
    from training.model.preprocessing import normalize, resize_frames
    from training.model.window import clip_windows

    root = generate(folder / "synthetic", videos=2, frames=16, size=112, seed=0)
    windows, masks = [], []
    for clip in load_clips(root):
        size = config.input_size
        windows.append(clip_windows(normalize(resize_frames(clip.frames, size), config), config))
        masks.append((resize_frames(clip.true_masks * 255, size) > 127)[:, None].astype(np.float32))
    return np.concatenate(windows), np.concatenate(masks)


def fit(model, windows, masks, steps: int, device: str, batch: int = 4):
    """A few Adam steps so that the logits separate like a trained model's."""
    import torch

    model = model.to(device).train()
    x, y = torch.from_numpy(windows), torch.from_numpy(masks)
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=generator)
        prediction = model(x[idx].to(device))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(prediction, y[idx].to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval().cpu()


def logits(model, windows, device: str, dtype, batch: int = 8) -> np.ndarray:
    import torch

    model = model.to(device, dtype).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(windows), batch):
            frames = torch.from_numpy(windows[i : i + batch]).to(device, dtype)
            out.append(model(frames).float().cpu().numpy())
    return np.concatenate(out)


def parity(preset: str, steps: int, folder: Path, device: str = "cuda") -> dict:
    import copy

    import torch

    from export.check import compare
    from export.source import build_untrained

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = build_untrained(preset, seed=0)
    windows, masks = synthetic_windows(model.config, folder)
    started = time.time()
    model = fit(model, windows, masks, steps, device)
    windows = windows[:: max(1, len(windows) // 8)][:8]  # 8 windows across both clips: CPU time stays short
    rows = []
    for form in ("conv", "matmul"):
        net = copy.deepcopy(model).set_calibration(form)
        reference = logits(copy.deepcopy(net), windows, "cpu", torch.float32)
        spread = float(reference.std())
        precisions = (
            (("fp32", torch.float32), ("fp16", torch.float16))
            if device == "cuda"
            else (("fp32", torch.float32),)
        )
        for name, dtype in precisions:
            candidate = logits(copy.deepcopy(net), windows, device, dtype)
            p = compare(reference, candidate, model.config.threshold, "clips")
            ok = p.dice >= FP16_MIN_DICE if name == "fp16" else p.max_abs <= FP32_MAX_ABS * max(1.0, spread)
            rows.append({"form": form, "precision": name, "ok": ok, "logit_std": spread, **p.to_dict()})
            print(f"{preset:6s} {form:6s} {name}: max-abs {p.max_abs:.2e} dice {p.dice:.5f} ok={ok}")
    return {"preset": preset, "fit_steps": steps, "seconds": round(time.time() - started, 1), "results": rows}


def tensorrt_check(folder: Path) -> dict:
    """Export lite in both forms, build engines, run them and compare with ONNX Runtime (CPU)."""
    from export.onnx import export_onnx
    from export.source import build_untrained
    from export.tensorrt import BuildSettings, build_engine, check_engine

    model = build_untrained("lite", seed=0)
    out = {}
    for form, batch in (("matmul", "dynamic"), ("conv", 4)):
        for fp16 in (False, True):
            key = f"lite-{form}-{'fp16' if fp16 else 'fp32'}"
            try:
                onnx_path = folder / f"{key}.onnx"
                export_onnx(model, onnx_path, calibration=form, batch=batch, fp16=fp16)
                cache = str(folder / "timing.cache")
                settings = BuildSettings(min_batch=1, opt_batch=4, max_batch=8, timing_cache=cache)
                started = time.time()
                plan = build_engine(onnx_path, folder / f"{key}.plan", settings)
                out[key] = {"build_s": round(time.time() - started, 1), **check_engine(plan, onnx_path)}
            except Exception as e:  # record and go on: one failing form must not hide the others
                trace = traceback.format_exc()[-2000:]
                out[key] = {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": trace}
            print(f"tensorrt {key}: ok={out[key].get('ok')}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or "benchmarks/results")
    parser.add_argument("--presets", nargs="+", default=["lite", "paper"])
    parser.add_argument("--fit-steps", type=int, default=40)
    parser.add_argument("--skip-gpu", action="store_true", default=os.environ.get("ECHOSEG_SKIP_GPU") == "1")
    parser.add_argument("--dry-run-cpu", action="store_true", help="run the parity code CPU vs CPU (tests)")
    args = parser.parse_args(argv)

    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    document = {"check": "gpu", "environment": environment(), "parity": [], "tensorrt": None, "skipped": []}
    use_gpu = torch.cuda.is_available() and not args.skip_gpu
    with tempfile.TemporaryDirectory() as tmp:
        if use_gpu:
            for preset in args.presets:
                try:
                    document["parity"].append(parity(preset, args.fit_steps, Path(tmp)))
                except Exception as e:
                    document["parity"].append({"preset": preset, "error": f"{type(e).__name__}: {e}"})
        elif args.dry_run_cpu:
            for preset in args.presets:
                document["parity"].append(parity(preset, args.fit_steps, Path(tmp), device="cpu"))
        else:
            reason = "skipped (ECHOSEG_SKIP_GPU / --skip-gpu)" if args.skip_gpu else "no CUDA device"
            document["skipped"].append(f"CUDA parity: {reason}")
        if use_gpu and document["environment"]["tensorrt_importable"]:
            document["tensorrt"] = tensorrt_check(Path(tmp))
        else:
            document["skipped"].append("TensorRT: not importable" if use_gpu else "TensorRT: no GPU in use")
    rows = [r for p in document["parity"] for r in p.get("results", [])]
    errors = [p for p in document["parity"] if "error" in p]
    trt_ok = all(v.get("ok") for v in (document["tensorrt"] or {}).values())
    checked = bool(rows or errors or document["tensorrt"])
    document["ok"] = (all(r["ok"] for r in rows) and not errors and trt_ok) if checked else None
    path = out / "gpu_check.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {path} (ok={document['ok']})")
    return 1 if document["ok"] is False else 0


if __name__ == "__main__":
    sys.exit(main())
