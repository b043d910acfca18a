"""A scanner zoo: the A4C simulator's clips shown the many ways real scanners and files show them.

Real scanners differ from one simulator in gain, near-field darkness, TGC, probe geometry (phased
and curvilinear sectors, linear rectangles and trapezoids), sector angle, depth, zoom, palette,
colour-Doppler boxes and screen layout (dual panels, a screen inside a larger screen capture), and
files get resampled with their ultrasound region left at the old coordinates. :data:`LAYOUTS` is a
table of named layouts (data, one row each); :func:`render_zoo_clip` renders one with a seed and
returns the frames with their ground truth: the true fan (the live image area) and the per-frame
LV masks, both at the screen's pixels.

Each layout starts from :func:`training.data.a4c.render_a4c_clip` (through its ``sector`` and
``acoustics`` hooks) and then changes the picture in three steps, each a pure function of the
layout's fields: the image (near-field darkness and a TGC slope along the depth, a palette, a
colour-Doppler box), the screen (zoom window, dual panel, screen capture) and the file (resampling).

Seeds: clip ``seed`` of a layout depends on the layout's name and ``seed`` only. Seeds from
:data:`HELD_OUT_SEEDS` upwards are reserved for evaluation (``benchmarks/zoo.py``); training
draws from below.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.ndimage import binary_dilation, gaussian_filter

from echoseg.cardiac import ejection_fraction
from echoseg.gray import gray_from_rgb
from training.data.a4c import A4CClip, clip_sidecar, dataset_folders, render_a4c_clip, run_tasks, write_clip
from training.data.echonet import rows_outside
from training.data.scanner import EcgTrace, Sector, draw_furniture, scanner_sector, static_furniture
from training.data.synthetic import (
    assign_splits,
    write_tables,
)

logger = logging.getLogger(__name__)

HELD_OUT_SEEDS = 1_000_000_000  # seeds >= this are evaluation clips: never train on them
PROBES = ("phased", "curvilinear", "linear", "trapezoid")
PALETTES = {  # RGB gain of the grey image (scanners' B-mode colour maps)
    "gray": (1.0, 1.0, 1.0),
    "sepia": (1.0, 0.82, 0.6),
    "blue": (0.62, 0.8, 1.0),
}


@dataclass(frozen=True)
class Layout:
    """One way a scanner (and the file it wrote) shows the heart; lengths in mm, angles in degrees."""

    name: str
    about: str
    size: tuple[int, int] = (480, 640)  # (height, width) of the scanner's screen
    probe: str = "phased"  # see PROBES
    sector_deg: tuple[float, float] = (60.0, 90.0)  # full sector angle, drawn in this range
    depth_mm: tuple[float, float] | None = None  # image depth (default: the simulator's, 12-18 cm)
    gain_db: float = 0.0  # added to the simulator's drawn overall gain
    near_dark: float = 0.0  # share of the brightness lost at the skin line ...
    near_dark_mm: float = 25.0  # ... recovering over about this depth
    tgc_db: float = 0.0  # time-gain compensation deep minus shallow (dB), linear in depth
    palette: str = "gray"
    doppler: bool = False  # a colour-Doppler box over the LV
    zoom: float = 1.0  # > 1: the screen shows a window of a sector this many times larger
    panels: int = 1  # 2: a live panel beside a frozen one (the live one is the image)
    capture: bool = False  # the scanner's screen inside a larger screen capture (desktop around it)
    resample: float = 1.0  # the file's pixels resampled by this factor, its region left as it was
    furniture: bool = True


LAYOUTS: tuple[Layout, ...] = (
    Layout("standard", "the simulator's default scanner screen"),
    Layout("dim", "low overall gain (fan mean gray ~10)", gain_db=-22.0),
    Layout("bright", "high overall gain, washed-out blood pools", gain_db=12.0),
    Layout("dark-near-field", "strong near-field darkness: a black apex", near_dark=0.92, near_dark_mm=40.0),
    Layout("tgc-slope", "TGC sloping up with depth: dark top, bright bottom", tgc_db=24.0, gain_db=-4.0),
    Layout("narrow-60", "a 60-degree sector, 20 cm deep", sector_deg=(60.0, 62.0), depth_mm=(190.0, 210.0)),
    Layout("wide-100", "a 100-degree sector, 11 cm deep", sector_deg=(98.0, 100.0), depth_mm=(110.0, 120.0)),
    Layout("curvilinear", "a curvilinear array: the fan's top is a wide arc", probe="curvilinear"),
    Layout("linear", "a linear array: a rectangle", probe="linear"),
    Layout("trapezoid", "a steered linear array: a trapezoid (flat top and bottom)", probe="trapezoid"),
    Layout("zoom", "a zoomed view: a window of a 1.6x sector", zoom=1.6),
    Layout("sepia", "a sepia B-mode palette", palette="sepia"),
    Layout("blue", "a blue B-mode palette, dim", palette="blue", gain_db=-8.0),
    Layout("doppler", "a colour-Doppler box over the LV", doppler=True),
    Layout("dual", "dual panel: live image beside a frozen one", panels=2),
    Layout("capture", "the scanner's screen inside a larger desktop screen capture", capture=True),
    Layout("small-screen", "a 240x320 screen", size=(240, 320)),
    Layout("resampled-stale", "the file resampled x0.5, its DICOM region left at full size", resample=0.5),
)
LAYOUT_NAMES = tuple(layout.name for layout in LAYOUTS)


def layout_by_name(name: str) -> Layout:
    for layout in LAYOUTS:
        if layout.name == name:
            return layout
    raise ValueError(f"unknown zoo layout {name!r}; choose from {', '.join(LAYOUT_NAMES)}")


@dataclass
class ZooClip:
    """A rendered zoo clip and its ground truth, all at the file's pixels.

    ``frames`` (T, H, W) uint8 gray (:func:`echoseg.gray.gray_from_rgb`: luma, colour flow as
    blood, as the service reads a colour file) and ``rgb`` (T, H, W, 3) uint8 (what it holds);
    ``fan`` (H, W) bool: the live image; ``masks`` (T, H, W) uint8: the LV; ``region``: the box a
    DICOM file would declare, ``(x0, y0, x1, y1)`` inclusive — stale (full-size coordinates) for a
    resampled layout; ``spacing_mm`` the (row, column) pixel size at the file's pixels.
    """

    layout: str
    seed: int
    frames: np.ndarray
    rgb: np.ndarray
    fan: np.ndarray
    masks: np.ndarray
    region: tuple[int, int, int, int]
    spacing_mm: tuple[float, float]
    fps: float
    ed: int
    es: int
    edv: float
    esv: float
    tracings: dict[int, np.ndarray]

    @property
    def ef(self) -> float:
        return ejection_fraction(self.edv, self.esv)

    def sidecar(self) -> dict:
        return {"layout": self.layout, "seed": self.seed, **clip_sidecar(self)}


# -- probe geometry ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClippedSector(Sector):
    """A sector cut by a box (pixels, ``[x0, x1] x [y0, y1]`` of pixel centres): linear arrays'
    rectangles and steered arrays' trapezoids."""

    clip: tuple[float, float, float, float] = (-math.inf, -math.inf, math.inf, math.inf)

    def fan(self) -> np.ndarray:
        rows, cols = np.mgrid[0 : self.height, 0 : self.width]
        x0, y0, x1, y1 = self.clip
        return super().fan() & (cols >= x0) & (cols <= x1) & (rows >= y0) & (rows <= y1)


