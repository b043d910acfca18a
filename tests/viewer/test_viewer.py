"""The live viewer in a real headless browser (Debian's chromium via Selenium) against a live
``echoseg serve`` of the bundled model.

A synthetic clip (with per-frame ground truth) is played as WebM through the file path, and as a
Y4M fake camera through the capture path; the checks read the page's own state and its canvas.
Skips with the reason when chromium, chromedriver or selenium is missing
(``deploy/browser-setup.sh`` installs the browser; selenium is a dev dependency).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FPS = 25
FRAMES = 50

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER), reason="needs chromium and chromedriver (deploy/browser-setup.sh)"
    ),
]
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the dev extra)")


# -- data ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A synthetic clip: its frames ``(T, H, W)``, true masks, a WebM file and a Y4M file."""
    from training.data.synthetic import generate

    folder = tmp_path_factory.mktemp("viewer-clip")
    root = generate(folder / "synthetic", videos=1, frames=FRAMES, size=112, seed=3)
    from echoseg.video import read_video

    (video,) = sorted((root / "Videos").glob("*.avi"))
    frames, _ = read_video(video)
    masks = np.load(root / "Masks" / f"{video.stem}.npy").astype(bool)  # (T, H, W)
    return {
        "frames": frames,
        "masks": masks,
        "webm": write_webm(frames, folder / "clip.webm"),
        "y4m": write_y4m(frames, folder / "clip.y4m"),
    }


