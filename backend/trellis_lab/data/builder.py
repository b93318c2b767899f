"""Helper the category builders use: random draws, colour bookkeeping, parts."""
from __future__ import annotations

import numpy as np

from .palette import COLOR_NAMES, jittered
from .primitives import Part, Prim, Shape


class Builder:
    """Collects coloured parts for one object.

    `main` is the object's main colour (the one its caption names); accents are
    drawn from candidate lists, never equal to the main colour. Every colour name
    gets one jittered rgb per object, so all parts of a colour match.
    """

    def __init__(self, rng: np.random.Generator, main: str):
        self.rng = rng
        self.main = main
        self.parts: list[Part] = []
        self._rgb: dict[str, np.ndarray] = {}

    # ---- random draws -------------------------------------------------------------
    def u(self, a: float, b: float) -> float:
        return float(self.rng.uniform(a, b))

    def choice(self, options, p=None):
        i = int(self.rng.choice(len(options), p=p))
        return options[i]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def randint(self, a: int, b: int) -> int:
        """Integer in [a, b] inclusive."""
        return int(self.rng.integers(a, b + 1))

    def accent(self, candidates=None, exclude=()) -> str:
        """An accent colour from `candidates` (default: whole palette), != main."""
        cands = [c for c in (candidates or COLOR_NAMES) if c != self.main and c not in exclude]
        if not cands:
            cands = [c for c in COLOR_NAMES if c != self.main and c not in exclude]
        return self.choice(cands)

    # ---- parts --------------------------------------------------------------------
    def rgb(self, name: str) -> np.ndarray:
        if name not in self._rgb:
            self._rgb[name] = jittered(name, self.rng)
        return self._rgb[name]

    def add(self, prim: Prim, color: str | None = None, label: str = "") -> Prim:
        color = color or self.main
        self.parts.append(Part(prim, color, self.rgb(color), label))
        return prim

    def shape(self) -> Shape:
        return Shape(list(self.parts))


def smooth_profile(ctrl_z, ctrl_r, n: int = 40):
    """Knots of a smooth radius profile through control points (smoothstep
    between consecutive controls; flat tangents at the controls)."""
    cz = np.asarray(ctrl_z, dtype=np.float64)
    cr = np.asarray(ctrl_r, dtype=np.float64)
    zs = np.linspace(cz[0], cz[-1], n)
    seg = np.clip(np.searchsorted(cz, zs, side="right") - 1, 0, len(cz) - 2)
    t = (zs - cz[seg]) / (cz[seg + 1] - cz[seg])
    t = t * t * (3 - 2 * t)
    rs = cr[seg] + (cr[seg + 1] - cr[seg]) * t
    return zs, rs