def _sector_maker(layout: Layout, rng: np.random.Generator):
    """``(rng, height, width, depth_mm) -> Sector`` for the layout's probe and angle."""
    half = math.radians(rng.uniform(*layout.sector_deg) / 2)

    def make(sector_rng, height: int, width: int, depth_mm: float) -> Sector:
        if layout.probe == "phased":
            return scanner_sector(sector_rng, height, width, depth_mm, half)
        if layout.probe == "curvilinear":
            base = scanner_sector(sector_rng, height, width, depth_mm, math.radians(32.0))
            near = 0.22 * depth_mm  # the transducer's radius of curvature: a wide arc on top
            return dataclasses.replace(base, near_mm=near, apex_y=base.apex_y - near / base.spacing_y)
        if layout.probe == "trapezoid":  # flat top and bottom
            base = scanner_sector(sector_rng, height, width, depth_mm, half)
            top = base.apex_y + 12.0 / base.spacing_y
            bottom = base.apex_y + depth_mm * math.cos(half) / base.spacing_y
            return ClippedSector(**dataclasses.asdict(base), clip=(-math.inf, top, math.inf, bottom))
        # linear: a rectangle inside a wide sector, from 24 mm down
        wide = math.radians(60.0)
        base = scanner_sector(sector_rng, height, width, depth_mm, wide)
        top_mm = 24.0
        half_w = top_mm * math.tan(wide) * 0.98
        bottom_mm = math.sqrt(depth_mm**2 - half_w**2) - 1.0
        x0, _ = base.to_pixels(-half_w, 0.0)
        x1, _ = base.to_pixels(half_w, 0.0)
        _, y0 = base.to_pixels(0.0, top_mm)
        _, y1 = base.to_pixels(0.0, bottom_mm)
        return ClippedSector(**dataclasses.asdict(base), clip=(float(x0), float(y0), float(x1), float(y1)))

    return make


