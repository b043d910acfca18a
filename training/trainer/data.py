"""Batch streams for training: labelled and unlabelled windows, sharded across processes, resumable.

A stream cycles through its dataset epoch after epoch. Each epoch the items are shuffled with
``seed + epoch`` (the same permutation on every process), cut to a multiple of the number of
processes, and process ``rank`` takes every ``world_size``-th of them: every process sees
different items, every item at most once per epoch (the few left over change every epoch).
A stream's position is two integers, ``(epoch, batch)``, which ``state_dict`` saves and
``load_state_dict`` restores: a resumed run draws exactly the batches the uninterrupted run would
have drawn.

The sampler yields ``(index, epoch)`` keys and the loader's dataset passes the epoch on to the
dataset's ``set_epoch`` in whichever process reads the item, so DataLoader workers that live
across epochs (``persistent_workers``, the default with workers) redraw each epoch's windows
without being restarted; ``prefetch_factor`` batches per worker are read ahead and, on CUDA, batches
come in pinned memory.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from training.trainer.distributed import DistInfo

logger = logging.getLogger(__name__)


class _EpochKeyed(Dataset):
    """``dataset[(index, epoch)]``: sets the epoch of this process's copy of the dataset, then reads."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.epoch: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, epoch = key
        if epoch != self.epoch and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self.epoch = epoch
        return self.dataset[index]


class _ResumableSampler(DistributedSampler):
    """This process's share of each epoch, as ``(index, epoch)`` keys; can start part-way through."""

    def __init__(self, dataset: Dataset, info: DistInfo, seed: int, shuffle: bool = True):
        # drop_last: a padded epoch would give some items to two processes.
        drop_last = len(dataset) >= info.world_size
        super().__init__(
            dataset,
            num_replicas=info.world_size,
            rank=info.rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
        self.start = 0

    def indices(self) -> list[int]:
        """This process's items of the current epoch, in order."""
        return list(super().__iter__())

    def __iter__(self):
        epoch = self.epoch
        return iter([(i, epoch) for i in self.indices()[self.start :]])

    def __len__(self) -> int:
        return self.num_samples - self.start


class BatchStream:
    """Endless batches of one dataset; the epoch reaches the dataset through the sampler's keys."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        info: DistInfo,
        seed: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        prefetch_factor: int = 2,
        persistent_workers: bool = True,
    ):
        if len(dataset) == 0:
            raise ValueError("cannot train on an empty dataset; check the data root and split")
        if num_workers < 0 or prefetch_factor < 1:
            raise ValueError(
                f"num_workers must be >= 0 and prefetch_factor >= 1, got {num_workers}, {prefetch_factor}"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.sampler = _ResumableSampler(dataset, info, seed)
        # Whole batches only (BatchNorm needs more than one sample), unless the shard is smaller.
        self.drop_last = self.sampler.num_samples >= batch_size
        workers = (
            {"prefetch_factor": prefetch_factor, "persistent_workers": persistent_workers}
            if num_workers
            else {}
        )
        self.loader = DataLoader(
            _EpochKeyed(dataset),
            batch_size=batch_size,
            sampler=self.sampler,
            num_workers=num_workers,
            drop_last=self.drop_last,
            pin_memory=pin_memory,
            # Its own generator: creating an iterator then never draws from the global RNG, so a
            # resumed run's random stream matches the uninterrupted run's.
            generator=torch.Generator().manual_seed(seed),
            **workers,
        )
        self.epoch = 0
        self.batch = 0  # batches already drawn in the current epoch
        self._iter = None

    @property
    def batches_per_epoch(self) -> int:
        n = self.sampler.num_samples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def next(self) -> dict[str, torch.Tensor]:
        while True:
            if self._iter is None:
                self.sampler.set_epoch(self.epoch)
                self.sampler.start = self.batch * self.batch_size
                self._iter = iter(self.loader)
            try:
                item = next(self._iter)
            except StopIteration:
                self.epoch += 1
                self.batch = 0
                self._iter = None
                continue
            self.batch += 1
            return item

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.batch = int(state["batch"])
        self._iter = None


class _Shard(Dataset):
    """Every ``world_size``-th item starting at ``rank`` (no padding, so no item counts twice)."""

    def __init__(self, dataset: Dataset, info: DistInfo):
        self.dataset = dataset
        self.indices = list(range(info.rank, len(dataset), info.world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[self.indices[i]]


def eval_loader(
    dataset: Dataset, batch_size: int, info: DistInfo, num_workers: int = 0, pin_memory: bool = False
) -> DataLoader:
    """This process's share of the validation windows, in order (workers live across validations)."""
    return DataLoader(
        _Shard(dataset, info),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(0),  # validating never draws from the global RNG
    )
