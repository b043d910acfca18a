"""One optimisation step of the mean teacher (or of plain supervised training), and validation."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from training.trainer.config import PerturbSection
from training.trainer.distributed import DistInfo, all_sum
from training.trainer.losses import batch_dice, consistency_loss, supervised_loss
from training.trainer.mean_teacher import perturb
from training.trainer.style import SiteStyle


@dataclass
class Precision:
    """Autocast settings: ``dtype`` None means full float32."""

    device_type: str
    dtype: torch.dtype | None = None

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


def resolve_precision(amp: str, device: torch.device) -> Precision:
    """``auto``: bf16 on CUDA when supported (else fp16), full precision on CPU."""
    if amp == "auto":
        if device.type != "cuda":
            return Precision(device.type)
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtypes = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if amp not in dtypes:
        raise ValueError(f"amp must be one of ['auto', *{list(dtypes)}], got {amp!r}")
    return Precision(device.type, dtypes[amp])


@dataclass
class LossWeights:
    dice: float = 0.5
    bce: float = 0.5
    mse: float = 0.5
    kl: float = 0.5


def train_step(
    student: nn.Module,
    teacher: nn.Module | None,
    labelled: dict[str, torch.Tensor],
    unlabelled: dict[str, torch.Tensor] | None,
    lam: float,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    precision: Precision,
    noise: PerturbSection,
    weights: LossWeights,
    device: torch.device,
    style: SiteStyle | None = None,
) -> dict[str, float]:
    """One step: supervised loss on labelled windows + lambda * consistency on unlabelled windows.

    The student sees the labelled and the unlabelled windows in ONE forward pass (so DDP sees one
    forward per backward), each under its own perturbation; the teacher sees the unlabelled windows
    under an independent perturbation, without gradients. ``style`` (adaptation) first restyles the
    labelled windows like this step's unlabelled ones (``training.trainer.style``).
    """
    x_l = labelled["frames"].to(device, non_blocking=True)  # (Bl, k, S, S)
    y = labelled["mask"].to(device, non_blocking=True)  # (Bl, 1, S, S)
    jitter = (noise.noise_std, noise.gain, noise.offset)
    x_u = None
    if teacher is not None:
        if unlabelled is None:
            raise ValueError("mean-teacher training needs unlabelled windows")
        x_u = unlabelled["frames"].to(device, non_blocking=True)  # (Bu, k, S, S)
        if style is not None:
            x_l = style(x_l, x_u)
    inputs = perturb(x_l, *jitter)
    teacher_logits = None
    if x_u is not None:
        inputs = torch.cat([inputs, perturb(x_u, *jitter)])  # (Bl + Bu, k, S, S)
        with torch.no_grad(), precision.autocast():
            teacher_logits = teacher(perturb(x_u, *jitter))  # (Bu, 1, S, S)
    with precision.autocast():
        logits = student(inputs)  # (Bl [+ Bu], 1, S, S)
    logits_l, logits_u = logits[: x_l.shape[0]], logits[x_l.shape[0] :]
    sup = supervised_loss(logits_l, y, weights.dice, weights.bce)
    if teacher_logits is not None:
        cons = consistency_loss(logits_u, teacher_logits, weights.mse, weights.kl)
    else:
        cons = torch.zeros((), device=device)
    loss = sup + lam * cons
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return {
        "loss": loss.item(),
        "sup_loss": sup.item(),
        "cons_loss": cons.item(),
        "train_dice": batch_dice(logits_l.detach(), y).mean().item(),
    }


@torch.no_grad()
def validate(
    model: nn.Module, loader: DataLoader, info: DistInfo, device: torch.device, precision: Precision
) -> float:
    """Mean hard Dice over the labelled validation windows (all processes' shares together)."""
    was_training = model.training
    model.eval()
    threshold = getattr(getattr(model, "config", None), "threshold", 0.5)
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of Dice, count)
    for batch in loader:
        with precision.autocast():
            logits = model(batch["frames"].to(device))  # (B, 1, S, S)
        d = batch_dice(logits, batch["mask"].to(device), threshold)
        totals += torch.stack([d.sum().double(), torch.tensor(float(d.numel()), device=device).double()])
    model.train(was_training)
    totals = all_sum(totals, info)
    return float(totals[0] / totals[1]) if totals[1] > 0 else float("nan")
