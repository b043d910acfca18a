"""Decode an uploaded clip (AVI/MP4, DICOM cine loop, NPY) from memory into grayscale frames.

Decoding is incremental: :func:`open_clip` reads the header (rate, spacing, declared frame count)
and :meth:`ClipSource.chunks` yields the frames a few at a time, so a request never holds more
than one chunk of decoded pixels. Every limit is enforced as frames arrive, and the first
violation stops the decoder: the frame count (``max_frames``), the size of *every* decoded
frame (not only the size the header announces; a video whose frames grow is refused at the
first large one), and the decoded bytes of the whole request (``max_decoded_mb``).

Numbers read from a file (DICOM CineRate, FrameTime, PixelSpacing, region deltas; a video's
rate) are checked to be finite and in range before anything computes with them; a bad one is a
422 ``invalid_metadata`` naming the field.
"""

from __future__ import annotations

import io
import logging
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from echoseg.gray import gray_from_rgb
from echoseg.region import DicomRegion, Region, StaleRegion, region_from_dicom
from echoseg.video import VideoError, VideoReader
from service.codecs.deflate import inflate_dicom
from service.core.errors import ServiceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipKind:
    """A clip format the service decodes: its name in the typed routes' paths (``/v1/segment/{kind}/...``),
    its media type, and what a client must send (for the OpenAPI document)."""

    name: str
    media_type: str
    description: str


CLIP_KINDS: dict[str, ClipKind] = {
    kind.name: kind
    for kind in (
        ClipKind("avi", "video/x-msvideo", "AVI, any codec FFmpeg decodes (e.g. MJPG as in EchoNet-Dynamic)"),
        ClipKind("mp4", "video/mp4", "MP4 (e.g. H.264)"),
        ClipKind(
            "dicom",
            "application/dicom",
            "DICOM, single- or multi-frame (cine loop), MONOCHROME or RGB/YBR, uncompressed or "
            "compressed (e.g. JPEG baseline)",
        ),
        ClipKind("npy", "application/x-npy", "NumPy .npy of uint8, (T, H, W) or (T, H, W, 3), C order"),
    )
}
MEDIA_TYPES = tuple(kind.media_type for kind in CLIP_KINDS.values())
ALIASES = {
    "video/avi": "video/x-msvideo",
    "video/msvideo": "video/x-msvideo",
    "application/npy": "application/x-npy",
}
CHUNK_FRAMES = 16  # frames decoded (and held) at a time
MAX_FPS = 1000.0
MAX_SPACING_MM = 100.0  # a pixel larger than 10 cm is not an echocardiogram,
MIN_SPACING_MM = 1e-4  # nor one smaller than 0.1 µm


@dataclass
class DecodedClip:
    frames: np.ndarray  # (T, H, W) uint8
    fps: float | None
    spacing: tuple[float, float] | None  # (row, col) mm per pixel, when the file says
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Limits:
    max_frames: int
    max_width: int
    max_height: int
    max_decoded_bytes: int | None = None  # decoded gray pixels of one request; None = no limit
    max_inflated_bytes: int | None = None  # a deflated DICOM data set, inflated; None = no limit


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
    """``(T, H, W)`` or ``(T, H, W, 3)`` uint8 -> ``(T, H, W)`` uint8 (BT.601 luma, colour flow as blood:
    :mod:`echoseg.gray`)."""
    if frames.ndim == 3:
        return frames
    return gray_from_rgb(frames)


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


def checked_number(value, name: str, low: float, high: float, *, low_inclusive: bool = False) -> float:
    """``value`` as a finite float in ``(low, high]`` (or ``[low, high]``); else 422 naming ``name``."""
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ServiceError("invalid_metadata", f"{name} is not a number: {str(value)[:40]!r}") from None
    above_low = x >= low if low_inclusive else x > low
    if not (math.isfinite(x) and above_low and x <= high):
        bracket = "[" if low_inclusive else "("
        raise ServiceError("invalid_metadata", f"{name} = {x!r} is outside {bracket}{low:g}, {high:g}]")
    return x


