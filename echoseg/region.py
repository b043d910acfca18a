"""The ultrasound image region of a clip: find it, crop the model's input to it, map masks back.

A scanner's frame is not an EchoNet crop: it holds the fan (sector) plus text, an ECG trace,
depth ticks and menus, and is often not square. A :class:`Region` says where the image is: a
box ``[x0, x1) x [y0, y1)`` in source pixels plus, optionally, the fan as a polygon (source
pixels) outside which everything is blanked. Where it came from (``source``):

- ``dicom``: the largest 2-D tissue region of the file's ``SequenceOfUltrasoundRegions``
  (:func:`region_from_dicom`), checked against the pixel matrix and against the clip's content;
- ``detected``: found in the clip itself (:func:`detect_region`);
- ``client``: given by a streaming client in ``start`` (:func:`region_from_json`);
- ``full``: the whole frame, unchanged. Clips whose image already fills the frame (EchoNet's
  112x112 crops, the simple synthetic clips) get this and are preprocessed exactly as before
  this module existed (a plain resize to the model size).

:func:`apply_region` turns source frames into model-size frames (crop, blank outside the fan,
pad to square keeping the aspect ratio, resize) and :func:`map_back` brings the model's
probability maps back to the source frame (the inverse, with zero outside the fan). Both are the
one implementation used by training, evaluation, REST and streaming (through
``echoseg.preprocess``).

Detection is cheap and bounded: it runs once per clip or stream on at most
:data:`DETECT_FRAMES` frames, subsampled to at most :data:`WORK_SIZE` pixels a side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import ConvexHull  # imported here, not on a stream's first frames (~1-2 s)

SOURCES = ("dicom", "detected", "client", "full")
DETECT_FRAMES = 8  # frames detection looks at by default (the first ones of a clip or stream)
MAX_DETECT_FRAMES = 16  # and at most
WORK_SIZE = 256  # detection runs on frames subsampled to at most this many pixels a side
FULL_COVER = 0.9  # a fan whose box covers this much of both sides is taken as the whole frame
MIN_FAN_AREA = 0.05  # a detected fan smaller than this share of the frame is not believed
MIN_SIDE = 8  # pixels: the smallest region side accepted
MAX_FAN_POINTS = 256  # vertices of a fan polygon (client or detected)
VARIANCE_LEVEL = 4.0  # gray levels of temporal std that mark live image (speckle) over static furniture
INTENSITY_LEVEL = 12.0  # gray levels above which a (smoothed) pixel is image rather than background
MIN_DARK_OUTSIDE = 0.6  # share of the pixels around a fan that must be black (a scanner's background)
DICOM_MIN_OVERLAP = 0.8  # share of the detected fan a DICOM region must contain, else it is stale


@dataclass(frozen=True)
class Region:
    """Where the ultrasound image is in a ``height x width`` frame (see the module docstring)."""

    x0: int
    y0: int
    x1: int
    y1: int
    height: int
    width: int
    source: str = "full"
    fan: tuple[tuple[int, int], ...] | None = None  # polygon (x, y) in source pixels; None = whole box
    notes: tuple[str, ...] = field(default=(), compare=False)  # why it was chosen, for the response

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if not (0 <= self.x0 < self.x1 <= self.width and 0 <= self.y0 < self.y1 <= self.height):
            raise ValueError(f"box {self.box} is not inside a {self.width}x{self.height} frame")

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.x0, self.y0, self.x1, self.y1

    @property
    def is_full(self) -> bool:
        """The whole frame, nothing blanked: preprocessing is a plain resize."""
        return self.box == (0, 0, self.width, self.height) and self.fan is None

    @cached_property
    def fan_mask(self) -> np.ndarray | None:
        """``(y1 - y0, x1 - x0)`` bool: inside the fan; None when the whole box is image."""
        if self.fan is None:
            return None
        img = Image.new("1", (self.x1 - self.x0, self.y1 - self.y0), 0)
        ImageDraw.Draw(img).polygon([(x - self.x0, y - self.y0) for x, y in self.fan], fill=1, outline=1)
        return np.asarray(img, dtype=bool)

    def to_dict(self) -> dict:
        """The JSON form of REST responses and stream messages (``fan`` as ``[[x, y], ...]``)."""
        return {
            "x0": self.x0,
            "y0": self.y0,
            "x1": self.x1,
            "y1": self.y1,
            "source": self.source,
            "fan": [list(p) for p in self.fan] if self.fan is not None else None,
        }


def full_region(height: int, width: int, note: str | None = None) -> Region:
    return Region(0, 0, width, height, height, width, "full", None, (note,) if note else ())


# -- detection from the clip -------------------------------------------------------------------------
def detect_region(frames: np.ndarray) -> Region:
    """The fan of ``(n, H, W) uint8`` frames (the first few of a clip, :data:`DETECT_FRAMES` by
    default and at most :data:`MAX_DETECT_FRAMES` are used; one frame works too).

    With several frames, the image is where pixels vary over time (speckle moves; text, menus
    and depth scales are static) and are lit in most frames (a scrolling ECG trace or a cursor
    lights a pixel now and then); a single or static clip falls back to intensity. Thin lines
    left over are removed by an opening, the largest connected component is kept and its convex
    hull is the fan (which fills in the dark blood pools). When nothing sensible is found, the
    fan fills the frame anyway, or what surrounds it is not mostly black (a scanner draws its fan
    on black; a clip that is image all over is already cropped), the region is the full frame.
    """
    if frames.ndim != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must be (n, H, W) with n >= 1, got shape {frames.shape}")
    frames = frames[:MAX_DETECT_FRAMES]
    _, height, width = frames.shape
    step = max(1, math.ceil(max(height, width) / WORK_SIZE))
    small = frames[:, ::step, ::step].astype(np.float32)  # (n, h, w)
    image = ndimage.uniform_filter(small.mean(axis=0), 3) > INTENSITY_LEVEL
    if small.shape[0] > 1:
        live = (small.std(axis=0) > VARIANCE_LEVEL) & ((small > INTENSITY_LEVEL).mean(axis=0) >= 0.5)
        if live.mean() > 0.01:  # a clip that moves: furniture is what does not
            image = live
    square = np.ones((3, 3), bool)
    opened = ndimage.binary_opening(image, square, iterations=2)  # drops thin lines and small text
    labels, count = ndimage.label(ndimage.binary_closing(opened, square, iterations=2))
    if count == 0:
        return full_region(height, width, "no ultrasound image found; the whole frame is used")
    sizes = np.bincount(labels.ravel())[1:]
    component = labels == (int(np.argmax(sizes)) + 1)
    # the opening also shaved the fan's narrow apex and corners: take back what lies next to it
    component |= ndimage.binary_dilation(component, square, iterations=3) & image
    if component.sum() * step * step < MIN_FAN_AREA * height * width:
        return full_region(height, width, "no ultrasound image found; the whole frame is used")
    dark = ndimage.uniform_filter(small.mean(axis=0), 3) <= INTENSITY_LEVEL
    outside = ~ndimage.binary_dilation(component, square, iterations=2)
    if outside.any() and dark[outside].mean() < MIN_DARK_OUTSIDE:
        return full_region(height, width)  # not a fan on a black background: the frame is the image
    polygon = _hull(component, step, height, width)
    xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
    x0, y0, x1, y1 = min(xs), min(ys), max(xs) + 1, max(ys) + 1
    if (x1 - x0) >= FULL_COVER * width and (y1 - y0) >= FULL_COVER * height:
        return full_region(height, width)  # the image fills the frame: an already cropped clip
    if min(x1 - x0, y1 - y0) < MIN_SIDE:
        return full_region(height, width, "no ultrasound image found; the whole frame is used")
    return Region(x0, y0, x1, y1, height, width, "detected", polygon)


def _hull(component: np.ndarray, step: int, height: int, width: int) -> tuple[tuple[int, int], ...]:
    """Convex hull of a work-resolution component, as a polygon in source pixels (cell corners)."""
    edge = component & ~ndimage.binary_erosion(component)
    ys, xs = np.nonzero(edge)
    # each work pixel covers source pixels [i*step, i*step + step - 1]: use its cell's corners
    corners = np.concatenate(
        [np.stack([xs * step + dx, ys * step + dy], axis=1) for dx in (0, step - 1) for dy in (0, step - 1)]
    )
    corners = np.unique(corners, axis=0)
    corners[:, 0] = np.clip(corners[:, 0], 0, width - 1)
    corners[:, 1] = np.clip(corners[:, 1], 0, height - 1)
    try:
        vertices = corners[ConvexHull(corners).vertices]
    except Exception:  # degenerate (a line): its bounding box
        lo, hi = corners.min(axis=0), corners.max(axis=0)
        vertices = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])
    if len(vertices) > MAX_FAN_POINTS:
        vertices = vertices[np.linspace(0, len(vertices) - 1, MAX_FAN_POINTS).astype(int)]
    return tuple((int(x), int(y)) for x, y in vertices)


# -- DICOM -----------------------------------------------------------------------------------------
@dataclass
class DicomRegion:
    """The region a DICOM file declares, once checked against its pixel matrix."""

    region: Region | None  # None: no usable region
    index: int | None  # which item of SequenceOfUltrasoundRegions (its PhysicalDelta gives spacing)
    warnings: list[str]
    refused: list[int] = field(default_factory=list)  # items refused as stale (their spacing is too)


def region_from_dicom(ds, shape: tuple[int, int]) -> DicomRegion:
    """The largest 2-D tissue region (RegionSpatialFormat 1, RegionDataType 1) of ``ds``.

    Each region's box (``RegionLocationMinX0/MinY0/MaxX1/MaxY1``, inclusive) is checked against
    the ``(rows, cols)`` matrix: a region reaching outside it is stale (the file was resampled
    after acquisition) and refused with a warning, as is one whose box is degenerate.
    """
    rows, cols = shape
    items = getattr(ds, "SequenceOfUltrasoundRegions", None) or []
    best: tuple[int, int, Region] | None = None
    warnings: list[str] = []
    refused: list[int] = []
    for i, item in enumerate(items):
        spatial = _int_or_none(getattr(item, "RegionSpatialFormat", None))
        data_type = _int_or_none(getattr(item, "RegionDataType", None))
        if spatial not in (None, 1) or data_type not in (None, 1):
            continue  # M-mode, Doppler, waveforms: not the 2-D image
        names = ("RegionLocationMinX0", "RegionLocationMinY0", "RegionLocationMaxX1", "RegionLocationMaxY1")
        raw = [getattr(item, name, None) for name in names]
        coords = [_int_or_none(v) for v in raw]
        if all(v is None or v == "" for v in raw):
            continue  # a region without a location (e.g. only spacing) says nothing about the box
        if any(c is None for c in coords):
            bad = [n for n, c in zip(names, coords, strict=True) if c is None]
            warnings.append(f"ultrasound region {i} has no valid {', '.join(bad)}; ignored")
            refused.append(i)
            continue
        x0, y0, x1, y1 = coords
        if not (0 <= x0 < x1 < cols and 0 <= y0 < y1 < rows):
            warnings.append(
                f"ultrasound region {i} ({x0},{y0})-({x1},{y1}) lies outside the {cols}x{rows} pixel "
                "matrix (stale coordinates, e.g. a resampled file); ignored"
            )
            refused.append(i)
            continue
        if min(x1 - x0 + 1, y1 - y0 + 1) < MIN_SIDE:
            warnings.append(f"ultrasound region {i} is smaller than {MIN_SIDE} pixels; ignored")
            continue
        region = Region(x0, y0, x1 + 1, y1 + 1, rows, cols, "dicom")
        area = (x1 - x0 + 1) * (y1 - y0 + 1)
        if best is None or area > best[0]:
            best = (area, i, region)
    if best is None:
        return DicomRegion(None, None, warnings, refused)
    return DicomRegion(best[2], best[1], warnings, refused)


def _int_or_none(value) -> int | None:
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return int(x) if math.isfinite(x) and x == int(x) else None


def refine_with_content(declared: Region, frames: np.ndarray) -> tuple[Region | None, Region, list[str]]:
    """Check a declared (DICOM) region against the clip's content and add the fan found inside it.

    Returns ``(declared region with its fan, or None when stale; the detected region; warnings)``.
    The declared box must hold most (:data:`DICOM_MIN_OVERLAP`) of the image found in the
    frames; otherwise its coordinates are stale and the detected region is to be used. A region
    that covers (nearly) the whole frame of a clip whose image fills the frame is the full
    frame, as for a detected one: such a clip passes through unchanged.
    """
    detected = detect_region(frames)
    if detected.is_full:
        w, h = declared.x1 - declared.x0, declared.y1 - declared.y0
        if w >= FULL_COVER * declared.width and h >= FULL_COVER * declared.height:
            return full_region(declared.height, declared.width), detected, []  # an already cropped clip
        return declared, detected, []
    inside = _overlap(detected, declared)
    if inside < DICOM_MIN_OVERLAP:
        return (
            None,
            detected,
            [
                f"the DICOM ultrasound region {declared.box} holds only {100 * inside:.0f}% of the image "
                "found in the frames (stale coordinates); the detected region is used"
            ],
        )
    fan = _clip_polygon(detected.fan, declared.box) if detected.fan else None
    refined = Region(*declared.box, declared.height, declared.width, "dicom", fan if fan else None)
    return refined, detected, []


def _overlap(detected: Region, box_region: Region) -> float:
    """Share of ``detected``'s fan pixels that lie inside ``box_region``'s box."""
    mask = detected.fan_mask
    total = int(mask.sum()) if mask is not None else (detected.x1 - detected.x0) * (detected.y1 - detected.y0)
    if total == 0:
        return 0.0
    x0, y0 = max(detected.x0, box_region.x0), max(detected.y0, box_region.y0)
    x1, y1 = min(detected.x1, box_region.x1), min(detected.y1, box_region.y1)
    if x0 >= x1 or y0 >= y1:
        return 0.0
    if mask is None:
        return (x1 - x0) * (y1 - y0) / total
    sub = mask[y0 - detected.y0 : y1 - detected.y0, x0 - detected.x0 : x1 - detected.x0]
    return float(sub.sum()) / total


def _clip_polygon(polygon, box) -> tuple[tuple[int, int], ...] | None:
    """A convex polygon clipped to a box (Sutherland-Hodgman); None when nothing is left."""
    x0, y0, x1, y1 = box
    pts = [(float(x), float(y)) for x, y in polygon]
    for axis, bound, keep_above in ((0, x0, True), (0, x1 - 1, False), (1, y0, True), (1, y1 - 1, False)):
        out = []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            cur_in = cur[axis] >= bound if keep_above else cur[axis] <= bound
            prev_in = prev[axis] >= bound if keep_above else prev[axis] <= bound
            if cur_in != prev_in:
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
            if cur_in:
                out.append(cur)
        pts = out
        if not pts:
            return None
    return tuple((round(x), round(y)) for x, y in pts) if len(pts) >= 3 else None


# -- a client's region ------------------------------------------------------------------------------
def region_from_json(value, height: int, width: int) -> Region:
    """``{"x0", "y0", "x1", "y1"[, "fan": [[x, y], ...]]}`` -> a ``client`` region; ValueError naming
    the field that is wrong (the stream answers it as ``invalid_start``)."""
    if not isinstance(value, dict):
        raise ValueError("region must be an object {x0, y0, x1, y1[, fan]}")
    coords = []
    for name, limit in (("x0", width), ("y0", height), ("x1", width), ("y1", height)):
        v = value.get(name)
        if not isinstance(v, int) or isinstance(v, bool):
            raise ValueError(f"region.{name} must be an integer, got {v!r}")
        if not 0 <= v <= limit:
            raise ValueError(f"region.{name} = {v} is outside the frame (0..{limit})")
        coords.append(v)
    x0, y0, x1, y1 = coords
    if x1 - x0 < MIN_SIDE or y1 - y0 < MIN_SIDE:
        raise ValueError(
            f"region ({x0},{y0})-({x1},{y1}) must be at least {MIN_SIDE} pixels wide and high "
            "(x0 < x1, y0 < y1)"
        )
    fan = value.get("fan")
    polygon = None
    if fan is not None:
        if not isinstance(fan, list) or not 3 <= len(fan) <= MAX_FAN_POINTS:
            raise ValueError(f"region.fan must be a list of 3 to {MAX_FAN_POINTS} [x, y] points")
        points = []
        for j, p in enumerate(fan):
            ok = (
                isinstance(p, list)
                and len(p) == 2
                and all(isinstance(c, int) and not isinstance(c, bool) for c in p)
            )
            if not ok:
                raise ValueError(f"region.fan[{j}] must be an [x, y] pair of integers, got {p!r}")
            if not (x0 <= p[0] < x1 and y0 <= p[1] < y1):
                raise ValueError(f"region.fan[{j}] = {p} lies outside the region's box")
            points.append((p[0], p[1]))
        polygon = tuple(points)
    return Region(x0, y0, x1, y1, height, width, "client", polygon)


# -- applying a region -------------------------------------------------------------------------------
def square_side(region: Region) -> int:
    """Side of the square the region's box is padded to (its longer side)."""
    return max(region.x1 - region.x0, region.y1 - region.y0)


