"""REST: time and frames/s of whole clips through ``POST /v1/segment`` of a real ``echoseg serve``.

    .venv/bin/python -m benchmarks.rest            # 112x112x120 AVI and a 256x256 DICOM cine

Each clip is posted ``--reps`` times (after one warm-up post); the client measures the whole
request, the server's ``timings_ms`` break it into decode, preprocess, queue, inference and
postprocess, and its ``Server-Timing`` header adds the JSON encoding of the response. What is
left of the client's time is transport (upload, HTTP, download and JSON parsing on the client).
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import (
    document,
    model_for,
    moving_disc_clip,
    resolve_form,
    served,
    summarize_ms,
    write_result,
)
from echoseg.video import write_avi

log = logging.getLogger(__name__)

STAGES = ("decode", "preprocess", "queue", "inference", "postprocess", "encode")


def avi_bytes(frames: np.ndarray, folder: Path, fps: float = 50.0) -> bytes:
    path = write_avi(folder / "clip.avi", frames, fps=fps)
    return path.read_bytes()


def dicom_bytes(frames: np.ndarray, frame_time_ms: float = 20.0) -> bytes:
    """``(T, H, W)`` uint8 -> a multi-frame ultrasound DICOM (uncompressed, MONOCHROME2) made with pydicom;
    ``(T, H, W, 3)`` -> the same in RGB (what a scanner writes for a colour-Doppler or tinted clip)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # Ultrasound Multi-frame Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    t, h, w = frames.shape[:3]
    ds.NumberOfFrames, ds.Rows, ds.Columns = t, h, w
    if frames.ndim == 4:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    else:
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.FrameTime = frame_time_ms
    region = Dataset()
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
    region.PhysicalDeltaX = region.PhysicalDeltaY = 0.03
    ds.SequenceOfUltrasoundRegions = Sequence([region])
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def server_timing(header: str) -> dict[str, float]:
    """``Server-Timing: encode;dur=1.2, x;dur=3`` -> ``{"encode": 1.2, "x": 3.0}``."""
    out = {}
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "dur" and name:
                out[name.strip()] = float(value)
    return out


def post_clip(url: str, data: bytes, media_type: str, reps: int) -> dict:
    import httpx

    headers = {"Content-Type": media_type}
    timings: dict[str, list[float]] = {k: [] for k in (*STAGES, "total_server", "client", "transport")}
    frames = 0
    with httpx.Client(timeout=300) as client:
        for rep in range(reps + 1):
            t0 = time.perf_counter()
            resp = client.post(f"{url}/v1/segment", content=data, headers=headers)
            body = resp.json()
            wall = (time.perf_counter() - t0) * 1e3
            if resp.status_code != 200:
                raise RuntimeError(f"POST /v1/segment answered {resp.status_code}: {body}")
            if rep == 0:  # warm-up
                continue
            frames = body["frames"]
            t = body["timings_ms"]
            encode = server_timing(resp.headers.get("server-timing", "")).get("encode")
            for k in STAGES[:-1]:
                timings[k].append(t[k])
            if encode is not None:
                timings["encode"].append(encode)
            timings["total_server"].append(t["total"])
            timings["client"].append(wall)
            timings["transport"].append(wall - t["total"] - (encode or 0.0))
    stages = {k: summarize_ms(v) for k, v in timings.items()}
    p50 = stages["client"]["p50"]
    return dict(
        frames=frames,
        bytes=len(data),
        reps=reps,
        timings_ms=stages,
        frames_per_s=round(frames * 1e3 / p50, 1) if p50 else None,
        ms_per_frame=round(p50 / frames, 3) if p50 and frames else None,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks.rest", description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="lite")
    p.add_argument("--form", choices=("auto", "matmul", "conv"), default="auto", help="auto: conv on a CPU")
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--dicom-size", type=int, default=256)
    p.add_argument("--env", nargs="*", default=[], help="extra server settings, ECHOSEG_X=value")
    p.add_argument("--out-dir", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    env = {"ECHOSEG_LOG_LEVEL": "WARNING", **dict(kv.split("=", 1) for kv in args.env)}
    clips = {}
    with tempfile.TemporaryDirectory(prefix="echoseg-bench-") as tmp:
        folder = Path(tmp)
        clips["avi 112x112"] = (avi_bytes(moving_disc_clip(args.frames, 112, 112), folder), "video/x-msvideo")
        try:
            size = args.dicom_size
            clips[f"dicom {size}x{size}"] = (
                dicom_bytes(moving_disc_clip(args.frames, size, size)),
                "application/dicom",
            )
        except ImportError:
            log.warning("pydicom is not installed: the DICOM clip is skipped")
        model = model_for(args.preset, folder, "auto", args.form, "cpu")
        rows = []
        with served(model, env) as server:
            for name, (data, media) in clips.items():
                row = post_clip(server.url, data, media, args.reps)
                rows.append(dict(clip=name, media_type=media, **row))
                t = row["timings_ms"]
                print(
                    f"rest {name:16s} {row['frames']} frames: {t['client']['p50']:.0f} ms "
                    f"({row['frames_per_s']} frames/s); " + " ".join(f"{k} {t[k]['p50']}" for k in STAGES),
                    flush=True,
                )
    doc = document(
        "rest",
        argv,
        started,
        model_source=f"untrained {args.preset} (seed 0), {resolve_form(args.form)} form",
        server_settings=env,
        clips=rows,
    )
    print(f"wrote {write_result(doc, args.out_dir)}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sys.exit(main())
