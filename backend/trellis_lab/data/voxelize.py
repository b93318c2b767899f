"""Voxelisation of procedural objects at 64³ and native per-voxel features.

Grid convention (as TRELLIS): voxel ``(i, j, k)`` of a ``R``³ grid covers
``[-0.5 + i/R, -0.5 + (i+1)/R]`` (etc.), its centre is ``(i + 0.5)/R - 0.5``,
coordinates are ``(x, y, z)``, z up.

*Structure* (what stage 1 generates and the SS VAE encodes) = the surface shell:
voxels of the solid occupancy ``sdf(centre) <= h/2`` (h = voxel size) that have
at least one empty 6-neighbour. With this threshold the surface passes through
every shell voxel and parts thinner than a voxel still show up.

Per-voxel features (``FEATURE_CHANNELS`` = 16, float32), the native input of the
SLAT VAE encoder in place of DINOv2 features:

====== ========== =====================================================
slice   name       meaning
====== ========== =====================================================
0:3     rgb        colour of the nearest part at the voxel centre, [0, 1]
3:6     normal     outward unit normal (SDF gradient at the centre)
6       sdf        SDF at the centre in voxel units (in (-0.5, 0.5])
7:15    corners    SDF at the 8 voxel corners in voxel units, clipped to
                   [-1, 1]; order (dx, dy, dz) in {0,1}³, dz fastest
15      fill       fraction of the 3³ neighbourhood that is solid
====== ========== =====================================================

Supervision for the decoders (cheap, on demand):
``subvoxel_sdf`` — SDF on a (sub+1)³ lattice inside every shell voxel (the
256³ FlexiCubes corners for sub=4); ``surface_points`` — points on the surface
with normals and colours.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .primitives import Shape

RESOLUTION = 64
FEATURE_CHANNELS = 16
FEATURE_LAYOUT: dict[str, slice] = {
    "rgb": slice(0, 3),
    "normal": slice(3, 6),
    "sdf": slice(6, 7),
    "corners": slice(7, 15),
    "fill": slice(15, 16),
}
CORNER_OFFSETS = np.array([[dx, dy, dz] for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)], np.int64)


def _shape_of(obj) -> Shape:
    return obj.shape if hasattr(obj, "shape") and isinstance(obj.shape, Shape) else obj


@dataclass
class VoxelSample:
    coords: np.ndarray  # int32 [N, 3] shell voxels (x, y, z), lexicographic order
    feats: np.ndarray  # float32 [N, FEATURE_CHANNELS]
    occupancy: np.ndarray  # bool [R, R, R], True at coords (the structure)
    solid: np.ndarray  # bool [R, R, R] solid occupancy (shell + interior)
    resolution: int = RESOLUTION

    @property
    def rgb(self) -> np.ndarray:
        return self.feats[:, FEATURE_LAYOUT["rgb"]]

    @property
    def normals(self) -> np.ndarray:
        return self.feats[:, FEATURE_LAYOUT["normal"]]

    def centers(self) -> np.ndarray:
        return voxel_centers(self.coords, self.resolution)


def voxel_centers(coords, resolution: int = RESOLUTION) -> np.ndarray:
    """World positions of voxel centres, float32 [N, 3]."""
    return ((np.asarray(coords, np.float32) + 0.5) / resolution - 0.5).astype(np.float32)


def shell_of(solid: np.ndarray) -> np.ndarray:
    """Voxels of `solid` with at least one empty 6-neighbour (outside the grid is empty)."""
    p = np.pad(solid, 1, constant_values=False)
    interior = (p[:-2, 1:-1, 1:-1] & p[2:, 1:-1, 1:-1] & p[1:-1, :-2, 1:-1] & p[1:-1, 2:, 1:-1]
                & p[1:-1, 1:-1, :-2] & p[1:-1, 1:-1, 2:])
    return solid & ~interior


def _box_count(solid: np.ndarray) -> np.ndarray:
    """Number of solid voxels in each 3³ neighbourhood."""
    s = solid.astype(np.int16)
    for ax in range(3):
        p = np.pad(s, [(1, 1) if a == ax else (0, 0) for a in range(3)])
        n = s.shape[ax]
        s = p.take(range(0, n), ax) + p.take(range(1, n + 1), ax) + p.take(range(2, n + 2), ax)
    return s


class Lattice:
    """The unique points of the (sub+1)³ sub-lattices of a set of voxels.

    Lattice point (a, b, c) (global integer lattice coordinates, spacing
    h/sub) lies at ``(a, b, c) / (R * sub) - 0.5``. Points shared by
    neighbouring voxels are stored once; ``index`` is a dense lookup box over
    the voxels' bounding box (-1 where no point).
    """

    def __init__(self, coords, sub: int, resolution: int = RESOLUTION):
        coords = np.asarray(coords, np.int64).reshape(-1, 3)
        self.sub, self.resolution = sub, resolution
        o = np.arange(sub + 1)
        self.offsets = np.stack(np.meshgrid(o, o, o, indexing="ij"), -1).reshape(-1, 3)
        if len(coords) == 0:
            self.base = np.zeros(3, np.int64)
            self.index = np.full((1, 1, 1), -1, np.int32)
            self.ijk = np.zeros((0, 3), np.int64)
            self.ijk_local = self.ijk
            self.voxel_points = np.zeros((0, len(self.offsets)), np.int64)
            return
        # dense lookup box with a one-point margin so neighbour lookups need no bounds checks
        self.base = coords.min(0) * sub - 1
        dims = (coords.max(0) - coords.min(0) + 1) * sub + 3
        local = (coords * sub - self.base)[:, None, :] + self.offsets[None]  # [N, K, 3]
        mark = np.zeros(tuple(dims), bool)
        mark[local[..., 0], local[..., 1], local[..., 2]] = True
        ijk_local = np.argwhere(mark)
        self.index = np.full(tuple(dims), -1, np.int32)
        self.index[ijk_local[:, 0], ijk_local[:, 1], ijk_local[:, 2]] = np.arange(len(ijk_local), dtype=np.int32)
        self.ijk_local = ijk_local
        self.ijk = ijk_local + self.base
        # [N, K] point index of every voxel's lattice corner
        self.voxel_points = self.index[local[..., 0], local[..., 1], local[..., 2]]

    def neighbor(self, axis: int, step: int) -> np.ndarray:
        """Index of each point's neighbour at +-1 along `axis` (-1 where absent)."""
        loc = [self.ijk_local[:, 0], self.ijk_local[:, 1], self.ijk_local[:, 2]]
        loc[axis] = loc[axis] + step
        return self.index[loc[0], loc[1], loc[2]]

    @property
    def points(self) -> np.ndarray:
        return (self.ijk / (self.resolution * self.sub) - 0.5).astype(np.float32)

    @property
    def spacing(self) -> float:
        return 1.0 / (self.resolution * self.sub)

    def lookup(self, ijk: np.ndarray) -> np.ndarray:
        """Point index of global lattice coordinates (-1 where absent)."""
        loc = np.asarray(ijk, np.int64) - self.base
        dims = np.array(self.index.shape)
        ok = np.all((loc >= 0) & (loc < dims), axis=-1)
        loc = np.where(ok[..., None], loc, 0)
        return np.where(ok, self.index[loc[..., 0], loc[..., 1], loc[..., 2]], -1)


