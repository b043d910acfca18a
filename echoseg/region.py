"""The ultrasound image region of a clip: find it, crop the model's input to it, map masks back.

A scanner's frame is not an EchoNet crop: it holds the fan (sector) plus text, an ECG trace,
depth ticks and menus, and is often not square. A :class:`Region` says where the image is: a
box ``[x0, x1) x [y0, y1)`` in source pixels plus, optionally, the fan as a polygon (source
pixels) outside which everything is blanked. Where it came from (``source``):

- ``dicom``: the largest 2-D tissue region of the file's ``SequenceOfUltrasoundRegions``
  (:func:`region_from_dicom`), checked against the pixel matrix and against the clip's content;
- ``dicom_rescaled``: a DICOM region whose box lies outside the pixel matrix (the file was
  resampled after acquisition and kept the old coordinates), brought back by one factor for both
  axes (:func:`rescale_stale`) and then checked against the content like a declared region;
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

Where these candidates disagree, :mod:`echoseg.arbitration` lets the model judge between them
on the first window (:func:`region_candidates` lists them, the rule's choice first).

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

from echoseg.resize import resize_frames, resize_probabilities, resized_masks

SOURCES = ("dicom", "dicom_rescaled", "detected", "client", "full")
DETECT_FRAMES = 8  # frames detection looks at by default (the first ones of a clip or stream)
MAX_DETECT_FRAMES = 16  # and at most
WORK_SIZE = 256  # detection runs on frames subsampled to at most this many pixels a side
FULL_COVER = 0.9  # a fan whose box covers this much of both sides is taken as the whole frame
MIN_FAN_AREA = 0.05  # a detected fan smaller than this share of the frame is not believed
MIN_SIDE = 8  # pixels: the smallest region side accepted
MAX_FAN_POINTS = 256  # vertices of a fan polygon (client or detected)
# Live image versus furniture, relative to each clip's own levels (detect_region, _live_area):
LIVE_WINDOW = 5  # work pixels: the window the cue (frame-to-frame change, or texture) is smoothed over
BACKGROUND_PERCENTILE = 10.0  # the frame's background level of the cue (a screen is mostly furniture)
IMAGE_PERCENTILE = 97.0  # and its image level
LIVE_LEVEL = 0.12  # live: this far from the background level to the image level
FAINT_LEVEL = 0.04  # and, next to live image, this far
MIN_LIT_FRAMES = 4  # with this many frames, pixels bright now and then but mostly off are not image
FLASH_PERCENTILE = 99.5  # a flash is brighter than half this level of the first frame (a bright trace)
FLASH_SHARE = 0.02  # mostly off: the median over the frames this near the background level
MIN_CONTRAST = 0.25  # gray levels between the two below which nothing is live (a black or still frame)
STILL_SHARE = 0.05  # a background moving this share of the image level is no furniture: all is image
# The fan's geometry (_fit_geometry):
FIT_OPENING = 3  # the geometry is fitted to the live area opened this much: lines touching it (an ECG) go
MIN_SPREAD = 0.05  # edge slopes (dx/dy) closer than this are parallel: a linear array
LINEAR_SLOPE = 0.2  # edges steeper than this (|dx/dy|, about 11 degrees) both ways: a linear array
DIM_SHARE = 0.34  # a clip whose live area's hull is this much black in every frame is dim
MIN_DIM_CONTAINED = 0.85  # a dim clip's sector is used when it holds this share of the live area
DIM_FAR_PERCENTILE = 99.5  # a dim clip's far arc: this percentile of the live area's depth
PATCH_SHARE = 0.15  # a very dim clip's live pieces this share of the largest or more are its image
DIM_SIDE_PERCENTILE = 25.0  # a dim clip's sector edges: through this outer percentile of the row ends
SIDE_PERCENTILE = 10.0  # a linear array's side: this outer percentile of the live area's row ends
VERTICAL_SIDE = 0.2  # share of the rows ending in one column that make it a vertical side
MAX_ASYMMETRY = 0.02  # edge slopes whose sum exceeds this share of their spread lean: one is shadowed
FLAT_PREFERENCE = 2.0  # a sector's edge is flat only where a line fits its extremes this much better
EDGE_BINS = 48  # beams the far and near edges are sampled on
NEAR_POINT = 0.2  # a live area starting nearer than this share of its depth starts at the transducer
GAP_LEVELS = 1.5  # gray levels above the background that make a gap above the image a dark near field
GAP_SHARE = 0.04  # or this share of the image's level above the background, whichever is more
EDGE_REACH = 6.0  # work pixels: how far each side of a fitted edge its half level is looked for
ARC_POINTS = 24  # vertices of each arc of a fitted fan
MIN_FIT_QUALITY = 0.75  # below this fit quality (IoU with the live area) the geometry is not used
MIN_SHADOWED_FIT = 0.5  # or above this quality when it holds 85 % of the live area
POOR_FIT = 0.8  # below this quality of the fan used, the region's notes say it may be wrong
DICOM_MIN_OVERLAP = 0.8  # share of the detected fan a DICOM region must contain, else it is stale
# Factors a stale DICOM box may be brought back by: the simple fractions of resampled files
# (x1/2, x2/3, x3/4, ...), largest first. One factor serves both axes (a resample keeps the aspect).
RESCALE_FACTORS = tuple(sorted({p / q for q in range(2, 6) for p in range(1, q)}, reverse=True))
SAME_REGION_IOU = 0.9  # two candidate regions whose boxes and kept pixels overlap this much are one


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
    fit_quality: float | None = field(default=None, compare=False)  # detected: IoU of the fitted fan

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
    default and at most :data:`MAX_DETECT_FRAMES` are used; two frames, a stream's first window,
    or one frame work too).

    Live image is told from furniture by the clip's own statistics, never by absolute gray levels
    (:func:`_live_area`): with several frames by how much a pixel changes from frame to frame
    (speckle moves; text, menus, a frozen panel or the desktop around a screen capture do not),
    with one frame (or a still clip) by its local texture (speckle is grainy, backgrounds are
    flat), each thresholded between the frame's own background and image levels. The largest live
    area is then fitted with the geometry scanners draw (:func:`_fit_geometry`): two straight
    edges meeting at the transducer (or parallel: a linear array), a far arc or flat bottom, and a
    near point, arc or flat top, so that a dark near field, a dark cavity at the apex or bright
    deep structures give the same fan. The fit's agreement with the live area is the region's
    ``fit_quality``; where the geometry does not fit (e.g. a zoomed window), the live area's
    convex hull is the fan, and a poor fit is said in the region's notes. A dim clip (much of the
    live area's hull black in every frame, :func:`_dark_share`) is lit only near the transducer
    and along the heart's walls: its fan is the sector from the live area's tip through the outer
    row ends (:func:`_dim_sector`), used when it holds the live area, whatever its (low) quality.
    When nothing is found, or the fan fills the frame (an already cropped clip), the region is the
    full frame.
    """
    if frames.ndim != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must be (n, H, W) with n >= 1, got shape {frames.shape}")
    frames = frames[:MAX_DETECT_FRAMES]
    _, height, width = frames.shape
    step = max(1, math.ceil(max(height, width) / WORK_SIZE))
    small = frames[:, ::step, ::step].astype(np.float32)  # (n, h, w)
    nothing = "no ultrasound image found; the whole frame is used"
    cue, live = _live_area(small)
    if live is not None and live.all():
        return full_region(height, width)  # the image fills the frame: an already cropped clip
    pieces = _live_pieces(live) if live is not None else None
    if pieces is None:
        return full_region(height, width, nothing)
    area = _largest_area(pieces, live)
    if area.sum() * step * step < MIN_FAN_AREA * height * width:  # a very dim clip: lit in pieces?
        area = _patchy_dim_area(small, pieces, live, MIN_FAN_AREA * height * width / (step * step))
        if area is None:
            return full_region(height, width, nothing)
    core = _open(area, 2 * FIT_OPENING + 1)
    fitted = _fit_geometry(core if core.any() else area, cue, small.mean(axis=0))
    fitted_dim = False
    if _dark_share(small, area) >= DIM_SHARE:  # a dim clip: the fan from its bright near field
        dim = _dim_sector(area, cue)
        if dim is not None and dim[2] >= MIN_DIM_CONTAINED:  # it holds the live area: used
            fitted = dim
            fitted_dim = True
    area = _fill_holes(area)
    # the fit is used when it agrees with the live area, or holds all of it (a shadowed side
    # leaves part of a fan dark, which the symmetric edges restore)
    if fitted is not None and (
        fitted_dim or fitted[1] >= MIN_FIT_QUALITY or (fitted[1] >= MIN_SHADOWED_FIT and fitted[2] >= 0.85)
    ):
        outline, quality, _ = fitted
    else:  # not a fan scanners draw: the live area's hull, its quality how much of the hull is live
        outline = _hull(area)
        quality = float(area.sum() / max(_raster(outline, area.shape).sum(), 1))
    # a zoomed window cuts the sector at its sides (a dim clip's ragged row ends say nothing of it)
    x_lo, x_hi = (-math.inf, math.inf) if fitted_dim else _straight_sides(area)
    box = (max(0, (x_lo - 1) * step), 0, min(width, (x_hi + 2) * step), height)
    polygon = _clip_polygon(outline * step, box)
    if polygon is None:
        return full_region(height, width, nothing)
    xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
    x0, y0, x1, y1 = min(xs), min(ys), max(xs) + 1, max(ys) + 1
    if (x1 - x0) >= FULL_COVER * width and (y1 - y0) >= FULL_COVER * height:
        return full_region(height, width)  # the image fills the frame: an already cropped clip
    if min(x1 - x0, y1 - y0) < MIN_SIDE:
        return full_region(height, width, nothing)
    notes: tuple[str, ...] = ()
    if quality < POOR_FIT:
        notes = (
            f"the detected ultrasound image fits a scanner's fan poorly (fit quality {quality:.2f}); "
            "the region may be wrong",
        )
    return Region(x0, y0, x1, y1, height, width, "detected", polygon, notes, round(quality, 3))


