"""Decode an uploaded clip (AVI/MP4, DICOM cine loop, NPY) from memory into grayscale frames.

The frame limit is enforced while decoding: a clip with more frames than allowed is refused
as soon as the first extra frame (or the header that announces it) is seen.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np

from service.core.errors import ServiceError

log = logging.getLogger(__name__)

MEDIA_TYPES = ("video/x-msvideo", "video/mp4", "application/dicom", "application/x-npy")
ALIASES = {
    "video/avi": "video/x-msvideo",
    "video/msvideo": "video/x-msvideo",
    "application/npy": "application/x-npy",
}


@dataclass
class DecodedClip:
    frames: np.ndarray  # (T, H, W) uint8
    fps: float | None
    spacing: tuple[float, float] | None  # (row, col) mm per pixel, when the file says


@dataclass(frozen=True)
class Limits:
    max_frames: int
    max_width: int
    max_height: int


def normalize_media_type(content_type: str | None) -> str:
    """``'video/mp4; codecs=...'`` -> ``'video/mp4'``; aliases mapped to the canonical names."""
    media = (content_type or "").split(";")[0].strip().lower()
    return ALIASES.get(media, media)


def sniff_media_type(data: bytes) -> str | None:
    """The clip format from its magic bytes, for multipart parts sent as application/octet-stream."""
    if data[:6] == b"\x93NUMPY":
        return "application/x-npy"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "video/x-msvideo"
    if data[4:8] == b"ftyp":
        return "video/mp4"
    if data[128:132] == b"DICM":
        return "application/dicom"
    return None


def to_gray(frames: np.ndarray) -> np.ndarray:
    """``(T, H, W)`` or ``(T, H, W, 3)`` uint8 -> ``(T, H, W)`` uint8 (ITU-R BT.601 luma)."""
    if frames.ndim == 3:
        return frames
    luma = frames[..., 0] * 0.299 + frames[..., 1] * 0.587 + frames[..., 2] * 0.114
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8)


def check_dimensions(height: int, width: int, limits: Limits) -> None:
    if height < 1 or width < 1:
        raise ServiceError("corrupt_input", f"frames of {width}x{height} pixels")
    if width > limits.max_width or height > limits.max_height:
        raise ServiceError(
            "dimensions_too_large",
            f"frames of {width}x{height} exceed the limit {limits.max_width}x{limits.max_height}",
        )


def check_frames(n: int, limits: Limits) -> None:
    if n > limits.max_frames:
        raise ServiceError("too_many_frames", f"the clip has more than max_frames={limits.max_frames} frames")


def decode_clip(data: bytes, media_type: str, limits: Limits) -> DecodedClip:
    """Dispatch on the (normalised) media type; raise ``ServiceError`` for anything wrong."""
    if not data:
        raise ServiceError("empty_body", "the request carried no clip")
    decoders = {
        "video/x-msvideo": decode_video,
        "video/mp4": decode_video,
        "application/dicom": decode_dicom,
        "application/x-npy": decode_npy,
    }
    if media_type not in decoders:
        raise ServiceError(
            "unsupported_media_type",
            f"unsupported clip type {media_type!r}; supported: {', '.join(MEDIA_TYPES)}",
        )
    clip = decoders[media_type](data, limits)
    if clip.frames.shape[0] == 0:
        raise ServiceError("corrupt_input", "the clip holds no frames")
    return clip


def decode_npy(data: bytes, limits: Limits) -> DecodedClip:
    buf = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buf)
        read_header = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(buf)  # header only: no pixels read yet
    except (ValueError, EOFError) as e:
        raise ServiceError("corrupt_input", f"not a valid .npy file: {e}") from None
    if dtype != np.uint8 or len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] != 3):
        raise ServiceError(
            "corrupt_input", f"NPY clips must be (T, H, W) or (T, H, W, 3) uint8, got {shape} {dtype}"
        )
    check_frames(shape[0], limits)
    check_dimensions(shape[1], shape[2], limits)
    try:
        frames = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as e:
        raise ServiceError("corrupt_input", f"the .npy data is truncated or invalid: {e}") from None
    return DecodedClip(to_gray(np.ascontiguousarray(frames)), None, None)


def decode_video(data: bytes, limits: Limits) -> DecodedClip:
    import av

    frames: list[np.ndarray] = []
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise ServiceError("corrupt_input", "the container has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            check_dimensions(stream.codec_context.height, stream.codec_context.width, limits)
            fps = float(stream.average_rate) if stream.average_rate else None
            for frame in container.decode(stream):
                check_frames(len(frames) + 1, limits)
                frames.append(frame.to_ndarray(format="gray"))
    except ServiceError:
        raise
    except (av.FFmpegError, ValueError, IndexError) as e:
        raise ServiceError("corrupt_input", f"the video could not be decoded ({type(e).__name__})") from None
    if not frames:
        raise ServiceError("corrupt_input", "the video holds no decodable frames")
    if len({f.shape for f in frames}) != 1:
        raise ServiceError("corrupt_input", "the frame size changes within the video")
    return DecodedClip(np.stack(frames), fps, None)


def dicom_spacing(ds) -> tuple[float, float] | None:
    """(row, col) mm per pixel: the ultrasound region's PhysicalDelta (cm) first, then PixelSpacing."""
    regions = getattr(ds, "SequenceOfUltrasoundRegions", None)
    if regions:
        r = regions[0]
        dx, dy = getattr(r, "PhysicalDeltaX", None), getattr(r, "PhysicalDeltaY", None)
        units_ok = (
            getattr(r, "PhysicalUnitsXDirection", 3) == 3 and getattr(r, "PhysicalUnitsYDirection", 3) == 3
        )
        if dx and dy and units_ok:  # unit code 3 = cm
            return abs(float(dy)) * 10.0, abs(float(dx)) * 10.0
    spacing = getattr(ds, "PixelSpacing", None)
    if spacing and len(spacing) == 2:
        return float(spacing[0]), float(spacing[1])
    return None


