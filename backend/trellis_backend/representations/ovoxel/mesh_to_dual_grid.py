"""Triangle mesh -> flexible dual grid, matching o_voxel's C++ ``mesh_to_flexible_dual_grid_cpu``.

What the reference computes, and this module reproduces on the CPU with numpy:

1. Voxels: every voxel around a grid edge that a triangle crosses (``scanline``), in discovery
   order. A voxel's ``intersected[a]`` flag is set when the surface crosses its own edge along
   axis ``a`` (the edge at its max corner on the two other axes, i.e. the (0, 0) voxel of a crossing).
2. A quadric (QEF, 4x4) per voxel: the plane of each crossing triangle, once per crossing;
   plus, if ``face_weight > 0``, the plane of every triangle that overlaps the voxel (triangle-box
   test in float32 as the reference's; note the reference adds these planes unweighted);
   plus ``boundary_weight`` times the line quadric of every open (boundary) edge for each voxel its
   3D-DDA walk passes; plus ``regularization_weight * count`` times the distance to the mean
   crossing point.
3. The dual vertex: the QEF minimiser, constrained to the voxel's box (faces, then edges, then
   corners, lowest error first, as the reference enumerates them).

The voxel set, the flags and the order are bit-exact (the decisions use the reference's float32 /
float64 arithmetic); the quadrics are summed in float64 (the reference sums float32), so dual
vertices agree to float32 round-off.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

from ...errors import BadInputError
from .grid import UNIT_AABB, Aabb, GridSize, VoxelLookup, as_numpy, grid_geometry, linear_keys
from .scanline import grid_crossings

# upper triangle of a symmetric 4x4, used to accumulate quadrics with bincount
_IU = np.triu_indices(4)


def _dot3_f32(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Eigen's float Vector3f dot product order: a0 b0 + (a1 b1 + a2 b2)."""
    return a[..., 0] * b[..., 0] + (a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2])


def _dot2_f32(a0, a1, b0, b1):
    return a0 * b0 + a1 * b1


