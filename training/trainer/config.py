"""Training configuration: a typed dataclass read from YAML, then ``--set key=value`` overrides.

The resolved configuration is written as ``config.yaml`` into every run directory, so a run can be
repeated from its own folder. Checkpoints do not need it: they carry the model configuration in
their ``config.json``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from training.data.augment import FLIPS, check_flips

MODES = ("mean_teacher", "supervised")
AMP_MODES = ("auto", "off", "bf16", "fp16")


@dataclass
class ModelSection:
    """Which network to train: a preset plus field overrides of its ``ModelConfig``."""

    preset: str = "lite"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataSection:
    """Where the data lives (EchoNet-Dynamic or CAMUS folder, or a frame store) and how it is read."""

    root: str = "data/synth-train"
    store: str | None = None  # frame store of `root`; None: $ECHOSEG_CACHE or ~/.cache/echoseg/stores/
    prepare_workers: int = 1  # processes decoding clips when the store is built on first use
    train_split: str = "TRAIN"
    val_split: str = "VAL"
    windows_per_video: int = 8  # unlabelled windows drawn per video and epoch
    # Labelled windows drawn per video and epoch at random frames, with the true mask, where the
    # source has per-frame truth (the simulators); 0 keeps the paper's ED/ES labels only.
    true_windows_per_video: int = 0
    # Unlabelled windows from another source than ``root`` (e.g. a site's plain folder of clips, or
    # its frame store): the mean teacher's consistency then runs on those clips only.
    unlabelled_root: str | None = None
    unlabelled_store: str | None = None  # frame store of `unlabelled_root`; None: the default cache folder
    unlabelled_split: str = "TRAIN"
    augment: bool = True  # flips and rotation ±15°, identical on all k frames and the mask
    flips: str = FLIPS  # flips augment may use: h(orizontal), v(ertical), t(ranspose); "h" for apical views
    num_workers: int = 0  # DataLoader worker processes per stream (labelled, unlabelled, validation)
    prefetch_factor: int = 2  # batches each worker reads ahead
    persistent_workers: bool = True  # workers live across epochs

    def __post_init__(self) -> None:
        if self.num_workers < 0 or self.prepare_workers < 1 or self.prefetch_factor < 1:
            raise ValueError(
                "data.num_workers must be >= 0, data.prepare_workers and data.prefetch_factor >= 1; got "
                f"{self.num_workers}, {self.prepare_workers}, {self.prefetch_factor}"
            )
        if self.windows_per_video < 1:
            raise ValueError(f"data.windows_per_video must be at least 1, got {self.windows_per_video}")
        if self.true_windows_per_video < 0:
            raise ValueError(f"data.true_windows_per_video must be >= 0, got {self.true_windows_per_video}")
        try:
            check_flips(self.flips)
        except ValueError as exc:
            raise ValueError(f"data.{exc}") from None


@dataclass
class PerturbSection:
    """Input perturbations; student and teacher draw them independently (mean teacher)."""

    noise_std: float = 0.1  # additive Gaussian noise, in normalised intensity units
    gain: float = 0.1  # multiplicative intensity jitter: x * U(1 - gain, 1 + gain)
    offset: float = 0.1  # additive intensity jitter: x + U(-offset, offset)


@dataclass
class StyleSection:
    """Labelled windows pictured like the unlabelled ones (``training.trainer.style``; adaptation)."""

    fraction: float = 0.0  # share of each step's labelled windows restyled; 0 = off
    amplitude: bool = True  # mix in a random unlabelled window's Fourier amplitude
    mean_windows: int = 256  # windows of each set whose mean picture gives the shift; 0 = no shift


@dataclass
class TrainConfig:
    """Everything a training run needs; see ``docs/training.md`` for each field."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    perturb: PerturbSection = field(default_factory=PerturbSection)
    style: StyleSection = field(default_factory=StyleSection)
    mode: str = "mean_teacher"  # or "supervised" (no teacher, labelled windows only)
    steps: int | None = 1000  # optimisation steps (iterations); wins over epochs when set
    epochs: float | None = None  # passes over the labelled windows, used when steps is None
    stop_after: int | None = None  # end this invocation at this step (schedules still span all steps)
    batch_size: int = 8  # labelled windows per step (per process under DDP)
    unlabelled_batch_size: int = 8  # unlabelled windows per step (per process)
    lr: float = 1e-4
    poly_power: float = 0.9
    weight_decay: float = 1e-6  # the paper's L2 term (lambda/2 * ||w||^2), as Adam's coupled decay
    dice_weight: float = 0.5
    bce_weight: float = 0.5
    mse_weight: float = 0.5
    kl_weight: float = 0.5
    consistency: float = 1.0  # lambda_max; lambda(t) = consistency * (t / t_max)^2
    ema_decay: float = 0.99
    seed: int = 0
    # A checkpoint (directory, run directory or .safetensors) whose student weights start both the
    # student and the teacher; its config.json then defines the network (the model section is unused).
    init_from: str | None = None
    select_best: bool = True  # False: validation is logged, only last/ is written (the caller picks)
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1"
    amp: str = "auto"  # "auto" (bf16 on CUDA when supported, else off), "off", "bf16", "fp16"
    threads: int | None = None  # torch intra-op threads on CPU; None keeps torch's default
    eval_every: int = 200  # steps between validations (and "last" checkpoints)
    eval_batch_size: int = 16
    log_every: int = 10  # steps between rows of log.csv
    out_dir: str = "runs"
    run_name: str | None = None  # default: <preset>-<mode>-<timestamp>
    tensorboard: bool = False  # needs the `tensorboard` extra
    progress: bool = True  # tqdm bar on rank 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.steps is None and self.epochs is None:
            raise ValueError("set either steps or epochs")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be positive, got {self.steps}")
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        if self.stop_after is not None and self.stop_after < 1:
            raise ValueError(f"stop_after must be positive, got {self.stop_after}")
        if self.batch_size < 1 or self.unlabelled_batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("batch sizes must be positive")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.eval_every < 1 or self.log_every < 1:
            raise ValueError("eval_every and log_every must be positive")
        if not 0.0 <= self.style.fraction <= 1.0:
            raise ValueError(f"style.fraction must lie in [0, 1], got {self.style.fraction}")
        if self.style.mean_windows < 0:
            raise ValueError(f"style.mean_windows must be 0 or more, got {self.style.mean_windows}")
        if self.style.fraction > 0 and self.mode != "mean_teacher":
            raise ValueError(
                "style.fraction needs unlabelled windows to take the style from: mode mean_teacher"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        sections = {
            "model": ModelSection,
            "data": DataSection,
            "perturb": PerturbSection,
            "style": StyleSection,
        }
        for name, section in sections.items():
            if name in d:
                d[name] = _build(section, d[name] or {}, prefix=f"{name}.")
        return _build(cls, d)


class _Loader(yaml.SafeLoader):
    """YAML with YAML 1.2's floats: ``1e-3`` is a number (PyYAML's YAML 1.1 wants ``1.0e-3`` and
    reads ``1e-3`` as a string, which then failed deep inside the optimiser)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects


def _build(cls, values: dict[str, Any], prefix: str = ""):
    if not isinstance(values, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {values!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"unknown training config keys {[prefix + k for k in unknown]}; "
            f"valid keys: {[prefix + k for k in sorted(known)]}"
        )
    return cls(**values)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` strings (dotted keys, YAML-parsed values) to a raw config mapping.

    ``model.overrides.width=8`` sets a field of the model preset; ``data.root=/data/echonet`` the
    data folder; ``steps=null`` switches to epochs.
    """
    raw = _deep_copy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like key=value (e.g. steps=500)")
        value = _load_yaml(text) if text else ""
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def _deep_copy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML file (or start from defaults when ``path`` is None) and apply overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"training config {path} does not exist")
        raw = _load_yaml(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"training config {path} must hold a mapping at the top level")
    return TrainConfig.from_dict(apply_overrides(raw, overrides or []))


def save_config(cfg: TrainConfig, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return path