class FrameGuard:
    """Checks each decoded frame as it arrives: count, size, constant size, decoded-bytes budget."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.count = 0
        self.decoded_bytes = 0
        self.shape: tuple[int, int] | None = None

    def admit(self, height: int, width: int) -> None:
        """Call *before* converting a decoded frame to an array (so a huge frame costs nothing more)."""
        check_dimensions(height, width, self.limits)
        if self.shape is None:
            self.shape = (height, width)
        elif (height, width) != self.shape:
            raise ServiceError(
                "corrupt_input",
                f"the frame size changes within the video (frame {self.count}: {width}x{height}, "
                f"first: {self.shape[1]}x{self.shape[0]})",
            )
        self.count += 1
        check_frames(self.count, self.limits)
        self.decoded_bytes += height * width
        budget = self.limits.max_decoded_bytes
        if budget is not None and self.decoded_bytes > budget:
            raise ServiceError(
                "payload_too_large",
                f"the clip decodes to more than max_decoded_mb ({budget / 2**20:.0f} MiB) of pixels "
                f"(stopped at frame {self.count})",
            )


@dataclass
class ClipSource:
    """A clip opened for incremental decoding. ``chunks()`` may be iterated once."""

    fps: float | None
    spacing: tuple[float, float] | None
    declared_frames: int | None
    _frames: Callable[[FrameGuard], Iterator[np.ndarray]]  # yields (n, H, W) uint8 chunks
    guard: FrameGuard
    warnings: list[str] = field(default_factory=list)
    declared_region: Region | None = None  # DICOM SequenceOfUltrasoundRegions, checked against the matrix
    fallback_spacing: tuple[float, float] | None = None  # when the declared region proves stale
    stale_region: StaleRegion | None = None  # a DICOM region outside the matrix, to be rescaled
    stale_spacing: tuple[float, float] | None = None  # its PhysicalDelta (mm), before rescaling

    @property
    def height(self) -> int:
        return self.guard.shape[0] if self.guard.shape else 0

    @property
    def width(self) -> int:
        return self.guard.shape[1] if self.guard.shape else 0

    def chunks(self) -> Iterator[np.ndarray]:
        """``(n, H, W)`` uint8 chunks; raises ``ServiceError`` at the first violation."""
        produced = False
        for chunk in self._frames(self.guard):
            if chunk.shape[0]:
                produced = True
                yield chunk
        if not produced:
            raise ServiceError("corrupt_input", "the clip holds no decodable frames")
        declared = self.declared_frames
        if declared and self.guard.count < declared:
            self.warnings.append(
                f"truncated: decoded {self.guard.count} of the {declared} frames the file declares"
            )


def open_clip(data: bytes, media_type: str, limits: Limits) -> ClipSource:
    """Read a clip's header; raise ``ServiceError`` for anything wrong found there."""
    if not data:
        raise ServiceError("empty_body", "the request carried no clip")
    openers = {
        "video/x-msvideo": _open_video,
        "video/mp4": _open_video,
        "application/dicom": _open_dicom,
        "application/x-npy": _open_npy,
    }
    if media_type not in openers:
        raise ServiceError(
            "unsupported_media_type",
            f"unsupported clip type {media_type!r}; supported: {', '.join(MEDIA_TYPES)}",
        )
    return openers[media_type](data, limits)


def decode_clip(data: bytes, media_type: str, limits: Limits) -> DecodedClip:
    """The whole clip at once (tests, local files); the service iterates :func:`open_clip` instead."""
    source = open_clip(data, media_type, limits)
    frames = np.concatenate(list(source.chunks()))
    return DecodedClip(frames, source.fps, source.spacing, source.warnings)


# -- NPY ---------------------------------------------------------------------------------------
def _open_npy(data: bytes, limits: Limits) -> ClipSource:
    buf = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buf)
        read_header = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(buf)  # header only: no pixels read yet
    except (ValueError, EOFError) as e:
        raise ServiceError("corrupt_input", f"not a valid .npy file: {e}") from None
    if dtype != np.uint8 or len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] != 3):
        raise ServiceError(
            "corrupt_input", f"NPY clips must be (T, H, W) or (T, H, W, 3) uint8, got {shape} {dtype}"
        )
    if fortran:
        raise ServiceError("corrupt_input", "NPY clips must be C-ordered")
    check_frames(shape[0], limits)
    check_dimensions(shape[1], shape[2], limits)
    offset = buf.tell()
    if len(data) - offset != math.prod(shape):
        raise ServiceError(
            "corrupt_input",
            f"the .npy data is truncated or invalid: {len(data) - offset} bytes for shape {shape}",
        )
    array = np.frombuffer(data, np.uint8, offset=offset).reshape(shape)  # a view: no copy

    def frames(guard: FrameGuard) -> Iterator[np.ndarray]:
        for start in range(0, shape[0], CHUNK_FRAMES):
            part = array[start : start + CHUNK_FRAMES]
            for _ in part:
                guard.admit(shape[1], shape[2])
            yield np.ascontiguousarray(to_gray(part))

    return ClipSource(None, None, None, frames, FrameGuard(limits))


