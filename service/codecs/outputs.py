"""Alternative REST outputs: masks as NPZ, and an overlay video (H.264 MP4, or MPEG-4 Part 2)."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import Iterable, Iterator

import numpy as np

from service.codecs.clip import open_clip

log = logging.getLogger(__name__)


def masks_npz(mask_chunks: Iterable[np.ndarray], shape: tuple[int, int, int], areas, summary: dict) -> bytes:
    """NPZ with ``masks`` (T, H, W) uint8 {0,1}, ``area`` (T,) float64 and ``summary`` (JSON string).

    ``mask_chunks`` yields ``(n, H, W)`` pieces of the masks in order; they are written into the
    archive as they come, so the whole mask stack never exists in memory.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("masks.npy", "w", force_zip64=True) as f:
            header = {"descr": "|u1", "fortran_order": False, "shape": tuple(shape)}
            np.lib.format.write_array_header_2_0(f, header)
            for chunk in mask_chunks:
                f.write(np.ascontiguousarray(chunk, dtype=np.uint8).tobytes())
        for name, array in (("area", np.asarray(areas)), ("summary", np.array(json.dumps(summary)))):
            with zf.open(f"{name}.npy", "w") as f:
                np.lib.format.write_array(f, array, allow_pickle=False)
    return buf.getvalue()


def npz_answer(answer) -> bytes:
    """``output=npz`` of a ``service.api.outputs.Answer``: the masks, the areas and the JSON answer
    without masks as ``summary``."""
    r = answer.result
    return masks_npz(r.mask_chunks(), (r.frames, r.height, r.width), r.areas, answer.json(masks=False))


def mp4_answer(answer) -> bytes:
    """``output=mp4`` of a ``service.api.outputs.Answer``: the upload decoded again, chunk by chunk,
    under the masks."""
    frames = open_clip(answer.data, answer.media_type, answer.limits).chunks()
    return overlay_mp4(frames, answer.result.mask_chunks(), answer.result.fps)


def video_encoder() -> str:
    """The best MP4 video encoder this PyAV build ships: libx264, else the native mpeg4."""
    import av

    for name in ("libx264", "h264", "mpeg4"):
        if name in av.codecs_available:
            try:
                av.CodecContext.create(name, "w")
                return name
            except Exception:  # listed but not usable (e.g. a hardware encoder without hardware)
                continue
    raise RuntimeError("this PyAV build has no MP4 video encoder")


def overlay_frames(frames: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Gray frames with the LV cavity tinted red and its outline drawn: ``(T, H, W, 3)`` uint8."""
    rgb = np.repeat(frames[..., None], 3, axis=-1).astype(np.float32)  # (T, H, W) -> (T, H, W, 3)
    m = masks.astype(bool)
    rgb[m] = rgb[m] * 0.6 + np.array([255.0, 40.0, 40.0]) * 0.4
    inner = m.copy()
    inner[:, 1:, :] &= m[:, :-1, :]
    inner[:, :-1, :] &= m[:, 1:, :]
    inner[:, :, 1:] &= m[:, :, :-1]
    inner[:, :, :-1] &= m[:, :, 1:]
    rgb[m & ~inner] = (255.0, 220.0, 0.0)
    return rgb.astype(np.uint8)


def overlay_mp4(
    frame_chunks: Iterable[np.ndarray], mask_chunks: Iterable[np.ndarray], fps: float | None
) -> bytes:
    """Encode the overlay as MP4 in memory, chunk by chunk (dimensions padded to even sizes for yuv420p).

    ``frame_chunks`` and ``mask_chunks`` yield matching ``(n, H, W)`` pieces of the clip and its masks.
    """
    import av

    buf = io.BytesIO()
    rate = max(1, round(fps or 30))
    with av.open(buf, mode="w", format="mp4") as out:
        stream = None
        for frames, masks in zip(_rechunk(frame_chunks), _rechunk(mask_chunks), strict=True):
            rgb = overlay_frames(frames, masks)
            h, w = rgb.shape[1:3]
            ph, pw = h + h % 2, w + w % 2
            if (ph, pw) != (h, w):
                rgb = np.pad(rgb, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)), mode="edge")
            if stream is None:
                stream = out.add_stream(video_encoder(), rate=rate)
                stream.width, stream.height, stream.pix_fmt = pw, ph, "yuv420p"
            for image in rgb:
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    out.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                out.mux(packet)
    return buf.getvalue()


def _rechunk(chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Frame by frame as ``(1, H, W)``, so two differently chunked sequences line up."""
    for chunk in chunks:
        for item in chunk:
            yield item[None]
