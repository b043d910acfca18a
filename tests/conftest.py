"""Suite-wide fixtures and marker handling.

`gpu` tests skip without CUDA and `tensorrt` tests without TensorRT (and a GPU), so the suite
runs everywhere and says why something did not run. Torch is limited to one intra-op thread
unless a test asks for more, which keeps the suite predictable on 2-core CI machines.
"""

from __future__ import annotations

import importlib.util

import pytest


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    has_cuda = _cuda_available()
    has_trt = has_cuda and importlib.util.find_spec("tensorrt") is not None
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (none found)")
    skip_trt = pytest.mark.skip(reason="needs TensorRT and a CUDA GPU (not found)")
    for item in items:
        if item.get_closest_marker("gpu") and not has_cuda:
            item.add_marker(skip_gpu)
        if item.get_closest_marker("tensorrt") and not has_trt:
            item.add_marker(skip_trt)


@pytest.fixture(autouse=True, scope="session")
def _limit_torch_threads():
    try:
        import torch
    except ImportError:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
