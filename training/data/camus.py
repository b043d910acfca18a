"""The CAMUS dataset (apical 2- and 4-chamber views, Lyon), both public releases, through SimpleITK.

* The original release: ``patientNNNN/patientNNNN_{2CH,4CH}_{ED,ES}[_gt].mhd`` (+ ``.raw``),
  ``patientNNNN_{2CH,4CH}_sequence.mhd`` and ``Info_{2CH,4CH}.cfg`` (``ED:``, ``ES:``, ``NbFrame:``,
  ``LVef:`` …; ED/ES are 1-based frame numbers of the sequence).
* The NIfTI release: ``patientNNNN_{2CH,4CH}_half_sequence[_gt].nii.gz`` (end-diastole to
  end-systole, every frame annotated) and ``patientNNNN_{2CH,4CH}_{ED,ES}[_gt].nii.gz``.

Labels: 1 LV endocardium (the cavity EchoSeg segments), 2 myocardium, 3 left atrium. Pixel
spacing (mm) comes from the image header; the reference EF from ``LVef:`` (or ``EF:``) and the
frame rate from ``FrameRate:`` in ``Info_*.cfg`` where present (``Clip.fps`` is 0.0 when unknown).
Splits follow the challenge's patient numbering: 1–400 TRAIN, 401–450 VAL, 451–500 TEST.

SimpleITK is an optional dependency (the ``camus`` extra).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path

import numpy as np

from training.data import base
from training.data.base import DatasetError, DataSource, PlannedClip, Problem
from training.data.clip import Clip

logger = logging.getLogger(__name__)

VIEWS = ("2CH", "4CH")
LV_ENDO = 1
SUFFIXES = (".mhd", ".nii.gz", ".nii")
PATIENT_DIR = re.compile(r"^patient\d{4}$")


def _sitk():
    try:
        import SimpleITK
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading CAMUS needs SimpleITK; install the 'camus' extra: pip install 'echoseg[camus]'"
        ) from exc
    return SimpleITK


def find_patients(root) -> list[Path]:
    """Patient folders under ``root`` (itself, or up to two levels down, e.g. ``training/``)."""
    root = Path(root)
    if PATIENT_DIR.match(root.name) and root.is_dir():
        return [root]
    found = [p for p in root.glob("patient*") if p.is_dir() and PATIENT_DIR.match(p.name)]
    found += [p for p in root.glob("*/patient*") if p.is_dir() and PATIENT_DIR.match(p.name)]
    found += [p for p in root.glob("*/*/patient*") if p.is_dir() and PATIENT_DIR.match(p.name)]
    return sorted(set(found), key=lambda p: p.name)


def is_camus(root) -> bool:
    return bool(find_patients(root))


def split_of(patient: str) -> str:
    number = int(patient[-4:])
    return "TRAIN" if number <= 400 else "VAL" if number <= 450 else "TEST"


def _find(folder: Path, stem: str) -> Path | None:
    for suffix in SUFFIXES:
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def read_image(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """An image or sequence: ``-> (array (H, W) or (T, H, W), spacing (row, column) in mm)``."""
    sitk = _sitk()
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ValueError(f"{path}: cannot read image ({str(exc).strip().splitlines()[-1]})") from exc
    array = sitk.GetArrayFromImage(image)  # (H, W) or (T, H, W); SimpleITK reverses (x, y, z)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    spacing = image.GetSpacing()
    return array, (float(spacing[1]), float(spacing[0]))


def read_info(path: Path) -> dict[str, str]:
    """``Info_*.cfg``: ``key: value`` lines -> dict."""
    info = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


def to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    lo, hi = float(array.min()), float(array.max())
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.clip((array.astype(np.float32) - lo) * scale, 0, 255).astype(np.uint8)


def _int(info: dict[str, str], key: str) -> int | None:
    try:
        return int(float(info[key]))
    except (KeyError, ValueError):
        return None


def _float(info: dict[str, str], *keys: str) -> float:
    for key in keys:
        try:
            return float(info[key])
        except (KeyError, ValueError):
            continue
    return float("nan")


def _match_frame(sequence: np.ndarray, image: np.ndarray) -> int:
    diff = np.abs(sequence.astype(np.float32) - image.astype(np.float32)[None]).mean(axis=(1, 2))
    return int(np.argmin(diff))


def _sequence_frames(
    folder, stem, info, ed_img, es_img, problems
) -> tuple[np.ndarray, int, int, Path | None]:
    """The clip's frames and its ED/ES indices: the (half) sequence when present, else the two frames."""
    seq_path = _find(folder, f"{stem}_sequence") or _find(folder, f"{stem}_half_sequence")
    if seq_path is None:
        return np.stack([ed_img, es_img]), 0, 1, None
    seq, _ = read_image(seq_path)
    if seq.ndim == 2:
        seq = seq[None]
    n = seq.shape[0]
    nb = _int(info, "NbFrame")
    if nb is not None and nb != n:
        problems.append(Problem(seq_path.name, f"NbFrame: {nb} in Info but the sequence has {n} frames"))
    ed, es = _int(info, "ED"), _int(info, "ES")
    ed = _match_frame(seq, ed_img) if ed is None else ed - 1
    es = _match_frame(seq, es_img) if es is None else es - 1
    for label, f in (("ED", ed), ("ES", es)):
        if not 0 <= f < n:
            msg = f"{label} frame {f + 1} (1-based) outside the sequence's {n} frames"
            problems.append(Problem(f"Info_{stem[-3:]}.cfg", msg, kind="range"))
    return seq, ed, es, seq_path