def _live_area(small: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``(n, h, w)`` float frames -> ``(cue, live)``, both ``(h, w)``: the cue, and where the image
    is live (None: nowhere).

    The cue is the mean absolute change between consecutive frames (frames that move), else the
    local standard deviation of the mean frame (texture). It is smoothed over a small window and
    thresholded :data:`LIVE_LEVEL` of the way from the frame's background level (a low
    percentile: a scanner's screen is mostly furniture on black) to its image level (a high
    percentile), so that a dim or bright gain, a TGC slope or a palette moves both together.
    """
    cue, faint = None, FAINT_LEVEL
    if small.shape[0] > 1:
        # the mean change (a dim clip's speckle is mostly black, so a median would miss it; a
        # scrolling ECG trace or cursor is dropped below as flashing)
        motion = ndimage.uniform_filter(np.abs(np.diff(small, axis=0)).mean(axis=0), LIVE_WINDOW)
        if np.percentile(motion, IMAGE_PERCENTILE) > MIN_CONTRAST:
            cue = motion
    if cue is None:  # one frame, or frames that do not move: fine texture (speckle is grainy; a
        # step edge gives a thin line that the opening removes, flat furniture nothing)
        faint = LIVE_LEVEL
        mean = small.mean(axis=0)
        grain = np.abs(mean - ndimage.uniform_filter(mean, 3))
        cue = ndimage.median_filter(grain, 3)  # thin lines stay thin, speckle stays dense
    low, high = np.percentile(cue, (BACKGROUND_PERCENTILE, IMAGE_PERCENTILE))
    if high - low < MIN_CONTRAST:
        return cue, None  # flat: all black, or one uniform level
    if faint == FAINT_LEVEL and low >= STILL_SHARE * high:
        # frames that move everywhere, their quietest tenth included: no static furniture or black
        # around an image (a scanner's screen always has some), so the image fills the frame
        return cue, np.ones(cue.shape, bool)
    candidate = cue > low + faint * (high - low)
    if small.shape[0] >= MIN_LIT_FRAMES:  # a sweeping trace or cursor: bright now and then, else off
        dark, bright = np.percentile(small[0], (BACKGROUND_PERCENTILE, FLASH_PERCENTILE))
        median, peak = _median(small), small.max(axis=0)
        flashing = (median <= dark + FLASH_SHARE * (bright - dark)) & (peak > dark + 0.5 * (bright - dark))
        candidate &= ~ndimage.binary_dilation(flashing)
    # hysteresis: what is live beyond doubt, grown through what is faintly live next to it
    # (a shadowed edge, a dim far field)
    labels, _ = ndimage.label(candidate)
    sure = np.unique(labels[cue > low + LIVE_LEVEL * (high - low)])
    return cue, np.isin(labels, sure[sure > 0])


def _dilate(mask: np.ndarray, size: int) -> np.ndarray:
    """Dilation by a ``size`` x ``size`` square (separable, so cheap at any size)."""
    return ndimage.maximum_filter(mask, size)


def _erode(mask: np.ndarray, size: int) -> np.ndarray:
    return ndimage.minimum_filter(mask, size, mode="constant", cval=0)


def _open(mask: np.ndarray, size: int) -> np.ndarray:
    """Opening by a square: drops what is thinner than ``size``."""
    return _dilate(_erode(mask, size), size)


def _median(stack: np.ndarray) -> np.ndarray:
    """``(n, h, w) -> (h, w)``: the (upper) median over the first axis, sorted pixel by pixel."""
    n = stack.shape[0]
    flat = np.sort(stack.reshape(n, -1).T, axis=1)  # (h*w, n), contiguous rows
    return flat[:, n // 2].reshape(stack.shape[1:])


def _fill_holes(area: np.ndarray) -> np.ndarray:
    """``area`` with its holes filled: the background pieces that do not touch the border."""
    labels, _ = ndimage.label(~area)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return ~np.isin(labels, border[border > 0])


def _live_pieces(live: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The live image's pieces, ``(labels, sizes)`` (piece ``i + 1`` has ``sizes[i]`` pixels), or
    None: thin lines and small text dropped by an opening, gaps closed."""
    labels, count = ndimage.label(_erode(_dilate(_open(live, 5), 5), 5))
    if count == 0:
        return None
    return labels, np.bincount(labels.ravel())[1:]


