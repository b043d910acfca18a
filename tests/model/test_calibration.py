"""ASSC: the masked-max Summarize (against the static-slice form it replaced), and the conv and
matmul forms of the per-sample kernels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from training.model.calibration import (
    SUMMARY_LENGTH,
    SemanticCalibration,
    aggregate,
    bin_edges,
    bin_masks,
    calibrate_conv,
    calibrate_matmul,
    slice_max_pool,
    summarize,
    summarize_slices,
)


def reference_calibration(x: torch.Tensor, kernel: torch.Tensor, dilations: tuple[int, ...]) -> torch.Tensor:
    """One ordinary convolution per sample and dilation: the definition both forms must meet."""
    per_sample = [
        sum(F.conv2d(x[i : i + 1], kernel[i], padding=d, dilation=d) for d in dilations)
        for i in range(len(x))
    ]
    return torch.cat(per_sample)


@pytest.mark.parametrize("size", [1, 3, 7, 9, 14, 16, 28, 56, 5])
@pytest.mark.parametrize("bins", [1, 3, 5, 7])
def test_slice_pool_equals_adaptive_max_pool(size, bins):
    torch.manual_seed(size * 10 + bins)
    x = torch.randn(2, 3, size, size + 3)  # also non-square, with sizes that do and do not divide
    assert torch.equal(slice_max_pool(x, bins), F.adaptive_max_pool2d(x, bins))


@pytest.mark.parametrize("height, width", [(1, 1), (3, 4), (7, 7), (14, 14), (9, 13), (28, 28), (5, 2)])
@pytest.mark.parametrize("bins", [(1, 3, 5, 7), (2,), (3, 1)])
def test_summarize_equals_the_slice_form(height, width, bins):
    torch.manual_seed(height * 100 + width)
    x = torch.randn(3, 5, height, width) * 10
    assert torch.allclose(summarize(x, bins), summarize_slices(x, bins), rtol=0, atol=1e-5)
    assert torch.equal(summarize(x, bins), summarize_slices(x, bins))  # maxima and + 0 are exact


def test_summarize_gradient_reaches_only_the_maxima():
    x = torch.randn(2, 3, 7, 7, requires_grad=True)
    summarize(x).sum().backward()
    ref = x.detach().clone().requires_grad_(True)
    summarize_slices(ref).sum().backward()
    assert torch.equal(x.grad, ref.grad)


def test_bin_masks_are_zero_inside_each_bin_and_minus_inf_outside():
    mask = bin_masks(7, (1, 3))
    assert mask.shape == (4, 7)
    assert torch.equal(mask[0], torch.zeros(7))
    assert mask[2].tolist() == [float("-inf")] * 2 + [0.0] * 3 + [float("-inf")] * 2  # bin (2, 5)


def test_bin_edges_cover_the_axis_with_adaptive_pooling_rule():
    assert bin_edges(7, 3) == [(0, 3), (2, 5), (4, 7)]
    assert bin_edges(6, 3) == [(0, 2), (2, 4), (4, 6)]
    assert bin_edges(2, 5) == [(0, 1), (0, 1), (0, 2), (1, 2), (1, 2)]


def test_summarize_shape_and_content():
    x = torch.randn(2, 4, 14, 14)
    s = summarize(x)
    assert s.shape == (2, 4, SUMMARY_LENGTH) == (2, 4, 84)
    assert torch.equal(s[..., 0], x.amax(dim=(-2, -1)))  # the 1x1 bin is the global max
    assert torch.equal(s[..., 1:10], F.adaptive_max_pool2d(x, 3).flatten(2))


CASES = [
    # batch, channels, height, width, dilations
    (1, 4, 7, 7, (1, 2, 3)),
    (3, 8, 14, 14, (1, 2, 3)),
    (2, 6, 28, 28, (1,)),
    (2, 5, 9, 13, (2, 3)),
    (4, 3, 5, 5, (1, 4)),
    (1, 16, 28, 28, (1, 2, 3)),
]


@pytest.mark.parametrize(("batch", "channels", "height", "width", "dilations"), CASES)
def test_conv_and_matmul_forms_equal_per_sample_convolution(batch, channels, height, width, dilations):
    torch.manual_seed(batch + channels + height)
    x = torch.randn(batch, channels, height, width)
    kernel = torch.randn(batch, channels, channels, 3, 3) / (3 * channels**0.5)
    expected = reference_calibration(x, kernel, dilations)
    conv = calibrate_conv(x, kernel, dilations)
    matmul = calibrate_matmul(x, kernel, dilations)
    assert conv.shape == matmul.shape == (batch, channels, height, width)
    torch.testing.assert_close(conv, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(matmul, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(conv, matmul, atol=1e-5, rtol=0)


def equation_3(block: SemanticCalibration, neighbour: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A direct transcription of eq. (3) and the calibration block, one sample at a time, from
    torch's own operators (unpadded T_q/T_k, adaptive max-pooling, sigmoid, mm, conv2d).

    Q' = Summarize(T_q(F^n)), K' = Summarize(T_k(F^t)); W = Sigmoid(Q' K'^T) x G; out = F^n * W.
    """
    c = block.channels
    out = []
    for n, t in zip(neighbour, target, strict=True):
        q = block.transform_q(n[None])[0]
        k = block.transform_k(t[None])[0]
        q_ = torch.cat([F.adaptive_max_pool2d(q, b).reshape(c, -1) for b in (1, 3, 5, 7)], dim=1)
        k_ = torch.cat([F.adaptive_max_pool2d(k, b).reshape(c, -1) for b in (1, 3, 5, 7)], dim=1)
        logits = q_ @ k_.T
        if block.scaling == "fanin":
            logits = logits / SUMMARY_LENGTH**0.5
        w = (torch.sigmoid(logits) @ block.warp.reshape(c, c * 9)).reshape(c, c, 3, 3)  # W = A x G
        w = w * block.kernel_scale()
        out.append(sum(F.conv2d(n[None], w, padding=d, dilation=d) for d in block.dilations))
    return torch.cat(out)


