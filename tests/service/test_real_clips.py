"""Real clips over the wire: the ultrasound region (DICOM, detected, client) and "nothing found".

A real uvicorn server, real httpx and websockets clients. The region and flag logic is the
service's own, so most tests use the fake backend; the no-LV acceptance uses the bundled model.
"""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path

import httpx
import numpy as np
import pytest

from echoseg.quality import FLAGS
from service.client import exchange, stream_frames
from service.codecs.frames import decode_mask
from service.codecs.rle import rle_decode
from tests.core.scanner import box_of, scanner_clip

from .conftest import FakeBackend, LiveServer, fake_backend
from .test_units import avi_bytes, npy_bytes

REPO = Path(__file__).resolve().parents[2]


def post(server, data: bytes, media: str) -> dict:
    resp = httpx.post(f"{server.url}/v1/segment", content=data, headers={"Content-Type": media}, timeout=120)
    assert resp.status_code == 200, resp.text
    return resp.json()


def rest_masks(body: dict) -> np.ndarray:
    h, w = body["height"], body["width"]
    return np.stack([rle_decode(c, h, w) for c in body["masks"]["counts"]])


def region_dicom(frames: np.ndarray, box: tuple[int, int, int, int], jpeg: bool = False) -> bytes:
    """A DICOM of ``frames`` whose one ultrasound region has ``box`` (x0, y0, x1, y1 exclusive);
    ``jpeg``: JPEG baseline in YBR colour, as point-of-care scanners export."""
    import io

    from pydicom import dcmread
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from tests.service.dicom import dicom_bytes

    ds = dcmread(io.BytesIO(dicom_bytes(frames, delta_cm=(0.03, 0.03), jpeg=jpeg)))
    region = ds.SequenceOfUltrasoundRegions[0]
    region.RegionSpatialFormat, region.RegionDataType = 1, 1
    region.RegionLocationMinX0, region.RegionLocationMinY0 = box[0], box[1]
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = box[2] - 1, box[3] - 1
    ds.SequenceOfUltrasoundRegions = Sequence([region, Dataset()])  # a second item without a location
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def scanner():
    frames, fan, _ = scanner_clip(12, 180, 240, seed=4)
    return frames, fan


@pytest.fixture
def rule_server(make_server):
    """The fake backend thresholds pixels: it is no judge of regions, so the tests of the rule
    itself turn the model's judgement off."""
    return make_server(fake_backend(), max_batch=8, region_arbitration=False)


def assert_near_fan(region: dict, fan: np.ndarray) -> None:
    """The box of the fan, within a few pixels (2.5 % of a 240-pixel frame: the first window's two
    frames are less evidence than the eight an upload once used); the ECG trace that touches the
    fan's bottom can join it (as in one frame), so the bottom may reach lower."""
    x0, y0, x1, y1 = box_of(fan)
    np.testing.assert_allclose([region[k] for k in ("x0", "y0", "x1")], (x0, y0, x1), atol=6)
    assert y1 - 3 <= region["y1"] <= y1 + 8, (region, box_of(fan))


def test_rest_reports_the_detected_region_and_masks_stay_in_the_fan(make_server, scanner):
    """With a backend that finds a cavity (the model's stand-in) judging the candidate regions."""
    frames, fan = scanner
    server = make_server(cavity_backend(), max_batch=8)
    body = post(server, npy_bytes(frames), "application/x-npy")
    region = body["region"]
    assert region["source"] == "detected" and len(region["fan"]) >= 3
    assert_near_fan(region, fan)
    masks = rest_masks(body)
    assert masks.shape == frames.shape and masks.any()
    assert not masks[:, ~fan].any() or masks[:, ~fan].mean() < 0.002  # text and ECG never become "LV"
    assert len(body["flags"]) == len(body["confidence"]) == len(frames)
    assert set(body["flags"]) <= set(FLAGS) and set(body["quality"]) >= {"frames_ok", "reason"}


