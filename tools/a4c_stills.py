"""Render docs/a4c-sim.png: simulated A4C frames at several sizes with the true mask's outline.

    python tools/a4c_stills.py [--out docs/a4c-sim.png] [--seed 0]

Top row: the end-diastolic frame of one clip per size; bottom row: the same clip's end-systolic
frame. The red line is the border of the true LV mask (``Masks/``). Every tile is scaled to the
same height (nearest neighbour), so small frames look blocky.
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image
from scipy.ndimage import binary_erosion

from training.data.a4c import render_a4c_clip

SIZES = ((112, 112), (240, 320), (480, 640), (708, 1016))
TILE_HEIGHT = 320


def tile(clip, frame: int) -> Image.Image:
    image = clip.frames[frame]
    rgb = image.copy() if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)
    mask = clip.masks[frame].astype(bool)
    rgb[mask & ~binary_erosion(mask)] = (255, 40, 40)
    h, w = mask.shape
    return Image.fromarray(rgb).resize((round(TILE_HEIGHT * w / h), TILE_HEIGHT), Image.NEAREST)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/a4c-sim.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=32)
    args = parser.parse_args()
    columns = []
    for i, (h, w) in enumerate(SIZES):
        clip = render_a4c_clip([args.seed, i], frames=args.frames, height=h, width=w, color=i % 2 == 1)
        columns.append((tile(clip, clip.ed), tile(clip, clip.es)))
    gap = 6
    canvas = Image.new(
        "RGB", (sum(c[0].width for c in columns) + gap * (len(columns) - 1), 2 * TILE_HEIGHT + gap)
    )
    x = 0
    for top, bottom in columns:
        canvas.paste(top, (x, 0))
        canvas.paste(bottom, (x, TILE_HEIGHT + gap))
        x += top.width + gap
    canvas.save(args.out, optimize=True)


if __name__ == "__main__":
    main()