EQ3_CASES = [
    # batch, channels, height, width, dilations
    (1, 4, 7, 7, (1,)),
    (2, 8, 9, 13, (1,)),
    (3, 5, 11, 11, (1, 2)),
    (4, 6, 15, 9, (1,)),
]


@pytest.mark.parametrize("scaling", ["none", "fanin"])
@pytest.mark.parametrize("form", ["conv", "matmul"])
@pytest.mark.parametrize(("batch", "channels", "height", "width", "dilations"), EQ3_CASES)
def test_assc_is_equation_3(batch, channels, height, width, dilations, form, scaling):
    torch.manual_seed(batch * 100 + channels)
    block = SemanticCalibration(channels, dilations, form=form, scaling=scaling)
    with torch.no_grad():
        block.warp.normal_()  # a G whose taps and channels differ, so A · G and A ⊙ G differ
        for t in (block.transform_q, block.transform_k):
            t.weight.mul_(0.3)  # keep the unscaled sigmoid out of saturation
    neighbour, target = torch.randn(2, batch, channels, height, width)
    with torch.no_grad():
        expected = equation_3(block, neighbour, target)
        got = block(neighbour, target)
        assert got.shape == expected.shape == (batch, channels, height, width)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        # the first family's element-wise A ⊙ G is a different model: the same check must fail on it
        block.aggregation = "elementwise"
        elementwise = block(neighbour, target)
    assert (elementwise - expected).abs().max() > 1e-2


def test_product_and_elementwise_aggregation():
    torch.manual_seed(0)
    attention, warp = torch.rand(2, 3, 3), torch.randn(3, 3, 3, 3)
    product = aggregate(attention, warp, "product")
    # output channel o's kernel is the A-weighted sum of G's kernels
    torch.testing.assert_close(product[1, 2], sum(attention[1, 2, j] * warp[j] for j in range(3)))
    elementwise = aggregate(attention, warp, "elementwise")
    torch.testing.assert_close(elementwise[1, 2, 0], attention[1, 2, 0] * warp[2, 0])
    with pytest.raises(ValueError, match="product"):
        aggregate(attention, warp, "sum")


