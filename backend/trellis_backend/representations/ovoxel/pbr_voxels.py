"""Sparse PBR voxels (TRELLIS.2's texture O-Voxel) and trilinear sampling of them.

Six channels per voxel in [0, 1], in the TRELLIS.2 pipeline's ``pbr_attr_layout``: base colour
RGB (as stored in the texture, i.e. sRGB-encoded), metallic, roughness, alpha.

Sampling follows the reference's ``flex_gemm`` ``grid_sample_3d(mode="trilinear")``: a query in
voxel units (``(p - aabb[0]) / voxel_size``) blends the eight voxels whose centres
(``coords + 0.5``) surround it, with weights ``prod(1 - |q - centre|)``; voxels that do not exist
drop out and the remaining weights are renormalised (a query with no neighbour at all gets 0).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np

from ...errors import BadInputError
from .grid import UNIT_AABB, VoxelLookup, as_numpy, grid_geometry

PBR_LAYOUT: Dict[str, slice] = {
    "base_color": slice(0, 3),
    "metallic": slice(3, 4),
    "roughness": slice(4, 5),
    "alpha": slice(5, 6),
}
PBR_CHANNELS = 6

_CORNERS01 = np.array([[dx, dy, dz] for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)], np.int64)


@dataclass
class PbrVoxels:
    """PBR attributes on a sparse voxel grid: ``coords`` int32 [N, 3], ``attrs`` float32 [N, 6] in [0, 1]."""

    coords: np.ndarray
    attrs: np.ndarray
    grid_size: int
    aabb: np.ndarray = field(default_factory=lambda: np.asarray(UNIT_AABB, np.float32))

    def __post_init__(self):
        self.coords = as_numpy(self.coords).astype(np.int32).reshape(-1, 3) if np.size(self.coords) else np.zeros((0, 3), np.int32)
        self.attrs = as_numpy(self.attrs).astype(np.float32)
        if self.attrs.ndim != 2 or self.attrs.shape != (self.coords.shape[0], PBR_CHANNELS):
            raise BadInputError(
                f"PBR voxels need attrs [N, 6] (base colour RGB, metallic, roughness, alpha) for N={self.coords.shape[0]} "
                f"coords, got {self.attrs.shape}", hint="Pass the texture decoder's output (after * 0.5 + 0.5).")
        size, box, _ = grid_geometry(self.grid_size, self.aabb)
        self.aabb = box
        if self.coords.size and (self.coords.min() < 0 or np.any(self.coords.max(axis=0) >= size)):
            raise BadInputError(f"PBR voxel coords must lie in [0, {int(size[0])}) for grid_size {self.grid_size}")

    @property
    def voxel_size(self) -> np.ndarray:
        return grid_geometry(self.grid_size, self.aabb)[2]

    def channel(self, name: str) -> np.ndarray:
        return self.attrs[:, PBR_LAYOUT[name]]

    def sample(self, points: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
        """float32 [P, 6]: trilinear attributes at world points [P, 3] (the reference's rule, see module doc)."""
        return sample_trilinear(self.coords, self.attrs, self.grid_size, self.aabb, points, chunk=chunk)

    def nearest(self, points: np.ndarray) -> np.ndarray:
        """float32 [P, 6]: the attributes of the voxel whose centre is nearest to each point."""
        from scipy.spatial import cKDTree

        centres = (self.coords.astype(np.float64) + 0.5) * self.voxel_size + self.aabb[0]
        _, idx = cKDTree(centres).query(np.asarray(points, np.float64))
        return self.attrs[idx]


def sample_trilinear(coords: np.ndarray, attrs: np.ndarray, grid_size, aabb, points: np.ndarray,
                     chunk: int = 1 << 20, lookup: Optional[VoxelLookup] = None) -> np.ndarray:
    """Trilinear sample of sparse voxel attributes at world points, missing voxels excluded (flex_gemm's rule).

    Neighbouring texels share their 8 voxels, so the voxel lookup runs once per distinct base cell.
    """
    size, box, vs = grid_geometry(grid_size, aabb)
    lookup = lookup or VoxelLookup(coords, size)
    attrs = np.asarray(attrs, np.float32)
    pts = np.asarray(points, np.float32).reshape(-1, 3)
    out = np.zeros((len(pts), attrs.shape[1]), np.float32)
    padded = size + 2                                                     # base cells from -1 to size
    for s in range(0, len(pts), chunk):
        q = ((pts[s:s + chunk] - box[0]) / vs).astype(np.float32) - np.float32(0.5)   # voxel-centre units
        base = np.clip(np.floor(q), -1, size).astype(np.int64)
        frac = np.clip(q - base, 0, 1).astype(np.float32)                # weight of the upper neighbour per axis
        keys = ((base[:, 0] + 1) * padded[1] + base[:, 1] + 1) * padded[2] + base[:, 2] + 1
        uniq, inverse = np.unique(keys, return_inverse=True)
        ub = np.stack([uniq // (padded[1] * padded[2]) - 1, (uniq // padded[2]) % padded[1] - 1, uniq % padded[2] - 1], axis=1)
        rows = lookup.find(ub[:, None, :] + _CORNERS01[None]).reshape(-1, 8)[inverse.reshape(-1)]
        acc = np.zeros((len(q), attrs.shape[1]), np.float32)
        total = np.zeros(len(q), np.float32)
        for k, (ox, oy, oz) in enumerate(_CORNERS01):
            w = ((frac[:, 0] if ox else 1 - frac[:, 0]) * (frac[:, 1] if oy else 1 - frac[:, 1])
                 * (frac[:, 2] if oz else 1 - frac[:, 2]))
            present = rows[:, k] >= 0
            w = np.where(present, w, np.float32(0))
            acc += w[:, None] * attrs[np.where(present, rows[:, k], 0)]
            total += w
        out[s:s + chunk] = acc / np.maximum(total, np.float32(1e-12))[:, None]
    return out