def _with_edges(area: np.ndarray, live: np.ndarray) -> np.ndarray:
    """``area`` with the live pixels next to it that the opening shaved off its edges given back."""
    return area | (_dilate(area, 5) & live)


def _largest_area(pieces: tuple[np.ndarray, np.ndarray], live: np.ndarray) -> np.ndarray:
    """The largest live piece (:func:`_live_pieces`), its edges given back. Its holes (dark
    cavities) are left open: a trace crossing the image's edge would close a loop that filling
    makes solid."""
    labels, sizes = pieces
    return _with_edges(labels == (int(np.argmax(sizes)) + 1), live)


def _patchy_dim_area(
    small: np.ndarray, pieces: tuple[np.ndarray, np.ndarray], live: np.ndarray, min_pixels: float
) -> np.ndarray | None:
    """The live area of a very dim clip lit in patches, or None.

    At the lowest gains only the tissue next to the transducer and the brightest stretches of the
    walls and valves move above the black: the live image is several pieces (apex and annulus),
    none of them large enough for a fan. Their union is taken, pieces smaller than
    :data:`PATCH_SHARE` of the largest dropped (text, an ECG's blips), when its convex hull is
    large enough for a fan and mostly black in every frame (:func:`_dark_share`: a dim clip);
    the dim clip's sector is then fitted to it. Elsewhere (no dim hull) the whole frame stays.
    """
    labels, sizes = pieces
    if sizes.size < 2:
        return None
    area = _with_edges(np.isin(labels, np.flatnonzero(sizes >= PATCH_SHARE * sizes.max()) + 1), live)
    if _raster(_hull(area), area.shape).sum() < min_pixels or _dark_share(small, area) < DIM_SHARE:
        return None
    return area


