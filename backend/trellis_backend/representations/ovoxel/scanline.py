"""Where triangles cross the voxel grid's edges: the reference's scan-line walk, vectorised.

Both of TRELLIS.2's voxelisers (``mesh_to_flexible_dual_grid`` and the PBR attribute voxeliser in
o_voxel's C++) find a triangle's voxels the same way: for each axis ``a2`` (x, y, z) they walk the
triangle's projection on the other two axes ``(a0, a1) = (a2 + 1, a2 + 2) mod 3`` row by row
(``a1`` grid lines) and column by column (``a0`` grid lines); at each grid line crossing inside the
triangle they interpolate the ``a2`` coordinate, and the four voxels around that grid edge are hit.

This module reproduces that walk in numpy with the reference's arithmetic (doubles interpolated
from float32 vertices, float32 grid line positions, truncation toward zero, clamping to the grid),
so it finds exactly the reference's voxels, in the reference's order: triangle, then axis, then the
lower half (rows from the lowest vertex to the middle one), then the upper half, rows and columns
ascending. Each crossing hits voxels ``(c0 + d0, c1 + d1, c2)`` in axis frame, ``d0`` outer, ``d1`` inner.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# (d0, d1) of the four voxels around a crossed grid edge, in the reference's loop order
CROSSING_NEIGHBOURS = ((0, 0), (0, 1), (1, 0), (1, 1))


@dataclass
class GridCrossings:
    """Crossings of triangles with grid edges, in the reference's order (length E each).

    ``triangle``: the triangle's row; ``axis``: the grid edge's direction (0 x, 1 y, 2 z);
    ``cell``: int64 [E, 3] xyz of the voxel at offset (0, 0) (the one whose edge flag is set);
    ``point``: float32 [E, 3] the crossing point in xyz (grid frame, relative to the box's corner).
    """

    triangle: np.ndarray
    axis: np.ndarray
    cell: np.ndarray
    point: np.ndarray

    def voxels(self) -> np.ndarray:
        """int64 [E, 4, 3]: the four voxels each crossing hits, in the reference's order."""
        out = np.repeat(self.cell[:, None, :], 4, axis=1)
        for a2 in range(3):
            sel = self.axis == a2
            a0, a1 = (a2 + 1) % 3, (a2 + 2) % 3
            for k, (d0, d1) in enumerate(CROSSING_NEIGHBOURS):
                out[sel, k, a0] += d0
                out[sel, k, a1] += d1
        return out


def _ranges(starts: np.ndarray, stops: np.ndarray):
    """Flatten half-open integer ranges: (owner index of each element, the element)."""
    counts = np.maximum(stops - starts, 0)
    owner = np.repeat(np.arange(len(starts)), counts)
    if owner.size == 0:
        return owner, owner.astype(np.int64)
    first = np.cumsum(counts) - counts
    value = np.arange(owner.size, dtype=np.int64) - first[owner] + starts[owner]
    return owner, value


def _lerp(a, b, t, va, vb):
    """The reference's lerp: ``va`` where ``a == b``, else ``(1 - s) va + s vb`` with ``s = (t - a) / (b - a)``."""
    same = a == b
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (t - a) / np.where(same, 1.0, b - a)
    if np.ndim(va) > np.ndim(s):
        s = s[..., None]
        same = same[..., None]
    return np.where(same, va, (1 - s) * va + s * vb)


def _trunc_int(x: np.ndarray) -> np.ndarray:
    """C++ ``int(x)`` for doubles in range: truncation toward zero."""
    return np.trunc(x).astype(np.int64)


def _axis_crossings(tris: np.ndarray, voxel_size: np.ndarray, gmin: np.ndarray, gmax: np.ndarray, a2: int):
    a0, a1 = (a2 + 1) % 3, (a2 + 2) % 3
    vs0, vs1, vs2 = (np.float64(voxel_size[a]) for a in (a0, a1, a2))
    p = tris[:, :, [a0, a1, a2]].astype(np.float64)                     # [T, 3, (x, y, z)] in axis frame
    order = np.argsort(p[:, :, 1], axis=1, kind="stable")              # std::sort on 3 items is stable
    p = np.take_along_axis(p, order[:, :, None], axis=1)
    row = np.clip(_trunc_int(p[:, :, 1] / vs1), gmin[a1], gmax[a1] - 1)  # start, mid, end rows
    # half 0: rows [start, mid) between (t0, t1) and (t0, t2); half 1: rows [mid, end) between (t2, t1) and (t2, t0)
    row_lo = np.stack([row[:, 0], row[:, 1]], axis=1).reshape(-1)
    row_hi = np.stack([row[:, 1], row[:, 2]], axis=1).reshape(-1)
    apex = np.stack([p[:, 0], p[:, 2]], axis=1).reshape(-1, 3)
    side = np.stack([p[:, 1], p[:, 1]], axis=1).reshape(-1, 3)
    far = np.stack([p[:, 2], p[:, 0]], axis=1).reshape(-1, 3)
    half, y_idx = _ranges(row_lo, row_hi)
    y = ((y_idx + 1).astype(np.float32) * np.float32(voxel_size[a1])).astype(np.float64)   # float product, as C++
    t0, t1, t2 = apex[half], side[half], far[half]
    t3 = _lerp(t0[:, 1], t1[:, 1], y, t0[:, [0, 2]], t1[:, [0, 2]])
    t4 = _lerp(t0[:, 1], t2[:, 1], y, t0[:, [0, 2]], t2[:, [0, 2]])
    swap = t3[:, 0] > t4[:, 0]
    t3, t4 = np.where(swap[:, None], t4, t3), np.where(swap[:, None], t3, t4)
    col_lo = np.clip(_trunc_int(t3[:, 0] / vs0), gmin[a0], gmax[a0] - 1)
    col_hi = np.clip(_trunc_int(t4[:, 0] / vs0), gmin[a0], gmax[a0] - 1)
    r, x_idx = _ranges(col_lo, col_hi)
    x = ((x_idx + 1).astype(np.float32) * np.float32(voxel_size[a0])).astype(np.float64)
    z = _lerp(t3[r, 0], t4[r, 0], x, t3[r, 1], t4[r, 1])
    z_idx = _trunc_int(z / vs2)
    keep = (z_idx >= gmin[a2]) & (z_idx < gmax[a2])
    r, x_idx, z_idx, x, z = r[keep], x_idx[keep], z_idx[keep], x[keep], z[keep]
    cell = np.empty((len(r), 3), np.int64)
    cell[:, a0], cell[:, a1], cell[:, a2] = x_idx, y_idx[r], z_idx
    point = np.empty((len(r), 3), np.float64)
    point[:, a0], point[:, a1], point[:, a2] = x, y[r], z
    triangle = half[r] // 2
    return triangle, cell, point.astype(np.float32)


def grid_crossings(triangles: np.ndarray, voxel_size: np.ndarray, grid_size: np.ndarray) -> GridCrossings:
    """Crossings of float32 triangles ``[T, 3, 3]`` (grid frame: relative to the box's min corner)
    with the edges of a grid of ``grid_size`` voxels of ``voxel_size`` (float32 [3]), reference order."""
    tris = np.asarray(triangles, dtype=np.float32)
    gmin = np.zeros(3, np.int64)
    gmax = np.asarray(grid_size, np.int64)
    parts = [_axis_crossings(tris, voxel_size, gmin, gmax, a2) for a2 in range(3)]
    triangle = np.concatenate([p[0] for p in parts])
    axis = np.concatenate([np.full(len(p[0]), a, np.int8) for a, p in enumerate(parts)])
    # reference order: triangle-major, then axis; each part is already in (half, row, column) order
    order = np.argsort(triangle * 3 + axis, kind="stable")
    return GridCrossings(
        triangle=triangle[order],
        axis=axis[order],
        cell=np.concatenate([p[1] for p in parts])[order],
        point=np.concatenate([p[2] for p in parts])[order],
    )
