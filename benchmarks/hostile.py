"""Hostile inputs and process probes shared by the fault suite (tests/faults) and the benchmarks.

Clips a red-team run used against ``echoseg serve``: an H.264 video whose frames grow, long
high-resolution videos that compress to a few KB, RLE DICOM cine loops, DICOM files with bad
numbers, deflated DICOM that inflates a thousandfold, a truncated AVI; raw-socket clients that
trickle or stall a body; and the memory of a server process read from /proc (current RSS, peak
RSS, and a reset of the peak).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


# -- clips -------------------------------------------------------------------------------------
def h264_segment(height: int, width: int, frames: int, fmt: str = "mpegts", seed: int = 0) -> bytes:
    """An H.264 stream of a slowly moving disc (compresses to a few hundred bytes a frame)."""
    import av

    yy, xx = np.mgrid[:height, :width]
    buf = io.BytesIO()
    opts = {"movflags": "frag_keyframe+empty_moov"} if fmt == "mp4" else {}
    with av.open(buf, "w", format=fmt, options=opts) as container:
        stream = container.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(frames):
            r = min(height, width) * (0.25 + 0.08 * np.sin(2 * np.pi * t / 25))
            disc = (yy - height / 2) ** 2 + (xx - width / 2) ** 2 < r * r
            gray = (30 + 170 * disc).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(gray, format="gray").reformat(format="yuv420p")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def growing_video(
    small: int = 64, large: int = 4000, small_frames: int = 200, large_frames: int = 4
) -> bytes:
    """H.264 whose frames are ``small``² and then ``large``² (two MPEG-TS segments back to back).

    The small part lasts longer than FFmpeg's stream probe (5 s at 25 fps), so the codec
    context, which is all a header check sees, announces ``small``².
    """
    return h264_segment(small, small, small_frames) + h264_segment(large, large, large_frames)


def long_video(frames: int, size: int) -> bytes:
    """A long ``size``² H.264 MP4 (fragmented, so it is written in one pass): tiny on the wire."""
    return h264_segment(size, size, frames, fmt="mp4")


def disc_frames(frames: int, height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    out = np.empty((frames, height, width), np.uint8)
    for t in range(frames):
        r = min(height, width) * (0.25 + 0.08 * np.sin(2 * np.pi * t / 25))
        out[t] = 30 + 170 * ((yy - height / 2) ** 2 + (xx - width / 2) ** 2 < r * r)
    return out


def dicom_clip(
    frames: np.ndarray, rle: bool = False, fields: dict | None = None, region: dict | None = None
) -> bytes:
    """``(T, H, W)`` uint8 -> an ultrasound multi-frame DICOM; ``fields``/``region`` set raw values.

    Values in ``fields`` (e.g. ``{"FrameTime": "NaN"}``) are written as given, unvalidated, the
    way a broken or hostile device would write them: a digit placeholder of the same length is
    written first and then replaced by the raw text in the file's bytes.
    """
    from pydicom import config
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    t, h, w = frames.shape
    ds.NumberOfFrames = t
    ds.Rows, ds.Columns = h, w
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.FrameTime = 20.0
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    raw: dict[bytes, bytes] = {}

    def put(target, key: str, value) -> None:
        if not isinstance(value, str):
            setattr(target, key, value)
            return
        text = value.ljust(10)  # DS/IS/FD as text, even length
        placeholder = str(len(raw) + 1) * len(text)
        raw[placeholder.encode()] = text.encode()
        setattr(target, key, placeholder)

    old = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE
    try:
        for key, value in (fields or {}).items():
            put(ds, key, value)
        if region is not None:
            r = Dataset()
            r.PhysicalUnitsXDirection = r.PhysicalUnitsYDirection = 3
            for key, value in region.items():
                put(r, key, value)
            ds.SequenceOfUltrasoundRegions = Sequence([r])
        if rle:
            ds.compress(RLELossless)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
    finally:
        config.settings.writing_validation_mode = old
    data = buf.getvalue()
    for placeholder, text in raw.items():
        assert data.count(placeholder) == 1, "placeholder collision"
        data = data.replace(placeholder, text)
    return data


def deflate_bomb(frames: int, size: int, fields: dict | None = None) -> bytes:
    """A Deflated Explicit VR Little Endian multi-frame DICOM of ``frames`` black ``size``² frames.

    Its data set inflates to ``frames * size**2`` bytes and deflates about a thousandfold; it is
    compressed a slice at a time, so building it holds only the compressed bytes. ``fields`` are
    set on the data set as given (e.g. patient values).
    """

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.NumberOfFrames, ds.Rows, ds.Columns = "US", frames, size, size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.FrameTime, ds.PixelSpacing = 20.0, [0.3, 0.3]
    for key, value in (fields or {}).items():
        setattr(ds, key, value)
    head = DicomBytesIO()
    head.is_little_endian, head.is_implicit_VR = True, False
    write_dataset(head, ds)
    pixels = frames * size * size
    head.write(b"\xe0\x7f\x10\x00OB\x00\x00" + pixels.to_bytes(4, "little"))  # (7FE0,0010) OB
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = [deflater.compress(head.getvalue())]
    zeros = bytes(min(pixels, 16 * 2**20))
    for start in range(0, pixels, len(zeros)):
        body.append(deflater.compress(zeros[: pixels - start]))
    body.append(deflater.flush())
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    out.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)
    return out.getvalue() + b"".join(body)


def truncated_avi(frames: int = 30, keep: float = 0.34) -> tuple[bytes, int]:
    """An MJPEG AVI cut after ``keep`` of its bytes; returns (bytes, frames declared)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="avi") as container:
        stream = container.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        for f in disc_frames(frames, 48, 64):
            frame = av.VideoFrame.from_ndarray(f, format="gray").reformat(format="yuvj420p")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = buf.getvalue()
    return data[: int(len(data) * keep)], frames


