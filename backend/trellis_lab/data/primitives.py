"""Signed-distance primitives and coloured part composition (numpy, CPU).

Every primitive maps points ``P [M, 3]`` (float32) to signed distances ``[M]``
(negative inside) and knows an axis-aligned bounding box (``lo``, ``hi``).
Distances are exact or a close bound near the surface, which is all that
voxelisation, surface sampling and rendering need.

A :class:`Shape` is a list of coloured :class:`Part` s; its SDF is the min over
parts and the colour at a point is the colour of the part that attains it.
Shapes are built in free "design" units and then normalised into the unit cube
(:meth:`Shape.normalized`). Parts are evaluated only inside their (padded) box,
which keeps a 64³ evaluation at a few tens of milliseconds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

F = np.float32


def _v(x) -> np.ndarray:
    return np.asarray(x, dtype=F)


def _len(a: np.ndarray) -> np.ndarray:
    return np.sqrt((a * a).sum(-1))


def rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return _v([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def rot_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return _v([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return _v([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def frame_from_axis(axis) -> np.ndarray:
    """Rotation whose third column (local z) is the unit vector `axis`."""
    z = _v(axis) / np.linalg.norm(axis)
    helper = _v([1, 0, 0]) if abs(z[0]) < 0.9 else _v([0, 1, 0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z], 1).astype(F)


class Prim:
    """Base class: `sdf(P)` and an AABB (`lo`, `hi`)."""

    lo: np.ndarray
    hi: np.ndarray

    def sdf(self, P: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


class Box(Prim):
    """Box with half sizes `half` around `center`, rotation `R` (columns = local
    axes in world), optional edge rounding `round` (inside the half sizes)."""

    def __init__(self, center, half, R=None, round: float = 0.0):
        self.c, self.b = _v(center), _v(half)
        self.R = None if R is None else _v(R)
        self.r = F(round)
        corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], F) * self.b
        if self.R is not None:
            corners = corners @ self.R.T
        self.lo, self.hi = self.c + corners.min(0), self.c + corners.max(0)

    def sdf(self, P):
        q = P - self.c
        if self.R is not None:
            q = q @ self.R
        q = np.abs(q) - (self.b - self.r)
        out = _len(np.maximum(q, 0)) + np.minimum(q.max(-1), 0)
        return out - self.r


class Sphere(Prim):
    def __init__(self, center, radius):
        self.c, self.r = _v(center), F(radius)
        self.lo, self.hi = self.c - self.r, self.c + self.r

    def sdf(self, P):
        return _len(P - self.c) - self.r


class Ellipsoid(Prim):
    """Axis-aligned ellipsoid (bound-style SDF, exact on the surface)."""

    def __init__(self, center, radii, R=None):
        self.c, self.rad = _v(center), _v(radii)
        self.R = None if R is None else _v(R)
        if self.R is None:
            ext = self.rad
        else:  # exact AABB of a rotated ellipsoid
            ext = np.sqrt(((self.R * self.rad[None, :]) ** 2).sum(1)).astype(F)
        self.lo, self.hi = self.c - ext, self.c + ext

    def sdf(self, P):
        q = P - self.c
        if self.R is not None:
            q = q @ self.R
        k0 = _len(q / self.rad)
        k1 = _len(q / (self.rad * self.rad))
        return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


class Cylinder(Prim):
    """Capped cylinder of radius `r` between points `a` and `b` (exact)."""

    def __init__(self, a, b, r):
        self.a, self.b, self.r = _v(a), _v(b), F(r)
        d = self.b - self.a
        d = d / np.linalg.norm(d)
        ext = self.r * np.sqrt(np.clip(1 - d * d, 0, 1))
        self.lo = np.minimum(self.a, self.b) - ext
        self.hi = np.maximum(self.a, self.b) + ext
        # fast path for axis-aligned cylinders (most of them)
        ax = int(np.argmax(np.abs(d)))
        self.axis = ax if abs(abs(d[ax]) - 1) < 1e-6 else None
        self.mid = (self.a + self.b) / 2
        self.half = F(np.linalg.norm(self.b - self.a) / 2)

    def sdf(self, P):
        if self.axis is not None:
            q = P - self.mid
            o = [i for i in range(3) if i != self.axis]
            dr = np.sqrt(q[:, o[0]] ** 2 + q[:, o[1]] ** 2) - self.r
            dz = np.abs(q[:, self.axis]) - self.half
            out = np.sqrt(np.maximum(dr, 0) ** 2 + np.maximum(dz, 0) ** 2)
            return out + np.minimum(np.maximum(dr, dz), 0)
        ba = self.b - self.a
        pa = P - self.a
        baba = F(ba @ ba)
        paba = pa @ ba
        x = _len(pa * baba - paba[:, None] * ba) - self.r * baba
        y = np.abs(paba - baba * 0.5) - baba * 0.5
        x2, y2 = x * x, y * y * baba
        inside = np.maximum(x, y) < 0
        d = np.where(inside, -np.minimum(x2, y2), np.where(x > 0, x2, 0) + np.where(y > 0, y2, 0))
        return np.sign(d) * np.sqrt(np.abs(d)) / baba


class Capsule(Prim):
    """Segment `a`-`b` swept by a sphere of radius `r`."""

    def __init__(self, a, b, r):
        self.a, self.b, self.r = _v(a), _v(b), F(r)
        self.lo = np.minimum(self.a, self.b) - self.r
        self.hi = np.maximum(self.a, self.b) + self.r

    def sdf(self, P):
        pa, ba = P - self.a, self.b - self.a
        h = np.clip((pa @ ba) / F(ba @ ba), 0, 1)
        return _len(pa - h[:, None] * ba) - self.r


class Cone(Prim):
    """Capped cone (frustum) from `a` (radius `ra`) to `b` (radius `rb`), exact."""

    def __init__(self, a, b, ra, rb):
        self.a, self.b, self.ra, self.rb = _v(a), _v(b), F(ra), F(rb)
        d = self.b - self.a
        d = d / np.linalg.norm(d)
        s = np.sqrt(np.clip(1 - d * d, 0, 1))
        self.lo = np.minimum(self.a - s * self.ra, self.b - s * self.rb)
        self.hi = np.maximum(self.a + s * self.ra, self.b + s * self.rb)

    def sdf(self, P):
        ra, rb = self.ra, self.rb
        rba = rb - ra
        ba = self.b - self.a
        pa = P - self.a
        baba = F(ba @ ba)
        papa = (pa * pa).sum(-1)
        paba = (pa @ ba) / baba
        x = np.sqrt(np.maximum(papa - paba * paba * baba, 0))
        cax = np.maximum(0, x - np.where(paba < 0.5, ra, rb))
        cay = np.abs(paba - 0.5) - 0.5
        k = rba * rba + baba
        f = np.clip((rba * (x - ra) + paba * baba) / k, 0, 1)
        cbx = x - ra - f * rba
        cby = paba - f
        s = np.where((cbx < 0) & (cay < 0), -1.0, 1.0).astype(F)
        return s * np.sqrt(np.minimum(cax * cax + cay * cay * baba, cbx * cbx + cby * cby * baba))


class Torus(Prim):
    """Torus around `center` with major radius `R`, tube radius `r`, ring axis `axis`."""

    def __init__(self, center, R, r, axis=(0, 0, 1)):
        self.c, self.Rm, self.r = _v(center), F(R), F(r)
        self.M = frame_from_axis(axis)
        n = self.M[:, 2]
        ext = self.Rm * np.sqrt(np.clip(1 - n * n, 0, 1)) + self.r
        self.lo, self.hi = self.c - ext, self.c + ext

    def sdf(self, P):
        q = (P - self.c) @ self.M
        qx = _len(q[:, :2]) - self.Rm
        return np.sqrt(qx * qx + q[:, 2] * q[:, 2]) - self.r


class Lathe(Prim):
    """Solid of revolution about the vertical axis through `center_xy`.

    `zs` (increasing) and `radii` are knots of the radius profile r(z); the solid
    spans z in [zs[0], zs[-1]]. Distances are scaled by the local slope, a good
    bound near the surface.
    """

    def __init__(self, zs, radii, center_xy=(0.0, 0.0)):
        self.zs, self.rs = _v(zs), _v(radii)
        self.cxy = _v(center_xy)
        dz = np.diff(self.zs)
        slopes = np.diff(self.rs) / np.maximum(dz, 1e-6)
        seg_scale = 1.0 / np.sqrt(1.0 + slopes * slopes)
        # per-knot scale (smaller of the two adjacent segments) -> continuous in z
        self.knot_scale = np.minimum(np.r_[seg_scale[0], seg_scale], np.r_[seg_scale, seg_scale[-1]]).astype(F)
        rmax = F(self.rs.max())
        self.lo = _v([self.cxy[0] - rmax, self.cxy[1] - rmax, self.zs[0]])
        self.hi = _v([self.cxy[0] + rmax, self.cxy[1] + rmax, self.zs[-1]])

    def sdf(self, P):
        z = P[:, 2]
        rho = _len(P[:, :2] - self.cxy)
        r = np.interp(z, self.zs, self.rs).astype(F)
        d_side = (rho - r) * np.interp(z, self.zs, self.knot_scale).astype(F)
        d_cap = np.maximum(self.zs[0] - z, z - self.zs[-1])
        return np.maximum(d_side, d_cap)


class Convex(Prim):
    """Convex polytope given by its vertices (hull via plane list supplied by caller).

    `planes` is [K, 4] with rows (nx, ny, nz, d) meaning n·p <= d inside
    (n unit). `vertices` give the AABB.
    """

    def __init__(self, planes, vertices):
        pl = _v(planes)
        n = pl[:, :3] / np.linalg.norm(pl[:, :3], axis=1, keepdims=True)
        self.n, self.d = n.astype(F), (pl[:, 3] / np.linalg.norm(pl[:, :3], axis=1)).astype(F)
        v = _v(vertices)
        self.lo, self.hi = v.min(0), v.max(0)

    def sdf(self, P):
        return (P @ self.n.T - self.d).max(-1)


def convex_from_vertices(vertices, eps: float = 1e-6) -> Convex:
    """Convex hull of a handful of vertices as a plane list (brute force over
    vertex triples, fine for the <= 16 vertices used here)."""
    v = np.asarray(vertices, dtype=np.float64)
    n = len(v)
    scale = np.abs(v).max() + 1e-12
    planes = []
    for i in range(n):
        for j in range(i + 1, n):
            for k in range(j + 1, n):
                nrm = np.cross(v[j] - v[i], v[k] - v[i])
                ln = np.linalg.norm(nrm)
                if ln < 1e-9 * scale * scale:
                    continue
                nrm = nrm / ln
                d = nrm @ v[i]
                s = v @ nrm - d
                if np.all(s <= eps * scale):
                    planes.append(np.r_[nrm, d])
                elif np.all(s >= -eps * scale):
                    planes.append(np.r_[-nrm, -d])
    planes = np.unique(np.round(np.array(planes), 7), axis=0)
    return Convex(planes, v)


def prism_x(profile_yz, x0, x1) -> Convex:
    """Extrude a convex 2D polygon given in the (y, z) plane along x from x0 to x1."""
    pts = np.asarray(profile_yz, dtype=np.float64)
    verts = np.concatenate([np.c_[np.full(len(pts), x0), pts], np.c_[np.full(len(pts), x1), pts]])
    return convex_from_vertices(verts)


def transformed_vertices(vertices, R=None, center=(0, 0, 0)) -> np.ndarray:
    v = np.asarray(vertices, dtype=np.float64)
    if R is not None:
        v = v @ np.asarray(R, dtype=np.float64).T
    return v + np.asarray(center, dtype=np.float64)


class Difference(Prim):
    """`a` minus the union of `cut` primitives."""

    def __init__(self, a: Prim, *cut: Prim):
        self.a, self.cut = a, cut
        self.lo, self.hi = a.lo, a.hi

    def sdf(self, P):
        d = self.a.sdf(P)
        for c in self.cut:
            d = np.maximum(d, -c.sdf(P))
        return d


class Intersection(Prim):
    def __init__(self, a: Prim, *others: Prim):
        self.parts = (a,) + others
        self.lo = np.max([p.lo for p in self.parts], 0)
        self.hi = np.min([p.hi for p in self.parts], 0)

    def sdf(self, P):
        d = self.parts[0].sdf(P)
        for p in self.parts[1:]:
            d = np.maximum(d, p.sdf(P))
        return d


class Union(Prim):
    def __init__(self, *parts: Prim):
        self.parts = parts
        self.lo = np.min([p.lo for p in parts], 0)
        self.hi = np.max([p.hi for p in parts], 0)

    def sdf(self, P):
        d = self.parts[0].sdf(P)
        for p in self.parts[1:]:
            d = np.minimum(d, p.sdf(P))
        return d


class Offset(Prim):
    """`prim` dilated by `r` (sdf - r; a negative `r` erodes)."""

    def __init__(self, prim: Prim, r: float):
        self.prim, self.r = prim, F(r)
        self.lo, self.hi = prim.lo - max(self.r, 0), prim.hi + max(self.r, 0)

    def sdf(self, P):
        return self.prim.sdf(P) - self.r


def halfspace_box(lo, hi) -> Box:
    """An axis-aligned box from corners (handy as a clipping volume)."""
    lo, hi = _v(lo), _v(hi)
    return Box((lo + hi) / 2, (hi - lo) / 2)


@dataclass
class Part:
    prim: Prim
    color: str  # palette name
    rgb: np.ndarray  # jittered colour in [0, 1]
    label: str = ""


@dataclass
class Shape:
    """A union of coloured parts with an optional similarity transform
    (world = design * scale + offset)."""

    parts: list[Part]
    scale: float = 1.0
    offset: np.ndarray = field(default_factory=lambda: np.zeros(3, F))

    # ---- geometry -----------------------------------------------------------------
    @property
    def colors(self) -> np.ndarray:
        """[n_parts, 3] rgb of each part."""
        return np.stack([p.rgb for p in self.parts]).astype(F)

    def part_boxes(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.stack([p.prim.lo for p in self.parts]) * self.scale + self.offset
        hi = np.stack([p.prim.hi for p in self.parts]) * self.scale + self.offset
        return lo.astype(F), hi.astype(F)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.part_boxes()
        return lo.min(0), hi.max(0)

    def normalized(self, extent: float = 0.9) -> "Shape":
        """Centre the bounding box at the origin and scale its largest side to `extent`."""
        lo = np.stack([p.prim.lo for p in self.parts]).min(0)
        hi = np.stack([p.prim.hi for p in self.parts]).max(0)
        s = float(extent / (hi - lo).max())
        return Shape(self.parts, s, (-(lo + hi) / 2 * s).astype(F))

    # ---- evaluation ---------------------------------------------------------------
    def query(self, P, band: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
        """SDF and part index at world points `P [M, 3]`.

        Values are exact-ish where |sdf| < `band`; further away they are clipped
        to `band` and the part index may be -1.
        """
        P = np.ascontiguousarray(np.asarray(P, dtype=F).reshape(-1, 3))
        d = np.full(len(P), band, F)
        pid = np.full(len(P), -1, np.int16)
        if len(P) == 0:
            return d, pid
        lo, hi = self.part_boxes()
        lo, hi = lo - band, hi + band
        Q = (P - self.offset) / F(self.scale)
        # candidates per part: x-range by binary search on sorted x, then y/z test
        order = np.argsort(P[:, 0], kind="stable")
        xs = P[order, 0]
        Y, Z = P[:, 1], P[:, 2]
        for i, part in enumerate(self.parts):
            i0 = np.searchsorted(xs, lo[i, 0], side="left")
            i1 = np.searchsorted(xs, hi[i, 0], side="right")
            if i1 <= i0:
                continue
            cand = order[i0:i1]
            y, z = Y[cand], Z[cand]
            idx = cand[(y >= lo[i, 1]) & (y <= hi[i, 1]) & (z >= lo[i, 2]) & (z <= hi[i, 2])]
            if len(idx) == 0:
                continue
            di = part.prim.sdf(Q[idx]) * F(self.scale)
            better = di < d[idx]
            sel = idx[better]
            d[sel] = di[better]
            pid[sel] = i
        return d, pid

    def sdf(self, P, band: float = 0.1) -> np.ndarray:
        return self.query(P, band)[0]

    def color_at(self, P, band: float = 0.1) -> np.ndarray:
        """rgb of the nearest part at each point ([M, 3]; gray where no part is near)."""
        _, pid = self.query(P, band)
        cols = np.concatenate([self.colors, _v([[0.5, 0.5, 0.5]])])
        return cols[pid]

    def normal_at(self, P, eps: float = 1e-3, band: float = 0.1) -> np.ndarray:
        """Unit outward normal (normalised SDF gradient, tetrahedral differences)."""
        P = np.asarray(P, dtype=F).reshape(-1, 3)
        k = _v([[1, -1, -1], [-1, -1, 1], [-1, 1, -1], [1, 1, 1]])
        pts = (P[:, None, :] + eps * k[None]).reshape(-1, 3)
        d = self.sdf(pts, band).reshape(-1, 4)
        g = (d[:, :, None] * k[None]).sum(1)
        return g / np.maximum(_len(g)[:, None], 1e-8)

    def grid(self, res: int = 64, band: float | None = None, lo: float = -0.5, hi: float = 0.5):
        """SDF and part index sampled at voxel centres of a `res`³ grid over [lo, hi]³.

        Returns (sdf [res,res,res] float32, part [res,res,res] int16) indexed [x, y, z].
        Only each part's padded box is evaluated.
        """
        h = (hi - lo) / res
        if band is None:
            band = 3 * h
        axis = (lo + (np.arange(res, dtype=F) + 0.5) * h).astype(F)
        d = np.full((res, res, res), band, F)
        pid = np.full((res, res, res), -1, np.int16)
        plo, phi = self.part_boxes()
        for i, part in enumerate(self.parts):
            a = np.clip(np.floor((plo[i] - band - lo) / h - 0.5).astype(int), 0, res)
            b = np.clip(np.ceil((phi[i] + band - lo) / h - 0.5).astype(int) + 1, 0, res)
            if np.any(b <= a):
                continue
            xs, ys, zs = axis[a[0]:b[0]], axis[a[1]:b[1]], axis[a[2]:b[2]]
            P = np.stack(np.meshgrid(xs, ys, zs, indexing="ij"), -1).reshape(-1, 3)
            Q = (P - self.offset) / F(self.scale)
            di = (part.prim.sdf(Q) * F(self.scale)).reshape(len(xs), len(ys), len(zs))
            blk = d[a[0]:b[0], a[1]:b[1], a[2]:b[2]]
            pblk = pid[a[0]:b[0], a[1]:b[1], a[2]:b[2]]
            better = di < blk
            blk[better] = di[better]
            pblk[better] = i
        return d, pid
