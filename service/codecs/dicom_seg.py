"""``?output=dicom-seg``: the masks as a DICOM Segmentation that references the uploaded cine.

Why pydicom writes the object and not ``highdicom.seg.Segmentation``: highdicom (0.28.2, the
newest release) builds a Segmentation of a multi-frame source only when the source has a Frame
of Reference, and refuses otherwise ("Only a single frame is supported when the source image has
no Frame of Reference UID"; highdicom issue #284). An ultrasound cine (Ultrasound Multi-frame
Image IOD) has none. So the object is laid out here the way highdicom lays out the single-frame
case it does support (the same modules, the same per-frame Derivation Image references), with
one frame per source frame; the segment description and algorithm identification are highdicom's
own classes, and ``tests/service/test_dicom_outputs.py`` reads every SEG back with
``highdicom.seg.segread`` and runs dciodvfy on it.

What the object says:

- one segment, BINARY, category "Anatomical Structure" (SCT 91723000), type "Left ventricle"
  (SCT 87878005), labelled as the cavity; the algorithm's name, version and model id;
- one SEG frame per decoded source frame, at the source's size, empty frames included, so SEG
  frame *i* is the mask of source frame *i* (the JSON ``masks.counts[i - 1]``);
- per frame, a Derivation Image Sequence naming the source SOP Instance and its Referenced Frame
  Number (this is how a SEG without a Frame of Reference is tied to its image, PS3.3 A.51.5);
  the source series and instance again in the Common Instance Reference module;
- dimensions: Referenced Segment Number, then Temporal Position Index (= the source frame
  number), so every frame has a distinct index;
- no Frame of Reference: the source has none, and a Frame of Reference in a SEG would require
  plane positions in patient space, which a 2-D echo frame does not have;
- a shared Plane Orientation (Patient) of ``[1, 0, 0, 0, 1, 0]`` (or the source's own Image
  Orientation (Patient), where it has one). See :data:`IDENTITY_ORIENTATION`.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from datetime import datetime

import numpy as np

import echoseg
from service.codecs.dicom_source import built_or_refused, copy_patient_study

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
SEGMENT_LABEL = "Left ventricle cavity"
MANUFACTURER = "EchoSeg"
SERIES_NUMBER = 9901  # a derived series; scanners number theirs from 1
# The OHIF v3 viewer's SEG loader (@cornerstonejs/adapters) reads the SEG's Image Orientation
# (Patient) from the shared or the first per-frame functional group and refuses a SEG without
# one; it compares it with the source image's plane, which Cornerstone takes as rows along
# [1, 0, 0] and columns along [0, 1, 0] for an image without orientation (an echo cine has none).
# Stating the same here says only that SEG rows and columns run along the source's rows and
# columns, which is true: the masks are drawn on the source's pixel grid. It places nothing in
# patient space: there is no Frame of Reference, no Plane Position (Patient) and no Pixel
# Measures, so no viewer can derive a position, a size or an anatomical direction from it.
IDENTITY_ORIENTATION = (1, 0, 0, 0, 1, 0)


def _algorithm_identification(model: dict):
    """highdicom's Segmentation Algorithm Identification Sequence for the served model."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.AlgorithmIdentificationSequence(
        name=MANUFACTURER,
        family=codes.cid7162.ArtificialIntelligence,
        version=echoseg.__version__,
        parameters={"model_id": model["id"], "preset": model["preset"], "backend": model["backend"]},
    )


def _segment_description(model: dict):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=codes.SCT.LeftVentricle,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=_algorithm_identification(model),
    )


def _code(value: str, scheme: str, meaning: str):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _frame_group(source, frame_number: int):
    """The per-frame functional groups of SEG frame ``frame_number`` (1-based, = the source frame)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    if "NumberOfFrames" in source:  # a single-frame source is referenced whole
        ref.ReferencedFrameNumber = frame_number
    ref.SpatialLocationsPreserved = "YES"
    ref.PurposeOfReferenceCodeSequence = Sequence(
        [_code("121322", "DCM", "Source image for image processing operation")]
    )
    derivation = Dataset()
    derivation.SourceImageSequence = Sequence([ref])
    derivation.DerivationCodeSequence = Sequence([_code("113076", "DCM", "Segmentation")])
    content = Dataset()
    content.DimensionIndexValues = [1, frame_number]
    content.TemporalPositionIndex = frame_number
    group = Dataset()
    group.DerivationImageSequence = Sequence([derivation])
    group.FrameContentSequence = Sequence([content])
    return group


def _dimensions(ds) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.tag import Tag
    from pydicom.uid import generate_uid

    uid = generate_uid()
    organization = Dataset()
    organization.DimensionOrganizationUID = uid
    ds.DimensionOrganizationSequence = Sequence([organization])
    pointers = [
        ("ReferencedSegmentNumber", "SegmentIdentificationSequence", "Referenced Segment Number"),
        ("TemporalPositionIndex", "FrameContentSequence", "Temporal Position Index"),
    ]
    items = []
    for index, group, label in pointers:
        item = Dataset()
        item.DimensionOrganizationUID = uid
        item.DimensionIndexPointer = Tag(index)
        item.FunctionalGroupPointer = Tag(group)
        item.DimensionDescriptionLabel = label
        items.append(item)
    ds.DimensionIndexSequence = Sequence(items)


def _references(ds, source) -> None:
    """Common Instance Reference module and the image-level Source Image Sequence."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    instance = Dataset()
    instance.ReferencedSOPClassUID = source.SOPClassUID
    instance.ReferencedSOPInstanceUID = source.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = source.SeriesInstanceUID
    series.ReferencedInstanceSequence = Sequence([instance])
    ds.ReferencedSeriesSequence = Sequence([series])
    image = Dataset()
    image.ReferencedSOPClassUID = source.SOPClassUID
    image.ReferencedSOPInstanceUID = source.SOPInstanceUID
    ds.SourceImageSequence = Sequence([image])


