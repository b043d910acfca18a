"""Labelled windows restyled like the unlabelled ones (``training.trainer.style``), for adaptation."""

from __future__ import annotations

import pytest
import torch

from training.trainer.config import TrainConfig
from training.trainer.style import SiteStyle, mean_window


def _windows(b: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 16, 16, generator=g) * scale  # (B, k, S, S)


def test_nothing_changes_at_fraction_zero():
    x_l, x_u = _windows(4, 0), _windows(4, 1, 3.0)
    assert torch.equal(SiteStyle(0.0, torch.ones(16, 16))(x_l, x_u), x_l)


def test_an_identical_site_window_gives_the_window_back():
    x = _windows(1, 2)
    torch.testing.assert_close(SiteStyle(1.0, None)(x, x.clone()), x, atol=1e-5, rtol=0)


def test_the_amplitude_spectrum_moves_between_the_two_and_the_phase_stays():
    torch.manual_seed(3)
    x_l, x_u = _windows(6, 4), _windows(1, 5, 4.0)  # one site window: every pick is it
    out = SiteStyle(1.0, None)(x_l, x_u)
    a_l, a_u, a_o = (torch.fft.fft2(t).abs() for t in (x_l, x_u.expand_as(x_l), out))
    lo, hi = torch.minimum(a_l, a_u), torch.maximum(a_l, a_u)
    assert bool(((a_o >= lo - 1e-3) & (a_o <= hi + 1e-3)).all())
    # one mixing weight per window: (|F_o| - |F_l|) / (|F_u| - |F_l|) is the same at every frequency
    big = (a_u - a_l).abs() > 1.0
    for i in range(6):
        r = (a_o - a_l)[i][big[i]] / (a_u - a_l)[i][big[i]]
        assert float(r.max() - r.min()) < 1e-3
        assert r.min() >= -1e-3 and r.max() <= 1 + 1e-3
    # the phase (where the structures are) is the labelled window's
    p_l, p_o = torch.angle(torch.fft.fft2(x_l)), torch.angle(torch.fft.fft2(out))
    torch.testing.assert_close(torch.cos(p_o - p_l)[big], torch.ones_like(p_o[big]), atol=1e-3, rtol=0)


def test_the_mean_picture_shift_is_added_once_per_window_with_its_weight():
    torch.manual_seed(6)
    shift = torch.linspace(0.0, 1.0, 256).view(16, 16)
    x_l = _windows(8, 7)
    out = SiteStyle(1.0, shift, amplitude=False)(x_l, _windows(2, 8))
    delta = out - x_l  # a * shift, the same a for the k frames of a window
    a = delta[:, :, -1, -1]  # shift is 1 in the last pixel
    assert bool((a >= 0).all() and (a <= 1).all()) and len(set(a[:, 0].tolist())) == 8
    torch.testing.assert_close(delta, a[:, :, None, None] * shift, atol=1e-6, rtol=0)


def test_a_fraction_restyles_about_that_share_of_windows():
    torch.manual_seed(9)
    x_l = _windows(2000, 10)
    out = SiteStyle(0.25, torch.ones(16, 16), amplitude=False)(x_l, _windows(2, 11))
    changed = (out != x_l).flatten(1).any(dim=1).float().mean().item()
    assert 0.2 < changed < 0.3


def test_measure_takes_the_site_minus_the_labelled_mean_picture():
    labelled = [{"frames": torch.full((3, 4, 4), 0.25)} for _ in range(5)]
    site = [{"frames": torch.full((3, 4, 4), 0.75) + torch.eye(4)} for _ in range(7)]
    style = SiteStyle.measure(labelled, site, fraction=1.0, samples=3, seed=0)
    torch.testing.assert_close(style.shift, torch.full((4, 4), 0.5) + torch.eye(4))
    assert SiteStyle.measure(labelled, site, 1.0, samples=0, seed=0).shift is None
    with pytest.raises(ValueError, match="empty"):
        mean_window([], 4, 0)


def test_the_config_refuses_a_style_without_unlabelled_windows():
    assert TrainConfig.from_dict({"style": {"fraction": 0.5}}).style.fraction == 0.5
    with pytest.raises(ValueError, match="mode mean_teacher"):
        TrainConfig.from_dict({"mode": "supervised", "style": {"fraction": 0.5}})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        TrainConfig.from_dict({"style": {"fraction": 1.5}})
    with pytest.raises(ValueError, match=r"style\.nope"):
        TrainConfig.from_dict({"style": {"nope": 1}})