def _fit_geometry(
    area: np.ndarray, cue: np.ndarray, mean: np.ndarray
) -> tuple[np.ndarray, float, float] | None:
    """A scanner's fan fitted to a live area (work resolution): ``(outline (k, 2) x, y, quality,
    share of the live area inside the fan)``.

    The straight edges are lines through the area's first and last pixel of each row of its upper
    half (lower down, a sector's edge turns into its arc). Where they meet is the transducer: a
    sector (phased or curvilinear array) whose far edge is an arc around it; where they do not
    meet, a linear array's rectangle or trapezoid. Bottom and top are each the arc or the flat
    line that fits the area's outline better; a top well below the transducer is kept only when
    the gap above it is as dark as the background (a curvilinear array's skin line), else the
    fan reaches the transducer (a dark near field). Each edge is then moved to where the cue
    crosses halfway between its levels inside and outside (:func:`_edge_shift`), which the
    smoothing of the cue leaves in place. The quality is the IoU of the fitted fan and the live
    area, below the top of the live area. None when no fan fits.
    """
    h, w = area.shape
    ends = _row_ends(area)
    if ends is None:
        return None
    rows, top, span, left, right = ends
    upper = (rows >= top + 0.08 * span) & (rows <= top + 0.5 * span)
    y_fit = rows[upper].astype(np.float64)
    lines = _fit_line(y_fit, left[upper]), _fit_line(y_fit, right[upper])
    if lines[0] is None or lines[1] is None:
        return None
    (al, bl), (ar, br) = lines
    for _ in range(2):  # the second pass starts nearer the edge: its levels are cleaner
        shift_l, _ = _edge_shift(cue, al + bl * y_fit, y_fit, -1.0, bl)
        shift_r, _ = _edge_shift(cue, ar + br * y_fit, y_fit, 1.0, br)
        al, ar = al - shift_l * math.hypot(1.0, bl), ar + shift_r * math.hypot(1.0, br)
    if br - bl > MIN_SPREAD and abs(bl + br) > MAX_ASYMMETRY * (br - bl):
        # a sector is symmetric about the vertical through its transducer: an edge that leans
        # in runs along a shadow (a rib, a dropout), so the wider edge is mirrored
        first = rows <= top + 0.05 * span
        axis = float(np.median((left[first] + right[first]) / 2))
        if -bl >= br and bl < 0:
            apex_y = (axis - al) / bl
            br, ar = -bl, axis + bl * apex_y
        elif br > -bl and br > 0:
            apex_y = (axis - ar) / br
            bl, al = -br, axis + br * apex_y
    if br - bl <= MIN_SPREAD or max(abs(bl), abs(br)) < LINEAR_SLOPE:
        # no sector a scanner draws (its edges open by 20 degrees and more): a linear array,
        # whose beams are columns
        al, bl, ar, br = _vertical_sides(cue, rows, left, right, top, span)
    yy, xx = np.mgrid[0:h, 0:w]
    ys, xs = np.nonzero(area & (xx >= al + bl * yy) & (xx <= ar + br * yy))
    if ys.size < 0.5 * area.sum():
        return None  # most of the live area lies outside the edges: not a fan
    if br - bl > MIN_SPREAD:  # the edges meet: a sector around the transducer
        apex = ((al * br - ar * bl) / (br - bl), (al - ar) / (br - bl))
        if apex[1] > top + 0.25 * span:
            return None  # the edges cross inside the image: not a fan
        depth = np.hypot(xs - apex[0], ys - apex[1])
        beam = np.arctan2(xs - apex[0], ys - apex[1])
        angles = (math.atan(bl), math.atan(br))
    else:  # parallel edges: a linear array
        apex, depth, beam, angles = None, ys.astype(np.float64), xs.astype(np.float64), None
    far = _far_edge(cue, apex, depth, beam, ys)
    near = _near_edge(cue, apex, depth, beam, ys, area, mean, (al, bl, ar, br))
    if near is None and apex is None:  # a linear array starts where its image does
        near = ("flat", top - 0.5)
    outline = _outline(apex, angles, (al, bl, ar, br), near, far)
    return None if outline is None else _scored(outline, area, top)


def _scored(outline: np.ndarray, area: np.ndarray, top: int) -> tuple[np.ndarray, float, float]:
    """``(outline, quality, contained)``: the fitted fan's IoU with the live area (holes filled)
    from row ``top`` down (above it a dark near field is no disagreement), and the share of the
    live area it holds."""
    fan = _raster(outline, area.shape)
    below = np.zeros_like(area)
    below[top:] = True
    filled = _fill_holes(area)
    quality = float((fan & filled & below).sum() / max(((fan | filled) & below).sum(), 1))
    return outline, quality, float((fan & filled).sum() / max(filled.sum(), 1))


def _dark_share(small: np.ndarray, area: np.ndarray) -> float:
    """Share of the live area's convex hull that is black in every frame (at the frame's
    background level): the blood pools and the tissue between the walls of a dim clip, whose
    fan is lit only near the transducer and along the heart's walls."""
    hull = _raster(_hull(_fill_holes(area)), area.shape)
    low = float(np.percentile(small.mean(axis=0), BACKGROUND_PERCENTILE))
    black = (small.max(axis=0) <= low + GAP_LEVELS) & hull & ~area
    return float(black.sum() / max(hull.sum(), 1))


def _row_ends(area: np.ndarray) -> tuple[np.ndarray, int, float, np.ndarray, np.ndarray] | None:
    """The live area's rows and their outer ends: ``(rows, top, span, left, right)``, the ends at
    pixel edges (x - 0.5, x + 0.5); None when fewer than 8 rows are live (nothing to fit)."""
    rows = np.flatnonzero(area.any(axis=1))
    if rows.size < 8:
        return None
    cols = [np.flatnonzero(area[y]) for y in rows]
    left = np.array([c[0] for c in cols], np.float64) - 0.5
    right = np.array([c[-1] for c in cols], np.float64) + 0.5
    return rows, int(rows[0]), float(rows[-1] - rows[0]), left, right


