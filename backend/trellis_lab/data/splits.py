"""Train / held-out split of the procedural dataset.

Held-out = (category, main colour) pairs that training never generates, and
caption templates that training never uses (see :mod:`.captions`). Train and
held-out seeds also draw from different random streams, so even geometry
parameters of a held-out sample are unrelated to any training sample's.
"""
from __future__ import annotations

from .palette import COLOR_NAMES

CATEGORIES: tuple[str, ...] = (
    "chair", "table", "mug", "lamp", "vase", "bottle",
    "mushroom", "tree", "house", "rocket", "car", "snowman",
)
SPLITS = ("train", "heldout")
SPLIT_SALT = {"train": 0x5EED, "heldout": 0xE7A1}


def _heldout_pairs() -> frozenset[tuple[str, str]]:
    n = len(COLOR_NAMES)
    pairs = set()
    for i, cat in enumerate(CATEGORIES):
        # two colours per category; every colour is held out for ~2 categories
        pairs.add((cat, COLOR_NAMES[(2 * i) % n]))
        pairs.add((cat, COLOR_NAMES[(2 * i + 5) % n]))
    return frozenset(pairs)


HELDOUT_PAIRS: frozenset[tuple[str, str]] = _heldout_pairs()


def allowed_colors(category: str, split: str = "train") -> tuple[str, ...]:
    """Main colours a `category` object may have in `split`."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    held = {c for (k, c) in HELDOUT_PAIRS if k == category}
    if split == "heldout":
        return tuple(c for c in COLOR_NAMES if c in held)
    return tuple(c for c in COLOR_NAMES if c not in held)


def is_heldout_pair(category: str, color: str) -> bool:
    return (category, color) in HELDOUT_PAIRS
