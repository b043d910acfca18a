"""Echo video files in and out: AVI (MJPG, as EchoNet-Dynamic ships them) and MP4, through PyAV.

Echo clips are grayscale; colour files (EchoNet stores the gray image in three channels) are
reduced to their luma plane. Frames come back as ``(T, H, W) uint8`` with the clip's frame rate.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_FPS = 50.0

VideoSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO


class VideoError(ValueError):
    """A video that cannot be opened or decoded; the message names the file."""


def _describe(src: VideoSource) -> str:
    if isinstance(src, str | os.PathLike):
        return str(src)
    if isinstance(src, bytes | bytearray | memoryview):
        return f"<{len(src)} bytes in memory>"
    return str(getattr(src, "name", "<file object>"))


def _open_source(src: VideoSource):
    if isinstance(src, str | os.PathLike):
        path = Path(src)
        if not path.is_file():
            raise VideoError(f"video file not found: {path}")
        return str(path)
    if isinstance(src, bytes | bytearray | memoryview):
        return io.BytesIO(bytes(src))
    if hasattr(src, "read"):
        return src
    raise TypeError(f"video source must be a path, bytes or a binary file object, got {type(src).__name__}")


def _frame_rate(stream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and float(rate) > 0:
            return float(rate)
    return DEFAULT_FPS


def read_video(src: VideoSource) -> tuple[np.ndarray, float]:
    """Decode a whole clip: ``-> (frames (T, H, W) uint8, fps)``.

    ``src`` is a path, the file's bytes, or a binary file object. Raises :class:`VideoError`
    naming the file when it cannot be opened, has no video stream, or fails to decode.
    """
    import av

    name = _describe(src)
    opened = _open_source(src)
    frames: list[np.ndarray] = []
    try:
        with av.open(opened, mode="r") as container:
            if not container.streams.video:
                raise VideoError(f"{name}: no video stream")
            stream = container.streams.video[0]
            fps = _frame_rate(stream)
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="gray"))  # (H, W) uint8, the luma plane
    except VideoError:
        raise
    except (av.error.FFmpegError, ValueError, OSError, IndexError) as exc:
        raise VideoError(f"{name}: cannot decode video ({exc})") from exc
    if not frames:
        raise VideoError(f"{name}: no decodable frames")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise VideoError(f"{name}: frame size changes within the clip {sorted(shapes)}")
    return np.stack(frames), fps  # (T, H, W)


def write_avi(
    path: str | os.PathLike, frames: np.ndarray, fps: float = DEFAULT_FPS, quality: int = 2
) -> Path:
    """Write ``(T, H, W) uint8`` grayscale frames as an MJPG AVI (EchoNet-Dynamic's format).

    ``quality`` is the JPEG quantiser scale (2 = near lossless, 31 = worst).
    """
    import av

    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W) uint8, got shape {frames.shape} dtype {frames.dtype}")
    if frames.shape[0] == 0:
        raise ValueError("cannot write a video without frames")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from fractions import Fraction

    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w", format="avi") as container:
        stream = container.add_stream("mjpeg", rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuvj444p"
        stream.codec_context.qmin = quality
        stream.codec_context.qmax = quality
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="gray")
            container.mux(stream.encode(frame.reformat(format="yuvj444p")))
        container.mux(stream.encode())
    return path