# -- video (PyAV) ------------------------------------------------------------------------------
def _open_video(data: bytes, limits: Limits) -> ClipSource:
    try:
        reader = VideoReader(data)
    except VideoError as e:
        raise ServiceError("corrupt_input", f"the video could not be decoded ({_why(e)})") from None
    try:
        check_dimensions(reader.height, reader.width, limits)
        fps = None
        if reader.fps:
            fps = checked_number(reader.fps, "the video's frame rate", 0.0, MAX_FPS)
        declared = reader.declared_frames
        if declared:
            check_frames(declared, limits)
    except BaseException:
        reader.close()
        raise

    def frames(guard: FrameGuard) -> Iterator[np.ndarray]:
        buffer: list[np.ndarray] = []
        try:
            for frame in reader.frames(before=guard.admit):  # admitted before the pixels are converted
                buffer.append(frame)
                if len(buffer) == CHUNK_FRAMES:
                    yield np.stack(buffer)
                    buffer = []
        except VideoError as e:
            where = f" after {guard.count} of {declared or '?'} frames" if guard.count else ""
            raise ServiceError(
                "corrupt_input", f"the video could not be decoded{where} ({_why(e)})"
            ) from None
        finally:
            reader.close()
        if buffer:
            yield np.stack(buffer)

    return ClipSource(fps, None, declared, frames, FrameGuard(limits))


def _why(error) -> str:
    """The decoder error's type only: its message may carry the client's file name."""
    return type(error.cause).__name__ if getattr(error, "cause", None) else "no video stream"


# -- DICOM (pydicom) ---------------------------------------------------------------------------
def dicom_spacing(ds, region: DicomRegion | None = None) -> tuple[float, float] | None:
    """(row, col) mm per pixel: the ultrasound region's PhysicalDelta (cm) first, then PixelSpacing.

    The region is the one ``region`` chose (else the first); a region refused as stale gives no
    spacing either.
    """
    regions = getattr(ds, "SequenceOfUltrasoundRegions", None)
    index = region.index if region is not None and region.index is not None else 0
    if regions and not (region is not None and index in region.refused):
        spacing = _region_spacing(regions[index])
        if spacing is not None:
            return spacing
    return _pixel_spacing(ds)


def _region_spacing(item) -> tuple[float, float] | None:
    """(row, col) mm per pixel of one ultrasound region item: its PhysicalDelta in cm, else None."""
    dx, dy = getattr(item, "PhysicalDeltaX", None), getattr(item, "PhysicalDeltaY", None)
    units_ok = (
        getattr(item, "PhysicalUnitsXDirection", 3) == 3 and getattr(item, "PhysicalUnitsYDirection", 3) == 3
    )
    if dx is not None and dy is not None and units_ok:  # unit code 3 = cm
        return _region_delta_mm(dy, "PhysicalDeltaY"), _region_delta_mm(dx, "PhysicalDeltaX")
    return None


def _stale_spacing(ds, stale: StaleRegion | None) -> tuple[float, float] | None:
    """The PhysicalDelta (mm) of a stale region, as the file states it (before any rescaling); None
    when it has none or a bad one (a stale region cannot fail the upload)."""
    if stale is None:
        return None
    try:
        return _region_spacing(ds.SequenceOfUltrasoundRegions[stale.index])
    except ServiceError:
        return None


def _pixel_spacing(ds) -> tuple[float, float] | None:
    spacing = getattr(ds, "PixelSpacing", None)
    if spacing is not None and not isinstance(spacing, str | bytes) and len(spacing) == 2:
        return (
            checked_number(spacing[0], "PixelSpacing[0]", MIN_SPACING_MM, MAX_SPACING_MM, low_inclusive=True),
            checked_number(spacing[1], "PixelSpacing[1]", MIN_SPACING_MM, MAX_SPACING_MM, low_inclusive=True),
        )
    if spacing is not None and spacing != "":
        raise ServiceError("invalid_metadata", "PixelSpacing must hold two numbers")
    return None


