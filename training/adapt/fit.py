"""The simulator fitted to a site: labelled clips that look like the site's, from its unlabelled clips.

Restyling simulated windows (``training.trainer.style``: the site's Fourier amplitude and mean
picture) moves their brightness, blur and haze towards the site's, but not what only the imaging
itself makes: the size and sparseness of the speckle, how far the haze reaches into the cavity,
how a coarse point-spread function smears the mitral valve. The simulator can make those, so it is
asked to: its imaging parameters are searched, without any label, for the setting whose pictures
have the site's image statistics, and labelled clips are rendered there.

- **Statistics** (:func:`image_statistics`): on model-input frames (each clip brought to the model's
  input exactly as training and serving do, ``echoseg.region``), inside the live image (pixels that
  change between frames, closed): gray-level quantiles, the mean level and the live image's width
  in five depth bands (the haze, the TGC, the sector's shape), the speckle's autocorrelation at 1,
  2 and 4 pixels across and along the beam, and the share of pixels that are a speckle spot's
  peak (how sparse the scatterers are). The site's are the mean over up to :data:`FIT_CLIPS` of its
  adaptation clips, each feature scaled by its spread between those clips (plus a floor), so that
  a feature the site itself varies in counts less.
- **Search** (:func:`fit_simulator`): the parameters of :data:`SPACE` (point-spread widths, speckle
  density, near-field haze and its reach, dynamic range, gain, display smoothing, sector angle),
  in broad ranges of what scanners do, fixed before any site was fitted; every other imaging
  parameter and all of the anatomy are drawn by the simulator as in training. A share of the
  budget on random settings (a fixed seed), the rest on Nelder-Mead searches from the best
  :data:`STARTS` of them, in parallel; every setting is rendered as the same
  :data:`FIT_RENDER_CLIPS` short clips (common random numbers: settings differ only by their
  parameters, and the distance is a deterministic function of them) at the site's frame size.
- **Rendering** (:func:`render_fitted`): labelled clips with per-clip parameters drawn in a small
  neighbourhood of the fit (:data:`JITTER` of each range), every other one by the training recipe
  instead, written in the EchoNet-Dynamic layout with per-frame truth like every simulated set.

The fit is only as good as the simulator's reach: :class:`SimulatorFit` reports the distance left
(in site spreads per feature), and a real scanner's picture may lie outside what the simulator can
make at any setting.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from echoseg.region import DETECT_FRAMES, apply_region, choose_region
from training.data.a4c import dataset_folders, render_a4c_clip, run_tasks, write_clip
from training.data.scanner import scanner_sector
from training.data.store import FrameStore
from training.data.synthetic import assign_splits, write_tables

logger = logging.getLogger(__name__)

FIT_CLIPS = 12  # site clips whose statistics are the target
FIT_FRAMES = 8  # frames per clip, evenly spaced
FIT_RENDER_CLIPS = 3  # clips rendered per candidate
CANDIDATES = 300  # parameter settings rendered in all (at most)
RANDOM_SHARE = 0.3  # of them drawn at random in the whole space, the rest spent by local searches
STARTS = 2  # local (Nelder-Mead) searches, from the best random settings
SIMPLEX_STEP = 0.15  # the first simplex's size, as a share of each range
MIN_CANDIDATES = STARTS
RECIPE_SHARE = 0.5  # share of the labelled set drawn by the training recipe (not forgetting it)
JITTER = 0.05  # per-clip spread of the rendered set around the fit, as a share of each range
MAX_RENDER_SIDE = 480  # candidates and the labelled set are rendered at most this large
FEATURE_FLOOR = 0.01  # the least scale of a feature (its values are in [0, 1])
QUANTILES = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.97)
DEPTH_BANDS = 5
LAGS = (1, 2, 4)


@dataclass(frozen=True)
class Parameter:
    name: str
    low: float
    high: float
    log: bool = False

    def value(self, u: float) -> float:
        """The value at ``u`` in [0, 1] of the range (log-uniform where ``log``)."""
        u = min(max(u, 0.0), 1.0)
        if self.log:
            return float(math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low))))
        return float(self.low + u * (self.high - self.low))


# Broad ranges of what scanners and presets do (they hold the training recipe's ranges and much
# beyond); fixed before any site was fitted.
SPACE = (
    Parameter("axial_mm", 0.2, 2.0, log=True),  # axial PSF sd: high- to low-frequency probes
    Parameter("lateral_deg", 0.3, 3.0, log=True),  # lateral PSF at the focus
    Parameter("density", 0.03, 1.0, log=True),  # share of resolution cells holding a scatterer
    Parameter("clutter", 0.0, 1.2),  # near-field haze
    Parameter("clutter_depth", 5.0, 50.0),  # its reach (mm)
    Parameter("dynamic_range_db", 20.0, 70.0),
    Parameter("gain_db", -10.0, 10.0),
    Parameter("smoothing", 0.0, 1.0),  # display smoothing (pixels)
    Parameter("sector_deg", 40.0, 100.0),
)


@dataclass
class SimulatorFit:
    """Where the search ended: ``point`` in the unit cube of :data:`SPACE`, its parameters, and the
    distance left (root mean square over features, in site spreads)."""

    point: list[float]
    params: dict[str, float]
    distance: float
    start_distance: float  # the simulator's own drawn parameters (the training recipe)
    size: tuple[int, int]  # (height, width) the site's frames mostly have
    candidates: int
    site_clips: int

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["params"] = {k: round(v, 4) for k, v in self.params.items()}
        d["point"] = [round(u, 5) for u in self.point]
        d["distance"] = round(self.distance, 4)
        d["start_distance"] = round(self.start_distance, 4)
        return d

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


# -- statistics --------------------------------------------------------------------------------------
def live_area(frames: np.ndarray) -> np.ndarray:
    """``(n, S, S)`` uint8 -> ``(S, S)`` bool: pixels that change between frames (speckle does,
    furniture and the background do not), closed over 5 pixels so that sparse speckle's dark cells
    count as image."""
    moving = frames.astype(np.float32).std(axis=0) > 0.5
    pad = np.pad(moving.astype(np.float32), 2)
    s = pad.shape[0] - 4, pad.shape[1] - 4
    share = sum(pad[dy : dy + s[0], dx : dx + s[1]] for dy in range(5) for dx in range(5)) / 25.0
    return share > 0.3


def _correlation(x: np.ndarray, live: np.ndarray, lag: int, axis: int) -> float:
    """Mean over frames of the correlation between live pixels and their neighbours ``lag`` away."""
    if axis == 1:
        a, b = x[:, :, :-lag], x[:, :, lag:]
        m = live[:, :-lag] & live[:, lag:]
    else:
        a, b = x[:, :-lag, :], x[:, lag:, :]
        m = live[:-lag, :] & live[lag:, :]
    if m.sum() < 16:
        return 0.0
    a, b = a[:, m], b[:, m]  # (n, P)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    r = np.where(den > 0, (a * b).sum(axis=1) / np.maximum(den, 1e-12), 0.0)
    return float(r.mean())


def image_statistics(frames: np.ndarray) -> np.ndarray:
    """One clip's features from ``(n, S, S)`` uint8 model-input frames (see the module docstring)."""
    live = live_area(frames)
    x = frames.astype(np.float32) / 255.0
    if live.sum() < 64:
        live = np.ones_like(live)
    values = x[:, live]
    feats = list(np.quantile(values, QUANTILES))
    rows = np.flatnonzero(live.any(axis=1))
    for band in np.array_split(rows, DEPTH_BANDS):
        sel = np.zeros_like(live)
        sel[band] = live[band]
        feats.append(float(x[:, sel].mean()) if sel.any() else 0.0)
    for band in np.array_split(np.arange(live.shape[0]), DEPTH_BANDS):
        feats.append(float(live[band].mean()))  # the image's width with depth: the sector's shape
    for axis in (1, 2):  # across the beams (columns), along them (rows)
        feats.extend(_correlation(x, live, lag, axis) for lag in LAGS)
    feats.append(_peak_share(x, live))
    return np.asarray(feats, np.float64)