def camus_clip(folder: Path, view: str) -> tuple[Clip | None, list[Problem]]:
    """One patient's view as a :class:`Clip`, and every problem found (the clip is None if unusable)."""
    patient = folder.name
    stem = f"{patient}_{view}"
    problems: list[Problem] = []
    paths = {k: _find(folder, f"{stem}_{k}") for k in ("ED", "ED_gt", "ES", "ES_gt")}
    missing = [f"{stem}_{k}" for k, p in paths.items() if p is None]
    if missing:
        return None, [
            Problem(f"{patient}/{m}", "file not found (.mhd or .nii.gz)", kind="missing") for m in missing
        ]
    try:
        (ed_img, spacing), (es_img, _) = read_image(paths["ED"]), read_image(paths["ES"])
        (ed_gt, _), (es_gt, _) = read_image(paths["ED_gt"]), read_image(paths["ES_gt"])
        info_path = folder / f"Info_{view}.cfg"
        info = read_info(info_path) if info_path.is_file() else {}
        frames, ed, es, seq_path = _sequence_frames(folder, stem, info, ed_img, es_img, problems)
        true_masks = None
        if seq_path is not None:
            gt_seq_path = _find(folder, seq_path.name.split(".")[0] + "_gt")
            true_masks = (read_image(gt_seq_path)[0] == LV_ENDO).astype(np.uint8) if gt_seq_path else None
    except ValueError as exc:
        return None, [*problems, Problem(patient, str(exc), kind="corrupt")]
    for label, img, gt in (("ED", ed_img, ed_gt), ("ES", es_img, es_gt)):
        if gt.shape != img.shape or img.shape != frames.shape[1:]:
            msg = f"{label}: image {img.shape}, ground truth {gt.shape}, frames {frames.shape[1:]} differ"
            problems.append(Problem(f"{patient}/{stem}_{label}_gt", msg))
        elif not (gt == LV_ENDO).any():
            problems.append(Problem(f"{patient}/{stem}_{label}_gt", f"no LV_endo (label {LV_ENDO}) pixel"))
    if true_masks is not None and true_masks.shape != frames.shape:
        problems.append(
            Problem(f"{patient}/{stem}", f"per-frame gt {true_masks.shape} vs frames {frames.shape}")
        )
        true_masks = None
    if problems:
        return None, problems
    ef, fps = _float(info, "LVef", "EF"), _float(info, "FrameRate")
    clip = Clip(
        name=stem,
        frames=to_uint8(frames),
        fps=0.0 if np.isnan(fps) else fps,
        ef=ef,
        split=split_of(patient),
        traced={ed: (ed_gt == LV_ENDO).astype(np.uint8), es: (es_gt == LV_ENDO).astype(np.uint8)},
        ed=ed,
        es=es,
        true_masks=true_masks,
        spacing=spacing,
    )
    return clip, []


