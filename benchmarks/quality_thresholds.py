"""Where the "no LV" / "low confidence" thresholds of ``echoseg.quality`` come from: synthetic data only.

Runs a model (default: the bundled ``models/default``) through the product's preprocessing
(``echoseg.preprocess`` with the region ``echoseg.region`` chooses) on

- *positives*: simulated echo clips, every frame of which holds an LV, from seeds disjoint from
  the bundled model's training set: realistic apical four-chamber clips (``training.data.a4c``;
  112x112 crops and 240x320 / 480x640 scanner frames with furniture) and the simple generator's
  clips (``training.data.synthetic``);
- *negatives*: an all-black clip, a uniform gray clip, uniform noise, Rayleigh speckle, a linear
  and a radial gradient ("phantom-like": no heart), and a scanner-like fan of moving speckle with
  no cavity;

and reports, per group, the distribution of each per-frame figure (input signal, mask share of
the fan, probability margin, largest-component share, confidence) and how the current thresholds
flag the frames. No real echocardiogram is read. ``python -m benchmarks.quality_thresholds``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from benchmarks.common import document, write_result
from training.data.a4c import render_a4c_clip
from training.data.scanner import scanner_sector
from training.data.synthetic import synthesize
from training.evaluate import load_model


def negatives(frames: int, size: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    linear = np.broadcast_to((xx / size * 255).astype(np.uint8), (frames, size, size)).copy()
    radial = np.clip(255 - np.hypot(xx - size / 2, yy) / size * 255, 0, 255).astype(np.uint8)
    fan = scanner_sector(rng, size, size, depth_mm=150.0).fan()
    cavity_free = np.clip(rng.rayleigh(60.0, (frames, size, size)), 0, 255).astype(np.uint8)
    cavity_free[:, ~fan] = 0  # the sector, speckle everywhere inside: no cavity
    return {
        "black": np.zeros((frames, size, size), np.uint8),
        "gray": np.full((frames, size, size), 128, np.uint8),
        "noise": rng.integers(0, 256, (frames, size, size), dtype=np.uint8),
        "speckle": np.clip(rng.rayleigh(60.0, (frames, size, size)), 0, 255).astype(np.uint8),
        "gradient": linear,
        "radial_gradient": np.broadcast_to(radial, (frames, size, size)).copy(),
        "fan_without_heart": cavity_free,
    }


def frame_figures(model, frames: np.ndarray) -> list[dict]:
    """Per frame of a clip: the figures ``echoseg.quality`` combines, and its flag."""
    import torch

    from echoseg.preprocess import clip_windows, preprocess, sigmoid
    from echoseg.quality import QualityThresholds, frame_quality, frame_signal
    from echoseg.region import DETECT_FRAMES, choose_region, input_fan

    config = model.config
    region, _, _ = choose_region(frames[:DETECT_FRAMES])
    fan = input_fan(region, config.input_size)
    norm = preprocess(frames, config, region)
    windows = clip_windows(norm, config)
    with torch.no_grad():
        logits = model(torch.from_numpy(windows))[:, 0].numpy()
    limits = QualityThresholds()
    out = []
    for frame, lg in zip(norm, logits, strict=True):
        prob = sigmoid(lg)
        mask = prob > config.threshold
        if fan is not None:
            mask &= fan
        fan_pixels = int(fan.sum()) if fan is not None else prob.size
        labels, count = ndimage.label(mask)
        largest = int(np.bincount(labels.ravel())[1:].max()) if count else 0
        signal = frame_signal(frame, fan, config.mean, config.std)
        q = frame_quality(prob, signal, config.threshold, fan, limits)
        out.append(
            {
                "signal": signal,
                "area": mask.sum() / fan_pixels,
                "margin": float(np.mean(2 * prob[mask] - 1)) if mask.any() else 0.0,
                "share": largest / mask.sum() if mask.any() else 0.0,
                "confidence": q.confidence,
                "flag": q.flag,
            }
        )
    return out


def describe(rows: list[dict]) -> dict:
    out = {}
    for key in ("signal", "area", "margin", "share", "confidence"):
        v = np.array([r[key] for r in rows], np.float64)
        out[key] = {
            q: round(float(np.percentile(v, p)), 4)
            for q, p in (("min", 0), ("p1", 1), ("p50", 50), ("max", 100))
        }
    out["flags"] = {f: sum(r["flag"] == f for r in rows) for f in ("ok", "low_confidence", "no_lv")}
    out["frames"] = len(rows)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/default")
    parser.add_argument("--clips", type=int, default=6, help="positive clips of each kind")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument(
        "--seed", type=int, default=1000, help="first seed (the bundled model was trained on 0..)"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    started = time.time()
    import torch

    from echoseg.quality import QualityThresholds

    torch.set_num_threads(1)
    model, _ = load_model(args.model)
    size = model.config.input_size
    simple, a4c = [], []
    sizes = [(112, 112), (240, 320), (480, 640)]
    for i in range(args.clips):
        clip = synthesize(np.random.default_rng(args.seed + i), f"q{i}", frames=args.frames, size=size)
        simple += frame_figures(model, clip.frames)
        h, w = sizes[i % len(sizes)]
        real_like = render_a4c_clip(args.seed + i, frames=args.frames, height=h, width=w)
        a4c += frame_figures(model, real_like.frames)
    groups = {"a4c_echo": describe(a4c), "synthetic_echo": describe(simple)}
    for name, clip in negatives(args.frames, size, args.seed).items():
        groups[name] = describe(frame_figures(model, clip))
    doc = document(
        "quality_thresholds",
        argv,
        started,
        model=args.model,
        thresholds=QualityThresholds().__dict__,
        groups=groups,
    )
    print(write_result(doc, args.out))
    for name, g in groups.items():
        print(
            f"{name:18s} flags {g['flags']}  conf p1/p50 {g['confidence']['p1']}/{g['confidence']['p50']}  "
            f"area p1/p50/max {g['area']['p1']}/{g['area']['p50']}/{g['area']['max']}  "
            f"signal min {g['signal']['min']}"
        )


if __name__ == "__main__":
    main()