def dicom_fps(ds) -> float | None:
    if getattr(ds, "CineRate", None):
        return float(ds.CineRate)
    if getattr(ds, "FrameTime", None):
        return 1000.0 / float(ds.FrameTime)
    return None


def decode_dicom(data: bytes, limits: Limits) -> DecodedClip:
    try:
        import pydicom
    except ImportError:
        raise ServiceError(
            "unsupported_media_type", "DICOM support is not installed on this server (the 'dicom' extra)"
        ) from None
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        check_frames(int(getattr(ds, "NumberOfFrames", 1) or 1), limits)
        check_dimensions(int(ds.Rows), int(ds.Columns), limits)
        pixels = ds.pixel_array
    except ServiceError:
        raise
    except Exception as e:  # pydicom raises many types for broken files
        raise ServiceError(
            "corrupt_input", f"the DICOM file could not be decoded ({type(e).__name__})"
        ) from None
    frames = _dicom_frames(ds, np.asarray(pixels))
    return DecodedClip(frames, dicom_fps(ds), dicom_spacing(ds))


def _dicom_frames(ds, pixels: np.ndarray) -> np.ndarray:
    samples = int(getattr(ds, "SamplesPerPixel", 1))
    if samples == 1 and pixels.ndim == 2:
        pixels = pixels[None]  # (H, W) -> (1, H, W)
    elif samples == 3 and pixels.ndim == 3:
        pixels = pixels[None]  # (H, W, 3) -> (1, H, W, 3)
    if pixels.dtype != np.uint8:  # scale higher bit depths to 8 bits
        top = float(pixels.max()) or 1.0
        pixels = np.clip(pixels.astype(np.float32) * (255.0 / top), 0, 255).astype(np.uint8)
    return to_gray(pixels)