def load_camus(root, views=VIEWS) -> list[Clip]:
    """Every patient's ``views`` under ``root`` as clips; raises :class:`DatasetError` listing any problem."""
    bad = [v for v in views if v not in VIEWS]
    if bad:
        raise ValueError(f"views must be among {VIEWS}, got {bad}")
    patients = find_patients(root)
    if not patients:
        raise FileNotFoundError(f"no CAMUS patientNNNN folders found under {root}")
    clips, problems = [], []
    for folder in patients:
        for view in views:
            clip, found = camus_clip(folder, view)
            problems += found
            if clip is not None:
                clips.append(clip)
    if problems:
        raise DatasetError(problems)
    logger.info("loaded %d CAMUS clips (%s) from %s", len(clips), ", ".join(views), root)
    return clips


# -- the source ---------------------------------------------------------------------------------
class CamusSource(DataSource):
    """A CAMUS folder as a :class:`~training.data.base.DataSource`: one clip per patient and view,
    named ``patientNNNN_{2CH,4CH}``."""

    kind = "camus"
    description = "CAMUS (patientNNNN/)"

    def __init__(self, root) -> None:
        super().__init__(root)
        self.patients = {folder.name: folder for folder in find_patients(self.root)}

    @classmethod
    def detect(cls, root: Path) -> bool:
        return is_camus(root)

    def names(self, split: str | None = None) -> list[str]:
        s = base.normalise_split(split)
        return [f"{p}_{view}" for p in self.patients if s is None or split_of(p) == s for view in VIEWS]

    def load(self, name: str) -> Clip:
        patient, _, view = name.rpartition("_")
        if patient not in self.patients or view not in VIEWS:
            raise DatasetError([Problem(name, "no such CAMUS patient and view", kind="missing")])
        clip, problems = camus_clip(self.patients[patient], view)
        if clip is None:
            raise DatasetError(problems)
        return clip

    def plan(self) -> list[PlannedClip]:
        planned = []
        for folder in self.patients.values():
            for view in VIEWS:
                stem = f"{folder.name}_{view}"
                files = sorted(p for p in folder.iterdir() if p.name.startswith(stem + "_"))
                files += [p for p in [folder / f"Info_{view}.cfg"] if p.is_file()]
                if files:
                    planned.append(PlannedClip(stem, files))
        return planned

    def check(self) -> dict:
        problems: list[Problem] = []
        videos = []
        for folder in self.patients.values():
            for view in VIEWS:
                clip, found = camus_clip(folder, view)
                problems += found
                if clip is None:
                    videos.append(
                        {"name": f"{folder.name}_{view}", "split": split_of(folder.name), "status": "invalid"}
                    )
                    continue
                videos.append(_check_record(clip, folder.name, problems))
        counts = Counter(v["split"] for v in videos)
        return base.check_report(self.root, self.kind, counts, videos, problems, [])


def _check_record(clip: Clip, patient: str, problems: list[Problem]) -> dict:
    """One readable clip of ``echoseg data check``, its ED/ES gt compared with the sequence gt."""
    t, h, w = clip.frames.shape
    record = {"name": clip.name, "split": clip.split, "status": "ok", "frames": t, "height": h, "width": w}
    record.update(spacing=list(clip.spacing), traced_frames=sorted(clip.traced), ed=clip.ed, es=clip.es)
    record.update(ed_area=int(clip.traced[clip.ed].sum()), es_area=int(clip.traced[clip.es].sum()))
    if clip.true_masks is not None:
        record["true"] = base.compare_true(record, clip.traced, clip.true_masks)
        if not record["true"]["agrees"]:
            problems.append(Problem(f"{patient}/{clip.name}", "ED/ES gt disagree with the sequence gt"))
    return record