def test_rest_dicom_region_used_and_stale_region_refused(rule_server, scanner):
    pytest.importorskip("pydicom")
    frames, fan = scanner
    good = post(rule_server, region_dicom(frames, box_of(fan)), "application/dicom")
    assert good["region"]["source"] == "dicom" and good["warnings"] == []
    assert [good["region"][k] for k in ("x0", "y0", "x1", "y1")] == list(box_of(fan))
    assert good["spacing"] == {"row": 0.3, "col": 0.3, "unit": "mm"}
    # a region inside the matrix that holds none of the image: refused by the content
    stale = post(rule_server, region_dicom(frames, (0, 0, 40, 30)), "application/dicom")
    assert stale["region"]["source"] == "detected" and stale["spacing"] is None
    assert any("stale" in w for w in stale["warnings"]), stale["warnings"]
    masks_good, masks_stale = rest_masks(good), rest_masks(stale)
    agree = (masks_good == masks_stale).mean()
    assert agree > 0.99  # the detected fan is the declared one, within a few pixels


def cavity_backend() -> FakeBackend:
    backend = CavityBackend()
    backend.load()
    backend.config = type(backend.config)(**{**backend.config.__dict__, "input_size": 112})
    return backend


@pytest.mark.parametrize("judged", [False, True], ids=["rule", "judged_by_a_cavity_finder"])
def test_upload_and_stream_of_the_same_clip_reach_the_same_region(make_server, judged):
    """Both choose from the frames the first window needs (no added latency for a stream, so a
    client that waits for each mask never deadlocks) by the same rule and, where candidates
    disagree, the same judgement of the model; given the upload's region in `start`, a stream
    gives exactly the upload's masks."""
    backend = cavity_backend() if judged else fake_backend()
    server = make_server(backend, max_batch=8, region_arbitration=judged)
    results = []
    for shape, seed in (((120, 160), 4), ((180, 240), 4), ((240, 320), 0)):
        frames, _, _ = scanner_clip(12, *shape, seed=seed)
        body = post(server, npy_bytes(frames), "application/x-npy")
        report = asyncio.run(stream_frames(frames, server.url, fps=None, mask_encoding="gray8"))
        assert report.close_code == 1000 and report.ready["region"] is None
        assert report.ready["region_frames"] == report.ready["lookahead_frames"] + 1
        assert report.summary["region"] == body["region"], (shape, report.summary["region"], body["region"])
        np.testing.assert_array_equal(np.stack(report.masks), rest_masks(body))
        results.append(body["region"]["source"])
    assert "detected" in results  # not only the trivial agreement of two full frames

    given = asyncio.run(
        stream_frames(frames, server.url, fps=None, mask_encoding="gray8", region=body["region"])
    )
    assert given.close_code == 1000 and given.ready["region_frames"] == 0
    np.testing.assert_array_equal(np.stack(given.masks), rest_masks(body))
    assert given.summary["quality"]["frames_ok"] == body["quality"]["frames_ok"]


def test_stream_with_a_client_region_and_mask_format_2(fake_server, scanner):
    """The region of a REST answer, sent back in start: same masks; format 2 carries the flags."""
    frames, _ = scanner
    body = post(fake_server, npy_bytes(frames), "application/x-npy")
    h, w = frames.shape[1:]
    start = {"type": "start", "width": w, "height": h, "mask_encoding": "gray8", "mask_format": 2}
    start["region"] = body["region"]
    msgs = [json.dumps(start), *[f.tobytes() for f in frames], json.dumps({"type": "end"})]
    received, code = asyncio.run(exchange(fake_server.url, msgs))
    texts = [json.loads(m) for m in received if isinstance(m, str)]
    assert code == 1000 and texts[0]["region"]["source"] == "client" and texts[0]["region_frames"] == 0
    binary = [m for m in received if isinstance(m, bytes)]
    index, flag, confidence = zip(*[struct.unpack("<IBB", m[:6]) for m in binary], strict=True)
    assert list(index) == list(range(len(frames)))
    assert [texts[0]["flags"][f] for f in flag] == body["flags"]
    np.testing.assert_allclose(np.array(confidence) / 255, body["confidence"], atol=1 / 255)
    masks = np.stack([decode_mask(m[6:], "gray8", w, h) for m in binary])
    np.testing.assert_array_equal(masks, rest_masks(body))
    assert texts[-1]["region"]["source"] == "client"


