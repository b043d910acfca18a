"""Run logs: ``log.csv`` with every metric, optional TensorBoard, and interval averages.

Only rank 0 writes. A resumed run keeps the rows up to the step it resumes from and appends.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from pathlib import Path

logger = logging.getLogger(__name__)

COLUMNS = (
    "step",
    "epoch",
    "lr",
    "lambda",
    "loss",
    "sup_loss",
    "cons_loss",
    "train_dice",
    "val_dice",
    "val_dice_teacher",
    "steps_per_s",
)


class MetricLog:
    """Appends rows to ``log.csv`` (and TensorBoard scalars when asked)."""

    def __init__(self, path: Path, resume_step: int | None = None, tensorboard_dir: Path | None = None):
        self.path = Path(path)
        if resume_step is not None and self.path.exists():
            _truncate_after(self.path, resume_step)
        new = not self.path.exists()
        self._file = self.path.open("a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=COLUMNS)
        if new:
            self._writer.writeheader()
        self._tb = _tensorboard_writer(tensorboard_dir) if tensorboard_dir is not None else None

    def write(self, step: int, values: dict[str, float]) -> None:
        row = {"step": step, **{k: _fmt(v) for k, v in values.items() if k in COLUMNS}}
        self._writer.writerow(row)
        self._file.flush()
        if self._tb is not None:
            for key, v in values.items():
                self._tb.add_scalar(key, v, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


class Averager:
    """Running means of the training metrics between two log rows."""

    def __init__(self):
        self.sums: dict[str, float] = defaultdict(float)
        self.count = 0

    def add(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] += float(v)
        self.count += 1

    def pop(self) -> dict[str, float]:
        out = {k: v / self.count for k, v in self.sums.items()} if self.count else {}
        self.sums.clear()
        self.count = 0
        return out


def read_log(path: Path) -> dict[str, list[tuple[int, float]]]:
    """``{column: [(step, value), ...]}`` for every non-empty cell of ``log.csv``."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    with Path(path).open(newline="") as f:
        for row in csv.DictReader(f):
            step = int(row["step"])
            for key, text in row.items():
                if key != "step" and text not in ("", None):
                    series[key].append((step, float(text)))
    return dict(series)


def _fmt(v: float) -> str:
    return f"{float(v):.6g}"


def _truncate_after(path: Path, step: int) -> None:
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _tensorboard_writer(directory: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise ValueError(
            "tensorboard=true needs the tensorboard package: pip install 'echoseg[tensorboard]'"
        ) from exc
    return SummaryWriter(log_dir=str(directory))
