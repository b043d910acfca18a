"""Model artefacts: one metadata schema, one resolver, one weights digest.

An EchoSeg model reaches a runtime as one of three artefacts, and each carries the same
metadata, so the file alone says how frames must be prepared:

- a **checkpoint**: a directory with ``config.json`` (``{"model": ModelConfig, "meta": {...}}``)
  and ``<which>.safetensors``; a training run directory stands for its ``best/``, and a
  ``.safetensors`` file for the directory it sits in;
- an **ONNX export**: the ``echoseg.*`` entries of its ``metadata_props``;
- a **TensorRT engine** (``.engine``/``.plan``/``.trt``): the same ``echoseg.*`` entries under
  ``"metadata"`` in ``<engine>.json`` beside it, with the build settings under ``"build"``.

The ``echoseg.*`` entries (all strings) are :data:`METADATA_KEYS`; ``echoseg.config`` is the
:class:`~echoseg.config.ModelConfig` as JSON and is what runtimes read. A model's id is
``<preset>-<digest>`` where the digest is a SHA-256 of the bytes that hold its weights (the
safetensors file of a checkpoint, the ``.onnx`` or engine file of an export), so a run
directory and the ``best/`` it resolves to have the same id, and different weights differ.

Nothing here imports torch or onnxruntime; reading ONNX metadata needs the ``onnx`` package.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echoseg.config import ModelConfig

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_SUFFIX = ".safetensors"
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
KINDS = ("checkpoint", "onnx", "engine")
METADATA_PREFIX = "echoseg."
METADATA_KEYS = (
    "config",
    "preset",
    "num_frames",
    "window",
    "input_size",
    "mean",
    "std",
    "threshold",
    "calibration",
    "batch",
    "precision",
    "run_id",
)
# Entries that describe the graph rather than how to feed it; files made before them lack them.
# ``graph``: JSON of how the graph was written (``summaries``: :data:`echoseg.forms.SUMMARY_FORM`,
# ``nodes``: its node count); ``quantization``: JSON of how an int8 file was quantized.
DESCRIPTIVE_KEYS = ("graph", "quantization")
PRECISIONS = ("fp32", "fp16", "int8")
DIGEST_LENGTH = 12


class ArtifactError(ValueError):
    """A model file or directory that is not a usable EchoSeg artefact; the message says why."""


# -- the metadata schema ---------------------------------------------------------------------------
def build_metadata(
    config: ModelConfig, batch: str | int, precision: str, meta: dict[str, Any] | None = None
) -> dict[str, str]:
    """The ``echoseg.*`` entries of an artefact (all values are strings)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    meta = meta or {}
    values = {
        "config": config.to_json(),
        "preset": config.preset,
        "num_frames": str(config.num_frames),
        "window": config.window,
        "input_size": str(config.input_size),
        "mean": repr(float(config.mean)),
        "std": repr(float(config.std)),
        "threshold": repr(float(config.threshold)),
        "calibration": config.calibration,
        "batch": str(batch),
        "precision": precision,
        "run_id": str(meta.get("run_id") or ""),
    }
    return {METADATA_PREFIX + k: values[k] for k in METADATA_KEYS}


def parse_metadata(props: dict[str, str], source: str) -> ModelConfig:
    """The :class:`ModelConfig` of an artefact's ``echoseg.*`` entries; ``source`` names it in errors."""
    missing = [METADATA_PREFIX + k for k in METADATA_KEYS if METADATA_PREFIX + k not in props]
    if missing:
        raise ArtifactError(
            f"{source} is not an EchoSeg export: metadata {missing} missing (export it with echoseg export)"
        )
    try:
        return ModelConfig.from_json(props[METADATA_PREFIX + "config"])
    except (ValueError, TypeError) as e:
        raise ArtifactError(f"{source}: its echoseg.config metadata is invalid ({e})") from None


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``echoseg.*`` metadata entries of an ``.onnx`` file (weights are not loaded)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}")
    proto = onnx.load_model(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props if p.key.startswith(METADATA_PREFIX)}


def engine_metadata_path(engine: str | Path) -> Path:
    """Where an engine's metadata lives: ``<engine>.json`` beside it."""
    return Path(f"{engine}.json")


def write_engine_metadata(engine: str | Path, props: dict[str, str], **sections: Any) -> Path:
    """Write ``<engine>.json``: ``{"metadata": props, **sections}`` (e.g. ``onnx=``, ``build=``)."""
    document = {"metadata": dict(props), **sections}
    path = engine_metadata_path(engine)
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return path


def read_engine_metadata(engine: str | Path) -> dict[str, Any]:
    """The whole ``<engine>.json`` document; its ``"metadata"`` holds the ``echoseg.*`` entries."""
    path = engine_metadata_path(engine)
    if not path.is_file():
        raise ArtifactError(
            f"no metadata beside the engine {Path(engine).name} (looked for {path.name}); "
            "engines built by echoseg export tensorrt write it"
        )
    try:
        document = json.loads(path.read_text())
    except ValueError as e:
        raise ArtifactError(f"{path.name} is not valid JSON ({e})") from None
    if not isinstance(document, dict) or not isinstance(document.get("metadata"), dict):
        raise ArtifactError(f"{path.name} has no 'metadata' object (keys: {sorted(document or {})})")
    return document


