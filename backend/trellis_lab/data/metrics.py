"""Evaluation metrics for generated objects (torch/numpy, CPU).

- :func:`chamfer_distance` — symmetric Chamfer distance between point sets
- :class:`CategoryClassifier` — nearest category by Chamfer distance to fresh
  generator samples of every category
- :func:`dominant_color` / :func:`color_histogram` — palette name of a coloured
  voxel set, point set or mesh
- :func:`voxel_iou` — IoU of two voxel sets
- :func:`solid_occupancy` / :func:`solid_iou` — the volume a surface shell encloses, and its IoU
"""
from __future__ import annotations

import numpy as np
import torch

from .palette import COLOR_NAMES, nearest_color_index
from .splits import CATEGORIES
from .voxelize import RESOLUTION

REFERENCE_SEED_BASE = 900_000_000  # seeds of classifier references (not used by datasets)


def _subsample(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    if k and len(x) > k:
        idx = np.random.default_rng(seed).choice(len(x), k, replace=False)
        return x[idx]
    return x


def _as_points(x) -> np.ndarray:
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if x.ndim == 3 and x.dtype == bool:  # dense occupancy grid
        x = np.argwhere(x)
    if x.ndim == 2 and x.shape[1] == 4:  # (batch, x, y, z) sparse coords
        x = x[:, 1:]
    return np.asarray(x, np.float32).reshape(-1, 3)


def chamfer_distance(a, b, max_points: int = 2048, seed: int = 0) -> float:
    """Symmetric Chamfer distance: 0.5 * (mean_a min_b |a-b| + mean_b min_a |a-b|),
    Euclidean (not squared), in the units of the inputs (voxel coords -> voxels).

    `a`, `b`: point sets [N, 3] (also accepted: sparse coords [N, 4] with a batch
    column, or dense bool grids). Sets larger than `max_points` are randomly
    subsampled (deterministic in `seed`). Empty sets give +inf.
    """
    a = _subsample(_as_points(a), max_points, seed)
    b = _subsample(_as_points(b), max_points, seed + 1)
    if len(a) == 0 or len(b) == 0:
        return float("inf")
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    d = torch.cdist(ta, tb)
    return float(0.5 * (d.min(1).values.mean() + d.min(0).values.mean()))


def voxel_iou(a, b, resolution: int = RESOLUTION) -> float:
    """Intersection over union of two voxel sets (coords [N, 3] / [N, 4] or dense bool grids)."""
    ga, gb = _dense(a, resolution), _dense(b, resolution)
    union = np.logical_or(ga, gb).sum()
    return float(np.logical_and(ga, gb).sum() / union) if union else 1.0


def _dense(x, resolution: int) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim == 3 and x.shape == (resolution,) * 3:
        return x.astype(bool)
    c = _as_points(x).astype(np.int64)
    g = np.zeros((resolution,) * 3, bool)
    ok = np.all((c >= 0) & (c < resolution), 1)
    g[tuple(c[ok].T)] = True
    return g


def solid_occupancy(x, resolution: int = RESOLUTION) -> np.ndarray:
    """The solid a surface-voxel shell encloses, robust to holes: a voxel is inside when, along each
    of the three axes, it lies between the first and last occupied voxel of its grid line.

    Why not a flood fill from outside: generated shells have pinholes, and one pinhole lets a flood
    fill empty the whole interior (near-identical shells then differ by their full volume). Open
    cavities stay empty (a mug's inside: the vertical line through it meets only the bottom), so
    do the gaps between parts (under a table top: the vertical lines there meet only the top)."""
    g = _dense(x, resolution)
    solid = np.ones_like(g)
    for axis in range(3):
        first = np.maximum.accumulate(g, axis=axis)
        last = np.flip(np.maximum.accumulate(np.flip(g, axis), axis=axis), axis)
        solid &= first & last
    return solid | g


def solid_iou(a, b, resolution: int = RESOLUTION) -> float:
    """IoU of the solids two voxel shells enclose (`solid_occupancy`): the volumetric IoU of
    single-view reconstruction papers, which a one-voxel offset of a thin shell does not zero."""
    return voxel_iou(solid_occupancy(a, resolution), solid_occupancy(b, resolution), resolution)


def color_histogram(colors, weights=None) -> dict[str, float]:
    """Fraction of (weighted) colour samples nearest to each palette colour.
    `colors` rgb [N, 3] in [0, 1] (uint8 0-255 accepted)."""
    c = colors.detach().cpu().numpy() if isinstance(colors, torch.Tensor) else np.asarray(colors)
    c = c.astype(np.float32).reshape(-1, 3)
    if c.size and c.max() > 1.5:
        c = c / 255.0
    if len(c) == 0:
        return {n: 0.0 for n in COLOR_NAMES}
    idx = nearest_color_index(np.clip(c, 0, 1))
    w = np.ones(len(c)) if weights is None else np.asarray(weights, np.float64).reshape(-1)
    hist = np.bincount(idx, weights=w, minlength=len(COLOR_NAMES))
    hist = hist / max(hist.sum(), 1e-12)
    return {n: float(h) for n, h in zip(COLOR_NAMES, hist)}


def dominant_color(colors, weights=None) -> str:
    """Palette name covering the largest (weighted) share of the colour samples —
    e.g. the rgb features of a voxel set, or vertex colours weighted by area."""
    hist = color_histogram(colors, weights)
    return max(hist, key=hist.get)


def mesh_dominant_color(vertices, faces, vertex_colors) -> str:
    """Dominant palette colour of a vertex-coloured triangle mesh (area weighted)."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    vc = np.asarray(vertex_colors, np.float32)[:, :3]
    if vc.max() > 1.5:
        vc = vc / 255.0
    area = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    return dominant_color(vc[f].mean(1), area)


def _fixed_size(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Exactly k points: random subset, or repeated points when fewer."""
    x = _subsample(x, k, seed)
    if 0 < len(x) < k:
        x = np.concatenate([x, x[np.arange(k - len(x)) % len(x)]])
    return x


class CategoryClassifier:
    """Nearest category by Chamfer distance to fresh generator samples.

    References: `per_category` objects of every category (seeds from
    REFERENCE_SEED_BASE + `seed`, never used by datasets), voxelised at
    `resolution`, compared as voxel coordinates subsampled to `max_points`. A
    query gets the category of its nearest reference (1-NN). About 0.1 s per
    query on CPU with the defaults; ~98% accurate on fresh generator samples.
    """

    def __init__(self, per_category: int = 8, seed: int = 0, resolution: int = RESOLUTION,
                 max_points: int = 256, categories=CATEGORIES):
        from .shapes import build_object
        from .voxelize import voxelize

        self.categories = tuple(categories)
        self.max_points = max_points
        labels, pts = [], []
        for ci, cat in enumerate(self.categories):
            for k in range(per_category):
                s = REFERENCE_SEED_BASE + seed * 10_000 + ci * 1000 + k
                obj = build_object(cat, COLOR_NAMES[(k + ci) % len(COLOR_NAMES)], s, "train")
                c = voxelize(obj, resolution, features=False).coords.astype(np.float32)
                pts.append(_fixed_size(c, max_points, s))
                labels.append(ci)
        self.ref_labels = np.asarray(labels)
        self.ref_points = torch.from_numpy(np.stack(pts))  # [R, max_points, 3]

    def reference_distances(self, coords) -> np.ndarray:
        """Chamfer distance (voxels) from the query to every reference, [R]."""
        q = _fixed_size(_as_points(coords), self.max_points, 12345)
        if len(q) == 0:
            return np.full(len(self.ref_labels), np.inf)
        Q = torch.from_numpy(q)[None].expand(len(self.ref_points), -1, -1)
        d = torch.cdist(Q, self.ref_points)
        return (0.5 * (d.min(2).values.mean(1) + d.min(1).values.mean(1))).numpy()

    def distances(self, coords) -> dict[str, float]:
        """Per category, the Chamfer distance (voxels) to its nearest reference."""
        d = self.reference_distances(coords)
        return {c: float(d[self.ref_labels == i].min()) for i, c in enumerate(self.categories)}

    def classify(self, coords) -> str:
        d = self.distances(coords)
        return min(d, key=d.get)
