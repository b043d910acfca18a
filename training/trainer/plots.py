"""PNG plots of the training curves, drawn from ``log.csv`` at the end of a run."""

from __future__ import annotations

import logging
from pathlib import Path

from training.trainer.progress import read_log

logger = logging.getLogger(__name__)

# figure name -> (title, y label, columns)
FIGURES = {
    "loss": ("Training loss", "loss", ("loss", "sup_loss", "cons_loss")),
    "dice": ("Dice", "Dice", ("train_dice", "val_dice", "val_dice_teacher")),
    "lr": ("Learning rate (poly decay)", "lr", ("lr",)),
    "lambda": ("Consistency weight lambda(t)", "lambda", ("lambda",)),
}


def plot_curves(log_csv: str | Path, out_dir: str | Path) -> list[Path]:
    """Write ``loss.png``, ``dice.png``, ``lr.png`` and ``lambda.png`` into ``out_dir``; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_log(Path(log_csv))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (title, ylabel, columns) in FIGURES.items():
        present = [c for c in columns if series.get(c)]
        if not present:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for col in present:
            steps, values = zip(*series[col], strict=True)
            ax.plot(steps, values, label=col, marker="o" if len(steps) < 30 else None)
        ax.set(title=title, xlabel="step", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
