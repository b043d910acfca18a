"""``echoseg adapt``: the paper's mean teacher as domain adaptation to a site's unlabelled clips.

The trainer (``training.train``) runs unchanged in its mean-teacher mode, configured so that:

- student and teacher start from a checkpoint (``init_from``; the bundled ``models/default``);
- labelled windows come from simulated clips (``data.root``: by default a small A4C simulator set
  rendered once into the cache, :func:`default_labelled`), with their per-frame truth;
- unlabelled windows come from the site's clips (``data.unlabelled_root``: a plain folder of
  AVI/MP4/DICOM files read by the service's decoders, or a prepared frame store), split ``TRAIN``;
- the consistency loss and its ramp lambda(t) = (t / t_max)^2 are the paper's;
- every labelled window is first pictured the way the site's windows are (``style.fraction`` 1:
  the site's Fourier amplitude and mean picture, :mod:`training.trainer.style`), so the student
  learns the simulated anatomy under the site's speckle, blur and haze, labels unchanged;
- it never writes ``best/`` itself (``select_best: false``): that is this module's decision.

Around it, the safety net: before and after training, on the site's held-out slice (its ``VAL``
clips, never trained on) the label-free signals of :mod:`training.adapt.signals`, and on held-out
simulated clips (the source domain, ``VAL`` and ``TEST``) the Dice at ED/ES and at a few
random frames with their true masks; and, when the site has traced a few clips (``--traced``: an
EchoNet-format folder, never trained on), their Dice at ED/ES. The adapted network (the teacher by
default, the EMA of the student, with the student's normalisation statistics: see
:func:`student_statistics`) is written to ``RUN/best/`` only when the source-domain Dice dropped by
at most ``max_source_drop`` and the traced clips' Dice by at most ``max_traced_drop`` (default 0:
a site's own tracings must not get worse); otherwise ``best/`` is removed and the report says why.
The label-free signals rank runs of one site but cannot tell a gain from a loss (docs/training.md);
a handful of the site's tracings can. ``RUN/adapt.json``
holds the report; ``best/config.json``'s meta records what the model was adapted on (clip counts
and digests of the decoded pixels, never file names).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch.utils.data import ConcatDataset

from echoseg.artifacts import checkpoint_weights, make_model_id, read_checkpoint_config, weights_digest
from echoseg.quality import QualityThresholds
from training.adapt import signals as sig
from training.adapt.fit import CANDIDATES, MIN_CANDIDATES, fit_simulator, render_fitted
from training.data.a4c import generate_a4c
from training.data.dataset import StoreWindowDataset
from training.data.store import FrameStore, ensure_store
from training.model.io import load_pretrained
from training.train import fit
from training.trainer import checkpoint as ckpt
from training.trainer.config import TrainConfig, apply_overrides, load_config
from training.trainer.data import eval_loader
from training.trainer.distributed import DistInfo
from training.trainer.engine import resolve_precision, validate

logger = logging.getLogger(__name__)

REPORT = "adapt.json"
BEFORE = "adapt-before.json"  # the starting model's measurements, kept for a resumed run
FORMAT = "echoseg-adapt-report"
VERSION = 1
KEEP = ("teacher", "student")
# The default labelled set: A4C simulator clips at two scanner sizes, rendered once per cache.
SIM_CLIPS, SIM_FRAMES, SIM_SEED, SIM_SIZES = 64, 32, 7, "112x112,240x320"
SOURCE_TRUE_WINDOWS = 4  # random frames (true masks) per held-out simulated clip, besides ED and ES
MAX_SIGNAL_CLIPS = 64  # held-out site clips measured (the first by name)
FIT_RECORD, FIT_FOLDER = "simulator-fit.json", "fitted-sim"
FIT_WORKERS = max(1, min(2, os.cpu_count() or 1))  # processes rendering the fit's candidates


@dataclass
class AdaptOptions:
    """What ``echoseg adapt`` was asked; ``overrides`` are ``--set KEY=VALUE`` on the training config."""

    unlabelled: str
    out: str
    init_from: str = "models/default"
    labelled: str | None = None
    steps: int = 600
    seed: int = 0
    resume: bool = False
    max_source_drop: float = 0.01
    keep: str = "teacher"
    threads: int | None = None
    progress: bool = True
    overrides: list[str] = field(default_factory=list)
    traced: str | None = None
    max_traced_drop: float = 0.0
    fit_simulator: bool = True
    fit_candidates: int = CANDIDATES
    fit_clips: int = SIM_CLIPS

    def __post_init__(self) -> None:
        if self.keep not in KEEP:
            raise ValueError(f"keep must be one of {KEEP}, got {self.keep!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be positive, got {self.steps}")
        if self.fit_candidates < MIN_CANDIDATES:
            raise ValueError(f"fit_candidates must be at least {MIN_CANDIDATES}, got {self.fit_candidates}")
        if self.fit_clips < 3:
            raise ValueError(f"fit_clips must be at least 3 (train, val and test), got {self.fit_clips}")
        for name in ("max_source_drop", "max_traced_drop"):
            if math.isnan(getattr(self, name)):
                raise ValueError(f"{name} must be a number (it may be -inf or inf)")


def default_labelled() -> Path:
    """The default labelled set (:data:`SIM_CLIPS` A4C simulator clips), rendered on first use into
    ``$ECHOSEG_CACHE`` (or ``~/.cache/echoseg``)."""
    base = Path(os.environ.get("ECHOSEG_CACHE") or Path.home() / ".cache" / "echoseg")
    cache = base / "sim" / f"a4c-{SIM_CLIPS}x{SIM_FRAMES}-seed{SIM_SEED}"
    if not (cache / "FileList.csv").is_file():
        logger.info("rendering the default labelled set (%d A4C clips) into %s", SIM_CLIPS, cache)
        tmp = cache.with_name(cache.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        generate_a4c(tmp, SIM_CLIPS, frames=SIM_FRAMES, sizes=SIM_SIZES, seed=SIM_SEED)
        shutil.rmtree(cache, ignore_errors=True)
        tmp.rename(cache)
    return cache


def adapt_config(opts: AdaptOptions, labelled: str) -> TrainConfig:
    """The training configuration of an adaptation run (``opts.overrides`` applied last)."""
    out = Path(opts.out)
    raw = {
        "data": {
            "root": str(labelled),
            "unlabelled_root": str(opts.unlabelled),
            "unlabelled_split": "TRAIN",
            "windows_per_video": 4,
            "true_windows_per_video": 2,
            "augment": True,
            "flips": "h",
            "num_workers": 0,
        },
        "style": {"fraction": 1.0},
        "mode": "mean_teacher",
        "steps": opts.steps,
        "batch_size": 4,
        "unlabelled_batch_size": 4,
        "lr": 1e-4,
        "consistency": 1.0,
        "seed": opts.seed,
        "init_from": str(opts.init_from),
        "select_best": False,
        "threads": opts.threads,
        "eval_every": max(1, min(100, opts.steps)),
        "log_every": 10,
        "out_dir": str(out.parent),
        "run_name": out.name,
        "progress": opts.progress,
    }
    return TrainConfig.from_dict(apply_overrides(raw, opts.overrides))


def fitted_labelled(opts: AdaptOptions, cfg: TrainConfig, site: FrameStore, source: str) -> dict:
    """The labelled set rendered by the simulator fitted to the site's adaptation clips
    (:mod:`training.adapt.fit`) in ``RUN/fitted-sim/``; a resumed run reuses its own, a new run
    in the same folder fits again. ``source`` (the gate's labelled set) is recorded for resuming."""
    out = Path(opts.out)
    record_path, root = out / FIT_RECORD, out / FIT_FOLDER
    if opts.resume and record_path.is_file() and (root / "FileList.csv").is_file():
        return json.loads(record_path.read_text())
    record_path.unlink(missing_ok=True)
    start = time.perf_counter()
    input_size = load_pretrained(cfg.init_from)[0].config.input_size
    names = site.names(cfg.data.unlabelled_split)
    result = fit_simulator(
        site, names, input_size, seed=cfg.seed, workers=FIT_WORKERS, candidates=opts.fit_candidates
    )
    render_fitted(root, result, opts.fit_clips, frames=SIM_FRAMES, seed=cfg.seed, workers=FIT_WORKERS)
    record = {
        "root": str(root),
        "source": str(source),
        "clips": opts.fit_clips,
        "digest": result.digest(),
        "seconds": round(time.perf_counter() - start, 1),
        **result.to_dict(),
    }
    out.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    logger.info(
        "simulator fitted to the site (distance %.3f; the training recipe's %.3f): %s",
        result.distance,
        result.start_distance,
        ", ".join(f"{k} {v:.3g}" for k, v in result.params.items()),
    )
    return record


# -- measuring ---------------------------------------------------------------------------------------
def held_out_names(store: FrameStore) -> list[str]:
    """The site's held-out slice: its VAL clips (TEST when it has no VAL), at most MAX_SIGNAL_CLIPS."""
    names = store.names("VAL") or store.names("TEST")
    return sorted(names)[:MAX_SIGNAL_CLIPS]


def site_signals(model, store: FrameStore, names: list[str], limits: QualityThresholds) -> dict:
    """The label-free signals of ``model`` on the held-out site clips (one clip in memory at a time)."""
    per_clip = []
    for name in names:
        clip = store.clip(name)
        per_clip.append(sig.clip_signals(model, clip.frames, clip.fps, limits))
    return sig.summarize(per_clip)


def source_loader(store: FrameStore, config, batch_size: int = 16):
    """Held-out simulated windows: ED/ES and SOURCE_TRUE_WINDOWS random frames of each VAL and TEST clip."""
    parts = [
        StoreWindowDataset(
            store, split, config, mode="labelled", seed=0, true_windows_per_video=SOURCE_TRUE_WINDOWS
        )
        for split in ("VAL", "TEST")
    ]
    data = ConcatDataset([p for p in parts if len(p)])
    if len(data) == 0:
        raise ValueError(
            f"the labelled set {store.path} has no VAL or TEST clips to check the source domain on"
        )
    return eval_loader(data, batch_size, DistInfo()), len(data)


def source_dice(model, loader) -> float:
    device = next(model.parameters()).device
    return validate(model, loader, DistInfo(), device, resolve_precision("off", device))


def traced_dice(model, traced: str) -> dict:
    """Mean Dice at ED/ES of ``model`` on the site's traced clips (``--traced``: an EchoNet-format
    folder or store; every clip, ``training.evaluate``) and how many clips they are."""
    from training.evaluate import evaluate

    metrics = evaluate(model, traced, split="ALL")
    return {
        "clips": metrics["n_clips"],
        "dice": round(metrics["traced"]["dice"]["mean"], 5),
    }


def measure(model, site: FrameStore, held: list[str], loader, limits, traced: str | None = None) -> dict:
    out = {
        "source_dice": round(source_dice(model, loader), 5),
        "site": site_signals(model, site, held, limits),
    }
    if traced is not None:
        out["traced"] = traced_dice(model, traced)
    return out


# -- what the model was adapted on ------------------------------------------------------------------
def clip_digest(store: FrameStore, name: str) -> str:
    """Digest of a clip's decoded pixels (independent of its file's name, container and path)."""
    rec = store.records[name]
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{rec.num_frames}x{rec.height}x{rec.width}".encode())
    for start in range(0, rec.num_frames, 64):  # bounded reads
        h.update(store.read_frames(name, range(start, min(start + 64, rec.num_frames))).tobytes())
    return h.hexdigest()


def set_digest(digests: list[str]) -> str:
    return hashlib.blake2b("".join(sorted(digests)).encode(), digest_size=8).hexdigest()


def data_record(site: FrameStore, labelled: FrameStore, held: list[str]) -> dict:
    adapt_names = site.names("TRAIN")
    adapt = sorted(clip_digest(site, n) for n in adapt_names)
    held_digests = sorted(clip_digest(site, n) for n in held)
    sim = sorted(clip_digest(labelled, n) for n in labelled.names())
    return {
        "unlabelled": {
            "clips": len(adapt) + len(held_digests),
            "adapt_clips": len(adapt),
            "held_out_clips": len(held_digests),
            "frames": int(sum(site.records[n].num_frames for n in adapt_names)),
            "adapt_digest": set_digest(adapt),
            "held_out_digest": set_digest(held_digests),
            "adapt_clip_digests": adapt,
            "held_out_clip_digests": held_digests,
        },
        "labelled": {
            "clips": len(sim),
            "train_clips": len(labelled.names("TRAIN")),
            "digest": set_digest(sim),
        },
    }


# -- the run -----------------------------------------------------------------------------------------
@torch.no_grad()
def student_statistics(teacher, student) -> None:
    """Give the teacher the student's BatchNorm running statistics.

    The teacher's weights are an average of the student's, but its own running statistics come from
    the only windows it ever sees in training: the site's. A network normalised by site-only
    statistics segmented the site worse than the starting model (dev pilot: re-estimating the
    bundled model's statistics on site windows took its site Dice from 0.786 to 0.779), while the
    student's statistics (labelled and site windows, the batches its weights were trained with) fit
    the averaged weights: 0.816 against 0.782 with the teacher's own (same run).
    """
    theirs = dict(student.named_buffers())
    for name, buf in teacher.named_buffers():
        if buf.is_floating_point():
            buf.copy_(theirs[name])


def _model_id(path) -> str:
    weights = checkpoint_weights(path, "student")
    return make_model_id(read_checkpoint_config(weights)[0], weights_digest(weights))


def _check(what: str, before: float, after: float, margin: float) -> tuple[bool, str]:
    drop = before - after
    if drop <= margin:
        return True, f"{what} Dice {before:.4f} -> {after:.4f} ({-drop * 100:+.2f} points): within the margin"
    return False, (
        f"{what} Dice dropped {drop * 100:.2f} points ({before:.4f} -> {after:.4f}), more than the "
        f"allowed {margin * 100:.2f}"
    )


def _gate(before: dict, after: dict, opts: AdaptOptions) -> dict:
    """Whether the adapted model may be written as ``best/``: the source-domain Dice within
    ``max_source_drop`` and, with the site's traced clips, their Dice within ``max_traced_drop``."""
    b, a = before["source_dice"], after["source_dice"]
    checks = [_check("source-domain", b, a, opts.max_source_drop)]
    gate = {"max_source_drop": opts.max_source_drop, "source_drop": round(b - a, 5)}
    if "traced" in after:
        b, a = before["traced"]["dice"], after["traced"]["dice"]
        what = f"the site's {after['traced']['clips']} traced clips'"
        checks.append(_check(what, b, a, opts.max_traced_drop))
        gate.update(max_traced_drop=opts.max_traced_drop, traced_drop=round(b - a, 5))
    passed = all(ok for ok, _ in checks)
    reason = "; ".join(text for _, text in checks)
    if not passed:
        reason += ": the adapted model is not written as best/"
    return {**gate, "passed": passed, "reason": reason}


def adapt(opts: AdaptOptions) -> dict:
    """Run an adaptation (or resume one) and return its report (also written to ``RUN/adapt.json``)."""
    start = time.perf_counter()
    out = Path(opts.out)
    if opts.resume:
        if not (out / "last").is_dir():
            raise ValueError(f"cannot resume {out}: it has no last/ checkpoint")
        # A stop point belongs to the invocation that set it; resuming runs to the end unless told.
        overrides = list(opts.overrides)
        if not any(o.split("=", 1)[0].strip() == "stop_after" for o in overrides):
            overrides.append("stop_after=null")
        cfg = load_config(out / "config.yaml", overrides)
    else:
        cfg = adapt_config(opts, opts.labelled or str(default_labelled()))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    site = ensure_store(cfg.data.unlabelled_root, cfg.data.unlabelled_store, progress=opts.progress)
    # The source domain (the gate's held-out simulated clips) is the given or default labelled set;
    # with the fitted simulator (the default) the windows trained on are clips rendered like the site.
    # A resumed run does what it started doing: it fitted when it has a fit record.
    fit_record = out / FIT_RECORD
    use_fit = fit_record.is_file() if opts.resume else opts.fit_simulator
    source_root = cfg.data.root
    if opts.resume and use_fit:
        source_root = json.loads(fit_record.read_text())["source"]
    sim = ensure_store(
        source_root, cfg.data.store if source_root == cfg.data.root else None, progress=opts.progress
    )
    limits = QualityThresholds()
    held = held_out_names(site)
    if not held:
        raise ValueError("the site's clips have no held-out slice (VAL or TEST): give at least two clips")
    if not site.names(cfg.data.unlabelled_split):
        raise ValueError(f"the site's clips have no {cfg.data.unlabelled_split} clips to adapt on")
    fitted = None
    if use_fit:
        fitted = fitted_labelled(opts, cfg, site, source_root)
        cfg = replace(cfg, data=replace(cfg.data, root=fitted["root"], store=None))
    start_model = load_pretrained(cfg.init_from)[0]
    loader, source_windows = source_loader(sim, start_model.config)
    before_path = out / BEFORE
    if opts.resume and before_path.is_file():
        before = json.loads(before_path.read_text())
        if opts.traced is not None and "traced" not in before:  # traced clips given on resuming
            before["traced"] = traced_dice(start_model, opts.traced)
    else:
        before = measure(start_model, site, held, loader, limits, opts.traced)
        out.mkdir(parents=True, exist_ok=True)
        before_path.write_text(json.dumps(before, indent=1) + "\n")
    logger.info("before: source Dice %.4f; site %s", before["source_dice"], before["site"])

    trained = fit(cfg, resume=out if opts.resume else None)
    if trained.step < (cfg.steps or 0):
        logger.info("stopped at step %d of %s; resume with --resume", trained.step, cfg.steps)
        return {"stopped_at": trained.step}
    student_statistics(trained.teacher, trained.student)
    kept = opts.keep
    after = {
        name: measure(model, site, held, loader, limits, opts.traced if name == kept else None)
        for name, model in (("student", trained.student), ("teacher", trained.teacher))
    }
    gate = _gate(before, after[kept], opts)
    report = {
        "format": FORMAT,
        "version": VERSION,
        "from": {"model_id": _model_id(cfg.init_from), "preset": start_model.config.preset},
        "data": data_record(site, sim, held),
        "source_eval_windows": source_windows,
        "simulator_fit": fitted,
        "training": {
            "steps": trained.step,
            "seed": cfg.seed,
            "lr": cfg.lr,
            "consistency": cfg.consistency,
            "ema_decay": cfg.ema_decay,
            "batch_size": cfg.batch_size,
            "unlabelled_batch_size": cfg.unlabelled_batch_size,
        },
        "before": before,
        "after": after,
        "kept": kept,
        "gate": gate,
        "best": None,
    }
    best = out / "best"
    shutil.rmtree(best, ignore_errors=True)
    if gate["passed"]:
        model = trained.teacher if kept == "teacher" else trained.student
        meta = {
            "run_id": out.name,
            "step": trained.step,
            "preset": model.config.preset,
            "mode": "adapted",
            "metrics": {"source_dice": after[kept]["source_dice"], **after[kept]["site"]},
            "adaptation": _artefact_record(report),
        }
        ckpt.save_checkpoint(best, model, None, meta)
        report["best"] = "best"
        logger.info("adapted model written to %s (%s)", best, gate["reason"])
    else:
        logger.warning("%s", gate["reason"])
    report["seconds"] = round(time.perf_counter() - start, 1)
    (out / REPORT).write_text(json.dumps(report, indent=1) + "\n")
    return report


def _artefact_record(report: dict) -> dict:
    """What ``best/config.json`` records about the adaptation: counts and digests, no per-clip lists."""
    site = report["data"]["unlabelled"]
    kept = report["after"][report["kept"]]
    traced = {}
    if "traced" in kept:
        traced = {"traced": {"before": report["before"]["traced"], "after": kept["traced"]}}
    return {
        "from": report["from"]["model_id"],
        "unlabelled_clips": site["clips"],
        "adapt_clips": site["adapt_clips"],
        "held_out_clips": site["held_out_clips"],
        "adapt_digest": site["adapt_digest"],
        "held_out_digest": site["held_out_digest"],
        "labelled_clips": report["data"]["labelled"]["clips"],
        "labelled_digest": report["data"]["labelled"]["digest"],
        "simulator_fit": _fit_record(report["simulator_fit"]),
        "steps": report["training"]["steps"],
        "seed": report["training"]["seed"],
        "kept": report["kept"],
        "source_dice_before": report["before"]["source_dice"],
        "source_dice_after": report["after"][report["kept"]]["source_dice"],
        "site_before": report["before"]["site"],
        "site_after": report["after"][report["kept"]]["site"],
        **traced,
    }


def _fit_record(fitted: dict | None) -> dict | None:
    """The simulator fit as ``best/config.json`` keeps it: its parameters, distance and digest."""
    if fitted is None:
        return None
    keys = ("digest", "clips", "params", "distance", "start_distance", "site_clips")
    return {k: fitted[k] for k in keys}


def format_summary(report: dict) -> str:
    """A few lines for people: the signals before/after and the gate's decision."""
    if "gate" not in report:
        return f"stopped at step {report.get('stopped_at')}; continue with --resume"
    kept = report["kept"]
    b, a = report["before"], report["after"][kept]
    lines = [
        f"adapted on {report['data']['unlabelled']['adapt_clips']} clips, checked on "
        f"{report['data']['unlabelled']['held_out_clips']} held-out clips ({kept} kept)"
    ]
    fitted = report.get("simulator_fit")
    if fitted:
        lines.append(
            f"  trained on {fitted['clips']} clips of the simulator fitted to the site (distance "
            f"{fitted['distance']:.3f}, the training recipe's {fitted['start_distance']:.3f})"
        )
    lines.append(f"  source-domain Dice: {b['source_dice']:.4f} -> {a['source_dice']:.4f}")
    if "traced" in a:
        lines.append(
            f"  Dice on the site's {a['traced']['clips']} traced clips: {b['traced']['dice']:.4f} -> "
            f"{a['traced']['dice']:.4f}"
        )
    for name in sig.SIGNALS:
        lines.append(f"  {name}: {b['site'][name]:.4f} -> {a['site'][name]:.4f}")
    lines.append(("written: best/ - " if report["best"] else "refused: ") + report["gate"]["reason"])
    return "\n".join(lines)
