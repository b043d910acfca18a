"""Colour frames to gray (echoseg.gray), through every decoder: flow pixels are blood, tints stay."""

import io

import av
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from echoseg.gray import fill_flow, gray_from_rgb
from echoseg.video import read_video
from service.codecs.frames import decode_frame, encode_frame

RED, BLUE = np.array([1.0, 0.15, 0.05]), np.array([0.1, 0.35, 1.0])  # the zoo's flow colours
TINTS = {"sepia": (1.0, 0.82, 0.6), "blue": (0.62, 0.8, 1.0), "gray": (1.0, 1.0, 1.0)}


def luma(rgb: np.ndarray) -> np.ndarray:
    x = rgb.astype(np.float64)
    return np.rint(x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114).astype(np.uint8)


def scene(height=64, width=96) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rgb, flow, cavity)``: tissue (a gray ramp 60..255) around a dark cavity (gray 4) whose
    pixels are 80 % colour flow (red top, blue bottom, speed 0.35..1)."""
    ramp = np.linspace(60, 255, width)[None, :] * np.ones((height, 1))
    rgb = np.repeat(ramp[..., None], 3, axis=-1)
    cavity = np.zeros((height, width), bool)
    cavity[12:52, 28:68] = True
    rgb[cavity] = 4
    flow = cavity & (np.random.default_rng(0).random((height, width)) < 0.8)
    speed = np.linspace(0.35, 1.0, width)[None, :, None] * np.ones((height, 1, 1))
    colour = np.where((np.arange(height) < 32)[:, None, None], RED, BLUE) * 255 * speed
    rgb[flow] = colour[flow]
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), flow, cavity


def inside(mask: np.ndarray, margin: int) -> np.ndarray:
    return ndimage.binary_erosion(mask, iterations=margin)


def around(mask: np.ndarray, margin: int) -> np.ndarray:
    return ~ndimage.binary_dilation(mask, iterations=margin)


@pytest.mark.parametrize("tint", sorted(TINTS))
def test_a_tinted_gray_image_keeps_its_luma(tint):
    ramp = np.arange(256, dtype=np.float64)[None, :] * np.ones((4, 1))
    rgb = np.clip(np.rint(ramp[..., None] * np.array(TINTS[tint])), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(gray_from_rgb(rgb), luma(rgb))


def test_flow_in_a_cavity_becomes_its_dark_blood_and_the_rest_is_luma():
    rgb, flow, cavity = scene()
    gray = gray_from_rgb(rgb)
    assert (luma(rgb)[flow] >= 30).all()  # what luma alone made of the flow: mid-gray "tissue"
    assert (gray[flow & inside(cavity, 5)] <= 6).all()  # filled from the blood between the colour
    assert gray[flow].mean() < luma(rgb)[flow].mean()  # at the border, partly from the wall
    np.testing.assert_array_equal(gray[~flow], luma(rgb)[~flow])


def test_scattered_colour_is_filled_from_between_and_an_area_of_colour_is_black():
    gray = np.full((40, 40), 100, np.uint8)
    flow = np.zeros((40, 40), bool)
    flow[18:22, 18:22] = True  # a few pixels: the image around them is kept
    np.testing.assert_array_equal(fill_flow(gray.copy(), flow), np.full((40, 40), 100, np.uint8))
    flow[5:35, 5:35] = True  # an area: blood, black inside (its border is filled from the outside)
    filled = fill_flow(gray.copy(), flow)
    assert (filled[10:30, 10:30] == 0).all() and (filled[5, 5:35] > 0).all()


def test_dark_compression_noise_is_not_flow():
    """Chroma of a few levels on near-black pixels (JPEG, H.264) is larger than their luma but
    below FLOW_CHROMA: the dark image stays."""
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0], rgb[..., 2] = 9, 2  # luma 3, chroma ~5
    np.testing.assert_array_equal(gray_from_rgb(rgb), luma(rgb))


def _mp4(frames_rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames_rgb.shape[2], frames_rgb.shape[1], "yuv420p"
        stream.options = {"crf": "12"}
        for f in frames_rgb:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p")))
        out.mux(stream.encode())
    return buf.getvalue()


def test_an_mp4_with_colour_flow_decodes_the_cavity_dark():
    rgb, _, cavity = scene()
    decoded, _ = read_video(_mp4(np.stack([rgb] * 3)))
    assert (luma(rgb)[inside(cavity, 5)] >= 20).mean() > 0.7  # by luma the cavity was mostly mid-gray
    assert decoded[:, inside(cavity, 5)].mean() < 8  # chroma is subsampled 2x2: its edge is mixed
    out = around(cavity, 3)
    assert np.abs(decoded[:, out].astype(int) - luma(rgb)[out]).mean() < 2.0


def test_a_gray_mp4_decodes_as_its_luma_plane_unchanged():
    rgb = np.repeat(scene()[0][..., 1:2], 3, axis=-1)  # gray in three channels: no chroma
    data = _mp4(np.stack([rgb] * 2))
    decoded, _ = read_video(data)
    with av.open(io.BytesIO(data)) as container:
        plain = np.stack([f.to_ndarray(format="gray") for f in container.decode(video=0)])
    np.testing.assert_array_equal(decoded, plain)


@pytest.mark.parametrize("encoding", ["png", "jpeg"])
def test_a_colour_stream_frame_decodes_the_cavity_dark(encoding):
    rgb, _, cavity = scene()
    gray = decode_frame(encode_frame(rgb, encoding), encoding, rgb.shape[1], rgb.shape[0])
    assert Image.open(io.BytesIO(encode_frame(rgb, encoding))).mode == "RGB"
    if encoding == "png":  # lossless: exactly the rule
        np.testing.assert_array_equal(gray, gray_from_rgb(rgb))
    else:  # JPEG's chroma is subsampled and quantised: a few flow pixels keep their luma
        assert gray[inside(cavity, 5)].mean() < 0.3 * luma(rgb)[inside(cavity, 5)].mean()


def test_an_rgb_dicom_decodes_the_cavity_dark():
    from benchmarks.rest import dicom_bytes
    from service.codecs.clip import Limits, decode_clip

    rgb, _, cavity = scene()
    limits = Limits(max_frames=8, max_width=256, max_height=256)
    clip = decode_clip(dicom_bytes(np.stack([rgb] * 2)), "application/dicom", limits)
    np.testing.assert_array_equal(clip.frames, np.stack([gray_from_rgb(rgb)] * 2))
    assert (clip.frames[:, inside(cavity, 5)] <= 6).all()
