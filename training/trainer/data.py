"""Batch streams for training: labelled and unlabelled windows, sharded across processes, resumable.

A stream cycles through its dataset epoch after epoch. Shuffling is the distributed sampler's
(seeded by ``seed + epoch``), so a stream's position is two integers, ``(epoch, batch)``, which
``state_dict`` saves and ``load_state_dict`` restores: a resumed run draws exactly the batches the
uninterrupted run would have drawn.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from training.trainer.distributed import DistInfo

logger = logging.getLogger(__name__)


class _ResumableSampler(DistributedSampler):
    """A distributed sampler that can start part-way through an epoch."""

    def __init__(self, dataset: Dataset, info: DistInfo, seed: int, shuffle: bool = True):
        super().__init__(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=seed)
        self.start = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start


class BatchStream:
    """Endless batches of one dataset; ``set_epoch`` is forwarded to datasets that redraw per epoch."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        info: DistInfo,
        seed: int,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        if len(dataset) == 0:
            raise ValueError("cannot train on an empty dataset; check the data root and split")
        self.dataset = dataset
        self.batch_size = batch_size
        self.sampler = _ResumableSampler(dataset, info, seed)
        # Whole batches only (BatchNorm needs more than one sample), unless the shard is smaller.
        self.drop_last = self.sampler.num_samples >= batch_size
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self.sampler,
            num_workers=num_workers,
            drop_last=self.drop_last,
            pin_memory=pin_memory,
            # Its own generator: creating an iterator then never draws from the global RNG, so a
            # resumed run's random stream matches the uninterrupted run's.
            generator=torch.Generator().manual_seed(seed),
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
                if hasattr(self.dataset, "set_epoch"):
                    self.dataset.set_epoch(self.epoch)
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


def eval_loader(dataset: Dataset, batch_size: int, info: DistInfo, num_workers: int = 0) -> DataLoader:
    """This process's share of the validation windows, in order."""
    return DataLoader(
        _Shard(dataset, info),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(0),  # validating never draws from the global RNG
    )