def _pad_offsets(region: Region) -> tuple[int, int]:
    """(top, left) padding that centres the box in its square."""
    side = square_side(region)
    return (side - (region.y1 - region.y0)) // 2, (side - (region.x1 - region.x0)) // 2


def crop_to_square(frames: np.ndarray, region: Region) -> np.ndarray:
    """``(T, H, W) uint8 -> (T, P, P) uint8``: the box, blanked outside the fan, centred on black."""
    box = frames[:, region.y0 : region.y1, region.x0 : region.x1]
    side = square_side(region)
    top, left = _pad_offsets(region)
    out = np.zeros((frames.shape[0], side, side), dtype=frames.dtype)
    out[:, top : top + box.shape[1], left : left + box.shape[2]] = box
    if region.fan_mask is not None:
        out[:, top : top + box.shape[1], left : left + box.shape[2]] *= region.fan_mask
    return out


def apply_region(frames: np.ndarray, region: Region, size: int) -> np.ndarray:
    """``(T, H, W) uint8`` source frames -> ``(T, size, size) uint8`` model-size frames.

    A full region is a plain (bilinear) resize, exactly the preprocessing of an already cropped
    clip; otherwise crop, blank outside the fan, pad to square (centred) and resize.
    """
    from echoseg.preprocess import resize_frames

    if frames.ndim != 3:
        raise ValueError(f"frames must be (T, H, W), got shape {frames.shape}")
    if frames.shape[1:] != (region.height, region.width):
        raise ValueError(
            f"the region is for {region.width}x{region.height} frames, "
            f"got {frames.shape[2]}x{frames.shape[1]}"
        )
    if region.is_full:
        return resize_frames(frames, size)
    return resize_frames(crop_to_square(frames, region), size)


