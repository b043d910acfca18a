"""Scanner zoo acceptance: the fan finder and the whole path on every layout of ``training.data.zoo``.

    python -m benchmarks.zoo                      # all layouts, 2 held-out clips each, 16 frames
    python -m benchmarks.zoo --layouts dim,zoom --clips 1 --baseline-ref main

For each layout, held-out clips (seeds :data:`SEEDS`, fixed here before any scoring) are rendered
and scored:

- the fan finder (``echoseg.region.detect_region``) on the clip's first 8 frames, on a stream's
  first window (2 frames) and on one frame: IoU of the detected fan with the true fan;
- the whole path against a real ``echoseg serve`` (127.0.0.1, the bundled model ``models/default``):
  a DICOM without a region (POST; the resampled layout keeps its stale full-size region), an MP4
  of the colour frames (POST) and a WebSocket stream of the frames as PNG; the DICOM and the stream
  carry the screen's colours (RGB), as scanners write and send them: every layout has coloured
  furniture, the tinted and colour-Doppler layouts colour in the fan), each scored by the Dice of
  its masks at ED and ES and the IoU of the region it used with the true fan;
- the finder's latency on a stream's first window and on 8 frames, median ms.

``--baseline-ref REF`` loads ``echoseg/region.py`` as it is at git ``REF`` and scores and times its
``detect_region`` side by side with today's, in the same run (figures compared as ratios).

Writes ``benchmarks/results/<name>.json`` and ``.md`` (a layout x path table).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import io
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, RESULTS, TimingCap, document, served, time_interleaved, write_result
from service.codecs.outputs import video_encoder
from service.codecs.rle import rle_decode
from training.data.zoo import LAYOUT_NAMES, render_zoo_clip

log = logging.getLogger("benchmarks.zoo")

# Held-out evaluation seeds, chosen before any scoring: clip k of every layout is seed SEEDS[k].
SEED_BASE = 1_000_022_000  # >= training.data.zoo.HELD_OUT_SEEDS
SEEDS = tuple(SEED_BASE + k for k in range(8))
IOU_TARGET = 0.90
DICE_TARGET = 0.90
PATHS = ("dicom", "mp4", "stream")
FIRST_WINDOW = 2  # frames a stream's first window holds (k = 3, centred: the frame and one ahead)


# -- inputs ------------------------------------------------------------------------------------------
def dicom_upload(clip) -> bytes:
    """The clip as an uncompressed RGB DICOM without a region location (the screen's colours); a
    resampled layout's file keeps the region its scanner wrote at full size (stale), as a resampled
    file does."""
    from benchmarks.rest import dicom_bytes

    data = dicom_bytes(clip.rgb, frame_time_ms=1000.0 / clip.fps)
    if clip.layout != "resampled-stale":
        return data
    return with_region(data, clip.region, clip.spacing_mm)


def with_region(data: bytes, box: tuple[int, int, int, int], spacing_mm: tuple[float, float]) -> bytes:
    """A DICOM whose one 2-D tissue region has ``box`` (x0, y0, x1, y1 inclusive), written as given
    even where it exceeds the pixel matrix, and ``spacing_mm`` (row, column) as its PhysicalDelta."""
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(data))
    region = ds.SequenceOfUltrasoundRegions[0]
    region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags = 1, 1, 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = box[0], box[1]
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = box[2], box[3]
    region.PhysicalDeltaY, region.PhysicalDeltaX = spacing_mm[0] / 10, spacing_mm[1] / 10
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def mp4_upload(rgb: np.ndarray, fps: float) -> bytes:
    """``(T, H, W, 3)`` RGB -> MP4 (the service's best encoder, yuv420p), as a screen recording."""
    import av

    h, w = rgb.shape[1:3]
    rgb = rgb[:, : h - h % 2, : w - w % 2] if (h % 2 or w % 2) else rgb  # yuv420p needs even sides
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream(video_encoder(), rate=round(fps))
        stream.width, stream.height, stream.pix_fmt = rgb.shape[2], rgb.shape[1], "yuv420p"
        for f in rgb:
            for packet in stream.encode(
                av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p")
            ):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


# -- scores ------------------------------------------------------------------------------------------
def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    total = a.sum() + b.sum()
    return float(2 * (a & b).sum() / total) if total else 1.0


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def region_area(region) -> np.ndarray:
    """``(H, W)`` bool: the pixels a :class:`echoseg.region.Region` keeps (its fan, else its box)."""
    out = np.zeros((region.height, region.width), bool)
    mask = region.fan_mask
    out[region.y0 : region.y1, region.x0 : region.x1] = True if mask is None else mask
    return out


def answer_region(d: dict | None, height: int, width: int) -> np.ndarray:
    """The region of a REST answer or stream summary (``to_dict`` form) as an ``(H, W)`` mask."""
    from echoseg.region import Region

    if d is None:
        return np.ones((height, width), bool)
    fan = tuple(tuple(p) for p in d["fan"]) if d.get("fan") else None
    return region_area(Region(d["x0"], d["y0"], d["x1"], d["y1"], height, width, d["source"], fan))


def load_baseline(ref: str):
    """``echoseg/region.py`` as it is at git ``ref``, imported under its own name."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{ref}:echoseg/region.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="zoo-baseline-")) / "region_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("region_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being made
    spec.loader.exec_module(module)
    return module


def finder_scores(clip, finders: dict, cap: TimingCap) -> dict:
    """IoU of each finder's fan with the true fan on 8, 2 and 1 frames, and its latency (ms)."""
    out: dict = {}
    views = {"frames8": clip.frames[:8], "frames2": clip.frames[:FIRST_WINDOW], "frames1": clip.frames[:1]}
    for name, detect in finders.items():
        out[name] = {
            view: round(iou(region_area(detect(frames)), clip.fan), 4) for view, frames in views.items()
        }
        out[name]["notes"] = list(detect(views["frames8"]).notes)
    calls = {
        f"{name}/{view}": (lambda d=d, f=views[view]: d(f))
        for name, d in finders.items()
        for view in ("frames2", "frames8")
    }
    times, _ = time_interleaved(calls, cap)
    for key, values in times.items():
        name, view = key.split("/")
        out[name][f"ms_{view}"] = round(float(np.median(values)), 2)
    return out


def path_scores(url: str, clip) -> dict:
    """Dice at ED/ES and region IoU of the DICOM, MP4 and stream paths against a served model."""
    import httpx

    from service.client import stream_frames

    height, width = clip.frames.shape[1:]
    uploads = {
        "dicom": (dicom_upload(clip), "application/dicom"),
        "mp4": (mp4_upload(clip.rgb, clip.fps), "video/mp4"),
    }
    out: dict = {}
    for path, (data, media) in uploads.items():
        resp = httpx.post(f"{url}/v1/segment", content=data, headers={"Content-Type": media}, timeout=300)
        if resp.status_code != 200:
            out[path] = {"error": f"HTTP {resp.status_code}: {resp.text[:200]}"}
            continue
        body = resp.json()
        h, w = body["height"], body["width"]
        masks = np.stack([rle_decode(c, h, w) for c in body["masks"]["counts"]])
        out[path] = _path_row(clip, masks, body.get("region"), body.get("warnings", []), h, w)
        out[path]["flags"] = [body["flags"][clip.ed], body["flags"][clip.es]]
    report = asyncio.run(stream_frames(clip.rgb, url, fps=None, encoding="png", mask_encoding="gray8"))
    if report.close_code != 1000 or report.summary is None:
        out["stream"] = {"error": f"stream closed {report.close_code}: {report.error}"}
    else:
        masks = np.stack(report.masks)
        out["stream"] = _path_row(clip, masks, report.summary.get("region"), [], height, width)
    return out


def _path_row(clip, masks: np.ndarray, region: dict | None, warnings: list, h: int, w: int) -> dict:
    truth = clip.masks[:, :h, :w]  # an MP4 of odd sides loses its last row or column
    fan = clip.fan[:h, :w]
    return {
        "dice_ed": round(dice(masks[clip.ed], truth[clip.ed]), 4),
        "dice_es": round(dice(masks[clip.es], truth[clip.es]), 4),
        "region_iou": round(iou(answer_region(region, h, w), fan), 4),
        "source": region["source"] if region else None,
        "warnings": warnings,
    }


# -- the run -----------------------------------------------------------------------------------------
def run(args) -> dict:
    from echoseg.region import detect_region

    layouts = args.layouts.split(",") if args.layouts else list(LAYOUT_NAMES)
    finders = {"current": detect_region}
    if args.baseline_ref:
        finders = {"baseline": load_baseline(args.baseline_ref).detect_region, **finders}
    cap = TimingCap(budget_s=args.timing_budget_s, max_reps=30, min_reps=3, warmup=1)
    rows = []
    started = time.time()
    clips = {
        (name, seed): render_zoo_clip(name, seed, frames=args.frames)
        for name in layouts
        for seed in SEEDS[: args.clips]
    }
    log.info("rendered %d clips in %.1f s", len(clips), time.time() - started)
    with contextlib.ExitStack() as stack:
        server = None
        if not args.finder_only:
            extra = ("--backend", "torch", "--threads", str(args.threads))
            server = stack.enter_context(served(REPO / "models" / "default", extra_args=extra))
        for (name, seed), clip in clips.items():
            row = {"layout": name, "seed": seed, "size": list(clip.frames.shape[1:])}
            row["finder"] = finder_scores(clip, finders, cap)
            if server is not None:
                row["paths"] = path_scores(server.url, clip)
            rows.append(row)
            log.info("%s seed %d: %s", name, seed, _short(row))
    return {
        "layouts": layouts,
        "seeds": list(SEEDS[: args.clips]),
        "frames": args.frames,
        "rows": rows,
        "summary": summarize(rows, layouts, finders),
    }


def _short(row: dict) -> str:
    parts = [f"{k} IoU {v['frames8']:.3f}" for k, v in row["finder"].items()]
    for path, p in row.get("paths", {}).items():
        parts.append(f"{path} " + (p["error"] if "error" in p else f"{p['dice_ed']:.2f}/{p['dice_es']:.2f}"))
    return ", ".join(parts)


def summarize(rows: list[dict], layouts: list[str], finders: dict) -> dict:
    """Per layout: the worst clip's figures (a layout passes when every clip does)."""
    out = {}
    for name in layouts:
        mine = [r for r in rows if r["layout"] == name]
        s: dict = {}
        for finder in finders:
            for view in ("frames8", "frames2", "frames1"):
                s[f"{finder}_iou_{view}"] = min(r["finder"][finder][view] for r in mine)
            for view in ("frames2", "frames8"):
                s[f"{finder}_ms_{view}"] = float(np.median([r["finder"][finder][f"ms_{view}"] for r in mine]))
        for path in PATHS:
            got = [r["paths"][path] for r in mine if "paths" in r]
            if not got:
                continue
            if any("error" in g for g in got):
                s[path] = {"error": next(g["error"] for g in got if "error" in g)}
                continue
            s[path] = {
                "dice_min": min(min(g["dice_ed"], g["dice_es"]) for g in got),
                "region_iou_min": min(g["region_iou"] for g in got),
                "sources": sorted({str(g["source"]) for g in got}),
            }
            s[path]["pass"] = s[path]["dice_min"] >= DICE_TARGET
        s["finder_pass"] = s["current_iou_frames8"] >= IOU_TARGET
        out[name] = s
    return out


def markdown(doc: dict) -> str:
    summary = doc["summary"]
    finders = [f for f in ("baseline", "current") if any(f"{f}_iou_frames8" in s for s in summary.values())]
    head = ["layout"] + [f"fan IoU {f} (8 / 2 / 1 frames)" for f in finders]
    head += [f"{p} Dice min (region IoU)" for p in PATHS if any(p in s for s in summary.values())]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in summary.items():
        cells = [name]
        for f in finders:
            cells.append(" / ".join(f"{s[f'{f}_iou_{v}']:.3f}" for v in ("frames8", "frames2", "frames1")))
        for p in PATHS:
            if p not in s:
                continue
            if "error" in s[p]:
                cells.append("error")
                continue
            mark = "" if s[p]["pass"] else " ✗"
            cells.append(f"{s[p]['dice_min']:.3f} ({s[p]['region_iou_min']:.2f}){mark}")
        lines.append("| " + " | ".join(cells) + " |")
    ms = []
    for f in finders:
        w = np.median([s[f"{f}_ms_frames2"] for s in summary.values()])
        e = np.median([s[f"{f}_ms_frames8"] for s in summary.values()])
        ms.append(f"{f}: {w:.1f} ms on 2 frames, {e:.1f} ms on 8 frames")
    return (
        f"Scanner zoo, {len(doc['seeds'])} held-out clip(s) per layout (seeds {doc['seeds']}), "
        f"{doc['frames']} frames; "
        f"worst clip shown; ✗ = Dice below {DICE_TARGET}. Command: `{doc['command']}`\n\n"
        + "\n".join(lines)
        + "\n\nFinder latency (median over layouts): "
        + "; ".join(ms)
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layouts", default=None, help="comma-separated layout names (default: all)")
    p.add_argument("--clips", type=int, default=2, help=f"held-out clips per layout (at most {len(SEEDS)})")
    p.add_argument("--frames", type=int, default=16, help="frames per clip")
    p.add_argument(
        "--baseline-ref", default=None, help="git ref whose detect_region is scored beside today's"
    )
    p.add_argument("--finder-only", action="store_true", help="score the finder only (no server)")
    p.add_argument("--threads", type=int, default=1, help="the server's intra-op threads")
    p.add_argument("--timing-budget-s", type=float, default=0.3, help="finder timing per clip")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default="zoo")
    args = p.parse_args(argv)
    if not 1 <= args.clips <= len(SEEDS):
        p.error(f"--clips must be 1..{len(SEEDS)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.time()
    body = run(args)
    doc = document("zoo", argv, started, **body)
    path = write_result(doc, args.out, args.name)
    md = markdown(doc)
    path.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
