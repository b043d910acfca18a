"""Build small synthetic ultrasound DICOMs in memory (pydicom), for decoder and REST tests.

No real patient: the identifiers are made up (``SYNTHETIC^ECHO``), the pixels are the caller's.
The objects carry what an Ultrasound Multi-frame Image needs to be referenced by a derived
object (patient, study, series and instance identification), optionally a full ultrasound
region (``delta_cm``), and optionally JPEG-baseline YBR_FULL_422 colour pixel data (``jpeg``).
"""

from __future__ import annotations

import io

import numpy as np

US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"  # Ultrasound Multi-frame Image Storage
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"  # Ultrasound Image Storage (one frame)
PATIENT = {
    "PatientName": "SYNTHETIC^ECHO",
    "PatientID": "SYN-0001",
    "PatientBirthDate": "",
    "PatientSex": "O",
}


def dicom_bytes(
    frames: np.ndarray,
    delta_cm: tuple[float, float] | None = None,
    frame_time_ms: float = 20.0,
    *,
    jpeg: bool = False,
    single_frame: bool = False,
    pixel_spacing_mm: float | None = None,
    drop: tuple[str, ...] = (),
) -> bytes:
    """``(T, H, W)`` uint8 -> DICOM bytes.

    ``delta_cm`` = (PhysicalDeltaY, PhysicalDeltaX) in cm of one ultrasound region covering the
    frame; ``jpeg`` stores the frames as JPEG baseline (Pillow, 4:2:2 chroma subsampling) in
    YBR_FULL_422 colour, tinted so that luma is not simply the red channel; ``single_frame``
    writes an Ultrasound Image (``frames`` must hold one frame; no NumberOfFrames);
    ``pixel_spacing_mm`` sets PixelSpacing; ``drop`` names attributes to leave out (to test the
    service's refusals).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_IMAGE if single_frame else US_MULTIFRAME
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit if jpeg else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for name, value in PATIENT.items():
        setattr(ds, name, value)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
    ds.ReferringPhysicianName = ""
    ds.Modality = "US"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Manufacturer = "synthetic"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "CARDIAC"]
    t, h, w = frames.shape
    if single_frame:
        assert t == 1, "an Ultrasound Image holds one frame"
    else:
        ds.NumberOfFrames = t
        ds.FrameIncrementPointer = 0x00181063  # FrameTime
        ds.FrameTime = frame_time_ms
    ds.Rows, ds.Columns = h, w
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if pixel_spacing_mm is not None:
        ds.PixelSpacing = [pixel_spacing_mm, pixel_spacing_mm]
    if delta_cm is not None:
        ds.SequenceOfUltrasoundRegions = [_region(h, w, delta_cm)]
    if jpeg:
        ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.LossyImageCompression, ds.LossyImageCompressionMethod = "01", "ISO_10918_1"
        ds.PixelData = _jpeg_pixel_data(frames)
    else:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = np.ascontiguousarray(frames).tobytes()
    for name in drop:
        delattr(ds, name)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _region(h: int, w: int, delta_cm: tuple[float, float]):
    """One 2-D tissue region over the frame (less a margin), its pixel size in cm."""
    from pydicom.dataset import Dataset

    region = Dataset()
    region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags = 1, 1, 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 1, 1
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = w - 2, h - 2
    region.ReferencePixelX0, region.ReferencePixelY0 = w // 2, 0
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
    region.PhysicalDeltaY, region.PhysicalDeltaX = delta_cm
    return region


def tint(frames: np.ndarray) -> np.ndarray:
    """``(T, H, W)`` gray -> ``(T, H, W, 3)`` RGB with a warm tint (as scanners colour B-mode)."""
    f = frames.astype(np.float32)
    return np.stack([f, f * 0.85, f * 0.7], axis=-1).astype(np.uint8)


def _jpeg_pixel_data(frames: np.ndarray) -> bytes:
    """Encapsulated JPEG baseline frames, YCbCr 4:2:2 (what YBR_FULL_422 describes)."""
    from PIL import Image
    from pydicom.encaps import encapsulate

    encoded = []
    for rgb in tint(frames):
        buf = io.BytesIO()
        Image.fromarray(rgb, "RGB").save(buf, "JPEG", quality=95, subsampling=1)  # 1 = 4:2:2
        encoded.append(buf.getvalue())
    return encapsulate(encoded)