def _dim_sector(area: np.ndarray, cue: np.ndarray) -> tuple[np.ndarray, float, float] | None:
    """A phased array's sector fitted to the live area of a dim clip, as :func:`_fit_geometry`
    returns it. Only the bright tissue next to the transducer and the heart's walls are lit, so
    the straight edges fitted to the row ends run inside the fan: the transducer is the live
    area's top (its tip, which the opening for the other fit shaves off), the edges are the rays
    from it through the outer :data:`DIM_SIDE_PERCENTILE` of the row ends (mirrored: a sector is
    symmetric about its vertical), the far edge an arc through the live area's deepest reach
    (:data:`DIM_FAR_PERCENTILE`), since a dim far field ends short of the fan."""
    h, w = area.shape
    ends = _row_ends(area)
    if ends is None:
        return None
    rows, top, span, left, right = ends
    first = rows <= top + 0.3 * span
    apex = (float(np.median((left[first] + right[first]) / 2)), top - 0.5)
    upper = (rows >= top + 0.15 * span) & (rows <= top + 0.6 * span)
    dy = rows[upper] - apex[1]
    slope = max(
        -float(np.percentile((left[upper] - apex[0]) / dy, DIM_SIDE_PERCENTILE)),
        float(np.percentile((right[upper] - apex[0]) / dy, 100.0 - DIM_SIDE_PERCENTILE)),
    )
    if slope < LINEAR_SLOPE:
        return None
    lines = (apex[0] + slope * apex[1], -slope, apex[0] - slope * apex[1], slope)
    yy, xx = np.mgrid[0:h, 0:w]
    ys, xs = np.nonzero(area & (xx >= lines[0] + lines[1] * yy) & (xx <= lines[2] + lines[3] * yy))
    if ys.size < 0.5 * area.sum():
        return None
    depth = np.hypot(xs - apex[0], ys - apex[1])
    far = ("arc", float(np.percentile(depth, DIM_FAR_PERCENTILE)) + 0.5)
    outline = _outline(apex, (-math.atan(slope), math.atan(slope)), lines, None, far)
    return None if outline is None else _scored(outline, area, top)


def _vertical_sides(cue, rows, left, right, top: int, span: float) -> tuple[float, float, float, float]:
    """A linear array's sides ``(al, 0, ar, 0)``: vertical lines at the outer
    :data:`SIDE_PERCENTILE` of the live area's ends over the rows of its middle (a dark chamber
    or a shadow against a side pulls a few rows in, never out), each moved to the cue's half
    level along the whole side."""
    middle = (rows >= top + 0.05 * span) & (rows <= top + 0.95 * span)
    y_side = rows[middle].astype(np.float64)
    al = float(np.percentile(left[middle], SIDE_PERCENTILE))
    ar = float(np.percentile(right[middle], 100.0 - SIDE_PERCENTILE))
    for _ in range(2):
        al -= _edge_shift(cue, np.full(y_side.shape, al), y_side, -1.0, 0.0)[0]
        ar += _edge_shift(cue, np.full(y_side.shape, ar), y_side, 1.0, 0.0)[0]
    return al, 0.0, ar, 0.0


def _straight_sides(area: np.ndarray) -> tuple[float, float]:
    """The area's leftmost and rightmost columns where it ends in a vertical side (many rows end
    there: a zoomed window's edge), else +-inf (a sector's corner touches its extreme column in a
    few rows only, and a shadowed corner must not cut the fan)."""
    rows = np.flatnonzero(area.any(axis=1))
    first = np.argmax(area[rows], axis=1)
    last = area.shape[1] - 1 - np.argmax(area[rows, ::-1], axis=1)
    lo, hi = float(first.min()), float(last.max())
    lo = lo if (first == lo).mean() > VERTICAL_SIDE else -math.inf
    hi = hi if (last == hi).mean() > VERTICAL_SIDE else math.inf
    return lo, hi


def _fit_line(ys: np.ndarray, xs: np.ndarray) -> tuple[float, float] | None:
    """``x = a + b * y`` through edge points, refitted twice on the points nearest the last fit."""
    if ys.size < 4:
        return None
    keep = np.ones(ys.size, bool)
    a = b = 0.0
    for _ in range(3):
        b, a = np.polyfit(ys[keep], xs[keep], 1)
        residual = np.abs(xs - (a + b * ys))
        keep = residual <= max(1.5, float(np.percentile(residual, 70)))
        if keep.sum() < 4:
            break
    return float(a), float(b)


def _edge_shift(cue: np.ndarray, xs, ys, nx, ny) -> tuple[float, float]:
    """How far (work pixels, outwards along the normal ``(nx, ny)``, per point or shared) an edge
    through points ``(xs, ys)`` lies from where the cue, averaged along it, crosses halfway between
    its level inside (3-6 pixels in) and outside (3-6 pixels out), and the step between those
    levels: ``(shift, step)``; the shift is 0 without a clear step."""
    nx, ny = np.broadcast_to(nx, np.shape(xs)), np.broadcast_to(ny, np.shape(xs))
    norm = np.hypot(nx, ny)
    nx, ny = nx / norm, ny / norm
    offsets = np.arange(-EDGE_REACH, EDGE_REACH + 0.25, 0.5)
    px = xs[None, :] + offsets[:, None] * nx[None, :]
    py = ys[None, :] + offsets[:, None] * ny[None, :]
    profile = ndimage.map_coordinates(cue, [py.ravel(), px.ravel()], order=1, mode="nearest")
    profile = profile.reshape(offsets.size, -1).mean(axis=1)  # (offsets,)
    inside = float(np.median(profile[offsets <= -EDGE_REACH / 2]))
    outside = float(np.median(profile[offsets >= EDGE_REACH / 2]))
    step = inside - outside
    if step <= 0.25 * max(inside, 1e-6):
        return 0.0, step
    mid = 0.5 * (inside + outside)
    below = np.flatnonzero((profile < mid) & (offsets > -EDGE_REACH / 2))
    if below.size == 0:
        return 0.0, step
    i = int(below[0])
    p0, p1 = profile[i - 1], profile[i]
    return float(offsets[i - 1] + 0.5 * (p0 - mid) / max(p0 - p1, 1e-9)), step


