"""A realistic apical four-chamber (A4C) echo simulator with exact per-frame ground truth.

``echoseg data synth --mode a4c`` writes these clips in the EchoNet-Dynamic layout (plus
``Masks/`` and a per-clip ``Meta/<FileName>.json``); :func:`render_a4c_clip` renders one in memory.

Anatomy (lengths in mm, in a heart frame: ``u`` along the LV long axis from the endocardial apex
to the mitral annulus, ``v`` across it, positive towards the LV lateral wall): the LV cavity is a
bullet (the simple generator's profile), its myocardium the cavity grown by the wall and septal
thickness and open at the base; the RV hugs the septum, shorter, with its own apex and a thin free
wall; both atria hang below their annuli, their walls forming the interatrial septum; mitral and
tricuspid leaflets are thin bright segments hinged at the annuli, open while the ventricle fills
and closed in systole; bright fibrous annuli, a bright pericardium around the whole heart, and
sometimes the descending aorta behind the left atrium.

Motion: the simple generator's contraction curve (beat-to-beat period and amplitude) shortens
the LV towards a fixed apex and narrows it; the myocardium thickens so that its area stays about
constant; the tricuspid annulus moves towards the apex; the atria fill in systole. Breathing and
probe motion move and turn the whole heart under the probe.

Image formation, in the beam's polar geometry (depth ``r`` x beam angle ``theta``): tissue labels
are rasterised on the polar grid, scatterers (complex Gaussian amplitudes, optionally sparse, fixed
in tissue coordinates so speckle moves with the heart, partly renewed each frame for out-of-plane
motion) are weighted by per-tissue echogenicity and convolved with a separable point-spread
function (axial: the baseband (IQ) Gaussian pulse envelope; lateral: a Gaussian whose angular width
grows away from the focus). The envelope is the magnitude of the IQ signal (the analytic signal of
the RF line), then attenuation and an imperfect TGC curve, gain, log compression to a dynamic
range, a display gamma. Near-field clutter and reverberation bands (fixed to the probe) haze the
apex; the lateral wall drops out, ribs shadow an edge. Scan conversion (bilinear) places the
sector on the frame; outside it the screen is black, then scanner furniture is drawn there.

Ground truth: the LV cavity inside the endocardium, closed by the straight line across the mitral
annulus, rasterised at the output's pixel centres through the same transform as the image.
Tracings (long axis, then 20 chords, EchoNet style) are the boundary of that same shape at the
ED and ES frames, ES listed first. EF/EDV/ESV: method of discs of the true masks, in mL.
"""

from __future__ import annotations

import json
import logging
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import binary_dilation, gaussian_filter, gaussian_filter1d, map_coordinates

from echoseg.cardiac import ejection_fraction, volume_method_of_discs
from echoseg.video import write_avi
from training.data.scanner import (
    EcgTrace,
    Sector,
    cropped_sector,
    draw_furniture,
    scanner_sector,
    static_furniture,
)
from training.data.synthetic import (
    assign_splits,
    contraction_curve,
    echonet_tracing_order,
    traced_frames,
    write_tables,
)

logger = logging.getLogger(__name__)

A4C_SIZES = ((112, 112), (240, 320), (480, 640), (600, 800), (708, 1016))  # (height, width)
CROPPED_MAX = 128  # a square frame this small is an EchoNet-style crop of the fan: no furniture
NUM_CHORDS = 20
FPS_CHOICES = (30.0, 40.0, 50.0, 60.0)


@dataclass
class Anatomy:
    """End-diastolic shape of one heart (mm) and its contraction."""

    lv_length: float
    lv_septal: float  # end-diastolic half widths of the cavity
    lv_lateral: float
    widest: float
    roundness: float
    taper: float
    wall: float  # lateral wall thickness
    septum: float  # interventricular septum thickness
    shorten: float
    narrow: float
    rv_apex: float  # u of the RV apex, as a fraction of the LV length
    rv_width: float
    rv_wall: float
    rv_narrow: float
    tv_offset: float  # tricuspid annulus this much nearer the apex than the mitral annulus
    tapse: float  # tricuspid annular excursion towards the apex at full contraction
    la_length: float
    la_width: float
    ra_length: float
    ra_width: float
    atrial_wall: float
    mv_anterior: float  # leaflet lengths
    mv_posterior: float
    tv_length: float
    leaflet: float  # leaflet thickness
    pericardium: float
    aorta: float  # radius of the descending aorta (0: not in view)
    papillary: float  # length of the LV papillary muscle seen in the view (0: not seen)
    trabeculae: float  # depth of the trabeculated layer inside the LV endocardial border
    moderator: bool  # the RV's moderator band is in view


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    ef = rng.uniform(0.2, 0.75)
    shorten = rng.uniform(0.06, 0.18)
    length = rng.uniform(68.0, 100.0)
    half = length * rng.uniform(0.24, 0.31)
    asym = rng.uniform(-0.1, 0.1)
    return Anatomy(
        lv_length=length,
        lv_septal=half * (1 - asym),
        lv_lateral=half * (1 + asym),
        widest=rng.uniform(0.55, 0.75),
        roundness=rng.uniform(0.5, 0.75),
        taper=rng.uniform(0.08, 0.22),
        wall=rng.uniform(7.0, 12.0),
        septum=rng.uniform(7.0, 13.0),
        shorten=shorten,
        narrow=1.0 - math.sqrt((1.0 - ef) / (1.0 - shorten)),
        rv_apex=rng.uniform(0.18, 0.4),
        rv_width=half * rng.uniform(0.8, 1.3),
        rv_wall=rng.uniform(3.0, 5.5),
        rv_narrow=rng.uniform(0.15, 0.35),
        tv_offset=rng.uniform(3.0, 10.0),
        tapse=rng.uniform(8.0, 22.0),
        la_length=rng.uniform(32.0, 55.0),
        la_width=rng.uniform(16.0, 24.0),
        ra_length=rng.uniform(30.0, 50.0),
        ra_width=rng.uniform(14.0, 22.0),
        atrial_wall=rng.uniform(1.5, 3.0),
        mv_anterior=rng.uniform(0.45, 0.6),
        mv_posterior=rng.uniform(0.3, 0.42),
        tv_length=rng.uniform(0.4, 0.55),
        leaflet=rng.uniform(1.2, 2.6),
        pericardium=rng.uniform(1.5, 3.5),
        aorta=rng.uniform(7.0, 11.0) if rng.random() < 0.5 else 0.0,
        papillary=rng.uniform(8.0, 16.0) if rng.random() < 0.6 else 0.0,
        trabeculae=rng.uniform(0.0, 2.5),
        moderator=bool(rng.random() < 0.5),
    )


