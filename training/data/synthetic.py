"""Synthetic apical four-chamber echo clips with exact per-frame ground truth.

The generator stands in for EchoNet-Dynamic in tests, demos and the bundled default model. It
writes the EchoNet-Dynamic layout (``Videos/*.avi`` MJPG, ``FileList.csv``, ``VolumeTracings.csv``)
so that the real loader is what reads it, plus ``Masks/<FileName>.npy``: the true LV cavity mask
of every frame, ``(T, H, W) uint8``.

The model of an echo, per clip (all parameters drawn from the clip's own random stream):

* geometry: the LV cavity is a bullet shape in its own frame (``u`` along the long axis from the
  apex at the top of the image down to the mitral annulus, ``v`` across it). Its half-width is
  ``W * f(u / L)`` with ``f`` rising like a sine to its widest point and tapering slightly to the
  base, with different septal/lateral widths and small harmonic bumps. A rounder apex and a
  shorter axis model foreshortening. A myocardial wall (thicker in systole), the right ventricle,
  both atria and the mitral valve surround it.
* motion: a contraction curve ``c(t)`` in [0, 1] (0 = end-diastole) built beat by beat: systole,
  rapid filling, diastasis and the atrial kick. The heart rate, beat-to-beat irregularity of the
  period and of the amplitude, and slow drift of the heart's position and axis angle vary per clip.
  The base moves towards the apex (long-axis shortening) and the walls move inwards.
* image formation: tissue echogenicity (bright myocardium, dark blood pools, textured
  surroundings) blurred by the point spread function, multiplied by Rayleigh speckle (the
  magnitude of a spatially correlated complex Gaussian field, partly persistent over time),
  attenuated with depth, near-field haze, a few dropout regions, log compression, and the
  ultrasound sector (fan) outside which the image is black.

Ground truth and reference values: ``Masks/`` holds the analytic cavity rasterised at pixel
centres. The traced ED and ES frames of one complete beat get an EchoNet-style tracing (the long
axis, then 20 chords perpendicular to it, from the apex to the base, denser near the apex),
written ES first and ED last, the order EchoNet-Dynamic's own loader reads them in. ``EF``,
``EDV`` and ``ESV`` come from the exact method-of-discs volume of the analytic shape at those two
frames (discs perpendicular to the long axis, diameter = the cavity's width there), in mL for a
14 cm deep field of view.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from echoseg.video import write_avi

logger = logging.getLogger(__name__)

FPS = 50.0
FIELD_OF_VIEW_CM = 14.0  # depth covered by the image height; sets the mL scale of EDV/ESV
NUM_CHORDS = 20
SPLIT_FRACTIONS = (("TEST", 0.125), ("VAL", 0.125))  # the rest is TRAIN
FILELIST_HEADER = (
    "FileName",
    "EF",
    "ESV",
    "EDV",
    "FrameHeight",
    "FrameWidth",
    "FPS",
    "NumberOfFrames",
    "Split",
)
TRACINGS_HEADER = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")


@dataclass
class HeartParams:
    """Shape, motion and appearance of one synthetic clip; lengths in pixels, angles in radians."""

    apex: tuple[float, float]  # (x, y) of the endocardial apex at end-diastole
    angle: float  # long axis from the downward vertical, positive towards +x
    length: float  # end-diastolic long axis
    half_width: tuple[float, float]  # (septal, lateral) end-diastolic half widths
    widest: float  # where along the axis (0 apex .. 1 base) the cavity is widest
    roundness: float  # exponent of the apical profile (< 1: rounder apex)
    taper: float  # narrowing from the widest point to the base
    bumps: np.ndarray  # (3, 2) amplitude and phase of harmonic bumps of the profile
    shorten: float  # fractional long-axis shortening at full contraction
    narrow: float  # fractional narrowing at full contraction
    wall: float  # end-diastolic wall thickness
    drift: np.ndarray  # (x amplitude, y amplitude, angle amplitude, period in frames, phase)
    blur: float
    speckle_persistence: float
    attenuation: float
    gain: float
    myocardium: float
    blood: float


def _profile(s: np.ndarray, p: HeartParams) -> np.ndarray:
    """Relative half-width ``f(s)`` of the cavity at axial position ``s`` in [0, 1] (0 at the apex)."""
    s = np.clip(s, 0.0, 1.0)
    rise = np.sin(0.5 * np.pi * np.minimum(s / p.widest, 1.0)) ** p.roundness
    beyond = np.clip((s - p.widest) / (1.0 - p.widest), 0.0, 1.0)
    f = rise * (1.0 - p.taper * beyond**2)
    for k, (amp, phase) in enumerate(p.bumps, start=1):
        f = f * (1.0 + amp * np.sin(k * np.pi * s + phase) * np.sin(np.pi * s))
    return f


def _profile_lookup(s: np.ndarray, p: HeartParams, samples: int = 4097) -> np.ndarray:
    """``_profile`` through a fine lookup table: the same values to ~1e-6, much faster on big arrays."""
    grid = np.linspace(0.0, 1.0, samples)
    return np.interp(s, grid, _profile(grid, p)).astype(np.float32)


def sample_params(rng: np.random.Generator, size: int) -> HeartParams:
    ef_target = rng.uniform(0.28, 0.76)
    shorten = rng.uniform(0.05, 0.18)
    narrow = 1.0 - math.sqrt((1.0 - ef_target) / (1.0 - shorten))
    foreshortening = rng.uniform(0.82, 1.0)
    length = size * rng.uniform(0.5, 0.62) * foreshortening
    half = length * rng.uniform(0.27, 0.36) / foreshortening**0.5
    asym = rng.uniform(-0.12, 0.12)
    return HeartParams(
        apex=(size * rng.uniform(0.5, 0.56), size * rng.uniform(0.15, 0.22)),
        angle=math.radians(rng.uniform(4.0, 22.0)),
        length=length,
        half_width=(half * (1 - asym), half * (1 + asym)),
        widest=rng.uniform(0.55, 0.75),
        roundness=rng.uniform(0.45, 0.7) * foreshortening,
        taper=rng.uniform(0.04, 0.18),
        bumps=np.stack([rng.uniform(0.0, 0.04, 3), rng.uniform(0, 2 * np.pi, 3)], axis=1),
        shorten=shorten,
        narrow=narrow,
        wall=size * rng.uniform(0.05, 0.075),
        drift=np.array(
            [
                size * rng.uniform(0.0, 0.025),
                size * rng.uniform(0.0, 0.02),
                math.radians(rng.uniform(0.0, 4.0)),
                rng.uniform(80.0, 250.0),
                rng.uniform(0.0, 2 * np.pi),
            ]
        ),
        blur=rng.uniform(0.8, 1.6) * size / 112.0,
        speckle_persistence=rng.uniform(0.5, 0.85),
        attenuation=rng.uniform(0.4, 1.4),
        gain=rng.uniform(0.85, 1.15),
        myocardium=rng.uniform(0.65, 0.9),
        blood=rng.uniform(0.02, 0.07),
    )


def _beat_shape(phase: np.ndarray, systole: float) -> np.ndarray:
    """Contraction over one beat: 0 at end-diastole, 1 at end-systole (phase in [0, 1))."""
    relax = 0.22
    c = np.where(phase < systole, 0.5 * (1 - np.cos(np.pi * phase / systole)), 0.0)
    rel = (phase - systole) / relax
    in_relax = (phase >= systole) & (rel < 1.0)
    c = np.where(in_relax, 0.12 + 0.88 * 0.5 * (1 + np.cos(np.pi * np.clip(rel, 0, 1))), c)
    kick_start = 0.88
    dia = (phase >= systole + relax) & (phase < kick_start)
    c = np.where(dia, 0.12 - 0.02 * (phase - systole - relax) / (kick_start - systole - relax), c)
    kick = phase >= kick_start
    return np.where(kick, 0.1 * 0.5 * (1 + np.cos(np.pi * (phase - kick_start) / (1 - kick_start))), c)


def contraction_curve(rng: np.random.Generator, frames: int, fps: float) -> tuple[np.ndarray, list[int]]:
    """``(frames,)`` contraction in [0, ~1.15] and the frame at which each beat starts (end-diastole).

    Each beat has its own period (heart rate with beat-to-beat irregularity) and amplitude.
    """
    bpm = rng.uniform(48.0, 115.0)
    irregularity = rng.choice([0.0, 0.05, 0.15], p=[0.4, 0.4, 0.2])
    systole = rng.uniform(0.32, 0.42)
    period = 60.0 * fps / bpm
    start = -rng.uniform(0.0, period)
    t = np.arange(frames, dtype=np.float64)
    curve = np.zeros(frames)
    starts: list[float] = []
    while start < frames:
        p = period * float(np.clip(1.0 + irregularity * rng.standard_normal(), 0.7, 1.3))
        amp = float(np.clip(1.0 + 0.07 * rng.standard_normal(), 0.85, 1.15))
        inside = (t >= start) & (t < start + p)
        curve[inside] = amp * _beat_shape((t[inside] - start) / p, systole)
        starts.append(start)
        start += p
    return curve, [math.ceil(s) for s in starts]


@dataclass
class Geometry:
    """Per-frame LV geometry: ``(T,)`` arrays, lengths in pixels."""

    apex_x: np.ndarray
    apex_y: np.ndarray
    angle: np.ndarray
    length: np.ndarray
    septal: np.ndarray
    lateral: np.ndarray
    wall: np.ndarray


def geometry(p: HeartParams, curve: np.ndarray) -> Geometry:
    t = np.arange(curve.size, dtype=np.float64)
    ax, ay, aa, period, phase = p.drift
    wave = np.sin(2 * np.pi * t / period + phase)
    return Geometry(
        apex_x=p.apex[0] + ax * wave,
        apex_y=p.apex[1] + ay * np.cos(2 * np.pi * t / period + 1.3 * phase),
        angle=p.angle + aa * wave,
        length=p.length * (1 - p.shorten * curve),
        septal=p.half_width[0] * (1 - p.narrow * curve),
        lateral=p.half_width[1] * (1 - p.narrow * curve),
        wall=p.wall * (1 + 0.45 * curve),
    )


def _local_coords(g: Geometry, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in each frame's LV frame: ``-> u, v`` both ``(T, H, W)`` float32."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx = xx[None] - g.apex_x[:, None, None].astype(np.float32)  # (T, H, W)
    dy = yy[None] - g.apex_y[:, None, None].astype(np.float32)
    sin = np.sin(g.angle).astype(np.float32)[:, None, None]
    cos = np.cos(g.angle).astype(np.float32)[:, None, None]
    u = dx * sin + dy * cos  # along the long axis, apex -> base
    v = dx * cos - dy * sin  # across it, septum (-) -> lateral wall (+)
    return u, v


def _inside(u, v, length, septal, lateral, p: HeartParams):
    """Points inside the bullet shape of the given per-frame length and half widths."""
    L = length[:, None, None]
    f = _profile_lookup(u / L, p)
    return (u >= 0) & (u <= L) & (v >= -septal[:, None, None] * f) & (v <= lateral[:, None, None] * f)


def cavity_masks(p: HeartParams, g: Geometry, size: int) -> np.ndarray:
    """True LV cavity of every frame: ``(T, size, size) uint8`` {0, 1} (pixel centres inside)."""
    u, v = _local_coords(g, size)
    return _inside(u, v, g.length, g.septal, g.lateral, p).astype(np.uint8)


def _ellipse(u, v, cu, cv, ru, rv) -> np.ndarray:
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1.0


def echogenicity(p: HeartParams, g: Geometry, curve: np.ndarray, size: int, rng) -> np.ndarray:
    """Noise-free tissue reflectivity of every frame, ``(T, H, W)`` float32, before blur and speckle."""
    u, v = _local_coords(g, size)
    L0, W0 = p.length, sum(p.half_width) / 2
    c = curve[:, None, None]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    texture = gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), 3.0 * size / 112)
    e = np.broadcast_to(0.24 + 0.5 * texture, u.shape).astype(np.float32).copy()
    blood, myo = p.blood, p.myocardium
    # Right ventricle beside the septum, atria below the mitral annulus.
    rv_v = -(p.half_width[0] + p.wall * 1.4 + 0.48 * W0)
    e[_ellipse(u, v, 0.6 * L0, rv_v, 0.42 * L0 * (1 - 0.05 * c), 0.45 * W0 * (1 - 0.15 * c))] = blood
    la_u = g.length[:, None, None] + p.wall * 0.6 + 0.26 * L0
    e[_ellipse(u, v, la_u, 0.1 * W0, 0.26 * L0, 0.85 * W0)] = blood
    e[_ellipse(u, v, la_u, rv_v - 0.1 * W0, 0.24 * L0, 0.55 * W0)] = blood
    # Myocardium: the cavity's shape grown by the wall thickness, open at the base.
    wall = g.wall[:, None, None]
    outer = _inside(u + wall, v, g.length + g.wall, g.septal + g.wall, g.lateral + g.wall, p)
    e[outer & (u <= g.length[:, None, None])] = myo
    e[_inside(u, v, g.length, g.septal, g.lateral, p)] = blood
    # Mitral valve: a thin band across the annulus, closed in systole, open leaflets in diastole.
    band = (u > g.length[:, None, None]) & (u < g.length[:, None, None] + 0.035 * size)
    width = np.abs(v) < (g.septal + g.lateral)[:, None, None] / 2
    closed = c > 0.35
    leaflet = band & width & (closed | (np.abs(v) > 0.45 * W0))
    e[leaflet] = 0.55 * myo
    del xx, yy
    return e


def _speckle(rng: np.random.Generator, shape: tuple[int, int, int], p: HeartParams, size: int) -> np.ndarray:
    """Rayleigh speckle with mean 1: magnitude of a correlated complex Gaussian field, ``(T, H, W)``."""
    sig = (0.0, 0.6 * size / 112, 1.1 * size / 112)  # axial finer than lateral
    static = rng.standard_normal((2, 1, *shape[1:]), dtype=np.float32)
    moving = rng.standard_normal((2, *shape), dtype=np.float32)
    a = np.float32(p.speckle_persistence)
    z = a * static + np.sqrt(1 - a * a) * moving  # (2, T, H, W): real and imaginary parts
    z[0] = gaussian_filter(z[0], sig)
    z[1] = gaussian_filter(z[1], sig)
    mag = np.hypot(z[0], z[1])
    return mag / mag.mean()


def _sector(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Fan-shaped field of view: ``-> (inside (H, W) bool, depth (H, W) in [0, 1])``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    ox, oy = size / 2.0, -0.02 * size
    r = np.hypot(xx - ox, yy - oy)
    theta = np.arctan2(xx - ox, yy - oy)
    half_angle = math.radians(rng.uniform(36.0, 42.0))
    radius = size * rng.uniform(0.97, 1.05)
    return (r <= radius) & (np.abs(theta) <= half_angle), r / radius


def _dropout(rng: np.random.Generator, size: int, frames: int) -> np.ndarray:
    """Multiplicative dropout map ``(1, H, W)``: a few dim blobs (shadowing, poor window)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    gain = np.ones((size, size), dtype=np.float32)
    for _ in range(rng.integers(1, 4)):
        cx, cy = rng.uniform(0.2, 0.8) * size, rng.uniform(0.2, 0.8) * size
        rx, ry = rng.uniform(0.05, 0.15) * size, rng.uniform(0.05, 0.2) * size
        depth = rng.uniform(0.3, 0.8)
        gain *= 1 - depth * np.exp(-(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2))
    return gain[None]