@pytest.mark.parametrize(
    "region,words",
    [
        ({"x0": 0, "y0": 0, "x1": 200, "y1": 50}, "region.x1 = 200 is outside"),
        ({"x0": 0, "y0": 0, "x1": 50}, "region.y1 must be an integer"),
        ("whole", "region must be an object"),
        ({"x0": 0, "y0": 0, "x1": 50, "y1": 50, "fan": [[0, 0], [10, 0], [99, 99]]}, "region.fan[2]"),
    ],
)
def test_a_bad_region_in_start_is_invalid_start_naming_the_field(fake_server, region, words):
    start = {"type": "start", "width": 160, "height": 120, "region": region}
    received, code = asyncio.run(exchange(fake_server.url, [json.dumps(start)]))
    error = json.loads(received[-1])
    assert error["type"] == "error" and error["code"] == "invalid_start" and code == 1003
    assert words in error["detail"], error["detail"]


def test_mask_format_must_be_1_or_2(fake_server):
    start = {"type": "start", "width": 16, "height": 16, "mask_format": 3}
    received, code = asyncio.run(exchange(fake_server.url, [json.dumps(start)]))
    assert json.loads(received[-1])["code"] == "invalid_start" and code == 1003


# -- "nothing found", with the bundled model ----------------------------------------------------------
@pytest.fixture(scope="module")
def bundled_server():
    from service.core.config import Settings
    from service.main import create_app

    settings = Settings(
        model=str(REPO / "models" / "default"),
        backend="torch",  # loads the checkpoint as it is: no ONNX export to wait for
        max_batch=8,
        threads=1,
    )
    with LiveServer(create_app(settings)) as server:
        yield server


def _no_heart_clips() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:112, :112].astype(np.float32)
    phantom = np.clip(255 - np.hypot(xx - 56, yy) * 2.2, 0, 255).astype(np.uint8)  # a radial gradient
    return {
        "black": np.zeros((12, 112, 112), np.uint8),
        "noise": rng.integers(0, 256, (12, 112, 112), dtype=np.uint8),
        "gradient": np.broadcast_to(phantom, (12, 112, 112)).copy(),
    }


@pytest.mark.parametrize("name", ["black", "noise", "gradient"])
def test_a_clip_without_a_heart_is_flagged_no_lv_with_a_reason(bundled_server, name):
    clip = _no_heart_clips()[name]
    flagged = ("echoseg_frames_flagged_total", (("flag", "no_lv"), ("transport", "rest")))
    before = bundled_server.metrics()[flagged]
    body = post(bundled_server, npy_bytes(clip), "application/x-npy")
    assert body["flags"] == ["no_lv"] * len(clip), body["flags"]
    assert body["confidence"] == [0.0] * len(clip)
    assert body["ef"] is None and body["ef_null_reason"] in ("blank_input", "no_lv")
    assert body["quality"]["frames_no_lv"] == len(clip)
    assert "no left ventricle found in 12 of 12 frames" in body["quality"]["reason"]
    assert bundled_server.metrics()[flagged] - before == len(clip)
    if name == "black":
        assert body["ef_null_reason"] == "blank_input" and body["quality"]["frames_blank"] == len(clip)


def test_a_simulated_echo_is_not_flagged(bundled_server):
    from training.data.synthetic import synthesize

    clip = synthesize(np.random.default_rng(2024), "ok", frames=40, size=112).frames
    body = post(bundled_server, avi_bytes(clip), "video/x-msvideo")
    assert body["quality"]["frames_ok"] == len(clip) and body["quality"]["reason"] is None
    assert body["ef"] is not None and body["ef_null_reason"] is None
    assert body["region"]["source"] == "full"  # an EchoNet-like crop passes through unchanged


def test_stream_of_a_black_clip_flags_every_mask(bundled_server):
    clip = _no_heart_clips()["black"]
    report = asyncio.run(stream_frames(clip, bundled_server.url, fps=None, mask_format=2))
    assert report.close_code == 1000 and report.indices == list(range(len(clip)))
    assert report.flags == ["no_lv"] * len(clip) and report.confidences == [0.0] * len(clip)
    assert report.summary["ef"] is None and report.summary["ef_null_reason"] == "blank_input"
    assert report.summary["quality"]["frames_no_lv"] == len(clip)
    assert "no left ventricle found in 12 of 12 frames" in report.summary["quality"]["reason"]