def _profile(s, widest: float, roundness: float, taper: float):
    """Relative half width at axial position ``s`` in [0, 1] (0 at the apex), as the simple generator."""
    s = np.clip(s, 0.0, 1.0)
    rise = np.sin(0.5 * np.pi * np.minimum(s / widest, 1.0)) ** roundness
    beyond = np.clip((s - widest) / (1.0 - widest), 0.0, 1.0)
    return rise * (1.0 - taper * beyond**2)


@dataclass
class Motion:
    """Per-frame state, ``(T,)`` arrays: the heart's shape and its pose under the probe (mm, radians)."""

    contraction: np.ndarray
    length: np.ndarray
    septal: np.ndarray
    lateral: np.ndarray
    wall: np.ndarray
    septum: np.ndarray
    rv_width: np.ndarray
    tv_u: np.ndarray
    atria: np.ndarray  # scale of both atria
    mv_open: np.ndarray  # 0 closed .. 1 wide open
    tv_open: np.ndarray
    apex_x: np.ndarray  # LV apex in probe coordinates
    apex_y: np.ndarray
    angle: np.ndarray  # long axis from the beam's central line, positive towards +x
    flip: bool


def _valve_opening(curve: np.ndarray) -> np.ndarray:
    """Open while the ventricle fills (contraction falling), closed while it contracts."""
    rate = np.gradient(curve)
    scale = max(float(np.abs(rate).max()), 1e-6)
    opening = np.where(rate < -0.05 * scale, 1.0, np.where(rate > 0.05 * scale, 0.0, 0.6))
    opening = np.where(curve > 0.8, 0.0, opening)  # closed around end-systole
    return gaussian_filter1d(opening, 0.7)


def sample_motion(rng, a: Anatomy, curve: np.ndarray, fps: float, apex, angle, flip) -> Motion:
    t = np.arange(curve.size) / fps
    c = curve
    length = a.lv_length * (1 - a.shorten * c)
    septal, lateral = a.lv_septal * (1 - a.narrow * c), a.lv_lateral * (1 - a.narrow * c)
    ed_size = a.lv_length + a.lv_septal + a.lv_lateral
    wall_gain = ed_size / (length + septal + lateral)  # constant wall area: thicker as the cavity shrinks
    # Breathing (slow, a few mm and degrees) and probe motion (a smoothed random walk).
    period = rng.uniform(3.0, 6.0)
    phase = rng.uniform(0, 2 * np.pi)
    breath = np.sin(2 * np.pi * t / period + phase)
    walk = gaussian_filter1d(rng.standard_normal((3, curve.size)).cumsum(axis=1), 3.0, axis=1)
    walk -= walk[:, :1]
    amp = rng.uniform(0.0, 0.25, 3) * np.array([1.0, 1.0, 0.01])
    return Motion(
        contraction=c,
        length=length,
        septal=septal,
        lateral=lateral,
        wall=a.wall * wall_gain,
        septum=a.septum * wall_gain,
        rv_width=a.rv_width * (1 - a.rv_narrow * c),
        tv_u=a.lv_length - a.tv_offset - a.tapse * np.clip(c, 0, 1.2),
        atria=1 + rng.uniform(0.05, 0.15) * c,
        mv_open=_valve_opening(c),
        tv_open=_valve_opening(c),
        apex_x=apex[0] + rng.uniform(0, 4.0) * breath + amp[0] * walk[0],
        apex_y=apex[1] + rng.uniform(0, 4.0) * np.cos(2 * np.pi * t / period + phase) + amp[1] * walk[1],
        angle=angle + math.radians(rng.uniform(0, 3.0)) * breath + amp[2] * walk[2],
        flip=flip,
    )


def heart_coords(x, y, m: Motion, t: int):
    """Probe coordinates (mm) -> heart coordinates ``(u, v)`` at frame ``t``."""
    if m.flip:
        x = -x
    dx, dy = x - np.float32(m.apex_x[t]), y - np.float32(m.apex_y[t])
    s, c = np.float32(math.sin(m.angle[t])), np.float32(math.cos(m.angle[t]))
    return dx * s + dy * c, dx * c - dy * s


def probe_coords(u, v, m: Motion, t: int):
    """Heart coordinates -> probe coordinates (mm) at frame ``t``."""
    s, c = math.sin(m.angle[t]), math.cos(m.angle[t])
    x = m.apex_x[t] + u * s + v * c
    y = m.apex_y[t] + u * c - v * s
    return (-x if m.flip else x), y


def lv_inside(u, v, a: Anatomy, m: Motion, t: int):
    """The LV cavity at frame ``t``: inside the endocardium, closed by the straight annulus line."""
    length = m.length[t]
    f = _profile(u / length, a.widest, a.roundness, a.taper)
    return (u >= 0) & (u <= length) & (v >= -m.septal[t] * f) & (v <= m.lateral[t] * f)


# -- tissue: echogenicity on the polar grid ------------------------------------------------------------


@dataclass
class Tissue:
    """Per-clip echogenicity of each tissue (relative backscatter amplitude)."""

    blood: float
    myocardium: float
    pericardium: float
    valve: float
    annulus: float
    background: float
    atrial_wall: float


def sample_tissue(rng) -> Tissue:
    myo = rng.uniform(0.25, 0.6)
    return Tissue(
        blood=rng.uniform(0.002, 0.02),
        myocardium=myo,
        pericardium=rng.uniform(1.0, 2.2),
        valve=rng.uniform(0.6, 1.4),
        annulus=rng.uniform(0.7, 1.5),
        background=rng.uniform(0.04, 0.3),
        atrial_wall=myo * rng.uniform(0.3, 0.9),
    )