def _acoustics_hook(layout: Layout):
    """The layout's gain and TGC slope, applied to the simulator's drawn imaging parameters (before
    log compression, as a scanner applies them)."""
    if layout.gain_db == 0.0 and layout.tgc_db == 0.0:
        return None

    def adjust(ac):
        ramp = np.linspace(-layout.tgc_db / 2, layout.tgc_db / 2, ac.tgc.size)
        return dataclasses.replace(ac, gain_db=ac.gain_db + layout.gain_db, tgc=ac.tgc + ramp)

    return adjust


# -- rendering ---------------------------------------------------------------------------------------
def render_zoo_clip(layout: Layout | str, seed: int, frames: int = 16) -> ZooClip:
    """Render clip ``seed`` of ``layout`` (a :class:`Layout` or its name), ``frames`` long."""
    layout = layout_by_name(layout) if isinstance(layout, str) else layout
    if layout.probe not in PROBES:
        raise ValueError(f"probe must be one of {PROBES}, got {layout.probe!r}")
    if layout.palette not in PALETTES:
        raise ValueError(f"palette must be one of {tuple(PALETTES)}, got {layout.palette!r}")
    rng = np.random.default_rng([zlib.crc32(layout.name.encode()), seed])
    height, width = layout.size
    if layout.panels == 2:
        width = width // 2 - 8
    bare = layout.zoom > 1 or layout.panels > 1  # furniture is drawn around the composed screen
    inner = (round(height * layout.zoom), round(width * layout.zoom)) if layout.zoom > 1 else (height, width)
    clip = render_a4c_clip(
        rng,
        frames=frames,
        height=inner[0],
        width=inner[1],
        furniture=layout.furniture and not bare,
        color=True,
        cropped=False,
        sector=_sector_maker(layout, rng),
        acoustics=_acoustics_hook(layout),
        depth_mm=None if layout.depth_mm is None else float(rng.uniform(*layout.depth_mm)),
    )
    rgb = clip.frames.astype(np.float32) / 255.0  # (T, H, W, 3)
    fan, masks = clip.fan, clip.masks
    rgb = _image_steps(layout, rng, clip, rgb)
    shift, scale = (0.0, 0.0), 1.0  # source pixel (x, y) -> x * scale + shift
    if layout.zoom > 1:
        rgb, fan, masks, shift = _zoom_window(rgb, fan, masks, (height, width))
    if layout.panels == 2:
        rgb, fan, masks, shift = _dual(rgb, fan, masks, layout.size, shift)
    if bare and layout.furniture:
        _screen_furniture(rng, rgb, fan, clip)
    region = _box(fan)
    if layout.capture:
        rgb, fan, masks, offset = _capture(rng, rgb, fan, masks)
        shift = (shift[0] + offset[0], shift[1] + offset[1])
        region = _box(fan)
    spacing = clip.spacing_mm
    if layout.resample != 1.0:
        rgb, fan, masks = _resample(rgb, fan, masks, layout.resample)
        scale = layout.resample
        shift = (shift[0] * scale, shift[1] * scale)
        spacing = (spacing[0] / scale, spacing[1] / scale)  # the region keeps its old box and spacing
    out = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
    tracings = {t: _move(tr, shift, scale) for t, tr in clip.tracings.items()}
    return ZooClip(
        layout=layout.name,
        seed=seed,
        frames=gray_from_rgb(out),  # what every decoder of the service makes of the colour screen
        rgb=out,
        fan=fan,
        masks=masks,
        region=region,
        spacing_mm=spacing,
        fps=clip.fps,
        ed=clip.ed,
        es=clip.es,
        edv=clip.edv,
        esv=clip.esv,
        tracings=tracings,
    )


