"""Mean-teacher training of EchoSeg (paper §3.4–3.5), from a YAML config, on 1 or N processes.

``run(cfg)`` reads top to bottom: join the process group (under torchrun), build the student, its
EMA teacher, the data streams and the optimiser, optionally restore a run, then loop over steps:
one labelled and one unlabelled batch, one optimiser step, one EMA update; every ``eval_every``
steps the validation Dice picks ``best/`` and refreshes ``last/``. Rank 0 logs and saves.

    echoseg train --config configs/lite.yaml --set data.root=data/synth-train
    torchrun --nproc_per_node 2 -m training.train --config configs/lite.yaml
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from echoseg.artifacts import checkpoint_weights, read_checkpoint_config
from training.args import add_train_arguments
from training.data.store import FrameStore, default_store_dir, ensure_store, is_store
from training.model import ModelConfig, build_model, get_preset
from training.trainer import checkpoint as ckpt
from training.trainer.config import TrainConfig, load_config, save_config
from training.trainer.data import BatchStream, eval_loader
from training.trainer.distributed import (
    DistInfo,
    all_mean,
    barrier,
    broadcast_buffers,
    cleanup,
    device_type,
    init_distributed,
    resolve_device,
)
from training.trainer.engine import LossWeights, Precision, resolve_precision, train_step, validate
from training.trainer.losses import consistency_weight
from training.trainer.mean_teacher import ema_update, make_teacher
from training.trainer.plots import plot_curves
from training.trainer.progress import Averager, MetricLog
from training.trainer.style import SiteStyle

logger = logging.getLogger(__name__)

__all__ = ["TrainConfig", "Trained", "fit", "load_config", "run"]


@dataclass
class Trained:
    """What a finished (or stopped) run leaves in memory: its folder, networks and last step."""

    run_dir: Path
    student: nn.Module
    teacher: nn.Module | None
    step: int
    best_val_dice: float


@dataclass
class _Parts:
    """What the step loop works on; ``model`` is the student, wrapped in DDP under torchrun."""

    model: nn.Module
    student: nn.Module
    teacher: nn.Module | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    labelled: BatchStream
    unlabelled: BatchStream | None
    val: torch.utils.data.DataLoader | None
    style: SiteStyle | None = None


def run(cfg: TrainConfig, resume: str | Path | None = None) -> Path:
    """Train and return the run directory (``best/``, ``last/``, ``config.yaml``, ``log.csv``, ``plots/``)."""
    return fit(cfg, resume).run_dir


def model_config_of(cfg: TrainConfig) -> ModelConfig:
    """The network to train: the preset and overrides, or the configuration of ``init_from``."""
    if cfg.init_from:
        return read_checkpoint_config(checkpoint_weights(cfg.init_from, "student"))[0]
    return get_preset(cfg.model.preset, **cfg.model.overrides)


def _initialise(cfg: TrainConfig, student: nn.Module) -> None:
    """Load ``init_from``'s student weights into the student (the teacher is copied from it)."""
    if cfg.init_from:
        ckpt.load_weights(cfg.init_from, student, "student")
        logger.info("student and teacher start from %s", cfg.init_from)


def fit(cfg: TrainConfig, resume: str | Path | None = None) -> Trained:
    owns_group = not (dist.is_available() and dist.is_initialized())
    info = init_distributed(device_type(cfg.device))
    try:
        return _fit(cfg, resume, info)
    finally:
        if owns_group:
            cleanup()


