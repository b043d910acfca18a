"""The scanner's screen: where the ultrasound sector sits in the frame, and what is drawn around it.

A :class:`Sector` places the beam geometry (transducer at the apex, ``depth_mm`` deep, ``2 *
half_angle`` wide) on a ``height x width`` frame: pixel ``(row, col)`` has its centre at physical
``x = (col - apex_x) * spacing_x``, ``y = (row - apex_y) * spacing_y`` (mm, ``y`` = depth along the
central beam). Scanner frames have square pixels; an EchoNet-style crop (the fan's bounding box
resized to a square) does not.

:func:`draw_furniture` paints what a scanner shows outside the fan: a menu bar, text-like glyph
blocks, a logo, a grey bar, a depth scale with ticks and a focus marker, and an ECG trace swept in
step with the cardiac cycle. It only ever writes outside the fan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

GLYPH_ROWS, GLYPH_COLS = 7, 5
_GLYPHS = np.random.default_rng(1234).random((64, GLYPH_ROWS, GLYPH_COLS)) < 0.45  # a fixed "alphabet"


@dataclass(frozen=True)
class Sector:
    """The fan of a phased-array probe placed on a frame (lengths in mm, angles in radians)."""

    height: int
    width: int
    depth_mm: float
    half_angle: float
    apex_x: float  # transducer position in pixels (column, row); the row may be above the frame
    apex_y: float
    spacing_x: float  # mm per pixel along a row
    spacing_y: float  # mm per pixel down a column
    near_mm: float = 0.0  # the fan starts this deep: the top of a phased array's sector is a short arc

    def physical(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel centres -> physical ``(x, y)`` in mm, probe coordinates."""
        return (cols - self.apex_x) * self.spacing_x, (rows - self.apex_y) * self.spacing_y

    def to_pixels(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Physical ``(x, y)`` in mm -> pixel ``(col, row)``."""
        return np.asarray(x) / self.spacing_x + self.apex_x, np.asarray(y) / self.spacing_y + self.apex_y

    def polar(self) -> tuple[np.ndarray, np.ndarray]:
        """Depth ``r`` (mm) and beam angle ``theta`` (radians, positive to the right) of every pixel."""
        rows, cols = np.mgrid[0 : self.height, 0 : self.width].astype(np.float32)
        x, y = self.physical(rows, cols)
        return np.hypot(x, y), np.arctan2(x, y)

    def fan(self) -> np.ndarray:
        """``(H, W) bool``: pixel centres inside the imaged sector."""
        r, theta = self.polar()
        return (r <= self.depth_mm) & (np.abs(theta) <= self.half_angle) & (r > max(self.near_mm, 0.0))

    def region(self) -> tuple[int, int, int, int]:
        """Bounding box of the fan in pixels, ``(x0, y0, x1, y1)`` inclusive (DICOM RegionLocation)."""
        rows, cols = np.nonzero(self.fan())
        return int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())


def scanner_sector(
    rng: np.random.Generator, height: int, width: int, depth_mm: float, half_angle: float | None = None
) -> Sector:
    """A sector placed as scanners place it: apex near the top, about two thirds of the frame, offset.

    ``half_angle`` (radians) fixes the sector's half width (default: drawn, 30-45 degrees).
    """
    half = math.radians(rng.uniform(30.0, 45.0))  # drawn either way: a given seed places the same
    half = half if half_angle is None else half_angle
    top = height * rng.uniform(0.04, 0.12)  # menu bar / text above the transducer
    bottom = height * rng.uniform(0.08, 0.16)  # ECG strip below the fan
    radius = height - top - bottom  # fan depth in pixels
    radius = min(radius, 0.5 * width * rng.uniform(0.75, 0.95) / math.sin(half))
    radius *= rng.uniform(0.88, 1.0)
    spare = width - 2 * radius * math.sin(half)
    centre = width / 2 + rng.uniform(-0.35, 0.35) * max(spare - 0.1 * width, 0.0)
    spacing = depth_mm / radius
    near = rng.uniform(2.0, 8.0) if rng.random() < 0.6 else 0.0
    return Sector(height, width, depth_mm, half, centre, top - near / spacing, spacing, spacing, near)


def cropped_sector(rng: np.random.Generator, height: int, width: int, depth_mm: float) -> Sector:
    """An EchoNet-style crop: the fan's bounding box resized to the whole frame (pixels not square)."""
    half = math.radians(rng.uniform(36.0, 45.0))
    spacing_y = depth_mm / (height - 0.5)
    spacing_x = 2 * depth_mm * math.sin(half) / (width - 0.5)
    return Sector(height, width, depth_mm, half, (width - 1) / 2, -0.5, spacing_x, spacing_y)


# -- furniture ------------------------------------------------------------------------------------


@dataclass
class Layer:
    """Something drawn on the screen: ``value`` (H, W, 3) float in [0, 1] where ``alpha`` (H, W) is set."""

    value: np.ndarray
    alpha: np.ndarray

    @classmethod
    def empty(cls, height: int, width: int) -> Layer:
        return cls(np.zeros((height, width, 3), np.float32), np.zeros((height, width), bool))

    def put(self, rows: slice, cols: slice, on: np.ndarray, colour) -> None:
        region = self.alpha[rows, cols]
        on = on[: region.shape[0], : region.shape[1]]
        self.alpha[rows, cols] |= on
        self.value[rows, cols][on] = colour


def _colour(rng: np.random.Generator, colourful: bool) -> np.ndarray:
    if not colourful:
        return np.full(3, rng.uniform(0.55, 1.0), np.float32)
    palette = [(1, 1, 1), (0.9, 0.9, 0.6), (0.6, 0.9, 1.0), (1.0, 0.85, 0.3), (0.7, 0.7, 0.7)]
    return np.array(palette[rng.integers(len(palette))], np.float32) * rng.uniform(0.7, 1.0)


def _text(layer: Layer, rng, x: int, y: int, lines: int, chars: int, scale: int, colour) -> None:
    """Rows of pseudo-characters (glyphs of a fixed random alphabet) starting at pixel (x, y)."""
    h, w = GLYPH_ROWS * scale, GLYPH_COLS * scale
    for line in range(lines):
        n = int(rng.integers(max(2, chars // 3), chars + 1))
        for k in range(n):
            if rng.random() < 0.15:
                continue  # a space
            glyph = np.kron(_GLYPHS[rng.integers(len(_GLYPHS))], np.ones((scale, scale), bool))
            r0, c0 = y + line * (h + 2 * scale), x + k * (w + scale)
            if 0 <= r0 < layer.alpha.shape[0] - h and 0 <= c0 < layer.alpha.shape[1] - w:
                layer.put(slice(r0, r0 + h), slice(c0, c0 + w), glyph, colour)


def _depth_scale(layer: Layer, sector: Sector, rng, colour, scale: int) -> None:
    """Ticks every cm (longer every 5 cm) beside the fan's edge at the depth they mark; a focus marker."""
    side = 1 if rng.random() < 0.7 else -1
    edge = sector.half_angle + 0.03
    length = max(2, round(2 * scale))
    for cm in range(1, int(sector.depth_mm // 10) + 1):
        r = 10.0 * cm
        x, y = r * math.sin(side * edge), r * math.cos(edge)
        col, row = sector.to_pixels(x, y)
        tick = length * (2 if cm % 5 == 0 else 1)
        c0 = int(np.rint(col)) if side > 0 else int(np.rint(col)) - tick
        r0 = int(np.rint(row))
        if 0 <= r0 < sector.height and c0 >= 0 and c0 + tick < sector.width:
            layer.put(
                slice(r0, r0 + max(1, scale // 2)), slice(c0, c0 + tick), np.ones((scale, tick), bool), colour
            )
    focus = sector.depth_mm * rng.uniform(0.3, 0.7)
    col, row = sector.to_pixels(side * focus * math.sin(edge) + side * 3 * scale * sector.spacing_x, focus)
    size = 2 * scale + 1
    tri = np.tril(np.ones((size, size), bool))[:, ::-side]
    r0, c0 = int(np.rint(row)) - size // 2, int(np.rint(col))
    if 0 <= r0 < sector.height - size and 0 <= c0 < sector.width - size:
        layer.put(slice(r0, r0 + size), slice(c0, c0 + size), tri, colour)


def _grey_bar(layer: Layer, rng, height: int, width: int) -> None:
    bar_h, bar_w = int(height * rng.uniform(0.15, 0.3)), max(3, width // 80)
    x = int(width * rng.choice([rng.uniform(0.01, 0.05), rng.uniform(0.9, 0.97)]))
    y = int(height * rng.uniform(0.15, 0.4))
    ramp = np.linspace(1.0, 0.05, bar_h, dtype=np.float32)[:, None, None] * np.ones((1, bar_w, 3), np.float32)
    rows, cols = slice(y, y + bar_h), slice(x, x + bar_w)
    region = layer.alpha[rows, cols]
    layer.value[rows, cols] = ramp[: region.shape[0], : region.shape[1]]
    layer.alpha[rows, cols] = True


def static_furniture(rng: np.random.Generator, sector: Sector, colourful: bool) -> Layer:
    """Everything on the screen that does not move: menu bar, text, logo, grey bar, depth scale."""
    h, w = sector.height, sector.width
    layer = Layer.empty(h, w)
    scale = max(1, round(min(h, w) / 240))
    if rng.random() < 0.7:  # menu bar along the top
        bar = max(4, int(sector.apex_y * rng.uniform(0.5, 0.9)))
        shade = np.full(3, rng.uniform(0.1, 0.3), np.float32)
        if colourful and rng.random() < 0.5:
            shade = shade * np.array([0.6, 0.8, 1.3], np.float32)
        layer.value[:bar] = shade
        layer.alpha[:bar] = True
        _text(
            layer,
            rng,
            int(w * 0.02),
            max(1, (bar - GLYPH_ROWS * scale) // 2),
            1,
            12,
            scale,
            _colour(rng, colourful),
        )
        _text(
            layer,
            rng,
            int(w * 0.6),
            max(1, (bar - GLYPH_ROWS * scale) // 2),
            1,
            8,
            scale,
            _colour(rng, colourful),
        )
    for corner in range(int(rng.integers(2, 5))):  # text blocks in the corners
        lines, chars = int(rng.integers(1, 6)), int(rng.integers(4, 12))
        x = int(w * (rng.uniform(0.01, 0.05) if corner % 2 == 0 else rng.uniform(0.75, 0.85)))
        y = int(h * (rng.uniform(0.08, 0.2) if corner < 2 else rng.uniform(0.55, 0.7)))
        _text(layer, rng, x, y, lines, chars, scale, _colour(rng, colourful))
    if rng.random() < 0.7:  # a logo: a filled block with a glyph cut out
        size = int(min(h, w) * rng.uniform(0.06, 0.1))
        x, y = int(w * rng.uniform(0.82, 0.9)), int(h * rng.uniform(0.02, 0.08))
        block = np.ones((size, size), bool)
        inner = np.kron(_GLYPHS[rng.integers(len(_GLYPHS))], np.ones((max(1, size // 9),) * 2, bool))
        block[size // 6 : size // 6 + inner.shape[0], size // 6 : size // 6 + inner.shape[1]] &= ~inner[
            : size - size // 6, : size - size // 6
        ]
        layer.put(slice(y, y + size), slice(x, x + size), block, _colour(rng, colourful))
    if rng.random() < 0.6:
        _grey_bar(layer, rng, h, w)
    _depth_scale(layer, sector, rng, _colour(rng, colourful), scale)
    return layer


def ecg_waveform(t_seconds: np.ndarray, beat_starts_s: np.ndarray, period_s: float) -> np.ndarray:
    """A synthetic ECG (arbitrary units, baseline 0): QRS at each beat start (end-diastole), T, P."""
    out = np.zeros_like(t_seconds)
    for start in beat_starts_s:
        dt = t_seconds - start
        out += 1.0 * np.exp(-0.5 * (dt / 0.012) ** 2)  # R
        out -= 0.25 * np.exp(-0.5 * ((dt - 0.03) / 0.012) ** 2)  # S
        out += 0.3 * np.exp(-0.5 * ((dt - 0.32 * period_s) / 0.045) ** 2)  # T
        out += 0.12 * np.exp(-0.5 * ((dt + 0.16 * period_s) / 0.03) ** 2)  # P of this beat
    return out


class EcgTrace:
    """An ECG strip along the bottom of the screen, swept left to right with the clip's time."""

    def __init__(self, rng, sector: Sector, fan: np.ndarray, colourful: bool, beat_starts_s, period_s, fps):
        h, w = sector.height, sector.width
        below = np.flatnonzero(fan.any(axis=1))
        top = int(below.max()) + 2 if below.size else int(0.85 * h)
        self.rows = (max(top, int(h * 0.82)), h - 1)
        self.cols = (int(w * rng.uniform(0.02, 0.15)), int(w * rng.uniform(0.85, 0.98)))
        self.sweep_s = rng.uniform(2.0, 4.0)
        self.starts, self.period, self.fps = np.asarray(beat_starts_s), period_s, fps
        self.colour = np.array([0.2, 1.0, 0.3], np.float32) if colourful else np.full(3, 0.85, np.float32)
        self.colour *= rng.uniform(0.7, 1.0)
        self.thickness = max(1, round(min(h, w) / 300))

    def draw(self, frame_index: int) -> tuple[np.ndarray, np.ndarray, tuple[slice, slice]]:
        """``-> (alpha (h, w) bool, colour (3,), (rows, cols))`` of the strip at this frame."""
        (r0, r1), (c0, c1) = self.rows, self.cols
        n, strip_h = c1 - c0, r1 - r0
        if n < 4 or strip_h < 6:
            return np.zeros((0, 0), bool), self.colour, (slice(0, 0), slice(0, 0))
        now = frame_index / self.fps
        x = np.arange(n)
        phase = x / n * self.sweep_s  # sweep position of each column
        sweep_start = math.floor(now / self.sweep_s) * self.sweep_s
        t = np.where(phase <= now - sweep_start, sweep_start + phase, sweep_start - self.sweep_s + phase)
        y = ecg_waveform(t, self.starts, self.period)
        rows = (0.7 - 0.55 * y) * strip_h  # baseline at 70 % of the strip, R wave up
        lo = np.minimum(rows, np.roll(rows, 1))
        hi = np.maximum(rows, np.roll(rows, 1))
        lo[0], hi[0] = rows[0], rows[0]
        grid = np.arange(strip_h)[:, None]
        on = (grid >= np.floor(lo) - self.thickness + 1) & (grid <= np.ceil(hi) + self.thickness - 1)
        gap = (phase > now - sweep_start) & (phase < now - sweep_start + 0.08 * self.sweep_s)
        on[:, gap] = False  # the erase bar ahead of the cursor
        return on, self.colour, (slice(r0, r1), slice(c0, c1))


def draw_furniture(frame: np.ndarray, index: int, layer: Layer, keep_out: np.ndarray, ecg: EcgTrace | None):
    """Draw the furniture in place onto one float frame, ``(H, W, 3)`` RGB or ``(H, W)`` grey (the
    luma of its colours), never where ``keep_out`` (the fan, dilated) is set; ``index`` moves the ECG."""
    grey = frame.ndim == 2
    weights = np.array([0.299, 0.587, 0.114], np.float32)
    alpha = layer.alpha & ~keep_out
    frame[alpha] = layer.value[alpha] @ weights if grey else layer.value[alpha]
    if ecg is not None:
        on, colour, (rows, cols) = ecg.draw(index)
        if on.size:
            on = on & ~keep_out[rows, cols]
            frame[rows, cols][on] = colour @ weights if grey else colour
    return frame