# -- the acceptance geometry at 480x640, with a backend that finds the cavity ------------------------
class CavityBackend(FakeBackend):
    """Segments the dark pool enclosed by speckle in the model's input (what an LV looks like in
    ``scanner_clip``): a stand-in for a trained model, so the test checks the service's geometry
    (region, crop, pad, resize, map back) against the true masks at the clip's own size."""

    name = "cavity"

    def _run(self, batch: np.ndarray) -> np.ndarray:
        from scipy import ndimage

        target = self.config.offsets.index(0)
        pixels = batch[:, target] * self.config.std + self.config.mean  # (B, S, S) in [0, 1]
        out = np.empty((batch.shape[0], 1, *batch.shape[2:]), np.float32)
        for i, p in enumerate(pixels):
            tissue = ndimage.uniform_filter(p, 5) > 0.12
            holes = ndimage.binary_fill_holes(tissue) & ~tissue
            out[i, 0] = np.where(ndimage.binary_dilation(holes, iterations=1), 8.0, -8.0)
        return out


def test_480x640_dicom_with_and_without_region_mp4_and_stream_give_the_true_masks(make_server):
    pytest.importorskip("pydicom")
    from service.codecs.outputs import video_encoder

    backend = CavityBackend()
    backend.load()
    backend.config = type(backend.config)(**{**backend.config.__dict__, "input_size": 112})
    server = make_server(backend, max_batch=8)
    frames, fan, cavity = scanner_clip(10, 480, 640, seed=7)

    def dice_per_frame(masks):
        return [
            2 * (m & c).sum() / (m.sum() + c.sum())
            for m, c in zip(masks.astype(bool), cavity > 0, strict=True)
        ]

    with_region = post(server, region_dicom(frames, box_of(fan)), "application/dicom")
    without = post(server, dicom_bytes_plain(frames), "application/dicom")
    mp4 = post(server, mp4_bytes(frames, video_encoder()), "video/mp4")
    assert (with_region["region"]["source"], without["region"]["source"]) == ("dicom", "detected")
    for body in (with_region, without, mp4):
        assert (body["height"], body["width"]) == (480, 640)
        assert min(dice_per_frame(rest_masks(body))) >= 0.9, dice_per_frame(rest_masks(body))
    report = asyncio.run(stream_frames(frames, server.url, fps=None, mask_encoding="gray8"))
    assert min(dice_per_frame(np.stack(report.masks))) >= 0.9  # its region from the first window
    given = asyncio.run(
        stream_frames(frames, server.url, fps=None, mask_encoding="gray8", region=without["region"])
    )
    np.testing.assert_array_equal(np.stack(given.masks), rest_masks(without))


# -- the acceptance with the bundled model: a realistic apical four-chamber clip at 480x640 --------
# Seed chosen before the model was scored on it, never used by a training set (those are drawn
# from generator seed 1 by clip index; this clip comes from its own seed).
A4C_SEED = 20261202


@pytest.fixture(scope="module")
def a4c_clip():
    from training.data.a4c import render_a4c_clip

    return render_a4c_clip(A4C_SEED, frames=32, height=480, width=640, furniture=True)


