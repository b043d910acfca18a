"""Acceptance with the real network (``tiny`` preset, random weights) via torch and ONNX Runtime.

The server loads a checkpoint directory exactly as in production (for ONNX Runtime it exports
it to ONNX into a cache first) and must return, over REST and over WebSocket, the masks of
offline inference ``training.model.inference.predict_clip``.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest
import torch

from echoseg.presets import get_preset
from service.client import percentiles, server_latency, stream_frames
from service.codecs.rle import rle_decode
from training.data.synthetic import synthesize
from training.metrics import dice
from training.model import build_model
from training.model.inference import predict_clip
from training.model.io import save_pretrained

from .test_units import npy_bytes


def spread_head(model, frames: np.ndarray) -> None:
    """Random weights give nearly constant probabilities; rescale the 1-channel head so the clip's
    logits spread around 0 (about half the pixels set), making mask equality a meaningful test."""
    head = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels == 1][-1]
    p = predict_clip(model, frames).astype(np.float64)
    logits = np.log(p / (1 - p))
    scale = 4.0 / max(float(np.std(logits)), 1e-6)
    with torch.no_grad():
        head.weight.mul_(scale)
        head.bias.sub_(float(np.median(logits))).mul_(scale)


@pytest.fixture(scope="module")
def echo_clip() -> np.ndarray:
    return synthesize(np.random.default_rng(3), "clip", frames=40, size=112).frames  # (40, 112, 112)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, echo_clip):
    torch.manual_seed(0)
    model = build_model(get_preset("tiny")).eval()
    spread_head(model, echo_clip)
    directory = tmp_path_factory.mktemp("ckpt")
    save_pretrained(model, directory, meta={"run_id": "test"})
    masks = predict_clip(model, echo_clip) > model.config.threshold
    assert 0.2 < masks.mean() < 0.8
    return directory, masks.astype(np.uint8)


def assert_same_masks(got: np.ndarray, expected: np.ndarray) -> float:
    """Dice of every frame >= 0.99; returns the lowest."""
    assert got.shape == expected.shape
    worst = min(float(dice(g, e)) for g, e in zip(got, expected, strict=True))
    assert worst >= 0.99, worst
    return worst


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_real_model_rest_and_stream_match_offline(make_server, checkpoint, echo_clip, tmp_path, backend):
    directory, expected = checkpoint
    server = make_server(
        model=str(directory), backend=backend, cache_dir=str(tmp_path / "cache"), max_batch=8
    )
    model = httpx.get(f"{server.url}/v1/models").json()["models"][0]
    assert model["backend"] == backend and model["preset"] == "tiny"
    if backend == "onnxruntime":
        assert list((tmp_path / "cache").rglob("model.onnx")), "the checkpoint was exported into the cache"

    resp = httpx.post(f"{server.url}/v1/segment", content=npy_bytes(echo_clip),
                      headers={"Content-Type": "application/x-npy"}, timeout=120)  # fmt: skip
    assert resp.status_code == 200, resp.text
    body = resp.json()
    rest = np.stack([rle_decode(c, *body["masks"]["size"]) for c in body["masks"]["counts"]])
    assert_same_masks(rest, expected)

    for encoding in ("gray8", "png"):
        report = asyncio.run(
            stream_frames(echo_clip, server.url, fps=None, encoding=encoding, mask_encoding="png")
        )
        assert report.indices == list(range(len(echo_clip))), "frame indices complete and in order"
        assert report.close_code == 1000 and report.summary["frames"] == len(echo_clip)
        assert_same_masks(np.stack(report.masks), expected)


@pytest.mark.slow
def test_four_streams_at_25_fps_for_10_s(make_server, checkpoint, tmp_path, capsys):
    """4 concurrent streams x 25 fps x 10 s on CPU: nothing lost, and the batcher formed batches > 1.

    Latency figures are printed (a measurement, not an assertion; the machine is shared).
    """
    directory, _ = checkpoint
    # One intra-op thread: the four clients share this process (and its GIL) with the server.
    server = make_server(
        model=str(directory), backend="onnxruntime", cache_dir=str(tmp_path / "cache"), threads=1
    )
    clip = synthesize(np.random.default_rng(5), "load", frames=250, size=112).frames  # 10 s at 25 fps

    async def main():
        return await asyncio.gather(*(stream_frames(clip, server.url, fps=25.0) for _ in range(4)))

    reports = asyncio.run(main())
    for r in reports:
        assert r.error is None and r.close_code == 1000
        assert r.indices == list(range(len(clip))), "no frame lost, in order"
    text = httpx.get(f"{server.url}/metrics").text
    from prometheus_client.parser import text_string_to_metric_families

    samples = {
        (s.name, s.labels.get("le")): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }
    batches, singles = (
        samples[("echoseg_batch_size_count", None)],
        samples[("echoseg_batch_size_bucket", "1.0")],
    )
    assert batches > singles, "some batches held more than one window"
    ok = [s.value for f in text_string_to_metric_families(text) for s in f.samples
          if s.name == "echoseg_frames_total" and s.labels["outcome"] == "ok"]  # fmt: skip
    assert ok == [4 * len(clip)]
    client = percentiles([x for r in reports for x in r.latencies_s])
    figures = {
        "streams": 4, "fps": 25, "frames_per_stream": len(clip), "preset": "tiny",
        "client_ms": client, "server_ms": server_latency(server.url),
        "batches": batches, "batches_of_one": singles, "mean_batch": 4 * len(clip) / batches,
    }  # fmt: skip
    with capsys.disabled():
        print("\nload test:", json.dumps(figures))
