"""Deflated DICOM (Deflated Explicit VR Little Endian) inflated in a stream, under a byte cap.

pydicom inflates a deflated data set whole, in one ``zlib.decompress``, before it reads a single
element: a file of 1.5 MB can hold gigabytes of zeros, and every check the decoder makes
(frame count, frame size, decoded bytes) would come after that allocation. So a deflated upload
is inflated here first, a slice at a time, and refused with ``payload_too_large`` as soon as its
inflated data set passes ``max_bytes``. What comes out is the same file in Explicit VR Little
Endian (the file meta rewritten, the data set inflated), which pydicom then reads like any other.
Files in any other transfer syntax pass through untouched (only their file meta is read).
"""

from __future__ import annotations

import io
import zlib

from service.core.errors import ServiceError

DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
IN_STEP = 64 * 1024  # compressed bytes fed at a time
OUT_STEP = 1024 * 1024  # most inflated bytes produced by one call (so the cap is checked every MiB)


def inflate_dicom(data: bytes, max_bytes: int) -> bytes:
    """``data`` unchanged unless it is a deflated DICOM file; then the same file inflated.

    Raises ``ServiceError``: ``payload_too_large`` when the inflated data set would pass
    ``max_bytes``, ``corrupt_input`` when the deflate stream is broken.
    """
    meta, start = _file_meta(data)
    if meta is None or str(getattr(meta, "TransferSyntaxUID", "")) != DEFLATED:
        return data
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    meta.TransferSyntaxUID = EXPLICIT_LITTLE
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    out.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)
    header = out.tell()
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    view = memoryview(data)[start:]
    try:
        for offset in range(0, len(view), IN_STEP):
            pending = view[offset : offset + IN_STEP]
            while pending:
                out.write(inflater.decompress(pending, OUT_STEP))
                pending = inflater.unconsumed_tail
                _check(out.tell() - header, max_bytes)
            if inflater.eof:
                break
        out.write(inflater.flush(OUT_STEP))
    except zlib.error:
        raise ServiceError("corrupt_input", "the deflated DICOM data set could not be inflated") from None
    _check(out.tell() - header, max_bytes)
    return out.getvalue()


def _check(inflated: int, max_bytes: int) -> None:
    if inflated > max_bytes:
        raise ServiceError(
            "payload_too_large",
            f"the deflated DICOM data set inflates to more than max_upload_mb ({max_bytes / 2**20:.0f} MiB)",
        )


def _file_meta(data: bytes):
    """``(file meta, offset of the data set)``, or ``(None, 0)`` without a readable file meta."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    fp = io.BytesIO(data)
    try:
        read_preamble(fp, True)
        meta = _read_file_meta_info(fp)  # pydicom's own reader of group 2 (it has no public one on bytes)
    except Exception:  # not DICOM, or a broken header: the decoder says so in its own words
        return None, 0
    return meta, fp.tell()