def _fit(cfg: TrainConfig, resume: str | Path | None, info: DistInfo) -> Trained:
    device = resolve_device(cfg.device, info)
    if cfg.threads and device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    precision = resolve_precision(cfg.amp, device)
    run_dir = _prepare_run_dir(cfg, resume, info)

    ckpt.seed_everything(cfg.seed)  # identical initial weights on every rank
    model_config = model_config_of(cfg)
    student = build_model(model_config)
    _initialise(cfg, student)
    student = student.to(device)
    teacher = make_teacher(student) if cfg.mode == "mean_teacher" else None
    ckpt.seed_everything(cfg.seed + 1 + info.rank)  # then per-rank perturbation noise

    labelled, unlabelled, val, style = _build_data(cfg, model_config, info, device)
    total = cfg.steps or max(1, math.ceil(cfg.epochs * labelled.batches_per_epoch))
    stop = min(total, cfg.stop_after or total)
    optimizer = torch.optim.Adam(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: max(0.0, 1.0 - t / total) ** cfg.poly_power
    )
    scaler = torch.amp.GradScaler(device.type, enabled=precision.dtype == torch.float16)

    step, best = 0, -1.0
    if resume is not None:
        state = _restore(run_dir / "last", cfg, info, device, student, teacher, optimizer, scheduler)
        step, best = int(state["step"]), float(state["best_val_dice"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        labelled.load_state_dict(state["streams"]["labelled"])
        if unlabelled is not None:
            unlabelled.load_state_dict(state["streams"]["unlabelled"])
    log = (
        MetricLog(
            run_dir / "log.csv",
            resume_step=step if resume is not None else None,
            tensorboard_dir=run_dir / "tensorboard" if cfg.tensorboard else None,
        )
        if info.is_main
        else None
    )
    model = DistributedDataParallel(student) if info.enabled else student
    logger.info(
        "training %s (%s) on %s, %d process(es), steps %d..%d of %d, precision %s",
        model_config.preset,
        cfg.mode,
        device,
        info.world_size,
        step,
        stop,
        total,
        precision.dtype or "float32",
    )

    parts = _Parts(model, student, teacher, optimizer, scheduler, scaler, labelled, unlabelled, val, style)
    step, best = _Loop(cfg, info, device, precision, run_dir, total, log).train(parts, step, stop, best)
    broadcast_buffers(student, info)
    if teacher is not None:
        broadcast_buffers(teacher, info)
    if info.is_main:
        log.close()
        plot_curves(run_dir / "log.csv", run_dir / "plots")
        logger.info("run finished at step %d; best validation Dice %.4f; %s", step, best, run_dir)
    barrier(info)
    return Trained(run_dir, student, teacher, step, best)


class _Loop:
    """The step loop, with logging, validation and checkpointing on rank 0."""

    def __init__(self, cfg, info, device, precision: Precision, run_dir: Path, total: int, log):
        self.cfg, self.info, self.device, self.precision = cfg, info, device, precision
        self.run_dir, self.total, self.log = run_dir, total, log
        self.weights = LossWeights(cfg.dice_weight, cfg.bce_weight, cfg.mse_weight, cfg.kl_weight)

    def train(self, parts: _Parts, step: int, stop: int, best: float) -> tuple[int, float]:
        from tqdm import tqdm

        cfg, avg, p = self.cfg, Averager(), parts
        show = self.info.is_main and cfg.progress
        bar = tqdm(total=self.total, initial=step, disable=not show, desc="train", dynamic_ncols=True)
        p.model.train()
        if p.teacher is not None:
            p.teacher.train()  # batch statistics, like the student; keeps its own running statistics
        tick, tick_step = time.perf_counter(), step
        while step < stop:
            lam = consistency_weight(step, self.total, cfg.consistency) if p.teacher is not None else 0.0
            lr = p.optimizer.param_groups[0]["lr"]
            unlabelled = p.unlabelled.next() if p.unlabelled is not None else None
            metrics = train_step(
                p.model,
                p.teacher,
                p.labelled.next(),
                unlabelled,
                lam,
                p.optimizer,
                p.scaler,
                self.precision,
                cfg.perturb,
                self.weights,
                self.device,
                p.style,
            )
            p.scheduler.step()
            if p.teacher is not None:
                ema_update(p.teacher, p.student, cfg.ema_decay)
            step += 1
            avg.add({**metrics, "lr": lr, "lambda": lam})
            bar.update(1)
            bar.set_postfix(
                loss=f"{metrics['loss']:.3f}", dice=f"{metrics['train_dice']:.3f}", epoch=p.labelled.epoch
            )
            evaluate = step % cfg.eval_every == 0 or step == stop
            if step % cfg.log_every == 0 or evaluate:
                row = {k: all_mean(v, self.info, self.device) for k, v in avg.pop().items()}
                now = time.perf_counter()
                row["steps_per_s"] = (step - tick_step) / max(now - tick, 1e-9)
                tick, tick_step = now, step
                row["epoch"] = p.labelled.epoch + p.labelled.batch / max(1, p.labelled.batches_per_epoch)
                if evaluate:
                    row.update(self._validate(p))
                    best = self._checkpoint(p, step, row, best)
                    logger.info(
                        "step %d: loss %.4f, validation Dice %.4f",
                        step,
                        row["loss"],
                        row.get("val_dice", math.nan),
                    )
                if self.log is not None:
                    self.log.write(step, row)
        bar.close()
        return step, best

    def _validate(self, p: _Parts) -> dict[str, float]:
        if p.val is None:
            return {}
        out = {"val_dice": validate(p.student, p.val, self.info, self.device, self.precision)}
        if p.teacher is not None:
            out["val_dice_teacher"] = validate(p.teacher, p.val, self.info, self.device, self.precision)
        return out

    def _checkpoint(self, p: _Parts, step: int, row: dict[str, float], best: float) -> float:
        """Refresh ``last/`` (with the resume state) and, when validation improved, ``best/``."""
        rngs = _gather_rng(self.info)
        val_dice = row.get("val_dice", math.nan)
        improved = math.isnan(val_dice) or val_dice > best
        if improved:
            best = -1.0 if math.isnan(val_dice) else val_dice
        if self.info.is_main:
            metrics = {k: row[k] for k in ("val_dice", "val_dice_teacher", "loss", "train_dice") if k in row}
            meta = {
                "run_id": self.run_dir.name,
                "step": step,
                "total_steps": self.total,
                "preset": p.student.config.preset,
                "mode": self.cfg.mode,
                "metrics": metrics,
            }
            state = {
                "step": step,
                "best_val_dice": best,
                "optimizer": p.optimizer.state_dict(),
                "scheduler": p.scheduler.state_dict(),
                "scaler": p.scaler.state_dict(),
                "streams": {
                    "labelled": p.labelled.state_dict(),
                    "unlabelled": p.unlabelled.state_dict() if p.unlabelled is not None else None,
                },
                "rng": rngs,
                "world_size": self.info.world_size,
            }
            ckpt.save_checkpoint(self.run_dir / "last", p.student, p.teacher, meta, state)
            if improved and self.cfg.select_best:
                ckpt.save_checkpoint(self.run_dir / "best", p.student, p.teacher, meta)
                logger.info("step %d: new best validation Dice %.4f", step, val_dice)
        barrier(self.info)
        return best


def _gather_rng(info: DistInfo) -> list:
    state = ckpt.rng_state()
    if not info.enabled:
        return [state]
    gathered: list = [None] * info.world_size
    dist.all_gather_object(gathered, state)
    return gathered


def _restore(last: Path, cfg, info, device, student, teacher, optimizer, scheduler) -> dict:
    """Load weights, optimiser, scheduler and RNG states from ``last/``; returns the saved state."""
    state = ckpt.load_state(last, device)
    ckpt.load_weights(last, student, "student")
    if teacher is not None:
        ckpt.load_weights(last, teacher, "teacher")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rngs = state["rng"]
    if len(rngs) == info.world_size:
        ckpt.set_rng_state(rngs[info.rank])
    else:
        logger.warning(
            "resuming on %d processes a run saved on %d: random streams are reseeded",
            info.world_size,
            len(rngs),
        )
        ckpt.seed_everything(cfg.seed + 1 + info.rank + 7919 * int(state["step"]))
    logger.info("resumed %s at step %d", last.parent, state["step"])
    return state


def open_store(cfg: TrainConfig, info: DistInfo, root: str | None = None, store_dir: str | None = None):
    """The frame store of ``root`` (default ``data.root``): one process per node prepares or refreshes
    it, then all open it.

    Each node's local rank 0 prepares (a default store lives in that node's cache; a store on a
    shared filesystem is best prepared before the job, and is then only checked here).
    """
    d = cfg.data
    root, store_dir = (d.root, d.store) if root is None else (root, store_dir)
    if info.local_rank == 0:
        progress = cfg.progress and info.is_main
        store = ensure_store(root, store_dir, workers=d.prepare_workers, progress=progress)
    barrier(info)
    if info.local_rank != 0:
        store = FrameStore(root if is_store(root) else store_dir or default_store_dir(root))
    return store


def _build_data(cfg: TrainConfig, model_config: ModelConfig, info: DistInfo, device: torch.device):
    """Labelled and unlabelled TRAIN streams, the labelled VAL loader (None when VAL is empty) and the
    restyling of labelled windows (None unless ``style.fraction``; measured on both TRAIN sets)."""
    from training.data.dataset import StoreWindowDataset

    d, pin = cfg.data, device.type == "cuda"
    store = open_store(cfg, info)

    def dataset(split, mode, augment, true_windows=0, source=store):
        return StoreWindowDataset(
            source,
            split,
            model_config,
            mode=mode,
            augment=augment,
            seed=cfg.seed,
            windows_per_video=d.windows_per_video,
            flips=d.flips,
            true_windows_per_video=true_windows,
        )

    def stream(data, batch_size, seed):
        loader = {"prefetch_factor": d.prefetch_factor, "persistent_workers": d.persistent_workers}
        return BatchStream(data, batch_size, info, seed, d.num_workers, pin, **loader)

    # Validation stays on the traced (ED/ES) frames: comparable across runs and with the paper.
    train_labelled = dataset(d.train_split, "labelled", d.augment, d.true_windows_per_video)
    labelled = stream(train_labelled, cfg.batch_size, cfg.seed)
    unlabelled = style = None
    if cfg.mode == "mean_teacher":
        if d.unlabelled_root:  # another source's clips (a site's), e.g. for domain adaptation
            other = open_store(cfg, info, d.unlabelled_root, d.unlabelled_store)
            windows = dataset(d.unlabelled_split, "unlabelled", d.augment, source=other)
        else:
            windows = dataset(d.train_split, "unlabelled", d.augment)
        unlabelled = stream(windows, cfg.unlabelled_batch_size, cfg.seed + 1)
        if cfg.style.fraction > 0:  # the same seeded sample on every rank: the same shift
            st = cfg.style
            style = SiteStyle.measure(
                train_labelled, windows, st.fraction, st.mean_windows, cfg.seed, st.amplitude
            )
            logger.info("labelled windows restyled like the unlabelled ones: %.0f %%", 100 * st.fraction)
    logger.info(
        "data: store %s, %d labelled and %d unlabelled TRAIN windows for this process",
        store.path,
        labelled.sampler.num_samples,
        unlabelled.sampler.num_samples if unlabelled is not None else 0,
    )
    val = None
    if d.val_split:
        val_set = dataset(d.val_split, "labelled", False)
        if len(val_set) > 0:
            val = eval_loader(val_set, cfg.eval_batch_size, info, d.num_workers, pin)
        else:
            logger.warning("no %s windows in %s: best/ follows last/", d.val_split, d.root)
    return labelled, unlabelled, val, style


def _prepare_run_dir(cfg: TrainConfig, resume: str | Path | None, info: DistInfo) -> Path:
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "last").is_dir():
            raise ValueError(f"cannot resume {run_dir}: it has no last/ checkpoint")
    else:
        name = cfg.run_name or f"{cfg.model.preset}-{cfg.mode}-{time.strftime('%Y%m%d-%H%M%S')}"
        if info.enabled:  # every rank must agree on the folder (timestamps differ)
            holder = [name]
            dist.broadcast_object_list(holder, src=0)
            name = holder[0]
        run_dir = Path(cfg.out_dir) / name
        if (run_dir / "last").exists():
            raise ValueError(f"run directory {run_dir} already holds a run; use --resume or another run_name")
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    barrier(info)
    return run_dir


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """``--resume`` reads the run's config.yaml (minus its stop_after); ``--set`` applies on top."""
    if args.resume:
        if args.config:
            logger.warning("--resume uses %s/config.yaml; --config %s is ignored", args.resume, args.config)
        # A stop point belongs to the invocation that set it; resuming runs to the end unless told.
        overrides = list(args.overrides)
        if not any(o.split("=", 1)[0].strip() == "stop_after" for o in overrides):
            overrides.append("stop_after=null")
        return load_config(Path(args.resume) / "config.yaml", overrides)
    if not args.config:
        raise ValueError("--config FILE.yaml is required (or --resume RUN_DIR)")
    return load_config(args.config, args.overrides)


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m training.train`` (what torchrun launches)."""
    parser = argparse.ArgumentParser(prog="training.train", description=__doc__.splitlines()[0])
    args = add_train_arguments(parser).parse_args(argv)
    level = logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_dir = run(config_from_args(args), resume=args.resume)
    if os.environ.get("RANK", "0") == "0":
        print(run_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