def _image_steps(layout: Layout, rng, clip: A4CClip, rgb: np.ndarray) -> np.ndarray:
    """Near-field darkness, palette and a colour-Doppler box, inside the fan only."""
    fan = clip.fan
    rows, cols = np.nonzero(fan)
    x = (cols - clip.apex_px[0]) * clip.spacing_mm[1]
    y = (rows - clip.apex_px[1]) * clip.spacing_mm[0]
    r = np.hypot(x, y)
    gain = np.ones_like(r, dtype=np.float32)
    if layout.near_dark:
        gain *= 1 - layout.near_dark * np.exp(-(r - r.min()) / layout.near_dark_mm)
    pixels = rgb[:, rows, cols]  # (T, N, 3)
    grey = pixels.mean(axis=-1, keepdims=True) * gain[None, :, None]
    if layout.palette != "gray":
        pixels = np.clip(grey * np.array(PALETTES[layout.palette], np.float32), 0, 1)
    elif layout.near_dark:
        pixels = np.clip(pixels * gain[None, :, None], 0, 1)
    rgb[:, rows, cols] = pixels
    if layout.doppler:
        _doppler_box(rng, rgb, fan, clip.masks)
    return rgb


def _doppler_box(rng, rgb: np.ndarray, fan: np.ndarray, masks: np.ndarray) -> None:
    """A colour box (ROI outline) over the LV whose dark blood is painted red and blue, changing
    with time (inflow red, outflow blue), in place."""
    ys, xs = np.nonzero(masks.max(axis=0))
    cy, cx = ys.mean(), xs.mean()
    hh, hw = 0.7 * (ys.max() - ys.min()), 0.8 * (xs.max() - xs.min())
    y0, y1 = int(max(cy - hh, 0)), int(min(cy + hh, fan.shape[0] - 1))
    x0, x1 = int(max(cx - hw, 0)), int(min(cx + hw, fan.shape[1] - 1))
    box = np.zeros_like(fan)
    box[y0 : y1 + 1, x0 : x1 + 1] = True
    box &= fan
    outline = box & ~binary_dilation(~box, iterations=1) ^ box
    frames = rgb.shape[0]
    flow = gaussian_filter(rng.standard_normal((frames, *fan.shape)).astype(np.float32), (1.5, 6, 6))
    flow /= flow.std() + 1e-6
    red, blue = np.array([1.0, 0.15, 0.05], np.float32), np.array([0.1, 0.35, 1.0], np.float32)
    for t in range(frames):
        grey = rgb[t].mean(axis=-1)
        blood = box & (grey < 0.25)
        speed = np.clip(np.abs(flow[t]) * 0.6, 0, 1)
        colour = np.where((flow[t] > 0)[..., None], red, blue) * (0.35 + 0.65 * speed)[..., None]
        on = blood & (np.abs(flow[t]) > 0.35)
        rgb[t][on] = colour[on]
        rgb[t][outline] = 0.75


