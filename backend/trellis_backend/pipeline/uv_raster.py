"""Which triangle covers each texel of a UV atlas, and where: the CPU stand-in for the reference's
nvdiffrast rasterisation in UV space when it bakes textures.

UVs are in glTF's convention (origin at the image's top-left, v down): texel ``(row, col)`` has its
centre at ``u = (col + 0.5) / W``, ``v = (row + 0.5) / H``. A texel belongs to a triangle when its
centre lies inside it (edges included); where triangles overlap, the later one wins.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np


def rasterize_uv(uvs: np.ndarray, faces: np.ndarray, size: int, budget: int = 1 << 22) -> Tuple[np.ndarray, np.ndarray]:
    """(face id int32 [size, size], -1 where no triangle; barycentrics float32 [size, size, 3]).

    ``uvs`` float [V, 2] (glTF convention), ``faces`` int [F, 3] indexing them. Each triangle tests the
    texel centres of its bounding box, about ``budget`` candidates at a time.
    """
    face_id = np.full((size, size), -1, np.int32)
    bary = np.zeros((size, size, 3), np.float32)
    if len(faces) == 0:
        return face_id, bary
    p = uvs[faces].astype(np.float64) * size - 0.5               # texel centres at integer coordinates
    lo = np.clip(np.ceil(p.min(axis=1) - 1e-9), 0, size - 1).astype(np.int64)
    hi = np.clip(np.floor(p.max(axis=1) + 1e-9), 0, size - 1).astype(np.int64)
    ext = np.maximum(hi - lo + 1, 0)
    a, b, c = p[:, 0], p[:, 1], p[:, 2]
    den = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
    area = np.where(np.abs(den) > 1e-12, ext[:, 0] * ext[:, 1], 0)
    todo = np.nonzero(area > 0)[0]
    csum = np.cumsum(area[todo])
    start = 0
    while start < len(todo):
        stop = max(int(np.searchsorted(csum, (csum[start - 1] if start else 0) + budget, side="right")), start + 1)
        ids = todo[start:stop]
        counts = area[ids]
        owner = np.repeat(ids, counts)
        local = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
        px = lo[owner, 0] + local % ext[owner, 0]
        py = lo[owner, 1] + local // ext[owner, 0]
        w0 = ((b[owner, 1] - c[owner, 1]) * (px - c[owner, 0]) + (c[owner, 0] - b[owner, 0]) * (py - c[owner, 1])) / den[owner]
        w1 = ((c[owner, 1] - a[owner, 1]) * (px - c[owner, 0]) + (a[owner, 0] - c[owner, 0]) * (py - c[owner, 1])) / den[owner]
        w2 = 1 - w0 - w1
        eps = -1e-7
        inside = (w0 >= eps) & (w1 >= eps) & (w2 >= eps)
        face_id[py[inside], px[inside]] = owner[inside]
        bary[py[inside], px[inside]] = np.stack([w0[inside], w1[inside], w2[inside]], axis=1)
        start = stop
    return face_id, bary


def fill_gutters(image: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Copy into every uncovered texel the value of the nearest covered one, so bilinear filtering and
    mipmaps at chart borders never blend in an unbaked colour (the reference inpaints with OpenCV)."""
    from scipy import ndimage

    if covered.all() or not covered.any():
        return image
    _, (iy, ix) = ndimage.distance_transform_edt(~covered, return_indices=True)
    return image[iy, ix]