def write_webm(frames: np.ndarray, path: Path) -> Path:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libvpx", rate=FPS)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "4", "b:v": "2M", "deadline": "good"}
        for f in frames:
            frame = av.VideoFrame.from_ndarray(np.stack([f] * 3, axis=-1), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_y4m(frames: np.ndarray, path: Path) -> Path:
    """A 4:2:0 YUV4MPEG2 file (what chromium's fake capture device plays), gray: U = V = 128."""
    _, h, w = frames.shape
    chroma = np.full(((h + 1) // 2) * ((w + 1) // 2), 128, np.uint8).tobytes()
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            f.write(b"FRAME\n" + frame.tobytes() + chroma + chroma)
    return path


# -- server and browser ----------------------------------------------------------------------------
def serve(env: dict):
    from echoseg.bench import find_benchmarks

    assert find_benchmarks()
    from benchmarks.common import served

    extra = ("--backend", "onnxruntime", "--device", "cpu")
    return served(REPO / "models" / "default", {"ECHOSEG_THREADS": "1", **env}, extra_args=extra)


@pytest.fixture(scope="module")
def server():
    with serve({}) as s:
        yield s.url


@pytest.fixture(scope="module")
def browser(clip):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--window-size=1500,950",
        "--autoplay-policy=no-user-gesture-required",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={clip['y4m']}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def state(driver) -> dict:
    return driver.execute_script(
        "const s = window.echoseg.state; return {phase: s.phase, sent: s.sent, received: s.received,"
        " dropped: s.dropped, points: s.areas.filter((a) => a !== undefined).length, lastIndex: s.lastIndex,"
        " summary: s.summary, error: s.error, closeCode: s.closeCode, latencies: s.latencies.length,"
        " flags: s.flags, confidence: s.confidence};"
    )


def wait_for(driver, predicate, timeout_s: float, what: str) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        current = state(driver)
        if predicate(current):
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; page state: {current}")
        time.sleep(0.2)


def canvas_rgb(driver) -> np.ndarray:
    """The display canvas as ``(H, W, 3)`` uint8."""
    w, h, data = driver.execute_script(
        "const c = document.getElementById('display');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "return [c.width, c.height, Array.from(d)];"
    )
    return np.asarray(data, np.uint8).reshape(h, w, 4)[..., :3]


def coloured(rgb: np.ndarray) -> np.ndarray:
    """Pixels the overlay painted: red fill (gray under half-red) or the yellow contour."""
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    return (r - g > 40) & (r - b > 40)


def open_viewer(driver, url: str) -> None:
    driver.get(f"{url}/viewer/")
    assert driver.title == "EchoSeg live viewer"


def screenshot(driver, name: str, tmp_path: Path) -> Path:
    folder = Path(os.environ.get("ECHOSEG_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    driver.save_screenshot(str(path))
    return path


# -- tests -----------------------------------------------------------------------------------------
def test_a_file_streams_with_a_mask_per_frame(server, browser, clip, tmp_path):
    open_viewer(browser, server)
    browser.find_element("id", "file").send_keys(str(clip["webm"]))
    wait_for(browser, lambda s: s["phase"] == "loaded", 30, "the clip to load")
    assert browser.find_element("id", "start").is_enabled()
    browser.find_element("id", "start").click()
    wait_for(browser, lambda s: s["received"] >= 20 or s["error"], 60, "20 masks")
    screenshot(browser, "viewer-streaming.png", tmp_path)
    final = wait_for(browser, lambda s: s["phase"] in ("done", "error"), 90, "the summary")

    assert final["error"] is None and final["closeCode"] == 1000, final
    # the page sends what the player presents; a loaded headless player may skip a few frames
    assert final["sent"] >= 0.6 * FRAMES, f"the page sent {final['sent']} of the clip's {FRAMES} frames"
    assert final["received"] == final["sent"] and final["dropped"] == 0, final
    assert final["points"] == final["received"]  # the area curve has a point per frame
    assert final["latencies"] == final["received"]
    assert sum(final["flags"].values()) == final["received"], final["flags"]  # mask_format 2, parsed
    assert 0.0 <= final["confidence"]["value"] <= 1.0 and final["confidence"]["flag"] in final["flags"]
    summary = final["summary"]
    assert summary["frames"] == final["received"]
    assert isinstance(summary["ef"], float), summary
    text = browser.find_element("id", "summary").text
    assert "EF" in text and f"{summary['ef']:.1f} %" in text
    assert f"Image region ({summary['region']['source']})" in text
    shown = browser.find_element("id", "flags").text
    flags = final["flags"]
    assert shown == f"ok {flags['ok']} · low {flags['low_confidence']} · no LV {flags['no_lv']}"
    screenshot(browser, "viewer-done.png", tmp_path)

    # the last frame on display: its overlay covers the LV wherever the LV always is, and
    # little of what is never LV (frames may be skipped by the player, so compare with the core)
    painted = coloured(canvas_rgb(browser))
    core = clip["masks"].all(axis=0)
    never = ~clip["masks"].any(axis=0)
    assert painted.shape == core.shape
    assert core.sum() > 50
    assert painted[core].mean() > 0.9, f"only {painted[core].mean():.2f} of the LV core is coloured"
    assert painted[never].mean() < 0.05, f"{painted[never].mean():.2f} of the never-LV pixels is coloured"


def test_a_capture_device_streams_through_the_same_path(server, browser, clip, tmp_path):
    open_viewer(browser, server)
    browser.find_element("id", "camera").click()
    wait_for(browser, lambda s: s["phase"] == "loaded", 30, "the fake camera")
    browser.find_element("id", "start").click()
    wait_for(browser, lambda s: s["received"] >= 30 or s["error"], 60, "30 masks from the camera")
    browser.find_element("id", "stop").click()
    final = wait_for(browser, lambda s: s["phase"] in ("done", "error"), 60, "the summary")
    assert final["error"] is None and final["closeCode"] == 1000, final
    assert final["received"] == final["sent"] >= 30
    assert final["points"] == final["received"]
    assert final["summary"]["frames"] == final["received"]
    assert coloured(canvas_rgb(browser)).sum() > 50  # the LV outlined on the camera's frame


def test_a_missing_key_is_shown_then_the_key_works(browser, clip):
    with serve({"ECHOSEG_API_KEYS": "viewer-key"}) as s:
        open_viewer(browser, s.url)
        browser.find_element("id", "file").send_keys(str(clip["webm"]))
        wait_for(browser, lambda st: st["phase"] == "loaded", 30, "the clip to load")
        browser.find_element("id", "start").click()
        # The server sends its `unauthorized` error, then closes 1008: wait for the close as well.
        refused = wait_for(
            browser, lambda st: st["phase"] == "error" and st["closeCode"] is not None, 30, "the refusal"
        )
        assert refused["closeCode"] == 1008 and refused["sent"] == 0
        error = browser.find_element("id", "error")
        assert error.is_displayed() and "1008" in error.text and "API key" in error.text

        browser.find_element("id", "key").send_keys("viewer-key")
        browser.find_element("id", "start").click()
        final = wait_for(browser, lambda st: st["phase"] in ("done", "error"), 90, "the keyed stream")
        assert final["error"] is None and final["closeCode"] == 1000, final
        assert final["received"] == final["sent"] > 0
        assert not browser.find_element("id", "error").is_displayed()


def test_the_viewer_is_static_needs_no_key_and_loads_nothing_from_elsewhere(server):
    import httpx

    page = httpx.get(f"{server}/viewer/", timeout=10)
    assert page.status_code == 200 and "EchoSeg live viewer" in page.text
    for asset in ("viewer.js", "viewer.css"):
        response = httpx.get(f"{server}/viewer/{asset}", timeout=10)
        assert response.status_code == 200
        assert "http://" not in response.text and "https://" not in response.text, asset
    assert "http://" not in page.text and "https://" not in page.text  # no CDN: works offline