def _ellipse_sd(u, v, cu, cv, ru, rv):
    """Approximate signed distance (mm) to an ellipse: negative inside."""
    q = np.sqrt(((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2)
    return (q - 1.0) * min(ru, rv)


def _segment_distance(u, v, p0, p1):
    du, dv = p1[0] - p0[0], p1[1] - p0[1]
    n2 = max(du * du + dv * dv, 1e-9)
    s = np.clip(((u - p0[0]) * du + (v - p0[1]) * dv) / n2, 0.0, 1.0)
    return np.hypot(u - p0[0] - s * du, v - p0[1] - s * dv)


def _leaflets(u, v, hinge_a, hinge_b, len_a, len_b, opening):
    """Distance to two leaflets hinged at ``hinge_a``/``hinge_b``: closed they meet across the
    annulus (bowing slightly towards the atrium); open they swing towards the ventricle's apex."""
    width = hinge_b[1] - hinge_a[1]
    out = []
    for hinge, length, side in ((hinge_a, len_a, 1.0), (hinge_b, len_b, -1.0)):
        swing = opening * math.radians(75.0)  # from lying across the annulus to pointing at the apex
        du = -math.sin(swing) * length * abs(width) + (1 - opening) * 2.0
        dv = side * math.cos(swing) * length * abs(width)
        tip = (hinge[0] + du, hinge[1] + dv)
        out.append(_segment_distance(u, v, hinge, tip))
    return np.minimum(out[0], out[1])


def echogenicity(u, v, a: Anatomy, m: Motion, k: Tissue, t: int, texture) -> np.ndarray:
    """Backscatter amplitude of the tissues at heart coordinates ``(u, v)`` (any shape), frame ``t``."""
    L, sep, lat, wall, ivs = m.length[t], m.septal[t], m.lateral[t], m.wall[t], m.septum[t]
    f = _profile(u / L, a.widest, a.roundness, a.taper)
    f_out = _profile((u + 0.6 * wall) / (L + 0.6 * wall), a.widest, a.roundness, a.taper)
    base = _profile(1.0, a.widest, a.roundness, a.taper)
    e = np.full(u.shape, k.background, np.float32) * texture
    mv_sep, mv_lat = -sep * base, lat * base
    ias = mv_sep - 0.5 * ivs  # the interatrial septum continues the interventricular one
    u_rv0, tv_u = a.rv_apex * L, m.tv_u[t]
    s_rv = np.clip((u - u_rv0) / max(tv_u - u_rv0, 1.0), 0.0, 1.0)
    sep_out = -(sep * np.maximum(f, base * (u > L)) + ivs)  # the septum's RV side
    rv_w = m.rv_width[t] * np.sin(0.5 * np.pi * np.minimum(s_rv / 0.5, 1.0)) ** 0.6
    la_rv, ra_rv = a.la_width * m.atria[t], a.ra_width * m.atria[t]
    la_ru, ra_ru = 0.5 * a.la_length * m.atria[t], 0.5 * a.ra_length * m.atria[t]
    la_c = (L + 1.5 + la_ru, ias + a.atrial_wall + la_rv)
    ra_c = (tv_u + 1.5 + ra_ru, ias - a.atrial_wall - ra_rv)
    la_sd = _ellipse_sd(u, v, *la_c, la_ru, la_rv)
    ra_sd = _ellipse_sd(u, v, *ra_c, ra_ru, ra_rv)
    lv_f = np.maximum(f_out, 0.35)

    def outline(d: float) -> np.ndarray:
        """The whole heart (myocardium and atrial walls) grown by ``d`` mm."""
        lv = (
            (u >= -0.6 * wall - d)
            & (u <= L)
            & (v >= -(sep * f + ivs * lv_f) - d)
            & (v <= lat * f + wall * lv_f + d)
        )
        rv = (
            (u >= u_rv0 - a.rv_wall - d)
            & (u <= tv_u)
            & (v <= sep_out + 0.5)
            & (v >= sep_out - rv_w - a.rv_wall - d)
        )
        return lv | rv | (la_sd < a.atrial_wall + d) | (ra_sd < a.atrial_wall + d) | orifices

    tv_sep, tv_lat = ias - 0.5 * ivs, ias - 0.5 * ivs - m.rv_width[t]
    # The atrioventricular orifices: blood runs from each atrium into its ventricle between the hinges.
    orifices = (u >= L - 1.0) & (u <= L + 1.5 + 0.4 * la_ru) & (v > mv_sep + 1.5) & (v < mv_lat - 1.5)
    orifices |= (u >= tv_u - 1.0) & (u <= tv_u + 1.5 + 0.4 * ra_ru) & (v > tv_lat + 1.5) & (v < tv_sep - 1.5)
    heart = outline(0.0)
    gap = 1.0
    shell = outline(gap + a.pericardium) & ~outline(gap)
    e[shell] = k.pericardium * texture[shell] ** 2
    e[heart] = k.myocardium * texture[heart]
    e[(la_sd >= 0) & (la_sd < a.atrial_wall) | (ra_sd >= 0) & (ra_sd < a.atrial_wall)] = k.atrial_wall
    rv_cav = (u >= u_rv0) & (u <= tv_u) & (v <= sep_out) & (v >= sep_out - rv_w)
    e[(la_sd < 0) | (ra_sd < 0) | rv_cav | orifices] = k.blood
    lv = lv_inside(u, v, a, m, t)
    e[lv] = k.blood
    # Structures inside the traced cavity (tracers draw the border outside them): trabeculae along
    # the endocardium and a papillary muscle rising from the lateral wall.
    inner = np.minimum(v + sep * f, lat * f - v)  # distance (mm, roughly) from the side walls
    trabecular = lv & (inner < a.trabeculae) & (texture > 1.1)
    e[trabecular] = 0.6 * k.myocardium * texture[trabecular]
    if a.papillary > 0:
        pu, pv = 0.62 * L, lat * _profile(0.62, a.widest, a.roundness, a.taper) - 0.5 * wall
        papillary = lv & (_ellipse_sd(u, v, pu, pv, 0.5 * a.papillary, 0.25 * wall) < 0)
        e[papillary] = k.myocardium
    if a.moderator:  # a band across the RV towards its apex
        mu = u_rv0 + 0.3 * (tv_u - u_rv0)
        band = rv_cav & (np.abs(u - mu - 0.3 * (v - sep_out)) < 1.5)
        e[band] = 0.8 * k.myocardium
    if a.aorta > 0:  # the descending aorta behind the left atrium
        ao = _ellipse_sd(u, v, L + 2 * la_ru + a.aorta + 6.0, la_c[1] + 0.6 * la_rv, a.aorta, a.aorta)
        e[(ao >= 0) & (ao < 2.0)] = k.annulus
        e[ao < 0] = k.blood
    for hu, hv in ((L, mv_lat), (L, mv_sep), (tv_u, tv_sep), (tv_u, tv_lat)):  # fibrous annuli, crux
        e[np.hypot(u - hu, v - hv) < 2.5] = k.annulus
    # Valves.
    mv = _leaflets(u, v, (L, mv_sep), (L, mv_lat), a.mv_anterior, a.mv_posterior, float(m.mv_open[t]))
    tv = _leaflets(u, v, (tv_u, tv_sep), (tv_u, tv_lat), a.tv_length, a.tv_length, float(m.tv_open[t]))
    e[np.minimum(mv, tv) < 0.5 * a.leaflet] = k.valve
    return e


# -- acoustics --------------------------------------------------------------------------------------


@dataclass
class Acoustics:
    """Per-clip imaging parameters (the domain randomisation of the scanner and the patient)."""

    axial_mm: float  # axial PSF (Gaussian pulse envelope) standard deviation
    lateral_rad: float  # lateral PSF at the focus, as an angle
    focus_mm: float
    divergence: float  # growth of the lateral PSF away from the focus
    density: float  # fraction of resolution cells holding a scatterer
    persistence: float  # speckle correlation between frames
    attenuation: float  # net depth loss after TGC (nepers over the whole depth)
    tgc: np.ndarray  # (5,) gain (dB) at evenly spaced depths
    gain_db: float
    dynamic_range_db: float
    gamma: float
    clutter: float  # near-field haze amplitude
    clutter_depth: float  # its decay depth (mm)
    reverb: float  # reverberation band amplitude
    reverb_step: float  # spacing of the bands (mm)
    lateral_dropout: float  # lateral wall dropout (0 none .. 1 full)
    shadow: float  # rib shadow depth (0 none)
    shadow_side: float
    edge_falloff: float  # darker beams at the sector's edges
    smoothing: float  # display smoothing (pixels)
    noise: float  # receiver noise, amplified with depth by the TGC


def sample_acoustics(rng) -> Acoustics:
    return Acoustics(
        axial_mm=rng.uniform(0.35, 0.9),
        lateral_rad=math.radians(rng.uniform(0.5, 1.2)),
        focus_mm=rng.uniform(50.0, 110.0),
        divergence=rng.uniform(0.5, 2.0),
        density=rng.uniform(0.3, 1.0),
        persistence=rng.uniform(0.8, 0.97),
        attenuation=rng.uniform(0.0, 1.5),
        tgc=rng.uniform(-4.0, 4.0, 5),
        gain_db=rng.uniform(-6.0, 6.0),
        dynamic_range_db=rng.uniform(40.0, 65.0),
        gamma=rng.uniform(0.8, 1.4),
        clutter=rng.uniform(0.05, 0.6),
        clutter_depth=rng.uniform(8.0, 30.0),
        reverb=rng.uniform(0.0, 0.4),
        reverb_step=rng.uniform(8.0, 18.0),
        lateral_dropout=rng.uniform(0.0, 0.9),
        shadow=rng.uniform(0.3, 0.9) if rng.random() < 0.35 else 0.0,
        shadow_side=float(rng.choice([-1.0, 1.0])),
        edge_falloff=rng.uniform(0.0, 0.6),
        smoothing=rng.uniform(0.0, 0.8),
        noise=10 ** rng.uniform(-3.5, -2.2),
    )


@dataclass
class PolarGrid:
    depth_mm: float
    half_angle: float
    nr: int
    nt: int

    @property
    def r(self) -> np.ndarray:
        return (np.arange(self.nr, dtype=np.float32) + 0.5) * self.dr

    @property
    def dr(self) -> float:
        return self.depth_mm / self.nr

    @property
    def theta(self) -> np.ndarray:
        return np.linspace(-self.half_angle, self.half_angle, self.nt, dtype=np.float32)

    @property
    def dtheta(self) -> float:
        return 2 * self.half_angle / (self.nt - 1)

    def xy(self) -> tuple[np.ndarray, np.ndarray]:
        r, th = self.r[:, None], self.theta[None, :]
        return r * np.sin(th), r * np.cos(th)  # (nr, nt)


def _lateral_psf(iq: np.ndarray, grid: PolarGrid, ac: Acoustics) -> np.ndarray:
    """Lateral Gaussian blur whose width (an angle) grows away from the focus: blend of a few widths."""
    r = grid.r
    width = ac.lateral_rad * (1 + ac.divergence * ((r - ac.focus_mm) / grid.depth_mm) ** 2)
    width += 0.8 / np.maximum(r, 5.0) * (r < 20)  # wider in the near field
    sigmas = np.asarray(width / grid.dtheta)  # (nr,) in beam lines
    nodes = np.geomspace(max(sigmas.min(), 0.3), max(sigmas.max(), 0.31), 4)
    blurred = [gaussian_filter1d(iq, s, axis=-1, mode="nearest") for s in nodes]
    pos = np.interp(np.log(sigmas), np.log(nodes), np.arange(len(nodes)))
    lo = np.clip(np.floor(pos).astype(int), 0, len(nodes) - 2)
    w = (pos - lo).astype(np.float32)[:, None]
    out = np.empty_like(iq)
    for i in range(len(nodes) - 1):
        sel = lo == i
        out[..., sel, :] = (1 - w[sel]) * blurred[i][..., sel, :] + w[sel] * blurred[i + 1][..., sel, :]
    return out


def _scatterers(rng, shape, density):
    z = rng.standard_normal((*shape, 2), dtype=np.float32)
    z = z[..., 0] + 1j * z[..., 1]
    if density < 1.0:
        z *= (rng.random(shape) < density) / math.sqrt(density)
    return z.astype(np.complex64)


class HeartField:
    """Scatterers fixed in tissue: a complex field on a fine grid of the heart's reference frame."""

    def __init__(self, rng, extent_mm: float, cell_mm: float, density: float):
        self.n = int(2 * extent_mm / cell_mm)
        self.extent, self.cell = extent_mm, cell_mm
        self.z = _scatterers(rng, (self.n, self.n), density)
        tex = gaussian_filter(rng.standard_normal((self.n, self.n)).astype(np.float32), 3.0 / cell_mm)
        self.texture = np.exp(0.35 * tex / max(tex.std(), 1e-6)).astype(np.float32)

    def sample(self, u, v):
        i = np.clip(((u + self.extent) / self.cell).astype(np.int32), 0, self.n - 1)
        j = np.clip(((v + self.extent) / self.cell).astype(np.int32), 0, self.n - 1)
        return self.z[i, j], self.texture[i, j]


def beamform(rng, a, m, k, ac, grid: PolarGrid) -> np.ndarray:
    """Log-compressed B-mode in polar coordinates, ``(T, nr, nt)`` float32 in [0, 1]."""
    frames = m.contraction.size
    x, y = grid.xy()
    r, theta = grid.r[:, None], grid.theta[None, :]
    field = HeartField(rng, extent_mm=grid.depth_mm * 1.1, cell_mm=0.6, density=ac.density)
    probe_z = _scatterers(rng, (grid.nr, grid.nt), ac.density)
    # Probe-fixed near field: chest-wall clutter and reverberation bands at multiples of a reflector.
    near = ac.clutter * np.exp(-r / ac.clutter_depth)
    bands = sum(
        ac.reverb * 0.6**n * np.exp(-0.5 * ((r - n * ac.reverb_step) / 1.2) ** 2) for n in range(1, 5)
    )
    near = (near + bands * (np.abs(theta) < grid.half_angle * rng.uniform(0.3, 0.9))).astype(np.float32)
    near *= rng.uniform(0.6, 1.4, (1, grid.nt)).astype(np.float32) ** 0.5
    # Beam-wise losses: rib shadow at one edge, weaker edge beams.
    beams = 1 - ac.edge_falloff * (theta / grid.half_angle) ** 4
    if ac.shadow:
        edge = 0.5 * (1 + np.tanh((ac.shadow_side * theta / grid.half_angle - 0.6) / 0.08))
        beams = beams * (1 - ac.shadow * edge * (r > 15.0))
    # Lateral wall dropout: beams through the LV lateral wall lose signal around its depth.
    mid_u = 0.55 * m.length[0]
    wx, wy = probe_coords(mid_u, m.lateral[0] + 0.5 * m.wall[0], m, 0)
    w_theta, w_r = math.atan2(wx, wy), math.hypot(wx, wy)
    dropout = 1 - ac.lateral_dropout * np.exp(-0.5 * ((theta - w_theta) / math.radians(6.0)) ** 2) * np.exp(
        -0.5 * ((r - w_r) / (0.25 * m.length[0])) ** 2
    )
    fresh = math.sqrt(1 - ac.persistence**2)
    iq = np.empty((frames, grid.nr, grid.nt), np.complex64)
    for t in range(frames):
        u, v = heart_coords(x, y, m, t)
        # Speckle follows the contracting wall: sample the field at reference (end-diastolic) coordinates.
        lv = np.clip((m.length[t] + 15.0 - u) / 15.0, 0.0, 1.0)
        u_ref = u * (1 + (a.lv_length / m.length[t] - 1) * lv)
        v_ref = v * (1 + ((a.lv_septal + a.lv_lateral) / (m.septal[t] + m.lateral[t]) - 1) * lv)
        z, texture = field.sample(u_ref, v_ref)
        z = ac.persistence * z + fresh * _scatterers(rng, z.shape, ac.density)
        e = echogenicity(u, v, a, m, k, t, texture)
        iq[t] = (z * e * dropout + probe_z * near) * beams
    iq = gaussian_filter1d(iq.real, ac.axial_mm / grid.dr, axis=1) + 1j * gaussian_filter1d(
        iq.imag, ac.axial_mm / grid.dr, axis=1
    )
    iq = _lateral_psf(iq.real.astype(np.float32), grid, ac) + 1j * _lateral_psf(
        iq.imag.astype(np.float32), grid, ac
    )
    depth = grid.r / grid.depth_mm
    noise = (ac.noise * np.exp(1.5 * depth)).astype(np.float32)[:, None]
    iq += noise * _scatterers(rng, iq.shape, 1.0)
    envelope = np.abs(iq).astype(np.float32)  # (T, nr, nt)
    # Attenuation left over after TGC, and the TGC's own wiggles (dB at 5 depths).
    tgc_db = np.interp(depth, np.linspace(0, 1, ac.tgc.size), ac.tgc)
    envelope *= (np.exp(-ac.attenuation * depth) * 10 ** (tgc_db / 20)).astype(np.float32)[:, None]
    db = 20 * np.log10(envelope + 1e-6)
    ref = np.percentile(db[:, ::4, ::2], 99.5)
    img = (db - ref + ac.dynamic_range_db + ac.gain_db) / ac.dynamic_range_db
    return np.clip(img, 0, 1) ** ac.gamma


# -- the clip ---------------------------------------------------------------------------------------


@dataclass
class A4CClip:
    """One rendered clip and its ground truth.

    ``frames`` (T, H, W) uint8 (or (T, H, W, 3) RGB when rendered in colour); ``masks`` (T, H, W)
    uint8 {0, 1}: the LV cavity; ``fan`` (H, W) bool: the imaged sector; ``region`` the fan's
    bounding box ``(x0, y0, x1, y1)`` in pixels, inclusive (DICOM RegionLocationMinX0 ... MaxY1);
    ``spacing_mm`` (row, column) pixel size; ``apex_px`` the transducer position (column, row) in
    pixels (DICOM ReferencePixelX0/Y0 relative to the region's corner after subtracting x0/y0).
    """

    frames: np.ndarray
    masks: np.ndarray
    fan: np.ndarray
    region: tuple[int, int, int, int]
    spacing_mm: tuple[float, float]
    apex_px: tuple[float, float]
    depth_mm: float
    near_mm: float  # the fan starts this deep (its top is an arc of this radius)
    sector_angle_deg: float
    fps: float
    ed: int
    es: int
    edv: float  # mL
    esv: float
    tracings: dict[int, np.ndarray]  # frame -> (1 + NUM_CHORDS, 4) X1, Y1, X2, Y2
    furniture: bool
    cropped: bool
    flip: bool
    # (T, 2, 2): per frame the mitral annulus, its septal and lateral hinge points (column, row) in
    # pixels; the true cavity is closed by the straight line between them (the atrium lies beyond)
    annulus_px: np.ndarray | None = None
    mv_open: np.ndarray | None = None  # (T,): the mitral valve's opening, 0 closed .. 1 wide open

    @property
    def ef(self) -> float:
        return ejection_fraction(self.edv, self.esv)

    def gray(self) -> np.ndarray:
        """``(T, H, W) uint8`` frames (the luma of colour frames)."""
        return self.frames if self.frames.ndim == 3 else _luma(self.frames)

    def sidecar(self) -> dict:
        return {
            **clip_sidecar(self),
            "physical_delta_cm": {"x": self.spacing_mm[1] / 10, "y": self.spacing_mm[0] / 10},
            "transducer_px": {"x": self.apex_px[0], "y": self.apex_px[1]},
            "depth_mm": self.depth_mm,
            "near_mm": self.near_mm,
            "sector_angle_deg": self.sector_angle_deg,
            "furniture": self.furniture,
            "cropped": self.cropped,
            "lv_on_screen_right": not self.flip,
        }


def clip_sidecar(clip) -> dict:
    """What every rendered clip's sidecar says (an :class:`A4CClip` or a zoo clip): its size, rate,
    ED/ES, the region a DICOM would declare (inclusive), the pixel size and the true volumes and EF."""
    x0, y0, x1, y1 = clip.region
    return {
        "height": int(clip.masks.shape[1]),
        "width": int(clip.masks.shape[2]),
        "frames": int(clip.masks.shape[0]),
        "fps": clip.fps,
        "ed": clip.ed,
        "es": clip.es,
        "region": {"x0": x0, "y0": y0, "x1": x1, "y1": y1, "inclusive": True},
        "spacing_mm": {"row": clip.spacing_mm[0], "column": clip.spacing_mm[1]},
        "edv_ml": clip.edv,
        "esv_ml": clip.esv,
        "ef": clip.ef,
    }


def _rng(rng_or_seed) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    return np.random.default_rng(rng_or_seed)


_LENGTHS = (  # the Anatomy fields that are lengths (scaled together)
    "lv_length", "lv_septal", "lv_lateral", "wall", "septum", "rv_width", "rv_wall", "tv_offset", "tapse",
    "la_length", "la_width", "ra_length", "ra_width", "atrial_wall", "leaflet", "pericardium", "aorta",
    "papillary", "trabeculae",
)  # fmt: skip


def _place_heart(rng, a: Anatomy, depth_mm: float, half_angle: float):
    """LV apex (probe coordinates) and long-axis angle such that the whole LV lies in the fan; a heart
    that does not fit is scaled down (all its lengths) a little more at each try."""
    for attempt in range(80):
        scale = 0.98 ** max(0, attempt - 10)
        tilt = 1.0 if attempt < 10 else 0.5
        r_apex = rng.uniform(12.0, 35.0)
        th_apex = math.radians(rng.uniform(-4.0, 10.0) * tilt)
        angle = math.radians(rng.uniform(-2.0, 22.0) * tilt)
        apex = (r_apex * math.sin(th_apex), r_apex * math.cos(th_apex))
        s = np.linspace(0, 1, 40)
        f = _profile(s, a.widest, a.roundness, a.taper)
        u = np.concatenate([s, s]) * a.lv_length * scale
        v = np.concatenate([-(a.lv_septal + a.septum) * f, (a.lv_lateral + a.wall) * f]) * scale
        x = apex[0] + u * math.sin(angle) + v * math.cos(angle)
        y = apex[1] + u * math.cos(angle) - v * math.sin(angle)
        r, th = np.hypot(x, y), np.arctan2(x, y)
        if r.max() < depth_mm - 8.0 and np.abs(th).max() < half_angle - math.radians(4.0):
            for name in _LENGTHS:
                setattr(a, name, getattr(a, name) * scale)
            return apex, angle
    raise RuntimeError("could not place the heart inside the sector")  # pragma: no cover


def _masks(sector: Sector, fan: np.ndarray, a: Anatomy, m: Motion) -> np.ndarray:
    """True LV cavity at the output's pixel centres, ``(T, H, W) uint8``, computed in its bounding box."""
    frames = m.contraction.size
    u = np.concatenate([np.linspace(0, 1, 30)] * 2)
    v = np.concatenate([-np.ones(30), np.ones(30)]) * _profile(u, a.widest, a.roundness, a.taper)
    cols, rows = [], []
    for t in range(frames):
        side = np.where(v < 0, m.septal[t], m.lateral[t])
        x, y = probe_coords(u * m.length[t], v * side, m, t)
        c, r = sector.to_pixels(x, y)
        cols.append(c)
        rows.append(r)
    c0, c1 = max(int(np.min(cols)) - 2, 0), min(int(np.max(cols)) + 3, sector.width)
    r0, r1 = max(int(np.min(rows)) - 2, 0), min(int(np.max(rows)) + 3, sector.height)
    rr, cc = np.mgrid[r0:r1, c0:c1].astype(np.float32)
    x, y = sector.physical(rr, cc)
    masks = np.zeros((frames, sector.height, sector.width), np.uint8)
    for t in range(frames):
        hu, hv = heart_coords(x, y, m, t)
        masks[t, r0:r1, c0:c1] = lv_inside(hu, hv, a, m, t) & fan[r0:r1, c0:c1]
    return masks


def _annulus(sector: Sector, a: Anatomy, m: Motion) -> np.ndarray:
    """``(T, 2, 2)``: the mitral annulus's septal and lateral ends (column, row) in pixels, per frame."""
    f = float(_profile(np.array([1.0]), a.widest, a.roundness, a.taper)[0])
    ends = []
    for t in range(m.contraction.size):
        x, y = probe_coords(m.length[t], np.array([-m.septal[t] * f, m.lateral[t] * f]), m, t)
        ends.append(np.stack(sector.to_pixels(x, y), axis=1))
    return np.asarray(ends, np.float32)


def _tracing(sector: Sector, a: Anatomy, m: Motion, t: int) -> np.ndarray:
    """EchoNet-style tracing of frame ``t`` in pixels: the long axis, then chords apex -> base."""
    s = 1.0 - np.cos(0.5 * np.pi * np.arange(NUM_CHORDS) / (NUM_CHORDS - 1))
    s = np.minimum(s, 1.0 - 1e-6)
    f = _profile(s, a.widest, a.roundness, a.taper)
    u = s * m.length[t]
    pts = []
    for side in (-m.septal[t] * f, m.lateral[t] * f):
        x, y = probe_coords(u, side, m, t)
        pts.append(sector.to_pixels(x, y))
    (x1, y1), (x2, y2) = pts
    ax, ay = sector.to_pixels(*probe_coords(0.0, 0.0, m, t))
    bx, by = sector.to_pixels(*probe_coords(m.length[t], 0.5 * (m.lateral[t] - m.septal[t]) * f[-1], m, t))
    return np.concatenate([[[ax, ay, bx, by]], np.stack([x1, y1, x2, y2], axis=1)], axis=0)


def render_a4c_clip(
    rng_or_seed,
    frames: int = 32,
    height: int = 480,
    width: int = 640,
    furniture: bool = True,
    color: bool = False,
    cropped: bool | None = None,
    fps: float | None = None,
    sector=None,
    acoustics=None,
    depth_mm: float | None = None,
) -> A4CClip:
    """Render one apical four-chamber clip with its true masks and the fan's geometry.

    ``cropped`` (default: a square frame of at most ``CROPPED_MAX`` pixels) renders the fan's
    bounding box stretched over the whole frame, as EchoNet-Dynamic's 112x112 videos are, without
    furniture. ``color`` returns ``(T, H, W, 3)`` RGB frames (furniture in colour, the image in grey
    with a slight tint); the masks are always ``(T, H, W)``.

    Scanner variations (``training.data.zoo``) enter through two hooks: ``sector`` (a function
    ``(rng, height, width, depth_mm) -> Sector`` replacing the drawn placement) and ``acoustics``
    (a function ``Acoustics -> Acoustics`` applied to the drawn imaging parameters); ``depth_mm``
    fixes the image depth (default: drawn from the heart's size, 12-18 cm).
    """
    if frames < 4:
        raise ValueError(f"frames must be at least 4, got {frames}")
    if min(height, width) < 32:
        raise ValueError(f"height and width must be at least 32 pixels, got {height}x{width}")
    rng = _rng(rng_or_seed)
    seeds = rng.integers(0, 2**63, size=4)  # anatomy/motion, imaging, speckle, furniture: independent
    geo_rng, img_rng, speckle_rng, furn_rng = (np.random.default_rng(s) for s in seeds)
    cropped = (height == width and height <= CROPPED_MAX) if cropped is None else cropped
    furniture = furniture and not cropped
    fps = float(fps or geo_rng.choice(FPS_CHOICES))

    anatomy = sample_anatomy(geo_rng)
    drawn_depth = anatomy.lv_length + anatomy.la_length + geo_rng.uniform(20.0, 50.0)
    drawn_depth = float(np.clip(drawn_depth, 120.0, 180.0))  # 12-18 cm, the atria sometimes cut off
    depth_mm = drawn_depth if depth_mm is None else float(depth_mm)
    make_sector = sector or (cropped_sector if cropped else scanner_sector)
    sector = make_sector(img_rng, height, width, depth_mm)
    apex, angle = _place_heart(geo_rng, anatomy, depth_mm, sector.half_angle)
    curve, starts = contraction_curve(geo_rng, frames, fps)
    flip = bool(geo_rng.random() < 0.25)
    motion = sample_motion(geo_rng, anatomy, curve, fps, apex, angle, flip)
    tissue, drawn = sample_tissue(img_rng), sample_acoustics(img_rng)
    acoustics = acoustics(drawn) if acoustics is not None else drawn

    # Polar grid: about 1.5 output pixels per depth sample and 4 per beam line at the deepest arc.
    radius_px = depth_mm / sector.spacing_y
    nr = int(np.clip(radius_px / 1.5, 160, 384))
    nt = int(np.clip(2 * sector.half_angle * radius_px / 3.5, 96, 200))
    grid = PolarGrid(depth_mm, sector.half_angle, nr, nt)
    polar = beamform(speckle_rng, anatomy, motion, tissue, acoustics, grid)  # (T, nr, nt)

    fan = sector.fan()
    masks = _masks(sector, fan, anatomy, motion)
    ed, es = traced_frames(curve, starts, geo_rng)
    spacing = (sector.spacing_y, sector.spacing_x)
    edv = volume_method_of_discs(masks[ed], spacing) / 1000.0
    esv = volume_method_of_discs(masks[es], spacing) / 1000.0

    tint = (1 + img_rng.uniform(-0.06, 0.06, 3)).astype(np.float32)  # scanners' grey maps are tinted
    layer = ecg = keep_out = None
    if furniture:
        period = float(np.median(np.diff(starts))) / fps if len(starts) > 1 else 1.0
        layer = static_furniture(furn_rng, sector, color)
        ecg = EcgTrace(furn_rng, sector, fan, color, np.asarray(starts) / fps, period, fps)
        keep_out = binary_dilation(fan, iterations=2)
    out = np.empty((frames, height, width, 3) if color else (frames, height, width), np.uint8)
    for t, image in enumerate(_scan_convert(polar, sector, fan, grid, acoustics.smoothing)):
        if color:
            image = image[..., None] * tint  # (H, W) -> (H, W, 3)
        if furniture:
            draw_furniture(image, t, layer, keep_out, ecg)
        out[t] = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return A4CClip(
        frames=out,
        masks=masks,
        fan=fan,
        region=sector.region(),
        near_mm=sector.near_mm,
        spacing_mm=spacing,
        apex_px=(sector.apex_x, sector.apex_y),
        depth_mm=depth_mm,
        sector_angle_deg=math.degrees(2 * sector.half_angle),
        fps=fps,
        ed=ed,
        es=es,
        edv=edv,
        esv=esv,
        tracings={es: _tracing(sector, anatomy, motion, es), ed: _tracing(sector, anatomy, motion, ed)},
        furniture=furniture,
        cropped=cropped,
        flip=flip,
        annulus_px=_annulus(sector, anatomy, motion),
        mv_open=motion.mv_open.astype(np.float32),
    )


def _luma(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3) uint8`` RGB -> ``(...) uint8`` luma (ITU-R BT.601, as JPEG's Y)."""
    luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8)


def _scan_convert(polar: np.ndarray, sector: Sector, fan: np.ndarray, grid: PolarGrid, smoothing: float):
    """Polar B-mode ``(T, nr, nt)`` -> one ``(H, W)`` float32 frame at a time (bilinear; 0 outside).

    ``smoothing`` (output pixels) is the display's speckle smoothing, applied on the polar grid.
    """
    rows, cols = np.nonzero(fan)
    x, y = sector.physical(rows.astype(np.float32), cols.astype(np.float32))
    ri = np.hypot(x, y) / grid.dr - 0.5
    ti = (np.arctan2(x, y) + grid.half_angle) / grid.dtheta
    coords = np.stack([ri, ti])
    if smoothing > 0.05:
        pixels_per_line = np.hypot(x, y).max() / sector.spacing_x * grid.dtheta
        sigma = (0, smoothing * sector.spacing_y / grid.dr, smoothing / max(pixels_per_line, 1.0))
        polar = gaussian_filter(polar, sigma)
    for t in range(polar.shape[0]):
        out = np.zeros((sector.height, sector.width), np.float32)
        out[rows, cols] = map_coordinates(polar[t], coords, order=1, mode="nearest")
        yield out


# -- the dataset -------------------------------------------------------------------------------------


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """``'112x112,240x320'`` -> ``((112, 112), (240, 320))`` as (height, width)."""
    sizes = []
    for part in text.split(","):
        try:
            h, w = (int(x) for x in part.lower().strip().split("x"))
        except ValueError:
            raise ValueError(f"sizes must look like 112x112,240x320 (HEIGHTxWIDTH), got {part!r}") from None
        if min(h, w) < 32:
            raise ValueError(f"frame size {h}x{w} is below 32 pixels")
        sizes.append((h, w))
    if not sizes:
        raise ValueError("no frame size given")
    return tuple(sizes)


def write_clip(out: Path, name: str, video: np.ndarray, clip, frames: int, split: str) -> tuple[list, list]:
    """Write one rendered clip into a dataset folder (``Videos/<name>.avi`` from ``video``, its masks
    and sidecar); return its ``FileList.csv`` row and ``VolumeTracings.csv`` rows. ``clip`` is any
    rendered clip with masks, tracings, ED/ES, volumes and a sidecar (A4C, zoo and site clips)."""
    write_avi(out / "Videos" / f"{name}.avi", video, fps=clip.fps)
    np.save(out / "Masks" / f"{name}.npy", clip.masks)
    (out / "Meta" / f"{name}.json").write_text(
        json.dumps({"file": f"{name}.avi", **clip.sidecar()}, indent=1)
    )
    height, width = video.shape[1:3]
    row = [
        name,
        f"{clip.ef:.4f}",
        f"{clip.esv:.4f}",
        f"{clip.edv:.4f}",
        height,
        width,
        f"{clip.fps:g}",
        frames,
        split,
    ]
    tracings = [
        [f"{name}.avi", *(f"{v:.4f}" for v in r), t]
        for t in echonet_tracing_order(clip.ed, clip.es)
        for r in clip.tracings[t]
    ]
    return row, tracings


def dataset_folders(out_dir) -> Path:
    """``out_dir`` with its ``Videos/``, ``Masks/`` and ``Meta/`` folders (created if needed)."""
    out = Path(out_dir)
    for sub in ("Videos", "Masks", "Meta"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    return out


def run_tasks(task, tasks: list, workers: int) -> list:
    """``[task(t) for t in tasks]``, in ``workers`` processes when more than one (order kept)."""
    if workers == 1:
        return [task(t) for t in tasks]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(task, tasks))


def _clip_task(args) -> tuple[list, list]:
    """Render clip ``i``, write its video, masks and sidecar; return its FileList and tracing rows."""
    out, seed, i, frames, sizes, split = args

    rng = np.random.default_rng([seed, i, 12])
    height, width = sizes[int(rng.integers(len(sizes)))]
    name = f"0XA4C{seed:06X}{i:07X}"
    clip = render_a4c_clip(rng, frames=frames, height=height, width=width, furniture=rng.random() < 0.9)
    return write_clip(out, name, clip.gray(), clip, frames, split)


def generate_a4c(
    out_dir,
    videos: int,
    frames: int = 48,
    sizes=A4C_SIZES,
    seed: int = 0,
    workers: int = 1,
    append: bool = False,
) -> Path:
    """Write ``videos`` A4C clips in the EchoNet-Dynamic layout under ``out_dir``; returns it.

    Besides ``Videos/``, ``FileList.csv`` (each clip's own FrameHeight/FrameWidth and FPS) and
    ``VolumeTracings.csv`` (ES rows, then ED rows), ``Masks/<FileName>.npy`` holds the true
    ``(T, H, W)`` masks at the frame's size and ``Meta/<FileName>.json`` the fan's region, pixel
    spacing, transducer position and the clip's ED/ES. Clip ``i`` depends only on ``seed`` and
    ``i`` (not on ``workers``); each clip's size is drawn from ``sizes``. ``append`` adds the clips
    to a dataset folder's tables instead of replacing them (see ``write_tables``).
    """
    if videos < 1:
        raise ValueError(f"videos must be at least 1, got {videos}")
    if frames < 8:
        raise ValueError(f"frames must be at least 8, got {frames}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    sizes = parse_sizes(sizes) if isinstance(sizes, str) else tuple(sizes)
    out = dataset_folders(out_dir)
    splits = assign_splits(videos, np.random.default_rng([seed, 2**31]))
    tasks = [(out, seed, i, frames, sizes, splits[i]) for i in range(videos)]
    results = run_tasks(_clip_task, tasks, workers)
    write_tables(out, [row for row, _ in results], [r for _, rows in results for r in rows], append)
    logger.info("wrote %d A4C clips (%d frames, sizes %s) to %s", videos, frames, sizes, out)
    return out
