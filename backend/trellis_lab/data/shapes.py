"""Parametric coloured objects of the procedural dataset.

    obj = sample_object(seed, split="train")        # category/colour drawn by seed
    obj = build_object("chair", "red", seed=3)      # explicit category and colour
    obj.shape.grid(64)                               # SDF + part ids at 64³ voxel centres
    obj.caption(rng)                                 # one caption for the object

Objects are z-up, centred in [-0.5, 0.5]³, largest bounding-box side
``EXTENT`` (0.9), front facing -y. Everything is deterministic in
(category, colour, seed, split).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .builder import Builder
from .captions import make_caption
from .categories.furniture import chair, lamp, table
from .categories.nature import mushroom, snowman, tree
from .categories.structures import car, house, rocket
from .categories.tableware import bottle, mug, vase
from .palette import COLOR_NAMES
from .primitives import Shape
from .splits import CATEGORIES, SPLIT_SALT, SPLITS, allowed_colors

EXTENT = 0.9

BUILDERS: dict[str, Callable[[Builder], dict]] = {
    "chair": chair, "table": table, "mug": mug, "lamp": lamp, "vase": vase, "bottle": bottle,
    "mushroom": mushroom, "tree": tree, "house": house, "rocket": rocket, "car": car, "snowman": snowman,
}
assert tuple(BUILDERS) == CATEGORIES


@dataclass
class ProceduralObject:
    category: str
    color: str  # main colour (palette name) — the one captions name
    params: dict  # category parameters (styles, part counts, accent colours)
    shape: Shape  # normalised coloured implicit shape
    seed: int
    split: str = "train"

    def caption(self, rng: np.random.Generator | int | None = None, template: int | None = None) -> str:
        """A caption using the templates of this object's split. `rng` (or an int seed)
        picks template and phrasings; default: derived from the object's seed."""
        if rng is None or isinstance(rng, (int, np.integer)):
            rng = np.random.default_rng([int(self.seed), SPLIT_SALT[self.split], 2, int(rng or 0)])
        return make_caption(self.category, self.color, self.params, rng, self.split, template)

    def captions(self, n: int, seed: int = 0) -> list[str]:
        rng = np.random.default_rng([int(self.seed), SPLIT_SALT[self.split], 3, seed])
        return [self.caption(rng) for _ in range(n)]


def build_object(category: str, color: str, seed: int, split: str = "train") -> ProceduralObject:
    """Object of a given category and main colour; geometry drawn from `seed`."""
    if category not in BUILDERS:
        raise ValueError(f"unknown category {category!r}; expected one of {CATEGORIES}")
    if color not in COLOR_NAMES:
        raise ValueError(f"unknown colour {color!r}; expected one of {COLOR_NAMES}")
    rng = np.random.default_rng([int(seed), SPLIT_SALT.get(split, 0), 1, CATEGORIES.index(category)])
    b = Builder(rng, color)
    params = BUILDERS[category](b)
    return ProceduralObject(category, color, params, b.shape().normalized(EXTENT), int(seed), split)


def sample_spec(seed: int, split: str = "train", category: str | None = None) -> tuple[str, str]:
    """(category, main colour) for a seed of a split; held-out pairs only occur in 'heldout'."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    rng = np.random.default_rng([int(seed), SPLIT_SALT[split], 0])
    cat = category or CATEGORIES[int(rng.integers(len(CATEGORIES)))]
    if category is not None:
        rng.integers(len(CATEGORIES))  # keep the stream aligned
    colors = allowed_colors(cat, split)
    return cat, colors[int(rng.integers(len(colors)))]


def sample_object(seed: int, split: str = "train", category: str | None = None) -> ProceduralObject:
    """The object of `seed` in `split` (category drawn uniformly unless given)."""
    cat, color = sample_spec(seed, split, category)
    return build_object(cat, color, seed, split)