def map_back(prob: np.ndarray, region: Region) -> np.ndarray:
    """``(T, S, S)`` model-size probabilities -> ``(T, H, W) float32`` on the source frame.

    The inverse of :func:`apply_region`: resize to the padded square, drop the padding, place the
    box in the frame; zero outside the box and outside the fan.
    """
    from echoseg.preprocess import resize_probabilities

    if region.is_full:
        return resize_probabilities(prob, region.height, region.width)
    side = square_side(region)
    top, left = _pad_offsets(region)
    bh, bw = region.y1 - region.y0, region.x1 - region.x0
    square = resize_probabilities(prob, side, side)  # (T, S, S) -> (T, P, P)
    out = np.zeros((prob.shape[0], region.height, region.width), dtype=np.float32)
    box = square[:, top : top + bh, left : left + bw]
    if region.fan_mask is not None:
        box = box * region.fan_mask
    out[:, region.y0 : region.y1, region.x0 : region.x1] = box
    return out


def map_back_masks(prob: np.ndarray, region: Region, threshold: float) -> np.ndarray:
    """``(T, S, S)`` model-size probabilities -> ``(T, H, W) uint8 {0, 1}`` masks on the source frame.

    :func:`map_back` thresholded, made at the mask's own resolution: only the box's part of the
    map is resized (to the box, in 8 bits: :func:`echoseg.preprocess.resized_masks`), never the
    padded square or a float frame.
    """
    from echoseg.preprocess import resized_masks

    if region.is_full:
        return resized_masks(prob, region.height, region.width, threshold)
    size = prob.shape[-1]
    scale = size / square_side(region)  # model pixels per source pixel
    top, left = _pad_offsets(region)
    bh, bw = region.y1 - region.y0, region.x1 - region.x0
    box = (left * scale, top * scale, (left + bw) * scale, (top + bh) * scale)
    inside = resized_masks(prob, bh, bw, threshold, box)  # (T, S, S) -> (T, bh, bw)
    if region.fan_mask is not None:
        inside &= region.fan_mask
    out = np.zeros((prob.shape[0], region.height, region.width), dtype=np.uint8)
    out[:, region.y0 : region.y1, region.x0 : region.x1] = inside
    return out