def _region_delta_mm(value, name: str) -> float:
    """A region's PhysicalDelta (cm, signed: the sign only gives the axis direction) -> mm per pixel."""
    mm = abs(checked_number(value, name, -MAX_SPACING_MM / 10, MAX_SPACING_MM / 10)) * 10.0
    if mm < MIN_SPACING_MM:
        raise ServiceError("invalid_metadata", f"{name} = {float(value)!r} cm is below {MIN_SPACING_MM:g} mm")
    return mm


def dicom_fps(ds) -> float | None:
    cine = getattr(ds, "CineRate", None)
    if cine is not None and cine != "":
        return checked_number(cine, "CineRate", 0.0, MAX_FPS)
    frame_time = getattr(ds, "FrameTime", None)
    if frame_time is not None and frame_time != "":
        ms = checked_number(frame_time, "FrameTime", 1000.0 / MAX_FPS, 3.6e6, low_inclusive=True)
        return 1000.0 / ms
    return None


def require_pydicom():
    """pydicom, or the client's error when this server was installed without it."""
    try:
        import pydicom
        import pydicom.pixels  # the pixel decoders, needed by every DICOM path
    except ImportError:
        raise ServiceError(
            "unsupported_media_type", "DICOM support is not installed on this server (the 'dicom' extra)"
        ) from None
    return pydicom


def _open_dicom(data: bytes, limits: Limits) -> ClipSource:
    pydicom = require_pydicom()
    from pydicom.pixels import iter_pixels

    data = inflate_dicom(data, limits.max_inflated_bytes or sys.maxsize)  # as is unless deflated
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        declared = int(getattr(ds, "NumberOfFrames", 1) or 1)
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(getattr(ds, "BitsStored", 8) or 8)
    except Exception as e:  # pydicom raises many types for broken files
        raise ServiceError(
            "corrupt_input", f"the DICOM file could not be decoded ({type(e).__name__})"
        ) from None
    if declared < 1:
        raise ServiceError("invalid_metadata", f"NumberOfFrames = {declared} must be at least 1")
    check_frames(declared, limits)
    check_dimensions(rows, cols, limits)
    region = region_from_dicom(ds, (rows, cols))
    fps, spacing = dicom_fps(ds), dicom_spacing(ds, region)

    def frames(guard: FrameGuard) -> Iterator[np.ndarray]:
        scale = None
        try:
            buffer: list[np.ndarray] = []
            for pixels in iter_pixels(ds):  # one (H, W) or (H, W, 3) frame at a time
                guard.admit(pixels.shape[0], pixels.shape[1])
                if pixels.dtype != np.uint8:  # scale higher bit depths to 8 bits
                    scale = scale or _dicom_scale(ds, bits)
                    pixels = np.clip(pixels.astype(np.float32) * scale, 0, 255).astype(np.uint8)
                buffer.append(to_gray(pixels[None])[0])  # (H, W[, 3]) -> (H, W)
                if len(buffer) == CHUNK_FRAMES:
                    yield np.stack(buffer)
                    buffer = []
        except ServiceError:
            raise
        except Exception as e:  # pydicom raises many types for broken pixel data
            raise ServiceError(
                "corrupt_input", f"the DICOM pixel data could not be decoded ({type(e).__name__})"
            ) from None
        if buffer:
            yield np.stack(buffer)

    return ClipSource(
        fps,
        spacing,
        declared,
        frames,
        FrameGuard(limits),
        warnings=list(region.warnings),
        declared_region=region.region,
        fallback_spacing=_pixel_spacing(ds),
        stale_region=region.stale,
        stale_spacing=_stale_spacing(ds, region.stale),
    )


def _dicom_scale(ds, bits: int) -> float:
    """Factor mapping a deeper-than-8-bit clip to 0..255: its largest value (one extra pass), else 2**bits."""
    from pydicom.pixels import iter_pixels

    top = 0.0
    for pixels in iter_pixels(ds):  # one frame at a time: memory stays one frame
        top = max(top, float(pixels.max()))
    top = top or float(2 ** min(bits, 32) - 1)
    return 255.0 / top
