"""The teacher of the mean teacher: an exponential moving average of the student (paper eq. 12).

After every optimiser step ``theta'_t = eta * theta'_{t-1} + (1 - eta) * theta_t`` on every
parameter, with ``eta = 0.99``. Buffers (BatchNorm running mean/variance) are the teacher's own: it
runs its forward pass in training mode on the unlabelled windows (batch statistics, as in Tarvainen
& Valpola's reference code), which keeps running statistics of *its* activations. Copying the
student's statistics instead would pair averaged weights with another network's statistics, and
the teacher would be useless at inference early in training. The teacher never receives gradients.

Student and teacher see differently perturbed versions of the same window: independent Gaussian
noise and an independent intensity gain/offset per sample.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen copy of the student (``theta'_0 = theta_0``)."""
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """``theta' <- decay * theta' + (1 - decay) * theta`` on parameters; buffers are left to the teacher."""
    t_params = dict(teacher.named_parameters())
    for name, p in student.named_parameters():
        t_params[name].mul_(decay).add_(p.detach(), alpha=1.0 - decay)


def perturb(
    frames: torch.Tensor,
    noise_std: float,
    gain: float,
    offset: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Independent intensity jitter and Gaussian noise per sample: ``(B, k, S, S) -> (B, k, S, S)``.

    The same gain/offset applies to all k frames of a window (one acquisition), the noise is
    drawn per pixel.
    """
    b = frames.shape[0]
    shape = (b,) + (1,) * (frames.dim() - 1)  # (B, 1, 1, 1)
    kw = {"device": frames.device, "dtype": frames.dtype}
    out = frames
    if gain > 0:
        g = 1.0 + (torch.rand(shape, generator=generator, **kw) * 2.0 - 1.0) * gain
        out = out * g
    if offset > 0:
        out = out + (torch.rand(shape, generator=generator, **kw) * 2.0 - 1.0) * offset
    if noise_std > 0:
        out = out + torch.randn(frames.shape, generator=generator, **kw) * noise_std
    return out
