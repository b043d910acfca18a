"""Echo video files in and out: AVI (MJPG, as EchoNet-Dynamic ships them) and MP4, through PyAV.

The one decoder of the product: training, evaluation and the service's uploads all read video
through :class:`VideoReader` (frame by frame, with the same frame-rate rule), and
:func:`read_video` is the whole-clip form of it. Echo clips are grayscale; colour files
(EchoNet stores the gray image in three channels) are reduced to gray (their luma plane; colour-
flow pixels as blood, :mod:`echoseg.gray`). Frames come back as ``(H, W) uint8`` (``(T, H, W)``
for a whole clip) with the clip's frame rate.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import numpy as np

from echoseg.gray import blank_flow, gray_from_rgb

logger = logging.getLogger(__name__)

DEFAULT_FPS = 50.0

VideoSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO


class VideoError(ValueError):
    """A video that cannot be opened or decoded; the message names the file, ``cause`` is PyAV's error."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


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


def frame_rate(stream) -> float | None:
    """The clip's frame rate: the stream's average rate, else its guessed or base rate; None if none.

    The one rule for every reader of video (training, evaluation, the service).
    """
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and float(rate) > 0:
            return float(rate)
    return None


_PLANAR_YUV = frozenset(
    ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv440p", "yuvj440p")
)


def _plane(plane) -> np.ndarray:
    """One 8-bit plane of a decoded frame as ``(height, width)`` (its line padding cut)."""
    rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, : plane.width]


def frame_to_gray(frame) -> np.ndarray:
    """A decoded PyAV frame -> ``(H, W)`` uint8 gray (:mod:`echoseg.gray`: luma, colour flow as blood).

    The gray image is the decoder's full-range luma, as ever; for 8-bit planar YUV (what H.264, MJPG
    and most codecs decode to) the colour-flow test reads the chroma planes as they are, and a frame
    without colour (gray, or gray stored in three channels) costs one look at them. Other colour
    formats are converted to RGB first.
    """
    name = frame.format.name
    if name in _PLANAR_YUV:
        full = name.startswith("yuvj") or int(getattr(frame, "color_range", 0) or 0) == 2
        _, cb, cr = (_plane(p) for p in frame.planes[:3])
        return blank_flow(frame.to_ndarray(format="gray"), cb, cr, full_range=full)
    if len(frame.format.components) >= 3 and not name.startswith("gray"):
        return gray_from_rgb(frame.to_ndarray(format="rgb24"))
    return frame.to_ndarray(format="gray")


class VideoReader:
    """A video opened for decoding one frame at a time (PyAV): its header now, its frames on demand.

    ``fps`` (:func:`frame_rate`), ``declared_frames`` (the container's count, None when it has
    none), ``height``/``width`` (the coded size the header announces; frames may differ, which
    the ``before`` hook of :meth:`frames` can check before any pixels are converted). Use it as a
    context manager or call :meth:`close`. Raises :class:`VideoError` naming the source.
    """

    def __init__(self, src: VideoSource) -> None:
        import av

        self.name = _describe(src)
        try:
            self.container = av.open(_open_source(src), mode="r")
        except VideoError:
            raise
        except (av.error.FFmpegError, ValueError, OSError, IndexError) as exc:
            raise VideoError(f"{self.name}: cannot decode video ({exc})", cause=exc) from exc
        if not self.container.streams.video:
            self.container.close()
            raise VideoError(f"{self.name}: no video stream")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.fps = frame_rate(self.stream)
        self.declared_frames = int(self.stream.frames or 0) or None
        self.height = int(self.stream.codec_context.height)
        self.width = int(self.stream.codec_context.width)
        self.decoded = 0

    def frames(self, before: Callable[[int, int], None] | None = None) -> Iterator[np.ndarray]:
        """``(H, W) uint8`` gray frames (:func:`frame_to_gray`), in order; ``before(height, width)`` is
        called for each decoded frame before its pixels are converted (it may raise to stop decoding)."""
        import av

        try:
            for frame in self.container.decode(self.stream):
                if before is not None:
                    before(frame.height, frame.width)
                self.decoded += 1
                yield frame_to_gray(frame)
        except (av.error.FFmpegError, ValueError, OSError, IndexError) as exc:
            raise VideoError(
                f"{self.name}: cannot decode video after {self.decoded} frames ({exc})", cause=exc
            ) from exc

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_video(src: VideoSource) -> tuple[np.ndarray, float]:
    """Decode a whole clip: ``-> (frames (T, H, W) uint8, fps)`` (fps ``DEFAULT_FPS`` when unknown).

    ``src`` is a path, the file's bytes, or a binary file object. Raises :class:`VideoError`
    naming the file when it cannot be opened, has no video stream, or fails to decode.
    """
    with VideoReader(src) as reader:
        frames = list(reader.frames())
        fps = reader.fps or DEFAULT_FPS
        name = reader.name
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
