"""Labelled windows pictured the way the unlabelled ones are: the domain-adaptation half of ``echoseg adapt``.

A site's scanner draws the same anatomy with its own picture: a wider or narrower point-spread
function, sparser or denser speckle, haze in the near field, a TGC slope, a compressed dynamic
range. The labels of the simulated windows stay true under any such change, so the student can be
taught on simulated anatomy drawn with the site's picture. Both changes are measured from the
site's own unlabelled windows, neither moves a structure:

- **amplitude spectrum** (Fourier domain adaptation, Yang & Soatto 2020; amplitude mix, Xu et al.
  2021): a restyled window's 2-D Fourier amplitude becomes ``a * |F_u| + (1 - a) * |F_l|`` with
  ``F_u`` the spectrum of a random unlabelled window of the same step, while it keeps its own phase
  (where its edges are). Speckle size, blur and contrast follow the site's;
- **mean picture**: plus ``a`` times the difference between the site's mean window and the labelled
  set's mean window (measured once, before training, on a seeded sample of each): where the site's
  fan is brighter or hazier on average (a hazy apex, a TGC slope), so is the restyled window.

``a ~ U(0, 1)`` per window (the same ``a`` for both changes and all ``k`` frames of a window, one
acquisition); ``fraction`` of each step's labelled windows are restyled, the rest are left as
simulated. On the adaptation pilots (dev site clips, 150 steps, one run each), restyling every
labelled window lifted the site's Dice at ED/ES from 0.786 to 0.816 where the mean teacher alone
reached 0.795 (``benchmarks/adapt.py``).
"""

from __future__ import annotations

import numpy as np
import torch


def mean_window(dataset, samples: int, seed: int) -> torch.Tensor:
    """The mean ``(S, S)`` picture of ``samples`` windows of ``dataset`` (a seeded sample, all k frames)."""
    n = len(dataset)
    if n == 0:
        raise ValueError("cannot measure the mean picture of an empty set of windows")
    order = np.random.default_rng(seed).permutation(n)[: max(1, min(samples, n))]
    total = None
    for i in order:
        frames = dataset[int(i)]["frames"].double()  # (k, S, S)
        part = frames.mean(dim=0)
        total = part if total is None else total + part
    return (total / len(order)).float()


class SiteStyle:
    """Restyles labelled windows like the unlabelled ones; see the module docstring."""

    def __init__(self, fraction: float, shift: torch.Tensor | None, amplitude: bool = True):
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"style fraction must lie in [0, 1], got {fraction}")
        self.fraction, self.shift, self.amplitude = fraction, shift, amplitude

    @classmethod
    def measure(cls, labelled, unlabelled, fraction: float, samples: int, seed: int, amplitude: bool = True):
        """Measure the mean-picture shift (site minus labelled set) on ``samples`` windows of each."""
        shift = None
        if samples > 0:
            shift = mean_window(unlabelled, samples, seed) - mean_window(labelled, samples, seed)
        return cls(fraction, shift, amplitude)

    def __call__(self, x_l: torch.Tensor, x_u: torch.Tensor) -> torch.Tensor:
        """``x_l (B, k, S, S)``, ``x_u (Bu, k, S, S)`` -> ``(B, k, S, S)``: restyled labelled windows."""
        b = x_l.shape[0]
        if self.fraction <= 0.0 or b == 0 or x_u.shape[0] == 0:
            return x_l
        a = torch.rand(b, 1, 1, 1, device=x_l.device, dtype=x_l.dtype)
        out = x_l
        if self.amplitude:
            pick = x_u[torch.randint(0, x_u.shape[0], (b,), device=x_u.device)]
            f_l, f_u = torch.fft.fft2(x_l.float()), torch.fft.fft2(pick.float())
            amp = (1.0 - a) * f_l.abs() + a * f_u.abs()
            out = torch.fft.ifft2(torch.polar(amp, torch.angle(f_l))).real.to(x_l.dtype)
        if self.shift is not None:
            out = out + a * self.shift.to(device=x_l.device, dtype=x_l.dtype)
        chosen = (torch.rand(b, device=x_l.device) < self.fraction).view(b, 1, 1, 1)
        return torch.where(chosen, out, x_l)