# -- the digest -------------------------------------------------------------------------------------
def weights_digest(*paths: Path, length: int = DIGEST_LENGTH) -> str:
    """Short SHA-256 of the given files' bytes, in order: a stable id for a set of weights."""
    if not paths:
        raise ValueError("weights_digest needs at least one file")
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:length]


def make_model_id(config: ModelConfig, digest: str) -> str:
    return f"{config.preset}-{digest}"


# -- the resolver -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Artifact:
    """A resolved model artefact: what it is, where its bytes are, and its metadata."""

    kind: str  # one of KINDS
    path: Path  # the checkpoint directory (best/ of a run), the .onnx or the engine file
    config: ModelConfig
    meta: dict[str, str] = field(default_factory=dict)  # echoseg.* entries
    weights: Path | None = None  # the file whose bytes define the model (digest source)
    extra: dict[str, Any] = field(default_factory=dict)  # the engine's build section, checkpoint meta

    @property
    def batch(self) -> str | int:
        """``"dynamic"`` or the fixed batch the artefact was exported with."""
        value = self.meta.get(METADATA_PREFIX + "batch", "dynamic")
        return int(value) if value.isdigit() else "dynamic"

    @property
    def precision(self) -> str:
        return self.meta.get(METADATA_PREFIX + "precision", "fp32")

    @property
    def calibration(self) -> str:
        return self.meta.get(METADATA_PREFIX + "calibration", self.config.calibration)

    def digest(self) -> str:
        assert self.weights is not None, "an artefact always has a weights file"
        return weights_digest(self.weights)

    def model_id(self) -> str:
        return make_model_id(self.config, self.digest())


def model_kind(path: Path) -> str:
    """``onnx``, ``engine`` or ``checkpoint`` (a directory or a ``.safetensors`` file)."""
    if path.suffix == ".onnx":
        return "onnx"
    if path.suffix in ENGINE_SUFFIXES:
        return "engine"
    if path.is_dir() or path.suffix == WEIGHTS_SUFFIX:
        return "checkpoint"
    raise ArtifactError(
        f"cannot tell what model {path} is: expected a .onnx file, a TensorRT engine "
        f"({', '.join(ENGINE_SUFFIXES)}), a checkpoint directory or a {WEIGHTS_SUFFIX} file"
    )


def checkpoint_weights(path: str | Path, which: str = "student") -> Path:
    """The weights file a checkpoint path designates (a run directory stands for its ``best/``)."""
    path = Path(path)
    if path.is_file():
        if path.suffix != WEIGHTS_SUFFIX:
            raise ArtifactError(f"{path} is not a {WEIGHTS_SUFFIX} file or a checkpoint directory")
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if not (path / CONFIG_NAME).is_file() and (path / "best" / CONFIG_NAME).is_file():
        path = path / "best"  # a training run directory
    weights = path / f"{which}{WEIGHTS_SUFFIX}"
    if not weights.is_file():
        found = sorted(p.stem for p in path.glob(f"*{WEIGHTS_SUFFIX}"))
        raise FileNotFoundError(f"no {weights.name} in {path}; weights found there: {found}")
    return weights


def read_checkpoint_config(weights: Path) -> tuple[ModelConfig, dict[str, Any]]:
    """``(config, meta)`` of the ``config.json`` beside a checkpoint's weights file."""
    config_path = weights.parent / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} beside {weights}")
    try:
        document = json.loads(config_path.read_text())
    except ValueError as e:
        raise ArtifactError(f"{config_path} is not valid JSON ({e})") from None
    if "model" not in document:
        raise ArtifactError(f"{config_path} has no 'model' section; keys found: {sorted(document)}")
    return ModelConfig.from_dict(document["model"]), dict(document.get("meta") or {})


def resolve(path: str | Path, which: str = "student") -> Artifact:
    """Resolve a checkpoint or run directory, a ``.safetensors``, ``.onnx`` or engine file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model {path} does not exist")
    kind = model_kind(path)
    if kind == "checkpoint":
        weights = checkpoint_weights(path, which)
        config, meta = read_checkpoint_config(weights)
        props = build_metadata(config, "dynamic", "fp32", meta)
        return Artifact("checkpoint", weights.parent, config, props, weights, {"meta": meta})
    if kind == "onnx":
        props = read_onnx_metadata(path)
        return Artifact("onnx", path, parse_metadata(props, path.name), props, path)
    document = read_engine_metadata(path)
    props = {str(k): str(v) for k, v in document["metadata"].items()}
    config = parse_metadata(props, engine_metadata_path(path).name)
    extra = {k: v for k, v in document.items() if k != "metadata"}
    return Artifact("engine", path, config, props, path, extra)
