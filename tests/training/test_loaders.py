"""Training loaders: persistent workers redraw every epoch exactly as the main process would."""

from __future__ import annotations

import pytest
import torch

from echoseg.presets import get_preset
from training.data.dataset import StoreWindowDataset
from training.data.store import ensure_store
from training.trainer.data import BatchStream
from training.trainer.distributed import DistInfo


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from training.data.synthetic import generate

    root = generate(tmp_path_factory.mktemp("synth"), videos=5, frames=12, size=32, seed=9)
    return ensure_store(root, tmp_path_factory.mktemp("store"), progress=False)


@pytest.mark.parametrize("mode", ["labelled", "unlabelled"])
def test_persistent_workers_draw_each_epochs_windows(store, mode):
    data = StoreWindowDataset(store, None, get_preset("tiny"), mode=mode, augment=True, windows_per_video=3)

    def batches(workers: int) -> list[dict[str, torch.Tensor]]:
        stream = BatchStream(data, 4, DistInfo(), seed=2, num_workers=workers, persistent_workers=True)
        return [stream.next() for _ in range(3 * stream.batches_per_epoch)]  # three epochs

    main, workers = batches(0), batches(2)
    for a, b in zip(main, workers, strict=True):
        assert torch.equal(a["index"], b["index"])
        assert torch.equal(a["frames"], b["frames"])  # same target frames and augmentations
    per_epoch = len(main) // 3
    first = {int(i): f for b in main[:per_epoch] for i, f in zip(b["index"], b["frames"], strict=True)}
    second = {
        int(i): f
        for b in main[per_epoch : 2 * per_epoch]
        for i, f in zip(b["index"], b["frames"], strict=True)
    }
    shared = set(first) & set(second)
    assert shared and all(not torch.equal(first[i], second[i]) for i in shared)  # redrawn per epoch


def test_loader_options_are_checked(store):
    data = StoreWindowDataset(store, None, get_preset("tiny"))
    with pytest.raises(ValueError, match="prefetch_factor"):
        BatchStream(data, 2, DistInfo(), seed=0, num_workers=1, prefetch_factor=0)
