"""Model configuration: one typed dataclass that every artefact (checkpoint, ONNX, engine) carries.

The preprocessing a model expects (input size, intensity normalisation, window of frames) is part
of its configuration, so the trainer, the exporter and the service all read the same values and
nobody has to remember which flags a file was made with.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

WINDOWS = ("centered", "causal")
CALIBRATION_FORMS = ("conv", "matmul")
NORMS = ("batch", "instance", "group")
# "resnet": the authors' network (ResNet-18 encoders, BSSF on every stage, LinkNet decoder);
# "unet": the project's first family (U-Net encoders and decoder), kept so its checkpoints load.
ARCHITECTURES = ("resnet", "unet")
# How the attention A (C x C) makes the kernel W from G (C x C x 3 x 3): "product" is eq. (3),
# W = A · G (a matrix product); "elementwise" is the first family's A ⊙ G.
AGGREGATIONS = ("product", "elementwise")
# "none": the released form (raw sigmoid, unscaled kernel); "fanin": 1/sqrt(84) in the sigmoid and
# the kernel divided by its fan-in (see training/model/calibration.py).
SCALINGS = ("none", "fanin")
BLOCKS_PER_STAGE = 2  # ResNet-18

# Fields added after the first family was trained; a config that lacks them (every checkpoint and
# ONNX file made before) is the model it was trained as: the U-Net family with A ⊙ G, fan-in scaled.
LEGACY_DEFAULTS: dict[str, Any] = {"architecture": "unet", "aggregation": "elementwise", "scaling": "fanin"}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and preprocessing of an EchoSeg network.

    Frames enter the network as ``(B, num_frames, input_size, input_size)`` float tensors that were
    scaled to [0, 1] and then normalised as ``(x - mean) / std``; the network returns one-channel
    logits ``(B, 1, input_size, input_size)`` for the target frame of the window.
    """

    preset: str = "custom"
    architecture: str = "unet"  # "resnet" (the paper's network) or "unet"; absent in old configs
    num_frames: int = 3  # k, odd; 1 = one shared encoder (the paper's Baseline)
    window: str = "centered"  # "centered": t-k//2 .. t+k//2 ; "causal": t-k+1 .. t
    in_channels: int = 1  # channels per frame (grayscale)
    width: int = 16  # channels of the first encoder level; level i has width * 2**i
    depth: int = 5  # encoder levels
    calibrated_levels: tuple[int, ...] = (0, 1, 2, 3, 4)  # levels with ASSC; others fuse plainly
    dilations: tuple[int, ...] = (1, 2, 3)  # dilation rates of the calibration block
    tce: bool = True  # True: k independent encoders; False: one shared encoder
    bssf: bool = True  # True: calibrated fusion (ASSC + BSSF); False: plain 1x1 fusion
    calibration: str = "conv"  # numerical form of the per-sample calibration kernels
    aggregation: str = "elementwise"  # "product": W = A · G (eq. 3); "elementwise": A ⊙ G (first family)
    scaling: str = "fanin"  # "none" (released code) or "fanin" (1/sqrt(84) and kernel fan-in)
    norm: str = "batch"
    input_size: int = 112
    mean: float = 0.0
    std: float = 1.0
    threshold: float = 0.5  # probability above which a pixel is LV cavity
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Accept lists from JSON/YAML and freeze them.
        object.__setattr__(self, "calibrated_levels", tuple(int(i) for i in self.calibrated_levels))
        object.__setattr__(self, "dilations", tuple(int(d) for d in self.dilations))
        self.validate()

    def validate(self) -> None:
        for name, value, valid in (
            ("architecture", self.architecture, ARCHITECTURES),
            ("aggregation", self.aggregation, AGGREGATIONS),
            ("scaling", self.scaling, SCALINGS),
        ):
            if value not in valid:
                raise ValueError(f"{name} must be one of {valid}, got {value!r}")
        if self.num_frames < 1 or self.num_frames % 2 == 0:
            raise ValueError(f"num_frames must be a positive odd number, got {self.num_frames}")
        if self.window not in WINDOWS:
            raise ValueError(f"window must be one of {WINDOWS}, got {self.window!r}")
        if self.calibration not in CALIBRATION_FORMS:
            raise ValueError(f"calibration must be one of {CALIBRATION_FORMS}, got {self.calibration!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.depth < 1 or self.width < 1:
            raise ValueError(f"depth and width must be positive, got depth={self.depth} width={self.width}")
        bad = [i for i in self.calibrated_levels if not 0 <= i < self.depth]
        if bad:
            raise ValueError(f"calibrated_levels {bad} outside 0..{self.depth - 1}")
        if not self.dilations or any(d < 1 for d in self.dilations):
            raise ValueError(f"dilations must be positive integers, got {self.dilations}")
        if self.input_size % self.stride(self.depth - 1) != 0:
            raise ValueError(
                f"input_size {self.input_size} must be divisible by {self.stride(self.depth - 1)}, the "
                f"stride of the deepest level of a depth-{self.depth} {self.architecture} network"
            )
        if self.architecture == "resnet" and self.bssf and self.num_frames > 1:
            small = [i for i in self.calibrated_levels if self.level_size(i) < 3]
            if small:
                raise ValueError(
                    f"calibrated_levels {small} have maps under 3x3 at input_size {self.input_size}: "
                    "T_q/T_k are unpadded 3x3 convolutions"
                )
        if self.std <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {self.threshold}")

    # -- levels -------------------------------------------------------------------------------
    def stride(self, level: int) -> int:
        """Down-sampling of encoder level ``level``: U-Net ``2**level``; ResNet ``2**(level+1)``
        (the 7x7 stride-2 stem, no max-pool, stride 2 at every stage after the first)."""
        return 2 ** (level + 1) if self.architecture == "resnet" else 2**level

    def level_size(self, level: int) -> int:
        """Side of level ``level``'s feature maps."""
        return self.input_size // self.stride(level)

    def level_width(self, level: int) -> int:
        """Channels of level ``level``: ``width * 2**level``."""
        return self.width * 2**level

    # -- window -------------------------------------------------------------------------------
    @property
    def lookahead(self) -> int:
        """Frames after the target frame the model needs (what a stream must wait for)."""
        return self.num_frames // 2 if self.window == "centered" else 0

    @property
    def offsets(self) -> tuple[int, ...]:
        """Offsets of the window's frames relative to the target frame, in encoder order."""
        k = self.num_frames
        first = -(k // 2) if self.window == "centered" else -(k - 1)
        return tuple(range(first, first + k))

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["calibrated_levels"] = list(self.calibrated_levels)
        d["dilations"] = list(self.dilations)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Read a saved config. One without ``architecture`` predates the ResNet family: it is the
        U-Net family with A ⊙ G (``LEGACY_DEFAULTS``), whatever its preset name says."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; valid keys: {sorted(known)}")
        if "architecture" not in d:
            logger.info(
                "model config (preset %r) names no architecture: read as a U-Net-family model "
                "(architecture='unet', aggregation='elementwise', scaling='fanin'), as trained before "
                "the ResNet family; preset names now mean the ResNet family",
                d.get("preset"),
            )
        return cls(**{**LEGACY_DEFAULTS, **d})

    @classmethod
    def from_json(cls, s: str) -> ModelConfig:
        return cls.from_dict(json.loads(s))

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)
