"""A simulated "new site": the A4C simulator imaged the way a scanner unlike the training recipe would.

Adaptation (``echoseg adapt``) needs a target domain whose labels exist only to score it. This
module renders one: the A4C simulator (:func:`training.data.a4c.render_a4c_clip`) through its
``sector`` and ``acoustics`` hooks, with imaging parameters outside both the simulator's drawn
ranges and the scanner zoo's layouts (``training.data.zoo``), the way a different probe and
preset change a picture:

- point-spread functions about twice as wide (a lower-frequency probe): axial 1.2-1.5 mm (the
  recipe draws 0.35-0.9), lateral 1.7-2.2 degrees at the focus (recipe 0.5-1.2);
- sparse speckle: 8-14 % of resolution cells hold a scatterer (recipe 30-100 %);
- near-field haze reaching into the cavity: clutter 0.7-1.0 decaying over 30-40 mm (recipe
  0.05-0.6 over 8-30 mm);
- a compressed dynamic range of 28-34 dB (recipe 40-65 dB) with gain +3-7 dB (recipe -6-6);
- a 50-degree sector (recipe 60-90, zoo 60-100);
- a green-tinted B-mode colour map (the zoo has sepia and blue), stored as luma like every clip.

Seeds: clip ``i`` of a set written with ``seed`` is rendered from ``seed * 100_000 + i`` under
the name of :data:`SITE`; the seeds used for benchmarks are fixed in ``benchmarks/adapt.py``
before any scoring. The files are the EchoNet-Dynamic layout with ``Masks/`` and ``Meta/``, like
the zoo's: ``Videos/`` alone is what a site would have (a plain folder of clips, no labels), the
tables and masks are for scoring only.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import zlib
from pathlib import Path

import numpy as np

from training.data.a4c import A4CClip, Acoustics, dataset_folders, render_a4c_clip, run_tasks, write_clip
from training.data.scanner import Sector, scanner_sector
from training.data.synthetic import assign_splits, write_tables

logger = logging.getLogger(__name__)

SITE = "site-lowfreq-haze"  # the domain's name: enters every clip's seed
SITE_SIZE = (240, 320)  # (height, width) of the site's scanner screen
SECTOR_DEG = (49.0, 51.0)
PALETTE = (0.78, 1.0, 0.72)  # RGB gain of the grey image inside the fan
MAX_SEED = 10_000  # seed * 100_000 + i stays below 1e9


def site_acoustics(rng: np.random.Generator):
    """The site's imaging parameters, replacing the simulator's drawn ones (``acoustics`` hook)."""

    def adjust(ac: Acoustics) -> Acoustics:
        return dataclasses.replace(
            ac,
            axial_mm=float(rng.uniform(1.2, 1.5)),
            lateral_rad=math.radians(rng.uniform(1.7, 2.2)),
            density=float(rng.uniform(0.08, 0.14)),
            clutter=float(rng.uniform(0.7, 1.0)),
            clutter_depth=float(rng.uniform(30.0, 40.0)),
            dynamic_range_db=float(rng.uniform(28.0, 34.0)),
            gain_db=float(rng.uniform(3.0, 7.0)),
        )

    return adjust


def site_sector(rng: np.random.Generator):
    """The site's 50-degree phased-array sector (``sector`` hook)."""
    half = math.radians(rng.uniform(*SECTOR_DEG) / 2)

    def make(sector_rng, height: int, width: int, depth_mm: float) -> Sector:
        return scanner_sector(sector_rng, height, width, depth_mm, half)

    return make


def render_site_clip(seed: int, frames: int = 48) -> A4CClip:
    """Clip ``seed`` of the site: gray ``(T, H, W)`` frames (the luma of the tinted screen) and truth."""
    rng = np.random.default_rng([zlib.crc32(SITE.encode()), seed])
    height, width = SITE_SIZE
    clip = render_a4c_clip(
        rng,
        frames=frames,
        height=height,
        width=width,
        furniture=True,
        color=True,
        cropped=False,
        sector=site_sector(rng),
        acoustics=site_acoustics(rng),
    )
    rgb = clip.frames.astype(np.float32)  # (T, H, W, 3)
    rgb[:, clip.fan] *= np.asarray(PALETTE, np.float32)
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    gray = np.clip(np.rint(luma), 0, 255).astype(np.uint8)
    return dataclasses.replace(clip, frames=gray)


def generate_site(out_dir, videos: int, frames: int = 48, seed: int = 0, workers: int = 1) -> Path:
    """Write ``videos`` site clips under ``out_dir`` in the EchoNet-Dynamic layout (with ``Masks/``
    and ``Meta/``); clip ``i`` is :func:`render_site_clip` of ``seed * 100_000 + i``."""
    if videos < 1 or videos > 100_000:
        raise ValueError(f"videos must be 1..100000, got {videos}")
    if frames < 8:
        raise ValueError(f"frames must be at least 8, got {frames}")
    if not 0 <= seed < MAX_SEED:
        raise ValueError(f"seed must be 0..{MAX_SEED - 1}, got {seed}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    out = dataset_folders(out_dir)
    splits = assign_splits(videos, np.random.default_rng([seed, 2**31]))
    tasks = [(out, seed * 100_000 + i, frames, splits[i]) for i in range(videos)]
    results = run_tasks(_site_task, tasks, workers)
    write_tables(out, [row for row, _ in results], [r for _, rows in results for r in rows], append=False)
    logger.info("wrote %d %s clips (%d frames) to %s", videos, SITE, frames, out)
    return out


def _site_task(args) -> tuple[list, list]:
    out, seed, frames, split = args
    clip = render_site_clip(seed, frames)
    return write_clip(out, f"0XSITE{seed:09X}", clip.frames, clip, frames, split)