def lattice_sdf(shape: Shape, coords: np.ndarray, sub: int, resolution: int = RESOLUTION,
                band: float | None = None) -> np.ndarray:
    """SDF on the (sub+1)³ lattice of each voxel in `coords` (shared lattice points are
    evaluated once). Returns float32 [N, (sub+1)**3], world units, lattice order
    (a, b, c) over x, y, z with c fastest."""
    lat = Lattice(coords, sub, resolution)
    h = 1.0 / resolution
    d = shape.sdf(lat.points, band=band if band is not None else 2 * h)
    return d[lat.voxel_points]


def voxelize(obj, resolution: int = RESOLUTION, features: bool = True) -> VoxelSample:
    """Voxelise an object (ProceduralObject or Shape): shell coords, features, dense grids."""
    shape = _shape_of(obj)
    h = 1.0 / resolution
    sdf, pid = shape.grid(resolution, band=3 * h)
    solid = sdf <= 0.5 * h
    occ = shell_of(solid)
    coords = np.argwhere(occ).astype(np.int32)
    if not features:
        return VoxelSample(coords, np.zeros((len(coords), FEATURE_CHANNELS), np.float32), occ, solid, resolution)
    cx, cy, cz = coords[:, 0], coords[:, 1], coords[:, 2]
    feats = np.empty((len(coords), FEATURE_CHANNELS), np.float32)
    cols = np.concatenate([shape.colors, np.full((1, 3), 0.5, np.float32)])
    feats[:, 0:3] = cols[pid[cx, cy, cz]]
    centers = voxel_centers(coords, resolution)
    feats[:, 3:6] = shape.normal_at(centers, eps=0.25 * h, band=3 * h)
    feats[:, 6] = sdf[cx, cy, cz] / h
    corners = lattice_sdf(shape, coords, 1, resolution, band=2 * h)
    feats[:, 7:15] = np.clip(corners / h, -1.0, 1.0)
    feats[:, 15] = _box_count(solid)[cx, cy, cz] / 27.0
    return VoxelSample(coords, feats, occ, solid, resolution)


def subvoxel_sdf(obj, coords, sub: int = 4, resolution: int = RESOLUTION) -> np.ndarray:
    """Supervision for mesh decoders: SDF at the (sub+1)³ lattice points of every voxel
    in `coords` ([N, (sub+1)**3], world units, clipped to ±2 voxels). For sub=4 these
    are the FlexiCubes grid corners at 256³ inside each 64³ voxel."""
    return lattice_sdf(_shape_of(obj), coords, sub, resolution, band=2.0 / resolution)


def surface_points(obj, coords=None, per_voxel: int = 4, seed: int = 0, resolution: int = RESOLUTION,
                   iters: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points on the object surface with outward normals and colours.

    Random points in each shell voxel are projected onto the surface by `iters`
    Newton steps along the SDF gradient; points that do not converge are dropped.
    Returns (points [M, 3], normals [M, 3], rgb [M, 3]) float32.
    """
    shape = _shape_of(obj)
    if coords is None:
        coords = voxelize(shape, resolution, features=False).coords
    rng = np.random.default_rng(seed)
    h = 1.0 / resolution
    base = np.repeat(voxel_centers(coords, resolution), per_voxel, 0)
    p = base + rng.uniform(-0.5 * h, 0.5 * h, base.shape).astype(np.float32)
    for _ in range(iters):
        d = shape.sdf(p, band=3 * h)
        n = shape.normal_at(p, eps=0.1 * h, band=3 * h)
        p = p - d[:, None] * n
    d, pid = shape.query(p, band=3 * h)
    keep = (np.abs(d) < 0.05 * h) & (pid >= 0)
    p, pid = p[keep], pid[keep]
    n = shape.normal_at(p, eps=0.1 * h, band=3 * h)
    return p.astype(np.float32), n.astype(np.float32), shape.colors[pid]