@pytest.mark.parametrize(("batch", "channels", "height", "width", "dilations"), CASES)
@pytest.mark.parametrize("aggregation", ["product", "elementwise"])
def test_module_forms_agree_with_learned_warp(batch, channels, height, width, dilations, aggregation):
    torch.manual_seed(7)
    block = SemanticCalibration(channels, dilations, "conv", aggregation, "fanin", transform_padding=1)
    with torch.no_grad():
        block.warp.normal_()  # leave the all-ones initialisation so taps and channels differ
    neighbour, target = torch.randn(2, batch, channels, height, width)
    with torch.no_grad():
        conv = block(neighbour, target)
        block.form = "matmul"
        matmul = block(neighbour, target)
    torch.testing.assert_close(conv, matmul, atol=1e-5, rtol=0)


def test_elementwise_kernel_is_attention_times_scaled_warp():
    torch.manual_seed(0)
    block = SemanticCalibration(4, (1, 2), aggregation="elementwise", scaling="fanin")
    neighbour, target = torch.randn(2, 2, 4, 9, 9)
    kernel = block.kernel(neighbour, target)
    assert kernel.shape == (2, 4, 4, 3, 3)
    # G initialised to ones: every tap of a kernel row carries the same attention weight in (0, 1)
    scale = 1.0 / (9 * 4 * 2)
    attention = kernel[..., 0, 0] / scale
    assert torch.all((attention > 0) & (attention < 1))
    torch.testing.assert_close(kernel, attention[..., None, None].expand_as(kernel) * scale)
    assert torch.equal(block.warp, torch.ones(4, 4, 3, 3))


@pytest.mark.parametrize("aggregation", ["product", "elementwise"])
def test_fanin_scaled_output_stays_on_feature_scale_at_init(aggregation):
    torch.manual_seed(0)
    block = SemanticCalibration(64, (1, 2, 3), aggregation=aggregation, scaling="fanin")
    neighbour, target = torch.rand(2, 1, 64, 14, 14)  # ReLU-like non-negative features
    with torch.no_grad():
        out = block(neighbour, target)
    assert torch.isfinite(out).all()
    assert out.abs().max() <= neighbour.abs().max()  # a convex-weighted average scaled by A < 1


def test_unscaled_output_grows_with_the_width_at_init():
    # the released form: with G = 1 each output is rowsum(A) times a 3x3 sum over all C channels
    torch.manual_seed(0)
    block = SemanticCalibration(64, (1,), scaling="none")
    neighbour, target = torch.rand(2, 1, 64, 14, 14)
    with torch.no_grad():
        out = block(neighbour, target)
    assert torch.isfinite(out).all()
    assert out.abs().max() > 100 * neighbour.abs().max()


def test_invalid_form_and_dilations_are_rejected():
    block = SemanticCalibration(4)
    with pytest.raises(ValueError, match="conv"):
        block.form = "fft"
    with pytest.raises(ValueError, match="dilations"):
        SemanticCalibration(4, dilations=(0,))
    with pytest.raises(ValueError, match="elementwise"):
        SemanticCalibration(4, aggregation="hadamard")
    with pytest.raises(ValueError, match="fanin"):
        SemanticCalibration(4, scaling="sqrt")


def test_the_default_summary_form_is_the_one_the_export_cache_names():
    from echoseg.forms import SUMMARY_FORM
    from training.model.calibration import SUMMARIES, SUMMARY_DEFAULT

    assert SUMMARY_DEFAULT == SUMMARY_FORM and SUMMARY_DEFAULT in SUMMARIES
    assert SemanticCalibration(4).summary == SUMMARY_DEFAULT