# -- raw clients -------------------------------------------------------------------------------
def raw_request_head(
    port: int, path: str, content_length: int | None, media: str = "application/x-npy"
) -> str:
    length = f"Content-Length: {content_length}\r\n" if content_length is not None else ""
    chunked = "" if content_length is not None else "Transfer-Encoding: chunked\r\n"
    return f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {media}\r\n{length}{chunked}\r\n"


def open_partial_upload(port: int, declared: int, sent: bytes) -> socket.socket:
    """A connection that promised ``declared`` body bytes and sent only ``sent`` (then stalls)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(raw_request_head(port, "/v1/segment", declared).encode() + sent)
    return s


def read_status(s: socket.socket, timeout_s: float) -> int | None:
    """The status code of the response on ``s``, or None if none came within ``timeout_s``."""
    s.settimeout(timeout_s)
    data = b""
    with contextlib.suppress(OSError):
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    if not data.startswith(b"HTTP/1.1 "):
        return None
    return int(data.split(b" ", 2)[1])


# -- process memory ----------------------------------------------------------------------------
def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmRSS") / 1024


def peak_rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmHWM") / 1024


def reset_peak(pid: int) -> bool:
    """Reset the process's peak RSS to its current RSS (Linux: ``echo 5 > /proc/pid/clear_refs``)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# -- a served process --------------------------------------------------------------------------
@dataclass
class Served:
    url: str
    port: int
    process: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> float:
        """SIGTERM, then the seconds until the process exited (killed after 60 s)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        return time.monotonic() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_process(
    model: Path, log_path: Path, env: dict[str, str] | None = None, ready_timeout_s: float = 180.0
) -> Iterator[Served]:
    """``echoseg serve`` on a free 127.0.0.1 port with its output in ``log_path``; killed on exit."""
    import httpx

    port = free_port()
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "ECHOSEG_THREADS": "1", **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full_env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "echoseg.cli"]
    if "ECHOSEG_LOG_LEVEL" in full_env:
        cmd += ["--log-level", full_env["ECHOSEG_LOG_LEVEL"]]
    cmd += ["serve", "--model", str(model), "--port", str(port)]
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, env=full_env, stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not become ready:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield Served(url, port, proc, log_path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