def _beam_extremes(depth, beam, ys, far: bool) -> np.ndarray:
    """The area's farthest (or nearest) ``depth`` on each of :data:`EDGE_BINS` beams (``beam``:
    the angle around the transducer, or the column of a linear array): ``(k, 3)`` depth, beam, row;
    the beams at the sides (which run into the straight edges) and empty beams left out."""
    span = max(float(np.ptp(beam)), 1e-9)
    bins = np.clip(((beam - beam.min()) / span * EDGE_BINS).astype(int), 0, EDGE_BINS - 1)
    rank = (depth - depth.min()) / max(float(np.ptp(depth)), 1e-9) * 0.999
    order = np.argsort(bins + (rank if far else 0.999 - rank))  # by bin, the extreme last
    last = np.flatnonzero(np.diff(bins[order], append=EDGE_BINS))
    pick = order[last]
    out = np.stack([depth[pick], beam[pick], ys[pick]], axis=1)
    margin = int(0.15 * len(out))
    return out[margin : len(out) - margin] if len(out) > 2 * margin + 3 else out


def _far_edge(cue, apex, depth, beam, ys) -> tuple[str, float]:
    """The fan's far edge: ``("arc", radius)`` around the transducer or ``("flat", row)``,
    whichever fits the area's outline better, moved to the cue's half level."""
    ext = _beam_extremes(depth, beam, ys, far=True)
    return _edge(cue, apex, ext, outward=1.0)


def _edge(cue, apex, ext: np.ndarray, outward: float) -> tuple[str, float]:
    """An arc around the transducer or a flat row through the extreme points ``ext`` (see
    :func:`_beam_extremes`), whichever fits them better, moved to the cue's half level;
    ``outward``: +1 for the far edge, -1 for the near one."""
    # a live area falls short of its fan (a dim far field, a dark near field) more often than it
    # overshoots: the edge is placed at the upper (far) or lower (near) quartile of the extremes
    quartile = 50.0 + 15.0 * outward
    row = float(np.percentile(ext[:, 2], quartile))
    flat_err = float(np.median(np.abs(ext[:, 2] - np.median(ext[:, 2]))))
    if apex is not None:  # a sector's edge is an arc unless a flat line fits it much better
        radius = float(np.percentile(ext[:, 0], quartile))
        if float(np.median(np.abs(ext[:, 0] - np.median(ext[:, 0])))) <= FLAT_PREFERENCE * flat_err:
            theta = ext[:, 1]
            xs, ys = apex[0] + radius * np.sin(theta), apex[1] + radius * np.cos(theta)
            shift, _ = _edge_shift(cue, xs, ys, outward * np.sin(theta), outward * np.cos(theta))
            return "arc", radius + outward * shift
    # the columns of the extreme points (a linear array's beams are columns)
    xs = ext[:, 1] if apex is None else apex[0] + ext[:, 0] * np.sin(ext[:, 1])
    ys = np.full(xs.shape, row)
    return "flat", row + outward * _edge_shift(cue, xs, ys, 0.0, outward)[0]


def _near_edge(cue, apex, depth, beam, ys, area, mean, lines) -> tuple[str, float] | None:
    """The fan's near edge: None (the transducer itself: a phased array), or an arc or flat line
    when the live area starts well below the transducer and the gap between is as dark as the
    background (a dark near field gives None)."""
    ext = _beam_extremes(depth, beam, ys, far=False)
    if apex is not None and np.median(ext[:, 0]) < NEAR_POINT * depth.max():
        return None
    kind, value = _edge(cue, apex, ext, outward=-1.0)
    h, w = area.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    al, bl, ar, br = lines
    wedge = (xx >= al + bl * yy) & (xx <= ar + br * yy)
    if apex is not None:
        wedge &= yy >= apex[1]
        before = np.hypot(xx - apex[0], yy - apex[1]) < value if kind == "arc" else yy < value
    else:
        before = yy < value
    gap = wedge & before & ~area
    background = ~ndimage.binary_dilation(area | wedge, iterations=3)
    if gap.sum() < 8 or not background.any():
        return kind, value
    black = float(np.median(mean[background]))
    image = float(np.median(mean[area]))
    if np.median(mean[gap]) > black + max(GAP_LEVELS, GAP_SHARE * (image - black)):
        return None  # a dark near field: the fan reaches the transducer
    return kind, value


def _outline(apex, angles, lines, near, far) -> np.ndarray | None:
    """The fan's outline ``(k, 2)`` (x, y), clockwise from the near left corner (work pixels)."""
    al, bl, ar, br = lines

    def on_lines(y: float) -> tuple[tuple[float, float], tuple[float, float]]:
        return (al + bl * y, y), (ar + br * y, y)

    def arc(radius: float, start: float, stop: float) -> list[tuple[float, float]]:
        return [
            (apex[0] + radius * math.sin(t), apex[1] + radius * math.cos(t))
            for t in np.linspace(start, stop, ARC_POINTS)
        ]

    if near is None:
        top = [apex]
    elif near[0] == "arc":
        top = arc(near[1], angles[0], angles[1])
    else:
        top = list(on_lines(near[1]))
    if far[0] == "arc":
        bottom = arc(far[1], angles[1], angles[0])
    else:
        left, right = on_lines(far[1])
        bottom = [right, left]
    outline = np.array(top + bottom, np.float64)
    return outline if len(outline) >= 3 and np.ptp(outline[:, 1]) > 1 else None