def _zoom_window(rgb, fan, masks, size):
    """A ``size`` window of the larger sector, centred on the LV, placed on a black screen."""
    height, width = size
    wh, ww = int(0.82 * height), int(0.82 * width)
    ys, xs = np.nonzero(masks.max(axis=0))
    cy = int(np.clip(ys.mean() - 0.1 * wh, wh // 2, fan.shape[0] - wh + wh // 2))
    cx = int(np.clip(xs.mean(), ww // 2, fan.shape[1] - ww + ww // 2))
    r0, c0 = cy - wh // 2, cx - ww // 2
    top, left = (height - wh) // 2, (width - ww) // 2
    screen = np.zeros((rgb.shape[0], height, width, 3), np.float32)
    screen[:, top : top + wh, left : left + ww] = rgb[:, r0 : r0 + wh, c0 : c0 + ww]
    new_fan = np.zeros((height, width), bool)
    new_fan[top : top + wh, left : left + ww] = fan[r0 : r0 + wh, c0 : c0 + ww]
    new_masks = np.zeros((masks.shape[0], height, width), np.uint8)
    new_masks[:, top : top + wh, left : left + ww] = masks[:, r0 : r0 + wh, c0 : c0 + ww]
    screen[:, ~new_fan] = 0.0
    return screen, new_fan, new_masks, (float(left - c0), float(top - r0))


def _dual(rgb, fan, masks, size, shift):
    """The live panel on the left, the same view frozen at its first frame on the right."""
    height, width = size
    frames, ph, pw = rgb.shape[:3]
    screen = np.zeros((frames, height, width, 3), np.float32)
    left = 4
    right = width - pw - 4
    screen[:, :ph, left : left + pw] = rgb
    screen[:, :ph, right : right + pw] = rgb[:1]
    new_fan = np.zeros((height, width), bool)
    new_fan[:ph, left : left + pw] = fan
    new_masks = np.zeros((frames, height, width), np.uint8)
    new_masks[:, :ph, left : left + pw] = masks
    return screen, new_fan, new_masks, (shift[0] + left, shift[1])


def _screen_furniture(rng, rgb, fan, clip: A4CClip) -> None:
    """The scanner's furniture around a composed screen (zoom, dual): menu bar, text, ECG."""
    frames, height, width = rgb.shape[:3]
    rows = np.flatnonzero(fan.any(axis=1))
    cols = np.flatnonzero(fan.any(axis=0))
    top = max(int(rows.min()), 8)
    depth = 150.0
    spacing = depth / max(int(rows.max()) - top, 1)
    sector = Sector(
        height, width, depth, math.radians(40.0), float(cols.mean()), float(top), spacing, spacing
    )
    layer = static_furniture(rng, sector, True)
    period = 1.0
    ecg = EcgTrace(rng, sector, fan, True, np.array([0.0, period]), period, clip.fps)
    keep_out = binary_dilation(fan | (rgb[0].max(axis=-1) > 0), iterations=2)  # a frozen panel too
    for t in range(frames):
        draw_furniture(rgb[t], t, layer, keep_out, ecg)


def _capture(rng, rgb, fan, masks):
    """The scanner's screen inside a desktop screen capture: light background, a title bar, a
    taskbar and a side window; returns the offset (x, y) of the screen."""
    frames, height, width = rgb.shape[:3]
    big_h, big_w = round(height * 1.3), round(width * 1.45)
    top, left = int(0.08 * big_h), int(rng.uniform(0.05, 0.28) * big_w)
    desk = np.empty((big_h, big_w, 3), np.float32)
    desk[:] = np.array([0.82, 0.84, 0.88], np.float32)
    desk[top - int(0.04 * big_h) : top] = np.array([0.25, 0.35, 0.55], np.float32)  # title bar
    desk[-int(0.05 * big_h) :] = np.array([0.15, 0.15, 0.18], np.float32)  # taskbar
    side = (
        slice(int(0.2 * big_h), int(0.7 * big_h)),
        slice(int(0.01 * big_w), max(left - 8, int(0.02 * big_w))),
    )
    desk[side] = 1.0
    text = rng.random((big_h, big_w)) < 0.25
    lines = (np.arange(big_h) % 12) < 7
    desk[side][(text & lines[:, None])[side]] = 0.1
    out = np.broadcast_to(desk, (frames, big_h, big_w, 3)).copy()
    out[:, top : top + height, left : left + width] = rgb
    new_fan = np.zeros((big_h, big_w), bool)
    new_fan[top : top + height, left : left + width] = fan
    new_masks = np.zeros((frames, big_h, big_w), np.uint8)
    new_masks[:, top : top + height, left : left + width] = masks
    return out, new_fan, new_masks, (float(left), float(top))


def _resample(rgb, fan, masks, factor: float):
    """Resample the file's pixels by ``factor`` (area averaging for the image, centre sampling for
    the truth)."""
    height, width = rgb.shape[1:3]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    as_bytes = np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)
    out = np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BOX)) for f in as_bytes])
    out = out.astype(np.float32) / 255.0
    small = lambda m: np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize(size, Image.BILINEAR)) > 127  # noqa: E731
    new_fan = small(fan)
    new_masks = np.stack([small(m) for m in masks]).astype(np.uint8)
    return out, new_fan, new_masks


