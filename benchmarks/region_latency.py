"""What choosing the region costs on a stream's first frames: the rule alone, and the model's judgement.

    .venv/bin/python -m benchmarks.region_latency                 # bundled model, ONNX Runtime
    .venv/bin/python -m benchmarks.region_latency --reps 10 --backend torch

A stream without a region in ``start`` holds the frames its first window needs (lookahead + 1)
and chooses the region from them once, in a worker thread, before its first mask: that work
delays the first mask only. Per clip (A4C simulator clips with scanner furniture at 480x640 and
240x320, and a 112x112 EchoNet-like crop; seeds fixed here, never training seeds), the variants
are timed in turn, repetition by repetition (one run, so the shared machine's drift falls on all):

- ``detect_only``: ``detect_region(first)``, the region work of a stream before the model judged;
- ``rule``: ``region_candidates(first)``, the rule and its candidates (adds a one-frame detection);
- ``judged``: ``service.regions.choose_region_judged``, the rule, then one window per distinct
  candidate through the service's micro-batcher and backend (what the stream runs);
- ``one_window``: one window through the same batcher, what the first mask costs anyway.

And what the judgement buys, on held-out A4C clips with furniture (``ACCURACY_SEEDS`` at 480x640
and 240x320, chosen before any scoring): Dice at the traced ED/ES frames of the masks of the whole
path for the region each way chooses: ``before_upload`` (``detect_region`` of the first 8 frames,
an upload before), ``before_stream`` (``detect_region`` of the first window's frames, a stream
before), ``rule`` and ``judged`` (now, uploads and streams alike), and the ``full`` frame.

Writes ``benchmarks/results/region_latency.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from benchmarks.common import document, shown_path, summarize_ms, write_result
from echoseg.arbitration import first_frames
from echoseg.preprocess import clip_windows, logits_to_masks, preprocess, window_indices
from echoseg.region import detect_region, full_region, region_candidates
from service.backends import create_backend
from service.batcher import MicroBatcher
from service.core.config import Settings
from service.core.metrics import Metrics
from service.regions import choose_region_judged
from training.data.a4c import render_a4c_clip

REPO = Path(__file__).resolve().parents[1]
CLIPS = {  # name -> (seed, height, width, furniture); seeds chosen here, never used for training
    "a4c_480x640_furniture": (20261206, 480, 640, True),
    "a4c_240x320_furniture": (20261207, 240, 320, True),
    "a4c_112x112_crop": (20261208, 112, 112, False),
}


ACCURACY_SEEDS = tuple(range(20261210, 20261218))
ACCURACY_SIZES = ((480, 640), (240, 320))


def _clips(frames: int) -> dict[str, np.ndarray]:

    return {
        name: render_a4c_clip(seed, frames=frames, height=h, width=w, furniture=furniture).gray()
        for name, (seed, h, w, furniture) in CLIPS.items()
    }


async def _measure(args) -> dict:

    settings = Settings(model=str(args.model), backend=args.backend, threads=args.threads, max_batch=8)
    backend = create_backend(settings)
    batcher = MicroBatcher(backend, Metrics(CollectorRegistry()), max_batch=settings.max_batch)
    batcher.start()
    loop = asyncio.get_running_loop()
    config = backend.config
    n_first = first_frames(config.lookahead, settings.region_frames)
    rows = {}
    try:
        for name, clip in _clips(max(4, n_first)).items():
            first = clip[:n_first]
            window = preprocess(first, config)[window_indices(0, n_first, config)][None]  # (1, k, S, S)
            variants = {
                "detect_only": lambda first=first: asyncio.to_thread(detect_region, first),
                "rule": lambda first=first: asyncio.to_thread(region_candidates, first),
                "judged": lambda first=first: asyncio.to_thread(
                    choose_region_judged, first, None, None, batcher, loop, settings, True
                ),
                "one_window": lambda window=window: batcher.submit(window, True),
            }
            times: dict[str, list[float]] = {v: [] for v in variants}
            for rep in range(args.reps + args.warmup):
                order = list(variants) if rep % 2 == 0 else list(reversed(variants))
                for v in order:
                    t0 = time.perf_counter()
                    await variants[v]()
                    if rep >= args.warmup:
                        times[v].append((time.perf_counter() - t0) * 1e3)
            choice, region, warnings = await variants["judged"]()
            summary = {v: summarize_ms(t) for v, t in times.items()}
            rows[name] = {
                "frame_size": list(clip.shape[1:]),
                "first_frames": n_first,
                "candidates": [c.source for c in choice.candidates],
                "rule_choice": choice.region.source,
                "judged_choice": region.source,
                "warnings": warnings,
                "ms": summary,
                "judged_minus_detect_only_ms_p50": round(
                    summary["judged"]["p50"] - summary["detect_only"]["p50"], 3
                ),
                "judged_over_detect_only_p50": round(
                    summary["judged"]["p50"] / summary["detect_only"]["p50"], 2
                ),
            }
        accuracy = await asyncio.to_thread(_accuracy, backend, settings, batcher, loop, args.accuracy_seeds)
    finally:
        batcher.close()
    return {
        "accuracy": accuracy,
        "model": shown_path(args.model),
        "backend": backend.name,
        "threads": args.threads,
        "reps": args.reps,
        "clips": rows,
    }


def _accuracy(backend, settings, batcher, loop, seeds: int) -> dict:
    """Dice at ED/ES of each way's region on held-out A4C clips (in a worker thread); None for no seeds."""
    if seeds < 1:
        return None

    config = backend.config
    n_first = first_frames(config.lookahead, settings.region_frames)

    def traced_dice(frames, region, clip) -> list[float]:
        traced = sorted({clip.ed, clip.es})
        windows = clip_windows(preprocess(frames, config, region), config)[traced]  # (n, k, S, S)
        logits = batcher.infer_from_thread(windows, loop)
        masks = logits_to_masks(logits, *frames.shape[1:], config, region).astype(bool)
        truth = clip.masks[traced] > 0
        return [
            round(float(2 * (m & t).sum() / max(m.sum() + t.sum(), 1)), 4)
            for m, t in zip(masks, truth, strict=True)
        ]

    rows, ways = [], ("before_upload", "before_stream", "rule", "judged", "full")
    for seed in ACCURACY_SEEDS[:seeds]:
        for h, w in ACCURACY_SIZES:
            clip = render_a4c_clip(seed, frames=16, height=h, width=w, furniture=True)
            frames = clip.gray()
            first = frames[:n_first]
            choice, judged, _ = choose_region_judged(first, None, None, batcher, loop, settings, False)
            regions = {
                "before_upload": detect_region(frames[:8]),
                "before_stream": detect_region(first),
                "rule": choice.region,
                "judged": judged,
                "full": full_region(h, w),
            }
            dice = {way: traced_dice(frames, r, clip) for way, r in regions.items()}
            rows.append(
                {
                    "seed": seed,
                    "size": [h, w],
                    "regions": {way: [r.source, *r.box] for way, r in regions.items()},
                    "dice_ed_es": dice,
                    "before_upload_equals_stream": regions["before_upload"] == regions["before_stream"],
                }
            )
    flat = {way: [d for row in rows for d in row["dice_ed_es"][way]] for way in ways}
    return {
        "clips": len(rows),
        "first_frames": n_first,
        "mean_dice": {way: round(float(np.mean(v)), 4) for way, v in flat.items()},
        "min_dice": {way: round(float(np.min(v)), 4) for way, v in flat.items()},
        "share_dice_ge_0_90": {way: round(float(np.mean(np.array(v) >= 0.9)), 3) for way, v in flat.items()},
        "judged_chose": {s: sum(r["regions"]["judged"][0] == s for r in rows) for s in ("detected", "full")},
        "before_upload_and_stream_same_region": sum(r["before_upload_equals_stream"] for r in rows),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=REPO / "models" / "default")
    p.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "torch"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--accuracy-seeds", type=int, default=len(ACCURACY_SEEDS), help="0: latency only")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    started = time.time()
    body = asyncio.run(_measure(args))
    doc = document("region_latency", argv, started, **body)
    path = write_result(doc, args.out)
    for name, row in body["clips"].items():
        ms = row["ms"]
        print(
            f"{name}: candidates {row['candidates']} -> {row['judged_choice']}; p50 ms "
            + ", ".join(f"{v} {s['p50']}" for v, s in ms.items())
        )
    if (acc := body["accuracy"]) is not None:
        print(f"Dice at ED/ES, {acc['clips']} held-out clips: mean {acc['mean_dice']}, min {acc['min_dice']}")
    print(f"wrote {path}")
    return doc


if __name__ == "__main__":
    main()