def _hull(area: np.ndarray) -> np.ndarray:
    """The convex hull of a work-resolution area: ``(k, 2)`` (x, y) vertices (pixel corners)."""
    ys, xs = np.nonzero(area & ~ndimage.binary_erosion(area))
    corners = np.concatenate(
        [np.stack([xs + dx, ys + dy], axis=1) for dx in (-0.5, 0.5) for dy in (-0.5, 0.5)]
    )
    try:
        return corners[ConvexHull(corners).vertices]
    except Exception:  # degenerate (a line): its bounding box
        lo, hi = corners.min(axis=0), corners.max(axis=0)
        return np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])


def _raster(polygon: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(k, 2)`` (x, y) polygon -> ``shape`` bool mask (pixels on or inside it)."""
    img = Image.new("1", (shape[1], shape[0]), 0)
    ImageDraw.Draw(img).polygon([(float(x), float(y)) for x, y in polygon], fill=1, outline=1)
    return np.asarray(img, dtype=bool)


# -- DICOM -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StaleRegion:
    """A declared region whose box lies outside the pixel matrix: the coordinates of the file before
    it was resampled. :func:`rescale_stale` tries to bring it back."""

    index: int  # which item of SequenceOfUltrasoundRegions
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1), x1/y1 exclusive, in the original's pixels


@dataclass
class DicomRegion:
    """The region a DICOM file declares, once checked against its pixel matrix."""

    region: Region | None  # None: no usable region
    index: int | None  # which item of SequenceOfUltrasoundRegions (its PhysicalDelta gives spacing)
    warnings: list[str]
    refused: list[int] = field(default_factory=list)  # items refused as stale (their spacing is too)
    stale: StaleRegion | None = None  # the largest item refused for lying outside the matrix


def region_from_dicom(ds, shape: tuple[int, int]) -> DicomRegion:
    """The largest 2-D tissue region (RegionSpatialFormat 1, RegionDataType 1) of ``ds``.

    Each region's box (``RegionLocationMinX0/MinY0/MaxX1/MaxY1``, inclusive) is checked against
    the ``(rows, cols)`` matrix: a region reaching outside it is stale (the file was resampled
    after acquisition) and refused with a warning, as is one whose box is degenerate. The largest
    stale one is kept in ``stale``, for :func:`rescale_stale`.
    """
    rows, cols = shape
    items = getattr(ds, "SequenceOfUltrasoundRegions", None) or []
    best: tuple[int, int, Region] | None = None
    stale: StaleRegion | None = None
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
                "matrix (stale coordinates, e.g. a resampled file); not used as declared"
            )
            refused.append(i)
            if 0 <= x0 < x1 and 0 <= y0 < y1 and min(x1 - x0, y1 - y0) + 1 >= MIN_SIDE:
                area = (x1 - x0 + 1) * (y1 - y0 + 1)
                if stale is None or area > _box_area(stale.box):
                    stale = StaleRegion(i, (x0, y0, x1 + 1, y1 + 1))
            continue
        if min(x1 - x0 + 1, y1 - y0 + 1) < MIN_SIDE:
            warnings.append(f"ultrasound region {i} is smaller than {MIN_SIDE} pixels; ignored")
            continue
        region = Region(x0, y0, x1 + 1, y1 + 1, rows, cols, "dicom")
        area = (x1 - x0 + 1) * (y1 - y0 + 1)
        if best is None or area > best[0]:
            best = (area, i, region)
    if best is None:
        return DicomRegion(None, None, warnings, refused, stale)
    return DicomRegion(best[2], best[1], warnings, refused, None)  # a valid region: no repair needed


def _box_area(box: tuple[int, int, int, int]) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def _int_or_none(value) -> int | None:
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return int(x) if math.isfinite(x) and x == int(x) else None


def refine_with_content(
    declared: Region, frames: np.ndarray, detected: Region | None = None
) -> tuple[Region | None, Region, list[str]]:
    """Check a declared (DICOM) region against the clip's content and add the fan found inside it.

    Returns ``(declared region with its fan, or None when stale; the detected region; warnings)``.
    The declared box must hold most (:data:`DICOM_MIN_OVERLAP`) of the image found in the
    frames; otherwise its coordinates are stale and the detected region is to be used. A region
    that covers (nearly) the whole frame of a clip whose image fills the frame is the full
    frame, as for a detected one: such a clip passes through unchanged. ``detected``: the region
    already detected from ``frames``, if any (else it is detected here).
    """
    detected = detect_region(frames) if detected is None else detected
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
    refined = Region(*declared.box, declared.height, declared.width, declared.source, fan if fan else None)
    return refined, detected, []


def rescale_stale(stale: StaleRegion, height: int, width: int) -> list[tuple[float, Region]]:
    """The ``(factor, region)`` a stale box may have become in a ``height x width`` matrix, one per
    :data:`RESCALE_FACTORS` factor that brings the whole box inside it (within a pixel of
    rounding), largest factor first; sources ``dicom_rescaled``. Which one (if any) the file was
    resampled by is for the content to say (:func:`region_candidates`)."""
    out = []
    x0, y0, x1, y1 = stale.box
    for f in RESCALE_FACTORS:
        if x1 * f > width + 1 or y1 * f > height + 1:
            continue
        box = (math.floor(x0 * f), math.floor(y0 * f), math.ceil(x1 * f), math.ceil(y1 * f))
        box = (box[0], box[1], min(width, box[2]), min(height, box[3]))
        if min(box[2] - box[0], box[3] - box[1]) >= MIN_SIDE:
            out.append((f, Region(*box, height, width, "dicom_rescaled")))
    return out


def _box_iou(a: Region, b: Region) -> float:
    x0, y0, x1, y1 = max(a.x0, b.x0), max(a.y0, b.y0), min(a.x1, b.x1), min(a.y1, b.y1)
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / (_box_area(a.box) + _box_area(b.box) - inter)


def _repair_stale(
    stale: StaleRegion, frames: np.ndarray, detected: Region
) -> tuple[Region | None, float | None, list[str]]:
    """A stale box rescaled to the matrix and checked against the content, ``(region, factor,
    warnings)``: the factor whose box holds the detected image (:func:`refine_with_content`) and
    fits it best. Without image found in the frames there is nothing to confirm a factor by: the
    largest factor's box is returned with ``factor`` None (a candidate only)."""
    height, width = frames.shape[1:]
    options = rescale_stale(stale, height, width)
    where = f"ultrasound region {stale.index} {stale.box}"
    if not options:
        return None, None, [f"{where} fits the {width}x{height} matrix at no simple factor; ignored"]
    if detected.is_full:
        return options[0][1], None, [f"{where}: no image found in the frames to confirm a rescaling factor"]
    passed = []
    for f, region in options:
        refined, _, _ = refine_with_content(region, frames, detected)
        if refined is not None and not refined.is_full:
            passed.append((_box_iou(region, detected), f, refined))
    if not passed:
        return None, None, [f"{where} holds the image found in the frames at no simple factor; ignored"]
    _, f, refined = max(passed, key=lambda p: p[0])
    return refined, f, [f"{where} rescaled by {f:.4g} to the {width}x{height} matrix (a resampled file)"]


@dataclass(frozen=True)
class RegionChoice:
    """What the rule chose from a clip's first frames, and the alternatives the model may judge."""

    region: Region  # the rule's choice
    warnings: list[str]
    stale: bool  # a declared region was refused: its spacing must not be used
    scale: float | None  # a stale region was rescaled by this factor, confirmed by the content
    candidates: tuple[Region, ...]  # distinct regions, the rule's choice first (at most 4)


def _same_region(a: Region, b: Region) -> bool:
    """Boxes and kept pixels overlap by :data:`SAME_REGION_IOU`: the model would see the same input."""
    if a.is_full != b.is_full or _box_iou(a, b) < SAME_REGION_IOU:
        return False
    kept = []
    for r in (a, b):
        m = np.zeros((r.height, r.width), bool)
        m[r.y0 : r.y1, r.x0 : r.x1] = True if r.fan_mask is None else r.fan_mask
        kept.append(m)
    inter, union = (kept[0] & kept[1]).sum(), (kept[0] | kept[1]).sum()
    return union == 0 or inter / union >= SAME_REGION_IOU


def region_candidates(
    frames: np.ndarray, declared: Region | None = None, stale: StaleRegion | None = None
) -> RegionChoice:
    """The rule's region for a clip's first frames ``(n, H, W)`` and the distinct alternatives.

    A declared (DICOM) region is used when the content agrees with it (its fan is found inside
    it); a stale one (``stale``: outside the matrix) when a rescaling factor brings it onto the
    content; otherwise, or without either, the detected region. The candidates are that choice,
    the declared or rescaled region when it was not chosen, the detected region and the full frame,
    duplicates dropped (:func:`_same_region`).

    With a few frames (a stream's first window) the temporal statistics detection relies on are
    thin, so the first frame alone (the intensity detection) is a second opinion: a candidate,
    and the detected region when the frames together gave nothing.
    """
    detected = detect_region(frames)
    others: list[Region] = []
    if 1 < frames.shape[0] < DETECT_FRAMES:
        still = detect_region(frames[:1])
        if detected.is_full and not still.is_full:
            detected, still = still, detected
        others.append(still)
    notes = list(detected.notes)
    if declared is not None:
        refined, _, warnings = refine_with_content(declared, frames, detected)
        if refined is not None:
            return _choice(refined, warnings, False, None, [detected, *others])
        return _choice(detected, warnings + notes, True, None, [declared, *others])
    if stale is not None:
        repaired, factor, warnings = _repair_stale(stale, frames, detected)
        if repaired is not None and factor is not None:
            return _choice(repaired, warnings, False, factor, [detected, *others])
        return _choice(detected, warnings + notes, True, None, [repaired, *others] if repaired else others)
    return _choice(detected, notes, False, None, others)


def _choice(region: Region, warnings: list[str], stale: bool, scale: float | None, others) -> RegionChoice:
    candidates: list[Region] = [region]
    full = full_region(region.height, region.width)
    for other in [*others, full]:
        if not any(_same_region(other, c) for c in candidates):
            candidates.append(other)
    return RegionChoice(region, warnings, stale, scale, tuple(candidates))


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
    map is resized (to the box, in 8 bits: :func:`echoseg.resize.resized_masks`), never the
    padded square or a float frame.
    """

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


def choose_region(
    frames: np.ndarray, declared: Region | None = None, stale: StaleRegion | None = None
) -> tuple[Region, list[str], bool]:
    """The region a clip is preprocessed with, by the rule alone (:func:`region_candidates`).

    Returns ``(region, warnings, stale)`` where ``stale`` says a declared region was refused.
    The service lets the model judge between the candidates (:mod:`echoseg.arbitration`).
    """
    choice = region_candidates(frames, declared, stale)
    return choice.region, choice.warnings, choice.stale


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
