"""``?output=dicom-sr``: EDV, ESV and EF as a DICOM measurement report (TID 1500, via highdicom).

The report is a Comprehensive SR built with ``highdicom.sr.MeasurementReport``; it references
the uploaded instance only (as evidence, and per measurement group by the frames measured), so
highdicom's own construction applies here unchanged (unlike the Segmentation, see
``service.codecs.dicom_seg``). Its content:

- observer: the device "EchoSeg" with the model id as its model name;
- procedure reported: Echocardiography (SCT 40701008);
- one measurement group per beat (tracking identifier ``beat N``), referencing the source's ED
  and ES frames, with LV end-diastolic volume (LOINC 18026-5) and end-systolic volume (LOINC
  18148-7) in ml and ejection fraction (LOINC 18043-0) in %; method "Method of Disks, Single
  Plane" (DCM 125208), finding site Left ventricle, algorithm name, version and model id;
- one group for the clip (tracking identifier ``clip``): the means over the beats (derivation
  Mean), or, without a complete beat, the volumes of the largest and smallest cavity and their
  EF, the same rule as the JSON ``ef`` (:func:`echoseg.cardiac.summarize_areas`).

Volumes need the physical pixel size, so :func:`service.codecs.dicom_source.read_source` refuses a
``dicom-sr`` request for a file without one before the clip is segmented, and :func:`report_dicom`
refuses (422 ``invalid_metadata``) a clip segmented in a region whose pixel size is unknown (the
file's region was refused as stale and it has no PixelSpacing): no pixel count is ever labelled ml.
A value that is undefined is left out of its group rather than written as a number: a clip whose
cavity never changes gets a ``clip`` group without measurements. The report follows the JSON
answer's quality gate: when ``ef`` is withheld (``ef_null_reason``), so are the volumes, and
the ``clip`` group records why as a qualitative evaluation (:data:`WITHHELD`, the reason coded
in the private scheme :data:`SCHEME`).
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable

import numpy as np

import echoseg
from echoseg.cardiac import volume_method_of_discs
from service.codecs.dicom_seg import MANUFACTURER, SERIES_NUMBER
from service.codecs.dicom_source import PATIENT_STUDY, built_or_refused, copy_patient_study
from service.codecs.rle import rle_decode
from service.core.errors import ServiceError

ML_PER_MM3 = 1e-3
SCHEME = "99ECHOSEG"  # a private coding scheme (PS3.16 8.2: designators starting "99")
WITHHELD = ("ef-withheld", "Measurements withheld by the quality gate")  # concept name of the reason
# highdicom logs the source's SOP Instance UID at INFO while it copies the patient and study
# attributes; a UID ties a log line to a patient's study, so only its warnings are let through.
logging.getLogger("highdicom").setLevel(logging.WARNING)


def _evidence(source):
    """The source header as highdicom's SR reads it: patient/study attributes present (maybe empty)."""
    from pydicom.dataset import Dataset

    evidence = Dataset()
    copy_patient_study(source, evidence)
    for name in ("SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID", "NumberOfFrames", "Rows", "Columns"):
        if name in source:
            setattr(evidence, name, getattr(source, name))
    assert all(name in evidence for name in PATIENT_STUDY)
    return evidence


def _clip_read_out(result_summary: dict, areas: np.ndarray, volume: Callable[[int], float]) -> dict:
    """EDV, ESV (mm³), EF (%) of the whole clip, frames used, and whether they are beat means."""
    beats = result_summary["beats"]
    if beats:
        return {
            "edv": float(np.mean([b["edv"] for b in beats])),
            "esv": float(np.mean([b["esv"] for b in beats])),
            "ef": result_summary["ef"],
            "frames": sorted({f for b in beats for f in (b["ed"], b["es"])}),
            "mean": True,
        }
    if not areas.size or np.ptp(areas) == 0:
        return {}
    ed, es = int(np.argmax(areas)), int(np.argmin(areas))
    ef = result_summary["ef"]
    return {"edv": volume(ed), "esv": volume(es), "ef": ef, "frames": [ed, es], "mean": False}


