"""EchoSegNet: shapes, stability of every preset, ablation switches, window alignment."""

from __future__ import annotations

import pytest
import torch

from training.model import EchoSegNet, build_model, get_preset, list_presets
from training.model.calibration import SemanticCalibration
from training.model.summary import count_parameters


def calibrations(model: EchoSegNet) -> list[SemanticCalibration]:
    return [m for m in model.modules() if isinstance(m, SemanticCalibration)]


def forward_backward(config, batch: int) -> None:
    torch.manual_seed(0)
    model = build_model(config).train()
    frames = torch.randn(batch, config.num_frames, config.input_size, config.input_size)
    logits = model(frames)
    assert logits.shape == (batch, 1, config.input_size, config.input_size)
    assert torch.isfinite(logits).all()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, (frames[:, :1] > 0).float())
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads), "every parameter takes part in the forward pass"
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_presets_are_registered():
    assert list_presets() == ["paper", "lite", "tiny", "unet", "unet-lite", "unet-tiny"]
    for name in list_presets():
        config = get_preset(name)
        assert config.preset == name
        assert config.num_frames == 3 and config.window == "centered"
        assert config.std > 0
        family = "unet" if name.startswith("unet") else "resnet"
        assert config.architecture == family
        assert config.aggregation == ("elementwise" if family == "unet" else "product")
    with pytest.raises(ValueError, match="paper"):
        get_preset("huge")


@pytest.mark.parametrize("name", ["tiny", "lite", "unet-tiny", "unet-lite"])
@pytest.mark.parametrize("form", ["conv", "matmul"])
def test_forward_backward_is_finite(name, form):
    forward_backward(get_preset(name, calibration=form), batch=2)


@pytest.mark.parametrize("scaling", ["none", "fanin"])
def test_resnet_forward_backward_is_finite_at_either_scaling(scaling):
    forward_backward(get_preset("tiny", scaling=scaling), batch=2)


@pytest.mark.slow
def test_paper_forward_backward_is_finite():
    forward_backward(get_preset("paper"), batch=1)


def test_paper_is_the_authors_network():
    """ResNet-18 encoders (1 input channel, 7x7 stride-2 stem, no max-pool, 64/128/256/512), BSSF on
    all four stages with one dilation, the LinkNet decoder."""
    config = get_preset("paper")
    with torch.device("meta"):
        model = build_model(config)
    encoder = model.encoder.encoders[0]
    stem = encoder.stem[0]
    assert (stem.in_channels, stem.out_channels, stem.kernel_size, stem.stride) == (1, 64, (7, 7), (2, 2))
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in encoder.modules())
    assert [len(stage) for stage in encoder.stages] == [2, 2, 2, 2]
    assert [stage[-1].conv2.out_channels for stage in encoder.stages] == [64, 128, 256, 512]
    assert len(model.encoder.encoders) == 3
    blocks = calibrations(model)
    assert sorted(b.channels for b in blocks) == [64, 64, 128, 128, 256, 256, 512, 512]
    assert all(b.dilations == (1,) and b.aggregation == "product" for b in blocks)
    assert all(b.transform_q.padding == (0, 0) for b in blocks)  # unpadded T_q/T_k, as released
    # torchvision's ResNet-18 has 11,689,512 parameters; layer1..layer4 are all but its fc
    # (513,000), its 7x7x3 stem conv (9,408) and the stem's BatchNorm (128)
    one_encoder = count_parameters(encoder) - count_parameters(encoder.stem)
    assert one_encoder == 11_689_512 - 513_000 - 9_408 - 128


@pytest.mark.parametrize("architecture", ["resnet", "unet"])
def test_level_sizes_follow_the_architecture(tiny_config, architecture):
    config = tiny_config.replace(architecture=architecture)
    model = build_model(config).eval()
    with torch.no_grad():
        features = model.encoder(torch.randn(1, 3, 32, 32))
    assert [level[0].shape[-1] for level in features] == [config.level_size(i) for i in range(config.depth)]
    assert [level[0].shape[1] for level in features] == [config.level_width(i) for i in range(config.depth)]


