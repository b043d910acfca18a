"""The source of a DICOM output: the uploaded DICOM's header, checked before any inference runs.

A Segmentation or a measurement report about an uploaded instance belongs to the same patient
and study, and points back at the instance (study, series, SOP instance, frames). So before the
clip is segmented, :func:`read_source` reads the header (no pixels) and refuses, with the missing
attribute named, an upload that cannot be referenced. :func:`copy_patient_study` then copies
the Patient and General Study attributes the standard requires a derived instance in the same
study to carry (Type 1 and 2 only), and nothing else: no institution, operator or device data.
None of these values is ever logged.
"""

from __future__ import annotations

import io
import logging
import traceback
from collections.abc import Callable

from service.codecs.clip import dicom_spacing, require_pydicom
from service.core.errors import ServiceError

log = logging.getLogger(__name__)

REFERENCE_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID")
# Patient module (C.7.1.1) and General Study module (C.7.2.1), Type 1 and 2 attributes.
PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def read_source(data: bytes, media_type: str, output: str):
    """The upload's DICOM header (a pydicom ``Dataset`` without pixel data) for ``output``.

    Raises ``ServiceError``: ``invalid_request`` when the upload is not DICOM (a DICOM output
    needs a DICOM source to reference), ``corrupt_input`` when the header does not parse,
    ``invalid_metadata`` when a UID the reference needs is missing, when a patient or study value
    to be copied breaks its VR's rules (named, not quoted), or (``dicom-sr``) when the file gives
    no physical pixel size (or a bad one).
    """
    if media_type != "application/dicom":
        raise ServiceError(
            "invalid_request",
            f"output={output} needs a DICOM upload (application/dicom) to reference; "
            f"this upload is {media_type or 'of no stated type'!r}",
        )
    pydicom = require_pydicom()
    try:
        source = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True)
        missing = [name for name in REFERENCE_UIDS if not str(getattr(source, name, "") or "")]
    except Exception as e:  # pydicom raises many types for broken files
        why = type(e).__name__
        raise ServiceError("corrupt_input", f"the DICOM file could not be decoded ({why})") from None
    if missing:
        raise ServiceError(
            "invalid_metadata",
            f"output={output} references the source instance, which lacks {', '.join(missing)}",
        )
    invalid = invalid_values(source, (*PATIENT_STUDY, *REFERENCE_UIDS))
    if invalid:  # named, never quoted: these are the patient's values
        raise ServiceError(
            "invalid_metadata",
            f"output={output} copies the patient and study identification, and this file's "
            f"{', '.join(invalid)} {'is' if len(invalid) == 1 else 'are'} not valid DICOM "
            "(e.g. a date not written YYYYMMDD, a time not HHMMSS, a UID with letters)",
        )
    if output == "dicom-sr" and dicom_spacing(source) is None:
        raise ServiceError(
            "invalid_metadata",
            "output=dicom-sr reports volumes in ml, which needs the pixel size: this file has neither "
            "a SequenceOfUltrasoundRegions item with PhysicalDeltaX/Y in cm nor PixelSpacing",
        )
    return source


def invalid_values(source, names) -> list[str]:
    """The attributes of ``names`` whose values break their VR's rules (names only, no values)."""
    from pydicom import config
    from pydicom.valuerep import validate_value

    invalid = []
    for name in dict.fromkeys(names):
        if name not in source:
            continue
        try:
            element = source[name]
            values = element.value if element.VM > 1 else [element.value]
            for value in values:
                validate_value(element.VR, value, config.RAISE)
        except Exception:  # pydicom's message quotes the value: only the name leaves here
            invalid.append(name)
    return invalid


def copy_patient_study(source, target) -> None:
    """Patient and study identification of ``source`` onto ``target`` (empty where ``source`` has none)."""
    if "SpecificCharacterSet" in source:  # the names below are encoded in it
        target.SpecificCharacterSet = source.SpecificCharacterSet
    for name in PATIENT_STUDY:
        setattr(target, name, getattr(source, name, None) or "")


def built_or_refused(output: str, build: Callable[[], bytes]) -> bytes:
    """A DICOM output's bytes. The source's patient and study values were checked by
    :func:`read_source`; should highdicom still refuse one, its message (which quotes the value) is
    neither answered nor logged: the client gets 422 naming the output, the log the error's type
    and where it arose."""
    try:
        return build()
    except ServiceError:
        raise
    except ValueError as e:
        where = traceback.extract_tb(e.__traceback__)[-1]
        log.warning(
            "output=%s refused by the DICOM library: %s at %s:%d",
            output,
            type(e).__name__,
            where.filename.rsplit("/", 1)[-1],
            where.lineno,
        )
        raise ServiceError(
            "invalid_metadata",
            f"output={output} could not be built from this file's attributes ({type(e).__name__})",
        ) from None