def report_dicom(
    source,
    summary: dict,
    areas: np.ndarray,
    mask_at: Callable[[int], np.ndarray],
    spacing: tuple[float, float],
    model: dict,
) -> bytes:
    """The TID 1500 report (Part 10 bytes) of one segmented upload.

    ``summary`` is the JSON read-out (``beats`` with ``ed``, ``es``, ``edv``, ``esv`` in mm³ and
    ``ef`` in %; ``ef``), ``areas`` the per-frame areas, ``mask_at(i)`` frame ``i``'s mask (used
    only when the clip has no complete beat), ``spacing`` the (row, col) pixel size in mm of the
    region the clip was segmented in (None: refused, ``invalid_metadata``).
    """
    if spacing is None:
        raise ServiceError(
            "invalid_metadata",
            "output=dicom-sr reports volumes in ml, which needs the pixel size of the region the clip "
            "was segmented in: this file's ultrasound region was refused (see the JSON answer's "
            "warnings) and it has no PixelSpacing",
        )
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    algorithm = hd.sr.AlgorithmIdentification(
        name=MANUFACTURER,
        version=echoseg.__version__,
        parameters=[f"model_id={model['id']}", f"preset={model['preset']}", f"backend={model['backend']}"],
    )
    site = [hd.sr.FindingSite(codes.SCT.LeftVentricle)]
    ml = hd.sr.CodedConcept("ml", "UCUM", "milliliter")
    percent = hd.sr.CodedConcept("%", "UCUM", "percent")

    def group(
        label: str, read_out: dict, why: str | None = None
    ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
        # DICOM frame numbers start at 1; a single-frame source is referenced whole
        frames = [f + 1 for f in read_out["frames"]] if "NumberOfFrames" in source else None
        images = [hd.sr.SourceImageForMeasurementGroup.from_source_image(source, frames or None)]
        derivation = codes.SCT.Mean if read_out["mean"] else None
        to_ml = lambda mm3: None if mm3 is None else mm3 * ML_PER_MM3  # noqa: E731
        values = [
            (codes.LN.LeftVentricularEndDiastolicVolume, to_ml(read_out["edv"]), ml),
            (codes.LN.LeftVentricularEndSystolicVolume, to_ml(read_out["esv"]), ml),
            (codes.LN.LeftVentricularEjectionFractionByUS, read_out["ef"], percent),
        ]
        measurements = [
            hd.sr.Measurement(
                name=name,
                value=round(float(value), 3),
                unit=unit,
                derivation=derivation,
                method=codes.DCM.MethodOfDisksSinglePlane,
                finding_sites=site,
                algorithm_id=algorithm,
            )
            for name, value, unit in values
            if value is not None and math.isfinite(value)
        ]
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=label),
            method=codes.DCM.MethodOfDisksSinglePlane,
            algorithm_id=algorithm,
            finding_sites=site,
            measurements=measurements,
            qualitative_evaluations=[
                hd.sr.QualitativeEvaluation(
                    hd.sr.CodedConcept(WITHHELD[0], SCHEME, WITHHELD[1]), hd.sr.CodedConcept(why, SCHEME, why)
                )
            ]
            if why
            else None,
            source_images=images,
        )

    nothing = {"edv": None, "esv": None, "ef": None, "frames": [], "mean": False}
    why = summary.get("ef_null_reason") if summary.get("ef") is None else None
    if why:  # the quality gate withheld EF: the volumes go with it (gate_summary emptied the beats)
        groups = [group("clip", nothing, why)]
    else:
        groups = [
            group(f"beat {i + 1}", {**beat, "frames": [beat["ed"], beat["es"]], "mean": False})
            for i, beat in enumerate(summary["beats"])
        ]
        clip = _clip_read_out(summary, areas, lambda i: volume_method_of_discs(mask_at(i), spacing))
        # a clip whose cavity never changes has no read-out: its group is there, without measurements
        groups.append(group("clip", clip or nothing))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[model["id"]]),  # one UID per model, stable across reports
            name=MANUFACTURER,
            manufacturer_name=MANUFACTURER,
            model_name=model["id"],
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.Echocardiography,
        imaging_measurements=groups,
    )
    sr = hd.sr.ComprehensiveSR(
        evidence=[_evidence(source)],
        content=report,
        series_instance_uid=generate_uid(),
        series_number=SERIES_NUMBER + 1,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
    )
    buf = io.BytesIO()
    sr.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def report_answer(answer) -> bytes:
    """``output=dicom-sr`` of a ``service.api.outputs.Answer`` (its ``source`` read by ``read_source``)."""
    r = answer.result
    mask_at = lambda i: rle_decode(r.counts[i], r.height, r.width)  # noqa: E731
    return built_or_refused(
        "dicom-sr", lambda: report_dicom(answer.source, r.summary, r.areas, mask_at, r.spacing, answer.model)
    )