def _peak_share(x: np.ndarray, live: np.ndarray) -> float:
    """Share of live pixels that are a speckle spot's peak (a 3x3 maximum above the clip's median):
    how sparse the scatterers are, beside how wide their spots are."""
    pad = np.pad(x, ((0, 0), (1, 1), (1, 1)), constant_values=-1.0)
    h, w = x.shape[1:]
    neighbours = np.max(
        [
            pad[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
            if dy or dx
        ],
        axis=0,
    )
    peaks = (x > neighbours) & (x > np.median(x[:, live])) & live
    return float(peaks.sum() / (live.sum() * len(x)))


def model_input(frames: np.ndarray, size: int) -> np.ndarray:
    """``(T, H, W)`` uint8 -> ``(n, S, S)``: :data:`FIT_FRAMES` evenly spaced frames brought to the
    model's input as the training windows are (region chosen from the first frames)."""
    region = choose_region(frames[: min(DETECT_FRAMES, len(frames))])[0]
    idx = np.unique(np.linspace(0, len(frames) - 1, FIT_FRAMES).round().astype(int))
    return apply_region(frames[idx], region, size)


def site_statistics(
    store: FrameStore, names: list[str], size: int
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """The site's target features (mean over clips), their scales, and the commonest frame size."""
    names = sorted(names)[:FIT_CLIPS]
    if not names:
        raise ValueError("no site clips to fit the simulator to")
    feats, sizes = [], []
    for name in names:
        frames = store.clip(name).frames  # (T, H, W)
        feats.append(image_statistics(model_input(frames, size)))
        sizes.append(frames.shape[1:])
    f = np.stack(feats)
    scale = np.maximum(f.std(axis=0), FEATURE_FLOOR)
    height, width = max(set(sizes), key=sizes.count)
    # Statistics are taken at the model's input size, so a large screen is rendered smaller (same
    # shape): the speckle and haze scale with the depth shown, not with the screen's pixels.
    shrink = min(1.0, MAX_RENDER_SIDE / max(height, width))
    return f.mean(axis=0), scale, (max(32, round(height * shrink)), max(32, round(width * shrink)))


# -- rendering at a point ----------------------------------------------------------------------------
def _params(point) -> dict[str, float]:
    return {p.name: p.value(u) for p, u in zip(SPACE, point, strict=True)}


def render_at(seed: int, params: dict[str, float] | None, size: tuple[int, int], frames: int):
    """One simulated clip (gray, with furniture) at ``params`` (None: the simulator's own draw)."""
    height, width = size
    rng = np.random.default_rng([zlib.crc32(b"echoseg-fit"), seed])
    if params is None:
        return render_a4c_clip(rng, frames=frames, height=height, width=width, cropped=False)

    def acoustics(ac):
        return dataclasses.replace(
            ac,
            axial_mm=params["axial_mm"],
            lateral_rad=math.radians(params["lateral_deg"]),
            density=params["density"],
            clutter=params["clutter"],
            clutter_depth=params["clutter_depth"],
            dynamic_range_db=params["dynamic_range_db"],
            gain_db=params["gain_db"],
            smoothing=params["smoothing"],
        )

    half = math.radians(params["sector_deg"] / 2.0)

    def sector(sector_rng, h, w, depth_mm):
        return scanner_sector(sector_rng, h, w, depth_mm, half)

    return render_a4c_clip(
        rng, frames=frames, height=height, width=width, cropped=False, sector=sector, acoustics=acoustics
    )


def _candidate_statistics(args) -> np.ndarray:
    params, size, input_size, seeds = args
    feats = [
        image_statistics(model_input(render_at(s, params, size, FIT_FRAMES).frames, input_size))
        for s in seeds
    ]
    return np.mean(feats, axis=0)


def _distance(f: np.ndarray, target: np.ndarray, scale: np.ndarray) -> float:
    return float(np.sqrt(np.mean(((f - target) / scale) ** 2)))


def _objective(u: np.ndarray, target, scale, size, input_size, seeds) -> float:
    """The distance at ``u``; outside the unit cube the nearest inside point's, plus a penalty."""
    inside = np.clip(u, 0.0, 1.0)
    stats = _candidate_statistics((_params(inside), size, input_size, seeds))
    return _distance(stats, target, scale) + 10.0 * float(np.sum((u - inside) ** 2))


def _refine(args) -> tuple[float, np.ndarray, int]:
    """Nelder-Mead from ``start`` for at most ``evaluations`` renders: ``(distance, point, used)``."""
    start, evaluations, target, scale, size, input_size, seeds = args
    simplex = [start]
    for k in range(len(start)):
        vertex = start.copy()
        vertex[k] += SIMPLEX_STEP if vertex[k] + SIMPLEX_STEP <= 1.0 else -SIMPLEX_STEP
        simplex.append(vertex)
    result = minimize(
        _objective,
        start,
        args=(target, scale, size, input_size, seeds),
        method="Nelder-Mead",
        options={"maxfev": evaluations, "initial_simplex": np.stack(simplex), "xatol": 1e-3, "fatol": 1e-4},
    )
    point = np.clip(result.x, 0.0, 1.0)
    return float(result.fun), point, int(result.nfev)


def fit_simulator(
    store: FrameStore,
    names: list[str],
    input_size: int,
    seed: int = 0,
    workers: int = 1,
    candidates: int = CANDIDATES,
) -> SimulatorFit:
    """Search :data:`SPACE` for the simulator setting whose pictures have the site's statistics:
    :data:`RANDOM_SHARE` of the ``candidates`` settings drawn at random, the rest spent by
    Nelder-Mead searches from the :data:`STARTS` best of those (one per worker, in parallel)."""
    if candidates < MIN_CANDIDATES:
        raise ValueError(f"candidates must be at least {MIN_CANDIDATES}, got {candidates}")
    target, scale, size = site_statistics(store, names, input_size)
    render_seeds = list(range(FIT_RENDER_CLIPS))
    start = _distance(_candidate_statistics((None, size, input_size, render_seeds)), target, scale)
    rng = np.random.default_rng([zlib.crc32(b"echoseg-fit-search"), seed])
    drawn = max(STARTS, math.floor(RANDOM_SHARE * candidates))
    if candidates - drawn < STARTS * (len(SPACE) + 2):  # no room for a simplex and a step from each start
        drawn = candidates
    points = rng.random((drawn, len(SPACE)))
    tasks = [(_params(p), size, input_size, render_seeds) for p in points]
    scored = [
        (_distance(f, target, scale), p)
        for p, f in zip(points, run_tasks(_candidate_statistics, tasks, workers), strict=True)
    ]
    scored.sort(key=lambda s: s[0])
    logger.info(
        "simulator fit: %d random settings, best distance %.3f (recipe %.3f)", drawn, scored[0][0], start
    )
    left = candidates - drawn
    used = drawn
    if left:
        tasks = [
            (p.copy(), left // STARTS, target, scale, size, input_size, render_seeds)
            for _, p in scored[:STARTS]
        ]
        for d, p, n in run_tasks(_refine, tasks, workers):
            scored.append((d, p))
            used += n
        scored.sort(key=lambda s: s[0])
        logger.info("simulator fit: refined to distance %.3f", scored[0][0])
    best_d, best = scored[0]
    return SimulatorFit(
        point=[float(u) for u in best],
        params=_params(best),
        distance=best_d,
        start_distance=start,
        size=size,
        candidates=used,
        site_clips=min(len(names), FIT_CLIPS),
    )


# -- the labelled set ----------------------------------------------------------------------------------
def _render_task(args) -> tuple[list, list]:
    out, name, seed, point, size, frames, split = args
    params = None  # a recipe clip: the simulator's own draw
    if point is not None:
        rng = np.random.default_rng([zlib.crc32(b"echoseg-fit-jitter"), seed])
        params = _params(np.clip(np.asarray(point) + rng.uniform(-JITTER, JITTER, len(point)), 0.0, 1.0))
    clip = render_at(seed, params, size, frames)
    return write_clip(out, name, clip.frames, clip, frames, split)


def render_fitted(
    out_dir,
    fit: SimulatorFit,
    clips: int,
    frames: int = 32,
    seed: int = 0,
    workers: int = 1,
    recipe_share: float = RECIPE_SHARE,
) -> Path:
    """Write ``clips`` labelled clips under ``out_dir`` (EchoNet-Dynamic layout with ``Masks/`` and
    ``Meta/``, splits drawn like every simulated set's): rendered around ``fit``, except a
    ``recipe_share`` of them (every other one at 0.5) drawn by the simulator's own recipe at the
    same frame size, so that training on the set does not forget the domain the model came from."""
    if clips < 3:
        raise ValueError(f"clips must be at least 3 (train, val and test), got {clips}")
    if not 0.0 <= recipe_share < 1.0:
        raise ValueError(f"recipe_share must be in [0, 1), got {recipe_share}")
    tmp = Path(out_dir).with_name(Path(out_dir).name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    out = dataset_folders(tmp)
    splits = assign_splits(clips, np.random.default_rng([seed, 2**31]))
    base = 1_000_000 + seed * 100_000
    recipe = [math.floor((i + 1) * recipe_share) > math.floor(i * recipe_share) for i in range(clips)]
    tasks = [
        (
            out,
            f"0XFIT{base + i:010X}",
            base + i,
            None if recipe[i] else fit.point,
            fit.size,
            frames,
            splits[i],
        )
        for i in range(clips)
    ]
    results = run_tasks(_render_task, tasks, workers)
    write_tables(out, [row for row, _ in results], [r for _, rows in results for r in rows], append=False)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    logger.info(
        "rendered %d clips around the simulator fit and %d by the recipe into %s",
        clips - sum(recipe),
        sum(recipe),
        out_dir,
    )
    return Path(out_dir)