def test_bundled_model_finds_the_lv_of_a_480x640_a4c_clip_in_dicom_mp4_and_stream(bundled_server, a4c_clip):
    pytest.importorskip("pydicom")
    from service.codecs.outputs import video_encoder

    clip = a4c_clip
    traced = sorted({clip.ed, clip.es})

    def traced_dice(masks: np.ndarray) -> list[float]:
        return [
            round(float(2 * (masks[t].astype(bool) & (clip.masks[t] > 0)).sum()
                        / (masks[t].astype(bool).sum() + (clip.masks[t] > 0).sum())), 4)
            for t in traced
        ]  # fmt: skip

    x0, y0, x1, y1 = clip.region  # inclusive, as DICOM's RegionLocation
    box = (x0, y0, x1 + 1, y1 + 1)
    uploads = {
        "dicom_jpeg_ybr_with_region": (region_dicom(clip.frames, box, jpeg=True), "application/dicom"),
        "dicom_without_region": (dicom_bytes_plain(clip.frames), "application/dicom"),
        "mp4": (mp4_bytes(clip.frames, video_encoder()), "video/mp4"),
    }  # fmt: skip
    bodies = {name: post(bundled_server, data, media) for name, (data, media) in uploads.items()}
    assert bodies["dicom_jpeg_ybr_with_region"]["region"]["source"] == "dicom"
    assert bodies["dicom_without_region"]["region"]["source"] == "detected"
    scores = {}
    for name, body in bodies.items():
        assert (body["height"], body["width"]) == (480, 640), name
        scores[name] = traced_dice(rest_masks(body))
    report = asyncio.run(stream_frames(clip.frames, bundled_server.url, fps=None, mask_encoding="gray8"))
    scores["stream_detected_region"] = traced_dice(np.stack(report.masks))
    assert report.summary["region"] == bodies["dicom_without_region"]["region"]  # same frames, same region
    print(f"\nDice at ED/ES (frames {traced}) of the bundled model on a 480x640 A4C clip: {scores}")
    assert all(min(d) >= 0.90 for d in scores.values()), scores
    for name, body in bodies.items():  # found, and said to be found
        assert body["flags"][clip.ed] == "ok" and body["flags"][clip.es] == "ok", (name, body["flags"])
        assert body["ef"] is not None, (name, body.get("ef_null_reason"))
    # A stream given the upload's region returns exactly the upload's masks.
    without = bodies["dicom_without_region"]
    given = asyncio.run(
        stream_frames(
            clip.frames, bundled_server.url, fps=None, mask_encoding="gray8", region=without["region"]
        )
    )
    np.testing.assert_array_equal(np.stack(given.masks), rest_masks(without))


def dicom_bytes_plain(frames: np.ndarray) -> bytes:
    from tests.service.dicom import dicom_bytes

    return dicom_bytes(frames)


def mp4_bytes(frames: np.ndarray, codec: str) -> bytes:
    import io

    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for packet in stream.encode(
                av.VideoFrame.from_ndarray(f, format="gray").reformat(format="yuv420p")
            ):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def test_a_half_size_dicom_with_its_stale_region_is_rescaled_and_gives_the_full_size_masks(
    bundled_server, a4c_clip
):
    """A file resampled x0.5 after acquisition keeps its region at the original coordinates (outside
    the new pixel matrix): the region is rescaled by the same factor, checked against the content
    and used, the spacing follows the factor, and the masks are the full-size file's, downsampled."""
    pytest.importorskip("pydicom")
    from PIL import Image

    clip = a4c_clip
    x0, y0, x1, y1 = clip.region
    box = (x0, y0, x1 + 1, y1 + 1)
    half = np.stack([np.asarray(Image.fromarray(f).resize((320, 240), Image.BOX)) for f in clip.frames])
    assert box[2] > 320  # the declared box lies outside the half-size matrix
    full_body = post(bundled_server, region_dicom(clip.frames, box), "application/dicom")
    half_body = post(bundled_server, region_dicom(half, box), "application/dicom")
    region = half_body["region"]
    assert region["source"] == "dicom_rescaled", (region, half_body["warnings"])
    np.testing.assert_allclose([region[k] for k in ("x0", "y0", "x1", "y1")], np.array(box) / 2, atol=1)
    assert any("rescaled by 0.5" in w for w in half_body["warnings"]), half_body["warnings"]
    assert half_body["spacing"] == {"row": pytest.approx(0.6), "col": pytest.approx(0.6), "unit": "mm"}
    full_masks = rest_masks(full_body).astype(np.float32)  # (T, 480, 640) -> (T, 240, 320)
    expected = full_masks.reshape(len(full_masks), 240, 2, 320, 2).mean(axis=(2, 4)) >= 0.5
    got = rest_masks(half_body).astype(bool)
    dice = [2 * (g & e).sum() / max(g.sum() + e.sum(), 1) for g, e in zip(got, expected, strict=True)]
    print(f"\nDice of the x0.5 stale-region file against the full-size masks: min {min(dice):.4f}, "
          f"mean {np.mean(dice):.4f}, ED/ES {dice[clip.ed]:.4f}/{dice[clip.es]:.4f}")  # fmt: skip
    assert min(dice) >= 0.95, dice
