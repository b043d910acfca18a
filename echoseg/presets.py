"""Presets: named model configurations, kept as data.

Each preset carries its preprocessing (input size, normalisation, window), so a checkpoint or an
ONNX file made from it tells the service everything it needs. ``mean``/``std`` are the intensity
statistics of gray B-mode echo scaled to [0, 1] (mostly dark sector, bright walls): about 0.12 and
0.18 for EchoNet-Dynamic-like clips and for the synthetic generator.

Two families (``architecture``):

- the authors' network (ResNet-18 encoders per window position, eq. (3) as a matrix product,
  one dilation, a LinkNet decoder), as ``paper``, ``lite`` and ``tiny``:

  - ``paper``: the paper's scale, 256 x 256, k = 3 centred, width 64, four stages, BSSF/ASSC on
    all four: 53.7 M parameters (the paper's Table 7: 74.8 M).
  - ``lite``: the real-time candidate at EchoNet's native 112 x 112: width 8, BSSF/ASSC only on the
    deepest two stages (2-3), where the maps are small: 0.83 M parameters, 0.240 GFLOPs per frame.
    Chosen on a measured Dice / latency front (``benchmarks/results/lite_front.md``).
  - ``tiny``: width 8, three stages, 32 x 32, for tests.

- the first family (U-Net encoders, ``A ⊙ G``, several dilations), kept so that its checkpoints
  load: ``unet`` (width 64, 256 x 256), ``unet-lite`` (width 4, 112 x 112, ASSC on the deepest two
  levels: 563,609 parameters; the bundled ``models/default`` is one) and ``unet-tiny`` (tests).

``echoseg model-info --preset NAME`` prints each one's parameters and FLOPs.
"""

from __future__ import annotations

from echoseg.config import ModelConfig

ECHO_MEAN = 0.12
ECHO_STD = 0.18

# The authors' network (the ResNet family): eq. (3) as a matrix product, one dilation, BSSF on
# every stage unless a preset says otherwise.
RESNET = dict(
    architecture="resnet", depth=4, dilations=(1,), aggregation="product", scaling="fanin", norm="batch"
)
# The first family, as its checkpoints were trained: U-Net, A ⊙ G, fan-in scaling.
UNET = dict(architecture="unet", aggregation="elementwise", scaling="fanin", norm="batch")

PRESETS: dict[str, dict] = {
    "paper": dict(RESNET, width=64, calibrated_levels=(0, 1, 2, 3), input_size=256),
    "lite": dict(RESNET, width=8, calibrated_levels=(2, 3), input_size=112),
    "tiny": dict(RESNET, width=8, depth=3, calibrated_levels=(0, 1, 2), input_size=32),
    "unet": dict(UNET, width=64, depth=5, calibrated_levels=(0, 1, 2), dilations=(1, 2, 3), input_size=256),
    "unet-lite": dict(UNET, width=4, depth=5, calibrated_levels=(3, 4), dilations=(1, 2, 3), input_size=112),
    "unet-tiny": dict(UNET, width=4, depth=3, calibrated_levels=(0, 1, 2), dilations=(1, 2), input_size=32),
}

COMMON = dict(num_frames=3, window="centered", in_channels=1, mean=ECHO_MEAN, std=ECHO_STD, threshold=0.5)


def list_presets() -> list[str]:
    """Names of the registered presets."""
    return list(PRESETS)


def get_preset(name: str, **overrides) -> ModelConfig:
    """The :class:`ModelConfig` of preset ``name``, with optional field overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; valid presets: {list_presets()}")
    return ModelConfig(preset=name, **{**COMMON, **PRESETS[name], **overrides})