def triangle_planes(tris: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(unit normals float32 [T, 3], plane quadrics float32 [T, 4, 4]) as the reference forms them."""
    v0, v1, v2 = tris[:, 0], tris[:, 1], tris[:, 2]
    e0, e1 = v1 - v0, v2 - v1
    c = np.stack([e0[:, 1] * e1[:, 2] - e0[:, 2] * e1[:, 1],
                  e0[:, 2] * e1[:, 0] - e0[:, 0] * e1[:, 2],
                  e0[:, 0] * e1[:, 1] - e0[:, 1] * e1[:, 0]], axis=1)
    sq = _dot3_f32(c, c)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = np.where(sq[:, None] > 0, c / np.sqrt(sq)[:, None], c).astype(np.float32)
    plane = np.concatenate([n, -_dot3_f32(n, v0)[:, None]], axis=1)
    return n, plane[:, :, None] * plane[:, None, :]


class _QuadricSum:
    """Per-voxel 4x4 quadric sums (float64), fed in batches of (voxel rows, quadric table, table rows).

    Contributions are buffered and summed with one bincount per matrix entry every few million,
    so many small batches (one per large triangle) stay cheap.
    """

    def __init__(self, n: int, flush_at: int = 1 << 22):
        self.n = n
        self.flush_at = flush_at
        self.upper = np.zeros((len(_IU[0]), n), np.float64)
        self.pending = []
        self.pending_size = 0

    def add(self, rows: np.ndarray, table: np.ndarray, index: np.ndarray, weight: float = 1.0):
        """Add ``weight * table[index[k]]`` to voxel ``rows[k]`` for every k."""
        if rows.size == 0:
            return
        self.pending.append((rows, table, index, weight))
        self.pending_size += rows.size
        if self.pending_size >= self.flush_at:
            self._flush()

    def _flush(self):
        if not self.pending:
            return
        rows = np.concatenate([p[0] for p in self.pending])
        for k, (i, j) in enumerate(zip(*_IU)):
            vals = np.concatenate([p[1][p[2], i, j].astype(np.float64) * p[3] for p in self.pending])
            self.upper[k] += np.bincount(rows, weights=vals, minlength=self.n)
        self.pending, self.pending_size = [], 0

    def matrices(self) -> np.ndarray:
        self._flush()
        out = np.zeros((self.n, 4, 4), np.float64)
        out[:, _IU[0], _IU[1]] = self.upper.T
        out[:, _IU[1], _IU[0]] = self.upper.T
        return out


def _face_overlaps(tris: np.ndarray, normals: np.ndarray, voxel_size: np.ndarray, grid_size: np.ndarray,
                   lookup: VoxelLookup, chunk: int = 1 << 21, big: int = 1 << 12):
    """(triangle, voxel row) pairs where the triangle overlaps an existing voxel (the reference's
    float32 plane + three projection tests), yielded in batches."""
    vs = voxel_size.astype(np.float32)
    v0, v1, v2 = tris[:, 0], tris[:, 1], tris[:, 2]
    e = [v1 - v0, v2 - v1, v0 - v2]
    vv = [v0, v1, v2]
    n = normals
    bb_min = np.maximum(np.trunc(np.minimum(np.minimum(v0, v1), v2) / vs).astype(np.int64), 0)
    bb_max = np.minimum(np.trunc(np.maximum(np.maximum(v0, v1), v2) / vs + np.float32(1)).astype(np.int64), grid_size)
    c = np.where(n > 0, vs, np.float32(0)).astype(np.float32)
    d1 = _dot3_f32(n, c - v0)
    d2 = _dot3_f32(n, (vs - c) - v0)
    # edge functions of the three projections: (axis u, axis v, normal axis deciding the sign)
    edge_tests = []
    for (u, v, w) in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
        mul = np.where(n[:, w] < 0, np.float32(-1), np.float32(1))
        for k in range(3):
            nu = -mul * e[k][:, v]
            nv = mul * e[k][:, u]
            d = -_dot2_f32(nu, nv, vv[k][:, u], vv[k][:, v]) + _dot2_f32(np.maximum(nu, 0), np.maximum(nv, 0), vs[u], vs[v])
            edge_tests.append((u, v, nu.astype(np.float32), nv.astype(np.float32), d.astype(np.float32)))

    def passes(tri_ids, cells):
        p = (cells.astype(np.float32) * vs).astype(np.float32)
        ndp = _dot3_f32(n[tri_ids], p)
        ok = ~(((ndp + d1[tri_ids]) * (ndp + d2[tri_ids])) > 0)
        for (u, v, nu, nv, d) in edge_tests:
            ok &= ~((_dot2_f32(nu[tri_ids], nv[tri_ids], p[:, u], p[:, v]) + d[tri_ids]) < 0)
        return ok

    ext = np.maximum(bb_max - bb_min, 0)
    volume = ext.prod(axis=1)
    small = np.nonzero((volume > 0) & (volume <= big))[0]
    # small boxes: enumerate their cells, in batches of about `chunk` candidates
    csum = np.cumsum(volume[small])
    start = 0
    while start < len(small):
        stop = int(np.searchsorted(csum, (csum[start - 1] if start else 0) + chunk, side="right"))
        stop = max(stop, start + 1)
        ids = small[start:stop]
        counts = volume[ids]
        owner = np.repeat(ids, counts)
        local = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
        ex = ext[owner]
        # the reference loops z outer, y, x inner; order does not matter for a sum
        cx = local % ex[:, 0]
        cy = (local // ex[:, 0]) % ex[:, 1]
        cz = local // (ex[:, 0] * ex[:, 1])
        cells = bb_min[owner] + np.stack([cx, cy, cz], axis=1)
        rows = lookup.find(cells)
        has = rows >= 0
        owner, cells, rows = owner[has], cells[has], rows[has]
        ok = passes(owner, cells)
        yield owner[ok], rows[ok]
        start = stop
    # big boxes (large triangles): test only the existing voxels inside the box; keys are x-major,
    # so the voxels of the box's x slab are one contiguous run of the sorted keys
    if np.any(volume > big):
        keys = lookup.sorted_keys
        plane = int(grid_size[1] * grid_size[2])
        for t in np.nonzero(volume > big)[0]:
            lo, hi = np.searchsorted(keys, [bb_min[t, 0] * plane, bb_max[t, 0] * plane])
            slab = keys[lo:hi]
            cells = np.stack([slab // plane, (slab // grid_size[2]) % grid_size[1], slab % grid_size[2]], axis=1)
            inside = np.all((cells[:, 1:] >= bb_min[t, 1:]) & (cells[:, 1:] < bb_max[t, 1:]), axis=1)
            rows, cells = lookup.order[lo:hi][inside], cells[inside]
            if rows.size:
                tri_ids = np.full(rows.size, t)
                ok = passes(tri_ids, cells)
                yield tri_ids[ok], rows[ok]


def _boundary_segments(vertices: np.ndarray, faces: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Endpoints (float32 [S, 3] each) of the edges used by exactly one face, ordered by (low, high) index."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], axis=0).astype(np.int64)
    e.sort(axis=1)
    keys = e[:, 0] * (int(vertices.shape[0]) + 1) + e[:, 1]
    uniq, counts = np.unique(keys, return_counts=True)
    once = uniq[counts == 1]
    lo, hi = once // (int(vertices.shape[0]) + 1), once % (int(vertices.shape[0]) + 1)
    return vertices[lo], vertices[hi]


def _boundary_walks(p0: np.ndarray, p1: np.ndarray, voxel_size: np.ndarray):
    """The reference's 3D-DDA over each boundary segment: (segment ids, voxels, segment quadrics)."""
    d = (p1 - p0).astype(np.float64)                               # float32 difference, then double
    length = np.sqrt((d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1]) + d[:, 2] * d[:, 2])
    keep = ~(length < 1e-6)
    p0, d, length = p0[keep], d[keep], length[keep]
    seg_ids = np.nonzero(keep)[0]
    direction = d / length[:, None]
    # line quadric: A = I - dir dir^T (double outer product cast to float), b = -A p0, c = p0^T A p0
    a = (np.eye(3, dtype=np.float32)[None] - (direction[:, :, None] * direction[:, None, :]).astype(np.float32))
    p0d = p0.astype(np.float64)
    b = -np.einsum("sij,sj->si", a.astype(np.float64), p0d)
    cc = np.einsum("si,sij,sj->s", p0d, a.astype(np.float64), p0d)
    quad = np.zeros((len(p0), 4, 4), np.float64)
    quad[:, :3, :3] = a
    quad[:, :3, 3] = b
    quad[:, 3, :3] = b
    quad[:, 3, 3] = cc

    vs = voxel_size.astype(np.float32)
    current = np.floor(p0 / vs).astype(np.int64)
    step = np.where(direction > 0, 1, -1)
    border = (vs * (current + (step > 0)).astype(np.float32)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_max = np.where(direction == 0, np.inf, (border - p0).astype(np.float32).astype(np.float64) / direction)
        t_delta = np.where(direction == 0, np.inf, np.float64(1) * vs.astype(np.float64) / np.abs(direction))
    out_seg = [np.arange(len(p0))]
    out_vox = [current.copy()]
    active = np.arange(len(p0))
    while active.size:
        tm = t_max[active]
        axis = np.where(tm[:, 0] < tm[:, 1], np.where(tm[:, 0] < tm[:, 2], 0, 2), np.where(tm[:, 1] < tm[:, 2], 1, 2))
        t_axis = tm[np.arange(active.size), axis]
        go = ~(t_axis > length[active])
        active, axis = active[go], axis[go]
        current[active, axis] += step[active, axis]
        t_max[active, axis] += t_delta[active, axis]
        out_seg.append(active.copy())
        out_vox.append(current[active].copy())
    segs = np.concatenate(out_seg)
    return segs, np.concatenate(out_vox), quad, seg_ids


def _solve_dual_vertices(q: np.ndarray, coords: np.ndarray, voxel_size: np.ndarray) -> np.ndarray:
    """Minimise p^T Q p per voxel inside the voxel's box, as the reference's enumeration does."""
    n = q.shape[0]
    vs = voxel_size.astype(np.float32)
    lo = (coords.astype(np.float32) * vs).astype(np.float64)
    hi = ((coords + 1).astype(np.float32) * vs).astype(np.float64)
    a = q[:, :3, :3]
    b = -q[:, :3, 3]
    det = np.linalg.det(a)
    good = np.abs(det) > 1e-30
    v = np.full((n, 3), np.nan)
    if good.any():
        v[good] = np.linalg.solve(a[good], b[good][..., None])[..., 0]
    if (~good).any():
        v[~good] = np.einsum("nij,nj->ni", np.linalg.pinv(a[~good]), b[~good])
    v32 = v.astype(np.float32).astype(np.float64)
    inside = np.all((v32 >= lo) & (v32 <= hi), axis=1)
    out = v32.copy()
    todo = np.nonzero(~inside)[0]
    if todo.size == 0:
        return out.astype(np.float32)
    qq, l, h = q[todo], lo[todo], hi[todo]
    m = todo.size
    cands, errs = [], []

    def err_of(p):
        ph = np.concatenate([p, np.ones((m, 1))], axis=1)
        return np.einsum("ni,nij,nj->n", ph, qq, ph)

    with np.errstate(divide="ignore", invalid="ignore"):
        for f in range(3):                    # one coordinate on a face of the box
            a1, a2 = (f + 1) % 3, (f + 2) % 3
            m00, m01, m10, m11 = qq[:, a1, a1], qq[:, a1, a2], qq[:, a2, a1], qq[:, a2, a2]
            dd = m00 * m11 - m01 * m10
            for bound in (l, h):
                r0 = -(qq[:, a1, f] * bound[:, f] + qq[:, a1, 3])
                r1 = -(qq[:, a2, f] * bound[:, f] + qq[:, a2, 3])
                x0 = (m11 * r0 - m01 * r1) / dd
                x1 = (m00 * r1 - m10 * r0) / dd
                p = np.empty((m, 3))
                p[:, f], p[:, a1], p[:, a2] = bound[:, f], x0, x1
                p = p.astype(np.float32).astype(np.float64)
                ok = (p[:, a1] >= l[:, a1]) & (p[:, a1] <= h[:, a1]) & (p[:, a2] >= l[:, a2]) & (p[:, a2] <= h[:, a2])
                cands.append(p)
                errs.append(np.where(ok, err_of(np.nan_to_num(p)), np.inf))
        for f in range(3):                    # two coordinates on an edge of the box
            a1, a2 = (f + 1) % 3, (f + 2) % 3
            for b1, b2 in ((l, l), (l, h), (h, l), (h, h)):
                x = -(qq[:, f, a1] * b1[:, a1] + qq[:, f, a2] * b2[:, a2] + qq[:, f, 3]) / qq[:, f, f]
                p = np.empty((m, 3))
                p[:, f], p[:, a1], p[:, a2] = x, b1[:, a1], b2[:, a2]
                p = p.astype(np.float32).astype(np.float64)
                ok = (p[:, f] >= l[:, f]) & (p[:, f] <= h[:, f])
                cands.append(p)
                errs.append(np.where(ok, err_of(np.nan_to_num(p)), np.inf))
    for cx in (h, l):                          # corners, in the reference's loop order
        for cy in (h, l):
            for cz in (h, l):
                p = np.stack([cx[:, 0], cy[:, 1], cz[:, 2]], axis=1)
                cands.append(p)
                errs.append(err_of(p))
    errs = np.stack(errs, axis=1)
    errs = np.where(np.isnan(errs), np.inf, errs)
    best = np.argmin(errs, axis=1)
    out[todo] = np.stack(cands, axis=1)[np.arange(m), best]
    return out.astype(np.float32)


def _check_mesh(vertices: np.ndarray, faces: np.ndarray):
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise BadInputError(f"vertices must be [V, 3], got {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise BadInputError(f"faces must be [F, 3] triangles, got {faces.shape}",
                            hint="Triangulate the mesh first (e.g. trimesh loads quads as triangles).")
    if faces.size and (faces.min() < 0 or faces.max() >= vertices.shape[0]):
        raise BadInputError(f"faces index vertices outside 0..{vertices.shape[0] - 1}")
    if not np.all(np.isfinite(vertices)):
        raise BadInputError("vertices contain NaN or infinite values")


def _dual_grid_quadrics(vertices, faces, grid_size, aabb, face_weight, boundary_weight, regularization_weight):
    """(coords int64 [N, 3], intersected bool [N, 3], quadrics float64 [N, 4, 4], voxel size) of a mesh."""
    v = as_numpy(vertices).astype(np.float32)
    f = as_numpy(faces).astype(np.int64)
    _check_mesh(v, f)
    size, box, vs = grid_geometry(grid_size, aabb)
    v = (v - box[0]).astype(np.float32)                       # the reference shifts in float32
    tris = v[f]

    crossings = grid_crossings(tris, vs, size)
    hits = crossings.voxels().reshape(-1, 3)                   # [4E, 3] in order
    keys = linear_keys(hits, size)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    discovery = np.argsort(first, kind="stable")               # unique id -> discovery rank
    rank = np.empty_like(discovery)
    rank[discovery] = np.arange(len(discovery))
    voxel_of_hit = rank[inverse.reshape(-1)]
    coords = hits[first[discovery]]
    n = len(coords)

    intersected = np.zeros((n, 3), bool)
    own = voxel_of_hit.reshape(-1, 4)[:, 0]                    # the (0, 0) voxel of each crossing
    intersected[own, crossings.axis.astype(np.int64)] = True
    count = np.bincount(voxel_of_hit, minlength=n).astype(np.float64)
    point = np.repeat(crossings.point.astype(np.float64), 4, axis=0)
    mean = np.stack([np.bincount(voxel_of_hit, weights=point[:, k], minlength=n) for k in range(3)], axis=1)

    normals, plane_q = triangle_planes(tris)
    qsum = _QuadricSum(n)
    qsum.add(voxel_of_hit, plane_q, np.repeat(crossings.triangle, 4))
    lookup = VoxelLookup(coords, size)
    if face_weight > 0:
        for tri_ids, rows in _face_overlaps(tris, normals, vs, size, lookup):
            qsum.add(rows, plane_q, tri_ids)
    if boundary_weight > 0:
        p0, p1 = _boundary_segments(v, f)
        if len(p0):
            segs, cells, line_q, _ = _boundary_walks(p0, p1, vs)
            rows = lookup.find(cells)
            has = rows >= 0
            qsum.add(rows[has], line_q, segs[has], weight=float(np.float32(boundary_weight)))
    q = qsum.matrices()
    if regularization_weight > 0 and n:
        p = mean / count[:, None]
        reg = np.zeros((n, 4, 4))
        reg[:, [0, 1, 2], [0, 1, 2]] = 1.0
        reg[:, :3, 3] = -p
        reg[:, 3, :3] = -p
        reg[:, 3, 3] = (p * p).sum(axis=1)
        q += (regularization_weight * count)[:, None, None] * reg
    return coords, intersected, q, vs


def voxel_quadrics(vertices, faces, grid_size: GridSize, aabb: Aabb = UNIT_AABB, face_weight: float = 1.0,
                   boundary_weight: float = 0.2, regularization_weight: float = 1e-2) -> np.ndarray:
    """float64 [N, 4, 4]: each voxel's QEF (in ``mesh_to_flexible_dual_grid``'s voxel order), for diagnostics."""
    return _dual_grid_quadrics(vertices, faces, grid_size, aabb, face_weight, boundary_weight, regularization_weight)[2]


def mesh_to_flexible_dual_grid(
    vertices,
    faces,
    grid_size: GridSize,
    aabb: Aabb = UNIT_AABB,
    face_weight: float = 1.0,
    boundary_weight: float = 0.2,
    regularization_weight: float = 1e-2,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flexible dual grid of a triangle mesh: ``(coords int32 [N, 3], dual_vertices float32 [N, 3], intersected bool [N, 3])``.

    Args:
        vertices: float [V, 3] in the grid's frame (TRELLIS.2: z up, inside ``aabb``).
        faces: int [F, 3].
        grid_size: the O-Voxel resolution (int or 3 ints).
        aabb: the grid's box, default ``[-0.5, 0.5]^3``.
        face_weight / boundary_weight / regularization_weight: QEF terms; the defaults are the
            data toolkit's and the texturing pipeline's (1.0 / 0.2 / 0.01; the reference function's
            own defaults are 1.0 / 1.0 / 0.1).

    Voxels come in the reference's discovery order. ``dual_vertices`` are, as the reference returns
    them, positions relative to ``aabb[0]`` in world units; the SC-VAE's per-voxel offsets are
    ``dual_vertices * grid_size - coords`` (in [0, 1]; see ``dual_vertices_to_offsets``).
    """
    coords, intersected, q, vs = _dual_grid_quadrics(vertices, faces, grid_size, aabb, face_weight,
                                                     boundary_weight, regularization_weight)
    dual = _solve_dual_vertices(q, coords, vs) if len(coords) else np.zeros((0, 3), np.float32)
    return (torch.from_numpy(coords.astype(np.int32)), torch.from_numpy(dual), torch.from_numpy(intersected))


def dual_vertices_to_offsets(coords: torch.Tensor, dual_vertices: torch.Tensor, grid_size: int) -> torch.Tensor:
    """The SC-VAE encoder's input: per-voxel offsets ``dual_vertices * G - coords`` (the data toolkit
    asserts they lie in [-1e-3, 1 + 1e-3] and clamps them to [0, 1]; the texturing pipeline does not clamp)."""
    return dual_vertices * grid_size - coords.to(dual_vertices.dtype)
