"""EchoSegNet: temporal context-aware encoders -> per-level calibrated fusion (BSSF) -> decoder.

``config.architecture`` picks the family: ``resnet`` (the authors' network: ResNet-18 encoders,
released ASSC/BSSF, LinkNet decoder) or ``unet`` (the first family, whose checkpoints still load).
"""

from __future__ import annotations

import torch
from torch import nn

from echoseg.config import CALIBRATION_FORMS, ModelConfig
from training.model.calibration import SemanticCalibration
from training.model.decoder import LinkNetDecoder, UNetDecoder
from training.model.encoder import TemporalEncoders, level_widths
from training.model.fusion import LevelFusion


class EchoSegNet(nn.Module):
    """Segments the left-ventricle cavity in the target frame of a k-frame window.

    ``forward(frames (B, k, S, S) float32, normalised) -> logits (B, 1, S, S)``

    The target frame is the window position whose offset is 0 (``config.offsets``): position
    k // 2 for a ``centered`` window, k - 1 for a ``causal`` one.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.target = config.offsets.index(0)
        self.encoder = TemporalEncoders(config)
        calibrated = set(config.calibrated_levels) if config.bssf else set()
        resnet = config.architecture == "resnet"
        calibration = dict(
            dilations=config.dilations,
            form=config.calibration,
            aggregation=config.aggregation,
            scaling=config.scaling,
            transform_padding=0 if resnet else 1,
        )
        self.fusions = nn.ModuleList(
            LevelFusion(
                c,
                config.num_frames,
                self.target,
                i in calibrated,
                norm=config.norm if resnet else None,
                **calibration,
            )
            for i, c in enumerate(level_widths(config))
        )
        decoder = LinkNetDecoder if resnet else UNetDecoder
        self.decoder = decoder(config.width, config.depth, config.norm)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.fuse(self.encoder(frames)))

    def fuse(self, features: list[list[torch.Tensor]]) -> list[torch.Tensor]:
        """``features[level][position] -> fused[level]`` (the target frame's features per level)."""
        return [fusion(level) for fusion, level in zip(self.fusions, features, strict=True)]

    def set_calibration(self, form: str) -> EchoSegNet:
        """Switch every ASSC block to the ``conv`` or ``matmul`` form (same weights, same outputs)."""
        if form not in CALIBRATION_FORMS:
            raise ValueError(f"calibration form must be one of {CALIBRATION_FORMS}, got {form!r}")
        for module in self.modules():
            if isinstance(module, SemanticCalibration):
                module.form = form
        self.config = self.config.replace(calibration=form)
        return self
