"""Suite-wide fixtures and marker handling.

Exports and a fitted tiny network are session fixtures here, shared by the export and runtime
tests. `gpu` tests skip without CUDA and `tensorrt` tests without TensorRT (and a GPU), so the suite
runs everywhere and says why something did not run. Torch is limited to one intra-op thread
unless a test asks for more, which keeps the suite predictable on 2-core CI machines.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
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


# -- exports shared by the export and runtime tests (each graph exported once per session) --------
CONV_BATCH = 2


@pytest.fixture(scope="session")
def untrained():
    """Seeded untrained networks by preset name (the same network every time)."""
    from export.source import build_untrained

    cache = {}

    def get(preset: str):
        if preset not in cache:
            cache[preset] = build_untrained(preset, seed=0)
        return cache[preset]

    return get


@pytest.fixture(scope="session")
def exported(untrained, tmp_path_factory):
    """``(preset, form) -> .onnx path``: matmul with a dynamic batch, conv with batch 2."""
    from export.onnx import export_onnx

    folder = tmp_path_factory.mktemp("onnx")
    cache = {}

    def get(preset: str, form: str):
        if (preset, form) not in cache:
            batch = "dynamic" if form == "matmul" else CONV_BATCH
            meta = {"run_id": f"untrained:{preset}:seed=0"}
            path = folder / f"{preset}-{form}.onnx"
            model = untrained(preset)
            cache[(preset, form)] = export_onnx(model, path, calibration=form, batch=batch, meta=meta)
        return cache[(preset, form)]

    return get


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """Two short synthetic clips in the EchoNet-Dynamic layout, with true masks."""
    from training.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("synthetic"), videos=2, frames=16, size=64, seed=0)


def clip_arrays(root, config):
    """``(windows (N, k, S, S) float32, masks (N, 1, S, S) float32)`` for every frame of every clip."""
    from echoseg.preprocess import clip_windows, normalize, resize_frames
    from training.data.echonet import load_clips

    windows, masks = [], []
    for clip in load_clips(root):
        size = config.input_size
        windows.append(clip_windows(normalize(resize_frames(clip.frames, size), config), config))
        resized = resize_frames(clip.true_masks * 255, size) > 127  # (T, H, W) -> (T, S, S)
        masks.append(resized[:, None].astype(np.float32))
    return np.concatenate(windows), np.concatenate(masks)


@pytest.fixture(scope="session")
def conv_batch() -> int:
    return CONV_BATCH


@pytest.fixture(scope="session")
def tiny_clips(synthetic_root):
    """The synthetic clips as the tiny preset sees them: ``(windows, masks)``."""
    from echoseg.presets import get_preset

    return clip_arrays(synthetic_root, get_preset("tiny"))


@pytest.fixture(scope="session")
def trained_tiny(tiny_clips):
    """The tiny network fitted for a few steps to the synthetic clips' true masks.

    An untrained network's logits sit in a band a few hundredths wide, so any rounding flips
    pixels across the threshold; a fitted one has the separated logits of a real model, which
    is what an fp16 mask comparison is about.
    """
    import torch

    from export.source import build_untrained

    model = build_untrained("tiny", seed=0)
    windows, masks = tiny_clips
    x, y = torch.from_numpy(windows), torch.from_numpy(masks)
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(30):
        idx = torch.randint(0, len(x), (8,), generator=generator)
        logits, target = model(x[idx]), y[idx]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        # a soft Dice term, as in training: with BCE alone the ResNet-family tiny still predicts
        # background everywhere after 30 steps (positive fraction 0; with Dice 0.12 for 0.12 true)
        probs = torch.sigmoid(logits)
        loss = loss + 1 - (2 * (probs * target).sum() + 1) / (probs.sum() + target.sum() + 1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


# -- the audit trail and the logs of the whole run: no key, file name or patient field -----------
# Every server of the run (in-process apps and `echoseg serve` subprocesses, which inherit the
# environment) writes its audit trail to one file; the service's log records go to a second
# one. At the end of the session both, and every log file the run left under its temporary
# directory, are searched for the secrets and identifiers in tests/sensitive.py.
_RUN_LOGS: dict[str, object] = {}


@pytest.fixture(autouse=True, scope="session")
def _run_audit_log(tmp_path_factory):
    import logging
    import os

    base = tmp_path_factory.getbasetemp()
    audit, service_log = base / "run-audit.jsonl", base / "run-service.log"
    previous = os.environ.get("ECHOSEG_AUDIT_LOG")
    os.environ.setdefault("ECHOSEG_AUDIT_LOG", str(audit))
    handler = logging.FileHandler(service_log, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).addHandler(handler)
    _RUN_LOGS.update(base=base, audit=Path(os.environ["ECHOSEG_AUDIT_LOG"]))
    yield
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).removeHandler(handler)
    handler.close()
    if previous is None:
        os.environ.pop("ECHOSEG_AUDIT_LOG", None)


def check_run_logs(base: Path, audit: Path) -> dict:
    """Audit lines by event, malformed lines, and (file, needle) for every sensitive string found."""
    import json

    from service.core.audit import FIELDS
    from tests.sensitive import NEEDLES

    counts: dict[str, int] = {}
    malformed = []
    if audit.exists():
        for i, line in enumerate(audit.read_text(encoding="utf-8").splitlines()):
            try:
                record = json.loads(line)
                assert tuple(record) == FIELDS
                counts[record["event"]] = counts.get(record["event"], 0) + 1
            except (ValueError, AssertionError, KeyError):
                malformed.append(i + 1)
    files = [p for p in base.rglob("*") if p.is_file() and p.suffix in (".log", ".jsonl", ".txt")]
    leaks = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        leaks += [(str(path), n) for n in NEEDLES if n in text]
    return {"counts": counts, "malformed": malformed, "files": len(files), "leaks": leaks}


def pytest_sessionfinish(session, exitstatus):
    if "base" not in _RUN_LOGS:
        return
    result = check_run_logs(_RUN_LOGS["base"], _RUN_LOGS["audit"])
    _RUN_LOGS["result"] = result
    if result["leaks"] or result["malformed"]:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    result = _RUN_LOGS.get("result")
    if not result:
        return
    counts = result["counts"]
    terminalreporter.write_line(
        f"audit trail of this run: {counts.get('request', 0)} request lines, {counts.get('stream', 0)} "
        f"stream lines, {len(result['malformed'])} malformed; {result['files']} log files searched, "
        f"{len(result['leaks'])} holding a test key, client file name or patient field"
    )
    for path, needle in result["leaks"][:20]:
        terminalreporter.write_line(f"  LEAK: {needle[:12]}... in {path}", red=True)