def _orientation(source) -> list[float]:
    """The source's own Image Orientation (Patient) where it has a well-formed one (6 finite
    values), else :data:`IDENTITY_ORIENTATION`: the plane a viewer already displays the cine in."""
    try:
        values = [float(v) for v in source.get("ImageOrientationPatient") or ()]
    except (TypeError, ValueError):
        values = []
    ok = len(values) == 6 and all(np.isfinite(values))
    return values if ok else [float(v) for v in IDENTITY_ORIENTATION]


def _pack(mask_chunks: Iterable[np.ndarray]) -> bytes:
    """``(n, H, W)`` {0,1} chunks -> BINARY pixel data: one bit per pixel, frames back to back.

    Chunks of a multiple of 8 frames pack to whole bytes, so they are packed one at a time (the
    mask stack never exists unpacked) and the bytes simply concatenated.
    """
    from pydicom.pixels import pack_bits

    out = bytearray()
    ragged = False
    for chunk in mask_chunks:
        assert not ragged, "only the last chunk may end mid-byte"
        ragged = chunk.size % 8 != 0
        out += pack_bits(np.ascontiguousarray(chunk, dtype=np.uint8), pad=False)
    if len(out) % 2:
        out += b"\0"  # DICOM values have even length
    return bytes(out)


def segmentation_dicom(
    source, mask_chunks: Iterable[np.ndarray], shape: tuple[int, int, int], model: dict
) -> bytes:
    """The SEG instance (Part 10 bytes) for masks ``(T, H, W)`` of ``source``'s first T frames.

    ``source`` is the upload's header (:func:`service.codecs.dicom_source.read_source`);
    ``mask_chunks`` yields the masks in order, a multiple of 8 frames per chunk except the last;
    ``model`` is the JSON ``model`` block (id, preset, backend).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    from pydicom.valuerep import DA, TM

    frames, rows, cols = shape
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SEGMENTATION_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    copy_patient_study(source, ds)
    # SOP Common, General Series / Segmentation Series, equipment
    ds.SOPClassUID = SEGMENTATION_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    now = datetime.now()
    ds.InstanceCreationDate = ds.ContentDate = DA(now.date())
    ds.InstanceCreationTime = ds.ContentTime = TM(now.time())
    ds.Modality = "SEG"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = SERIES_NUMBER
    ds.SeriesDescription = "EchoSeg left ventricle segmentation"
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = f"{MANUFACTURER} {model['preset']}"
    ds.DeviceSerialNumber = model["id"]  # the exact weights: what identifies this software device
    ds.SoftwareVersions = echoseg.__version__
    # General Image, Segmentation Image, Image Pixel
    ds.InstanceNumber = 1
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.PatientOrientation = getattr(source, "PatientOrientation", None) or ""  # pixels are the source's
    ds.ContentLabel = "LV_CAVITY"
    ds.ContentDescription = "Left ventricle cavity, one frame per source frame"
    ds.ContentCreatorName = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    ds.LossyImageCompression = getattr(source, "LossyImageCompression", None) or "00"
    for name in ("LossyImageCompressionRatio", "LossyImageCompressionMethod"):
        if ds.LossyImageCompression == "01" and name in source:
            setattr(ds, name, getattr(source, name))
    ds.PresentationLUTShape = "IDENTITY"
    ds.SegmentationType = "BINARY"
    ds.SegmentsOverlap = "NO"
    ds.SegmentSequence = Sequence([_segment_description(model)])
    # Multi-frame Functional Groups and Dimension modules
    ds.NumberOfFrames = frames
    shared = Dataset()
    segment = Dataset()
    segment.ReferencedSegmentNumber = 1
    shared.SegmentIdentificationSequence = Sequence([segment])
    plane = Dataset()
    plane.ImageOrientationPatient = _orientation(source)
    shared.PlaneOrientationSequence = Sequence([plane])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PerFrameFunctionalGroupsSequence = Sequence([_frame_group(source, t + 1) for t in range(frames)])
    _dimensions(ds)
    _references(ds, source)
    ds.PixelData = _pack(mask_chunks)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def segmentation_answer(answer) -> bytes:
    """``output=dicom-seg`` of a ``service.api.outputs.Answer`` (its ``source`` read by ``read_source``)."""
    r = answer.result
    shape = (r.frames, r.height, r.width)
    return built_or_refused(
        "dicom-seg", lambda: segmentation_dicom(answer.source, r.mask_chunks(), shape, answer.model)
    )
