"""How often the bundled model's mask runs past the mitral annulus into the left atrium.

    .venv/bin/python -m benchmarks.la_leakage                  # 12 held-out A4C clips, 2 layouts
    .venv/bin/python -m benchmarks.la_leakage --clips 4

The A4C simulator knows the mitral annulus in every frame (``A4CClip.annulus_px``: its septal and
lateral hinge points; the true cavity is closed by the straight line between them) and how far
the mitral valve is open (``A4CClip.mv_open``). On held-out clips (``SEEDS``, chosen before any
scoring; never training seeds), rendered as 112x112 crops and as 480x640 scanner frames with
furniture (preprocessed with the region the DICOM path would use: the fan's box, checked against
the content), every frame's mask from the product's path (``echoseg.preprocess``, the served
runtime) is split by the annulus line: the pixels on the atrial side are leakage. A frame leaks
when they exceed ``LEAK_SHARE`` of its true LV area. Reported per layout, for frames with the
valve open (``mv_open`` >= 0.5) and closed, for each post-processing in ``POSTPROCESS`` (as
served, and keeping the mask's largest connected component), with the Dice each costs or buys.

Writes ``benchmarks/results/la_leakage.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from benchmarks.common import document, shown_path, write_result
from echoseg.preprocess import clip_windows, logits_to_masks, preprocess
from echoseg.region import Region, choose_region, full_region
from service.backends import create_backend
from service.core.config import Settings
from training.data.a4c import render_a4c_clip

REPO = Path(__file__).resolve().parents[1]
SEEDS = tuple(range(20261220, 20261232))  # held out: chosen before any scoring
LAYOUTS = {"crop_112": (112, 112, False), "scanner_480x640": (480, 640, True)}
LEAK_SHARE = 0.02  # of the true LV area beyond the annulus line: a leaking frame
OPEN = 0.5  # mv_open at or above: the valve is open


def largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    return labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)


def opened(mask: np.ndarray, share: float = 0.15) -> np.ndarray:
    """The mask opened by a disk of ``share`` of its equivalent radius (drops narrow protrusions),
    then its largest component."""
    radius = round(share * np.sqrt(mask.sum() / np.pi))
    if radius < 1:
        return mask
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return largest_component(ndimage.binary_opening(mask, xx**2 + yy**2 <= radius**2))


POSTPROCESS = {"as_served": lambda m: m, "largest_component": largest_component, "opened": opened}


def atrial_side(annulus: np.ndarray, lv: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: the side of the annulus line ``((sx, sy), (lx, ly))`` away from the true LV."""
    (sx, sy), (lx, ly) = annulus
    rows, cols = np.mgrid[: lv.shape[0], : lv.shape[1]]
    side = (lx - sx) * (rows - sy) - (ly - sy) * (cols - sx)  # cross product: which side of the line
    cy, cx = np.argwhere(lv).mean(axis=0)
    inside = np.sign((lx - sx) * (cy - sy) - (ly - sy) * (cx - sx))
    return np.sign(side) == -inside


def _masks(backend, clip, furniture: bool) -> np.ndarray:

    frames = clip.gray()
    t, h, w = frames.shape
    if furniture:
        x0, y0, x1, y1 = clip.region
        declared = Region(x0, y0, x1 + 1, y1 + 1, h, w, "dicom")
        region = choose_region(frames[:8], declared)[0]
    else:
        region = full_region(h, w)
    windows = clip_windows(preprocess(frames, backend.config, region), backend.config)  # (T, k, S, S)
    logits = np.concatenate([backend.infer(windows[i : i + 8])[:, 0] for i in range(0, t, 8)])
    return logits_to_masks(logits, h, w, backend.config, region).astype(bool)


def _measure(backend, clips: int) -> dict:

    rows = []
    for layout, (h, w, furniture) in LAYOUTS.items():
        for seed in SEEDS[:clips]:
            clip = render_a4c_clip(seed, frames=32, height=h, width=w, furniture=furniture)
            predicted = _masks(backend, clip, furniture)
            for t in range(len(predicted)):
                lv = clip.masks[t] > 0
                beyond = atrial_side(clip.annulus_px[t], lv)
                row = {"layout": layout, "seed": seed, "frame": t, "mv_open": float(clip.mv_open[t])}
                for name, post in POSTPROCESS.items():
                    m = post(predicted[t])
                    row[name] = {
                        "leak_share": float((m & beyond).sum() / max(lv.sum(), 1)),
                        "dice": float(2 * (m & lv).sum() / max(m.sum() + lv.sum(), 1)),
                    }
                rows.append(row)
    return _summarize(rows)


def _summarize(rows: list[dict]) -> dict:
    out: dict = {}
    for layout in LAYOUTS:
        for valve, keep in (
            ("open", lambda r: r["mv_open"] >= OPEN),
            ("closed", lambda r: r["mv_open"] < OPEN),
        ):
            sel = [r for r in rows if r["layout"] == layout and keep(r)]
            if not sel:
                continue
            cell = {"frames": len(sel)}
            for name in POSTPROCESS:
                leak = np.array([r[name]["leak_share"] for r in sel])
                dice = np.array([r[name]["dice"] for r in sel])
                cell[name] = {
                    "frames_leaking_pct": round(100 * float(np.mean(leak > LEAK_SHARE)), 2),
                    "frames_leaking_5pct_pct": round(100 * float(np.mean(leak > 0.05)), 2),
                    "mean_leak_share_pct": round(100 * float(leak.mean()), 3),
                    "max_leak_share_pct": round(100 * float(leak.max()), 2),
                    "mean_dice": round(float(dice.mean()), 4),
                }
            out[f"{layout}/valve_{valve}"] = cell
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=REPO / "models" / "default")
    p.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "torch"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clips", type=int, default=len(SEEDS), help=f"per layout, at most {len(SEEDS)}")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    started = time.time()
    backend = create_backend(Settings(model=str(args.model), backend=args.backend, threads=args.threads))
    cells = _measure(backend, args.clips)
    doc = document(
        "la_leakage",
        argv,
        started,
        model=shown_path(args.model),
        backend=backend.name,
        seeds=list(SEEDS[: args.clips]),
        leak_share=LEAK_SHARE,
        open_at=OPEN,
        cells=cells,
    )
    path = write_result(doc, args.out)
    for key, cell in cells.items():
        print(key, cell["frames"], {n: cell[n] for n in POSTPROCESS})
    print(f"wrote {path}")
    return doc


if __name__ == "__main__":
    main()
