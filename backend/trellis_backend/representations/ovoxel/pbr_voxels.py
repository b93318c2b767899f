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

_CORNERS = np.array([[dx, dy, dz] for dx in (-0.5, 0.5) for dy in (-0.5, 0.5) for dz in (-0.5, 0.5)])


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
    """Trilinear sample of sparse voxel attributes at world points, missing voxels excluded (flex_gemm's rule)."""
    size, box, vs = grid_geometry(grid_size, aabb)
    lookup = lookup or VoxelLookup(coords, size)
    pts = np.asarray(points, np.float32).reshape(-1, 3)
    out = np.zeros((len(pts), attrs.shape[1]), np.float32)
    for s in range(0, len(pts), chunk):
        q = ((pts[s:s + chunk] - box[0]) / vs).astype(np.float32)            # voxel units
        nb = np.floor(q[:, None, :] + _CORNERS[None].astype(np.float32)).astype(np.int64)   # [P, 8, 3]
        w = np.prod(1 - np.abs(nb + np.float32(0.5) - q[:, None, :]), axis=-1)              # [P, 8]
        rows = lookup.find(nb.reshape(-1, 3)).reshape(-1, 8)
        w = np.where(rows >= 0, w, 0).astype(np.float32)
        acc = np.einsum("pk,pkc->pc", w, attrs[np.maximum(rows, 0)])
        out[s:s + chunk] = acc / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
    return out
