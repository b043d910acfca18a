"""A model from ``echoseg adapt`` serves like any checkpoint: exported at start, over real HTTP.

The adapted checkpoint (tiny preset, a few steps on a folder of AVI clips) is served by a real
uvicorn server on ONNX Runtime (the checkpoint is exported into the cache first); its masks over
REST match offline inference of the same checkpoint, and ``/v1/models`` names it.
"""

from __future__ import annotations

import shutil

import httpx
import numpy as np
import pytest
import torch

from echoseg.cli import main as echoseg_main
from echoseg.presets import get_preset
from echoseg.video import read_video
from service.codecs.rle import rle_decode
from training.data.synthetic import generate
from training.model import build_model
from training.model.inference import predict_clip
from training.model.io import load_pretrained, save_pretrained

from .test_units import npy_bytes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    base = tmp_path_factory.mktemp("adapted")
    labelled = generate(base / "sim", videos=6, frames=12, size=32, seed=3)
    other = generate(base / "other", videos=4, frames=12, size=32, seed=5)
    site = base / "site"
    site.mkdir()
    for i, avi in enumerate(sorted((other / "Videos").glob("*.avi"))):
        shutil.copy(avi, site / f"{i}.avi")
    torch.manual_seed(0)
    save_pretrained(build_model(get_preset("tiny")), base / "start", meta={"run_id": "start"})
    argv = ["adapt", "--unlabelled", str(site), "--labelled", str(labelled), "--from", str(base / "start")]
    argv += ["--out", str(base / "run"), "--steps", "3", "--max-source-drop", "inf", "--no-progress"]
    argv += ["--set", "batch_size=2", "--set", "unlabelled_batch_size=2", "--set", "lr=0.01"]
    argv += ["--fit-candidates", "6", "--fit-clips", "3"]  # a small fit: the artefact is what is tested
    assert echoseg_main(argv) == 0
    return base / "run" / "best"


def test_the_adapted_checkpoint_exports_and_serves(make_server, adapted, tmp_path):
    model, config, meta = load_pretrained(adapted)
    assert meta["mode"] == "adapted" and meta["adaptation"]["adapt_clips"] >= 1
    clip = generate(tmp_path / "clip", videos=1, frames=10, size=32, seed=9)
    frames = read_video(next((clip / "Videos").glob("*.avi")))[0]
    expected = (predict_clip(model, frames) > config.threshold).astype(np.uint8)
    assert 0.02 < expected.mean() < 0.98, "the masks to compare hold both classes"

    server = make_server(model=str(adapted), backend="onnxruntime", cache_dir=str(tmp_path / "cache"))
    listed = httpx.get(f"{server.url}/v1/models", timeout=30).json()["models"][0]
    assert listed["preset"] == "tiny" and listed["backend"] == "onnxruntime"
    assert list((tmp_path / "cache").rglob("model.onnx")), "the checkpoint was exported into the cache"
    resp = httpx.post(
        f"{server.url}/v1/segment",
        content=npy_bytes(frames),
        headers={"Content-Type": "application/x-npy"},
        timeout=120,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    got = np.stack([rle_decode(c, *body["masks"]["size"]) for c in body["masks"]["counts"]])
    assert got.shape == expected.shape
    assert (got == expected).mean() > 0.99