def render(p: HeartParams, g: Geometry, curve: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Simulated B-mode frames ``(T, H, W) uint8``."""
    e = echogenicity(p, g, curve, size, rng)
    e = gaussian_filter(e, (0.0, p.blur, p.blur))  # point spread function blurs the boundaries
    e *= _speckle(rng, e.shape, p, size)
    inside, depth = _sector(size, rng)
    e *= (p.gain * np.exp(-p.attenuation * depth) * (1 + 0.25 * p.attenuation * depth))[None]
    e += (0.25 * np.exp(-depth / 0.08))[None] * _speckle(rng, e.shape, p, size)  # near-field haze
    e *= _dropout(rng, size, e.shape[0])
    img = np.log1p(20.0 * np.clip(e, 0, None)) / np.log1p(20.0)  # log compression
    img = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    img[:, ~inside] = 0
    return img


def _chord_positions() -> np.ndarray:
    """Axial positions of the chords in [0, 1], apex to base, denser near the curved apex."""
    return 1.0 - np.cos(0.5 * np.pi * np.arange(NUM_CHORDS) / (NUM_CHORDS - 1))


def tracing(p: HeartParams, g: Geometry, t: int) -> np.ndarray:
    """EchoNet-style tracing of frame ``t``: ``(1 + 20, 4)`` rows of (X1, Y1, X2, Y2).

    Row 0 is the long axis (apex to the middle of the annulus); the others are chords
    perpendicular to it, from the apex to the base, X1/Y1 on the septal side, X2/Y2 lateral.
    """
    ax, ay, th, L = g.apex_x[t], g.apex_y[t], g.angle[t], g.length[t]
    d = np.array([math.sin(th), math.cos(th)])  # (x, y) along the axis
    n = np.array([math.cos(th), -math.sin(th)])  # (x, y) across, towards the lateral wall
    s = _chord_positions()
    f = _profile(s, p)
    centre = np.array([ax, ay])[None] + (s * L)[:, None] * d[None]  # (20, 2)
    left = centre - (g.septal[t] * f)[:, None] * n[None]
    right = centre + (g.lateral[t] * f)[:, None] * n[None]
    base_mid = np.array([ax, ay]) + L * d
    axis_row = np.array([[ax, ay, base_mid[0], base_mid[1]]])
    return np.concatenate([axis_row, np.concatenate([left, right], axis=1)], axis=0)


def disc_volume(p: HeartParams, g: Geometry, t: int, samples: int = 400) -> float:
    """Exact method-of-discs volume of the analytic cavity at frame ``t`` (pixels³)."""
    s = (np.arange(samples) + 0.5) / samples
    diameter = (g.septal[t] + g.lateral[t]) * _profile(s, p)
    return float(np.sum(np.pi / 4 * diameter**2) * g.length[t] / samples)


def traced_frames(curve: np.ndarray, starts: list[int], rng: np.random.Generator) -> tuple[int, int]:
    """ED and ES frame of one beat seen in the clip: its end-systole and the end-diastole before it
    (or, when the clip starts in that beat's systole, the end-diastole after it)."""
    n = curve.size
    pairs = []
    for a, b in zip(starts, [*starts[1:], 10**9], strict=True):
        lo, hi = max(a, 0), min(b, n)
        if lo >= hi:
            continue
        es = lo + int(np.argmax(curve[lo:hi]))
        if not 0 < es < n - 1 or curve[es] < max(curve[es - 1], curve[es + 1]):
            continue  # the peak of contraction is cut off by the clip's ends
        if a >= 0:
            pairs.append((a + int(np.argmin(curve[a : es + 1])), es))
        elif b < n:
            pairs.append((es + int(np.argmin(curve[es : min(b + 2, n)])), es))
    if not pairs:  # a clip shorter than a systole: its extremes
        return int(np.argmin(curve)), int(np.argmax(curve))
    return pairs[int(rng.integers(len(pairs)))]


@dataclass
class SyntheticClip:
    name: str
    frames: np.ndarray  # (T, H, W) uint8
    masks: np.ndarray  # (T, H, W) uint8
    ed: int
    es: int
    edv: float  # mL
    esv: float  # mL
    tracings: dict[int, np.ndarray]  # frame -> (21, 4)

    @property
    def ef(self) -> float:
        return 100.0 * (self.edv - self.esv) / self.edv


def synthesize(rng: np.random.Generator, name: str, frames: int = 96, size: int = 112) -> SyntheticClip:
    """One clip, its true masks, traced ED/ES frames and volumes."""
    p = sample_params(rng, size)
    curve, starts = contraction_curve(rng, frames, FPS)
    g = geometry(p, curve)
    masks = cavity_masks(p, g, size)
    video = render(p, g, curve, size, rng)
    ed, es = traced_frames(curve, starts, rng)
    ml = (FIELD_OF_VIEW_CM / size) ** 3
    return SyntheticClip(
        name=name,
        frames=video,
        masks=masks,
        ed=ed,
        es=es,
        edv=disc_volume(p, g, ed) * ml,
        esv=disc_volume(p, g, es) * ml,
        tracings={ed: tracing(p, g, ed), es: tracing(p, g, es)},
    )


def echonet_tracing_order(ed: int, es: int) -> tuple[int, int]:
    """Order in which a clip's traced frames are written to ``VolumeTracings.csv``: ES, then ED.

    EchoNet-Dynamic's own loader takes a video's first-listed traced frame as end-systole and its
    last-listed as end-diastole, whatever the frame numbers; writing in ascending frame order
    would swap them whenever end-diastole comes before end-systole.
    """
    return es, ed


def assign_splits(n: int, rng: np.random.Generator) -> list[str]:
    """TRAIN/VAL/TEST labels, about 75 / 12.5 / 12.5 %, in a shuffled order."""
    labels: list[str] = []
    for split, fraction in SPLIT_FRACTIONS:
        labels += [split] * math.floor(n * fraction + 0.5)
    labels = labels[:n] + ["TRAIN"] * max(0, n - len(labels))
    return [labels[i] for i in rng.permutation(n)]


def generate(
    out_dir, videos: int, frames: int = 96, size: int = 112, seed: int = 0, append: bool = False
) -> Path:
    """Write ``videos`` synthetic clips in the EchoNet-Dynamic layout under ``out_dir``; returns it.

    Same arguments and seed give the same files (clip ``i`` only depends on ``seed`` and ``i``).
    """
    if videos < 1:
        raise ValueError(f"videos must be at least 1, got {videos}")
    if frames < 8:
        raise ValueError(f"frames must be at least 8, got {frames}")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    out = Path(out_dir)
    (out / "Videos").mkdir(parents=True, exist_ok=True)
    (out / "Masks").mkdir(exist_ok=True)
    splits = assign_splits(videos, np.random.default_rng([seed, 2**31]))
    filelist, tracings = [], []
    for i in range(videos):
        name = f"0X{seed:08X}{i:08X}"
        clip = synthesize(np.random.default_rng([seed, i]), name, frames, size)
        write_avi(out / "Videos" / f"{name}.avi", clip.frames, fps=FPS)
        np.save(out / "Masks" / f"{name}.npy", clip.masks)
        filelist.append(
            [
                name,
                f"{clip.ef:.4f}",
                f"{clip.esv:.4f}",
                f"{clip.edv:.4f}",
                size,
                size,
                f"{FPS:g}",
                frames,
                splits[i],
            ]
        )
        for t in echonet_tracing_order(clip.ed, clip.es):
            for row in clip.tracings[t]:
                tracings.append([f"{name}.avi", *(f"{v:.4f}" for v in row), t])
        logger.debug(
            "synthetic clip %d/%d: EF %.1f%%, ED %d, ES %d", i + 1, videos, clip.ef, clip.ed, clip.es
        )
    write_tables(out, filelist, tracings, append)
    logger.info("wrote %d synthetic clips (%d frames of %dx%d) to %s", videos, frames, size, size, out)
    return out


def write_tables(out: Path, filelist, tracings, append: bool = False) -> None:
    """Write a dataset folder's ``FileList.csv`` and ``VolumeTracings.csv``.

    ``append`` keeps the rows already there (another generator's clips, e.g. zoo clips added to
    an A4C training set); a clip name present in both is refused rather than written twice.
    """
    old_files: list[list[str]] = []
    old_tracings: list[list[str]] = []
    if append and (out / "FileList.csv").exists():
        old_files = _read_rows(out / "FileList.csv", FILELIST_HEADER)
        if (out / "VolumeTracings.csv").exists():
            old_tracings = _read_rows(out / "VolumeTracings.csv", TRACINGS_HEADER)
        clash = {row[0] for row in old_files} & {str(row[0]) for row in filelist}
        if clash:
            raise ValueError(
                f"{len(clash)} clip names already in {out} (e.g. {sorted(clash)[0]}); use another seed"
            )
    write_csv(out / "FileList.csv", FILELIST_HEADER, [*old_files, *filelist])
    write_csv(out / "VolumeTracings.csv", TRACINGS_HEADER, [*old_tracings, *tracings])


def _read_rows(path: Path, header) -> list[list[str]]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or tuple(rows[0]) != tuple(header):
        raise ValueError(f"{path} does not start with the header {','.join(header)}")
    return rows[1:]


def write_csv(path: Path, header, rows) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
