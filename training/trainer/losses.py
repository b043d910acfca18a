"""Losses of the mean teacher (paper §3.4).

Supervised: ``0.5 * Dice + 0.5 * BCE`` on labelled windows (the L2 term ``1e-6/2 * ||w||^2`` is
Adam's coupled weight decay, which adds exactly its gradient). Consistency: ``0.5 * MSE + 0.5 * KL``
between the student's and the teacher's per-pixel probabilities on unlabelled windows, where KL is
the Bernoulli divergence ``KL(p_s || p_t)`` of each pixel. All losses are means over pixels and
samples, computed in float32 even under autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Soft Dice loss of the paper (eq. 6, squared denominators), averaged over the batch.

    logits, target: ``(B, 1, S, S)``; target in {0, 1}.
    """
    p = torch.sigmoid(logits.float()).flatten(1)  # (B, 1, S, S) -> (B, S*S)
    g = target.float().flatten(1)
    inter = (p * g).sum(1)
    denom = (p * p).sum(1) + (g * g).sum(1)
    return (1.0 - (2.0 * inter + eps) / (denom + eps)).mean()


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy (eq. 5), mean over pixels."""
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def supervised_loss(
    logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 0.5, bce_weight: float = 0.5
) -> torch.Tensor:
    return dice_weight * dice_loss(logits, target) + bce_weight * bce_loss(logits, target)


def bernoulli_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Per-pixel ``KL(p_s || p_t)`` of two Bernoulli distributions given by logits, mean over pixels.

    Written with log-sigmoids so that saturated probabilities stay finite.
    """
    zs, zt = student_logits.float(), teacher_logits.float()
    ps = torch.sigmoid(zs)
    log_ps, log_1ms = F.logsigmoid(zs), F.logsigmoid(-zs)
    log_pt, log_1mt = F.logsigmoid(zt), F.logsigmoid(-zt)
    kl = ps * (log_ps - log_pt) + (1.0 - ps) * (log_1ms - log_1mt)
    return kl.mean()


def consistency_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mse_weight: float = 0.5,
    kl_weight: float = 0.5,
) -> torch.Tensor:
    """Consistency of eq. 10; the teacher's side is treated as a constant target."""
    teacher_logits = teacher_logits.detach()
    mse = F.mse_loss(torch.sigmoid(student_logits.float()), torch.sigmoid(teacher_logits.float()))
    return mse_weight * mse + kl_weight * bernoulli_kl(student_logits, teacher_logits)


def consistency_weight(step: int, total_steps: int, max_weight: float = 1.0) -> float:
    """lambda(t) = max_weight * (t / t_max)^2 (paper §3.4.3)."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    t = min(max(step, 0), total_steps) / total_steps
    return max_weight * t * t


@torch.no_grad()
def batch_dice(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Hard Dice of each sample: ``(B, 1, S, S)`` logits and masks -> ``(B,)``; 1 when both are empty."""
    pred = (torch.sigmoid(logits.float()) > threshold).flatten(1).float()
    g = (target > 0.5).flatten(1).float()
    inter = (pred * g).sum(1)
    total = pred.sum(1) + g.sum(1)
    return torch.where(total > 0, 2.0 * inter / total.clamp_min(1.0), torch.ones_like(total))
