"""Named colour palette of the procedural dataset.

Eleven clearly distinct colours. Objects draw their colours from this palette
with a mild per-object jitter; the evaluation maps produced colours back to the
nearest palette name (:func:`nearest_color_name`).
"""
from __future__ import annotations

import numpy as np

# name -> sRGB in [0, 1]
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.10, 0.10),
    "orange": (1.00, 0.52, 0.05),
    "yellow": (0.98, 0.87, 0.12),
    "green": (0.16, 0.66, 0.18),
    "blue": (0.12, 0.32, 0.90),
    "purple": (0.52, 0.20, 0.78),
    "pink": (1.00, 0.52, 0.76),
    "white": (0.95, 0.95, 0.93),
    "black": (0.08, 0.08, 0.09),
    "brown": (0.46, 0.27, 0.12),
    "gray": (0.52, 0.52, 0.54),
}
COLOR_NAMES: tuple[str, ...] = tuple(PALETTE)
PALETTE_RGB = np.array([PALETTE[n] for n in COLOR_NAMES], dtype=np.float32)

# how each colour may be written in captions (first is canonical)
COLOR_WORDS: dict[str, tuple[str, ...]] = {n: (n,) for n in COLOR_NAMES}
COLOR_WORDS["gray"] = ("gray", "grey")

JITTER = 0.04


def jittered(name: str, rng: np.random.Generator, amount: float = JITTER) -> np.ndarray:
    """The palette colour `name` with a small uniform per-channel jitter."""
    rgb = np.asarray(PALETTE[name], dtype=np.float32)
    return np.clip(rgb + rng.uniform(-amount, amount, 3).astype(np.float32), 0.0, 1.0)


def nearest_color_index(rgb) -> np.ndarray:
    """Index into COLOR_NAMES of the nearest palette colour for each rgb row [..., 3]."""
    rgb = np.asarray(rgb, dtype=np.float32)
    d = ((rgb[..., None, :] - PALETTE_RGB) ** 2).sum(-1)
    return d.argmin(-1)


def nearest_color_name(rgb) -> str:
    """Palette name nearest to a single rgb triple in [0, 1]."""
    return COLOR_NAMES[int(nearest_color_index(np.asarray(rgb, dtype=np.float32).reshape(3)))]