def _box(fan: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(fan)
    return int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())


def _move(tracing: np.ndarray, shift, scale: float) -> np.ndarray:
    """Tracing points ``(n, 4)`` X1, Y1, X2, Y2 in the rendered clip's pixels -> the file's pixels."""
    out = np.array(tracing, dtype=np.float64)
    out[:, 0::2] = out[:, 0::2] * scale + shift[0]
    out[:, 1::2] = out[:, 1::2] * scale + shift[1]
    return out


# -- the dataset -------------------------------------------------------------------------------------
def generate_zoo(
    out_dir,
    videos: int,
    frames: int = 32,
    layouts=LAYOUT_NAMES,
    seed: int = 0,
    workers: int = 1,
    append: bool = False,
):
    """Write ``videos`` zoo clips (layouts in turn) in the EchoNet-Dynamic layout under ``out_dir``,
    like :func:`training.data.a4c.generate_a4c` (``Masks/``, ``Meta/`` beside ``Videos/``).

    Clip ``i`` is layout ``layouts[i % len(layouts)]`` with seed ``seed * 100_000 + i``, which must
    stay below :data:`HELD_OUT_SEEDS` (the evaluation clips). ``append`` adds the clips to a dataset
    folder's tables (e.g. an A4C training set's) instead of replacing them."""
    if videos < 1:
        raise ValueError(f"videos must be at least 1, got {videos}")
    if not 0 <= seed * 100_000 + videos < HELD_OUT_SEEDS:
        raise ValueError(f"seed must be 0..{HELD_OUT_SEEDS // 100_000 - 1} (higher seeds are held out)")
    names = [layout_by_name(n).name for n in layouts]
    out = dataset_folders(out_dir)
    splits = assign_splits(videos, np.random.default_rng([seed, 2**31]))
    tasks = [(out, names[i % len(names)], seed * 100_000 + i, frames, splits[i]) for i in range(videos)]
    results = run_tasks(_zoo_task, tasks, workers)
    # A probe whose skin line is the screen's top edge (curvilinear) can put the LV's apex a few
    # pixels above the frame: such a clip's tracings leave the frame, the EchoNet layout's checks
    # (and `echoseg data prepare`) would refuse it, and it is not written (2 of 216 at seed 1).
    cut = [row[0] for row, tracings in results if tracings is None]
    if cut:
        logger.info("%d zoo clips left out: their LV leaves the frame (%s)", len(cut), ", ".join(cut))
    results = [(row, tracings) for row, tracings in results if tracings is not None]
    rows = [row for row, _ in results]
    write_tables(out, rows, [r for _, tracings in results for r in tracings], append)
    logger.info("wrote %d zoo clips (%d frames, layouts %s) to %s", len(rows), frames, names, out)
    return out


def _zoo_task(args):
    out, name, seed, frames, split = args
    clip = render_zoo_clip(name, seed, frames=frames)
    file = f"0XZOO{zlib.crc32(name.encode()) & 0xFFFF:04X}{seed:08X}"
    h, w = clip.frames.shape[1:3]
    if any(rows_outside(np.asarray(t, np.float64), h, w).any() for t in clip.tracings.values()):
        return [file], None
    return write_clip(out, file, clip.frames, clip, frames, split)