def input_fan(region: Region, size: int) -> np.ndarray | None:
    """``(size, size)`` bool: where the model's input holds image (None: everywhere)."""
    if region.is_full:
        return None
    ones = np.full((1, region.height, region.width), 255, np.uint8)
    return apply_region(ones, region, size)[0] > 127


def choose_region(frames: np.ndarray, declared: Region | None = None) -> tuple[Region, list[str], bool]:
    """The region a clip is preprocessed with, from its first frames ``(n, H, W)``.

    A declared (DICOM) region is used when the content agrees with it (its fan is found inside
    it); otherwise, or without one, the detected region. Returns ``(region, warnings, stale)``
    where ``stale`` says a declared region was refused.
    """
    if declared is None:
        region = detect_region(frames)
        return region, list(region.notes), False
    refined, detected, warnings = refine_with_content(declared, frames)
    if refined is None:
        return detected, warnings + list(detected.notes), True
    return refined, warnings, False


def mask_to_input(mask: np.ndarray, region: Region, size: int) -> np.ndarray:
    """A traced ``(H, W)`` {0, 1} mask -> ``(size, size)`` {0, 1}, aligned with :func:`apply_region`'s
    frames (crop, blank outside the fan, pad, bilinear resize, threshold at one half)."""
    if mask.shape != (region.height, region.width):
        raise ValueError(f"the region is for {region.width}x{region.height} masks, got {mask.shape[::-1]}")
    square = mask if region.is_full else crop_to_square(mask[None].astype(np.uint8), region)[0]
    if square.shape == (size, size):
        return square.astype(np.uint8)
    up = Image.fromarray(square.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR)
    return (np.asarray(up) > 0.5).astype(np.uint8)
