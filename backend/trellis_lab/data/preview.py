"""Preview grid of procedural samples with their captions.

    python -m trellis_lab.data.preview --n 24 --out grid.png [--split heldout] [--seed 0]

Tile i shows category ``CATEGORIES[i % 12]`` (``--random-categories`` draws them by
seed instead), rendered from the default three-quarter front view.
"""
from __future__ import annotations

import argparse
import textwrap
import time

from PIL import Image, ImageDraw, ImageFont

from .render import render
from .shapes import sample_object
from .splits import CATEGORIES


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # old Pillow
        return ImageFont.load_default()


def preview_grid(n: int = 24, split: str = "train", seed: int = 0, size: int = 256, cols: int = 6,
                 balanced: bool = True, yaw: float = 135.0, pitch: float = 25.0) -> Image.Image:
    font = _font(max(11, size // 18))
    line_h = max(13, size // 15)
    cap_h = 3 * line_h + 6
    rows = (n + cols - 1) // cols
    grid = Image.new("RGB", (cols * size, rows * (size + cap_h)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    chars = max(16, int(size / (0.55 * max(11, size // 18))))
    for i in range(n):
        obj = sample_object(seed + i, split, CATEGORIES[i % len(CATEGORIES)] if balanced else None)
        img = Image.fromarray(render(obj, yaw, pitch, size=size, background=(238, 238, 238)))
        r, c = divmod(i, cols)
        x0, y0 = c * size, r * (size + cap_h)
        grid.paste(img.convert("RGB"), (x0, y0))
        text = obj.caption()
        for k, line in enumerate(textwrap.wrap(text, chars)[:3]):
            draw.text((x0 + 4, y0 + size + 3 + k * line_h), line, fill=(20, 20, 20), font=font)
    return grid


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=24, help="number of samples")
    ap.add_argument("--out", default="grid.png", help="output PNG")
    ap.add_argument("--split", default="train", choices=["train", "heldout"])
    ap.add_argument("--seed", type=int, default=0, help="first seed")
    ap.add_argument("--size", type=int, default=256, help="tile size in pixels")
    ap.add_argument("--cols", type=int, default=6)
    ap.add_argument("--yaw", type=float, default=135.0)
    ap.add_argument("--pitch", type=float, default=25.0)
    ap.add_argument("--random-categories", action="store_true", help="draw categories by seed")
    a = ap.parse_args(argv)
    t = time.time()
    grid = preview_grid(a.n, a.split, a.seed, a.size, a.cols, not a.random_categories, a.yaw, a.pitch)
    grid.save(a.out)
    print(f"wrote {a.out} ({a.n} samples, {time.time() - t:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