def test_resnet_rejects_calibrated_maps_below_3x3(tiny_config):
    with pytest.raises(ValueError, match="under 3x3"):
        tiny_config.replace(input_size=16)
    tiny_config.replace(input_size=16, calibrated_levels=(0, 1))  # 8x8 and 4x4 are fine


def test_set_calibration_keeps_outputs(tiny_model):
    frames = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        conv = tiny_model(frames)
        tiny_model.set_calibration("matmul")
        matmul = tiny_model(frames)
    assert tiny_model.config.calibration == "matmul"
    assert all(c.form == "matmul" for c in calibrations(tiny_model))
    torch.testing.assert_close(conv, matmul, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="matmul"):
        tiny_model.set_calibration("winograd")


def test_tce_off_shares_one_encoder(tiny_config):
    independent = build_model(tiny_config)
    shared = build_model(tiny_config.replace(tce=False))
    assert len(independent.encoder.encoders) == 3 and len(shared.encoder.encoders) == 1
    one_encoder = count_parameters(shared.encoder)
    assert count_parameters(independent.encoder) == 3 * one_encoder
    assert count_parameters(independent) - count_parameters(shared) == 2 * one_encoder
    # a shared encoder gives the same features to a frame wherever it sits in the window
    frames = torch.randn(1, 3, 32, 32)
    frames[:, 2] = frames[:, 0]
    with torch.no_grad():
        features = shared.eval().encoder(frames)
    for level in features:
        torch.testing.assert_close(level[0], level[2])


def test_bssf_off_has_no_calibration(tiny_config):
    plain = build_model(tiny_config.replace(bssf=False))
    assert calibrations(plain) == []
    assert all(len(f.calibrations) == 0 for f in plain.fusions)
    assert not any("warp" in name for name, _ in plain.named_parameters())
    assert len(calibrations(build_model(tiny_config))) == 2 * tiny_config.depth


def test_calibrated_levels_select_where_assc_sits(tiny_config):
    model = build_model(tiny_config.replace(calibrated_levels=(1,), dilations=(1, 3)))
    assert [sorted(f.calibrations) for f in model.fusions] == [[], ["0", "2"], []]
    assert all(c.channels == tiny_config.width * 2 and c.dilations == (1, 3) for c in calibrations(model))


@pytest.mark.parametrize(
    ("window", "target", "neighbours"), [("centered", 1, ["0", "2"]), ("causal", 2, ["0", "1"])]
)
def test_target_frame_follows_the_window(tiny_config, window, target, neighbours):
    torch.manual_seed(0)
    model = build_model(tiny_config.replace(window=window)).eval()
    assert model.target == target == model.config.offsets.index(0)
    assert all(sorted(f.calibrations) == neighbours for f in model.fusions)
    seen = []
    for block in calibrations(model):
        block.register_forward_hook(lambda module, inputs, output: seen.append(inputs))
    frames = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.encoder(frames)
        model(frames)
    # each ASSC gets (neighbour, target) of its level: the target is always the frame at `target`
    per_level = [features[level] for level in range(tiny_config.depth) for _ in neighbours]
    for (neighbour, target_features), level, name in zip(
        seen, per_level, neighbours * tiny_config.depth, strict=True
    ):
        torch.testing.assert_close(target_features, level[target])
        torch.testing.assert_close(neighbour, level[int(name)])


@pytest.mark.parametrize("num_frames", [1, 5])
def test_other_window_lengths(tiny_config, num_frames):
    config = tiny_config.replace(num_frames=num_frames)
    model = build_model(config)
    expected = (num_frames - 1) * config.depth
    assert len(calibrations(model)) == expected
    assert len(model.encoder.encoders) == num_frames
    logits = model(torch.randn(2, num_frames, 32, 32))
    assert logits.shape == (2, 1, 32, 32)


@pytest.mark.parametrize("norm", ["instance", "group"])
def test_norm_choices(tiny_config, norm):
    model = build_model(tiny_config.replace(norm=norm))
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 1, 32, 32)


def test_build_model_rejects_non_config():
    with pytest.raises(ValueError, match="ModelConfig"):
        build_model({"preset": "tiny"})
