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

    ``uvs`` float [V, 2] (glTF convention), ``faces`` int [F, 3] indexing them. Triangles are handled in
    batches of similar bounding-box size so the work stays proportional to their covered area.
    """
    face_id = np.full((size, size), -1, np.int32)
    bary = np.zeros((size, size, 3), np.float32)
    if len(faces) == 0:
        return face_id, bary
    p = uvs[faces].astype(np.float64) * size - 0.5               # texel centres at integer coordinates
    lo = np.clip(np.ceil(p.min(axis=1) - 1e-9), 0, size - 1).astype(np.int64)
    hi = np.clip(np.floor(p.max(axis=1) + 1e-9), 0, size - 1).astype(np.int64)
    ext = np.maximum(hi - lo + 1, 0)
    valid = np.all(p.max(axis=1) >= -1e-9, axis=1) & np.all(p.min(axis=1) <= size - 1 + 1e-9, axis=1)
    span = np.where(valid, ext.max(axis=1), 0)
    a, b, c = p[:, 0], p[:, 1], p[:, 2]
    den = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
    cap_prev = 0
    cap = 2
    while cap_prev < size:
        sel = np.nonzero((span > cap_prev) & (span <= cap) & (np.abs(den) > 1e-12))[0]
        per_batch = max(1, budget // (cap * cap))
        oy, ox = np.meshgrid(np.arange(cap), np.arange(cap), indexing="ij")
        for s in range(0, len(sel), per_batch):
            ids = sel[s:s + per_batch]
            px = lo[ids, 0, None, None] + ox[None]
            py = lo[ids, 1, None, None] + oy[None]
            ax, ay = a[ids, 0, None, None], a[ids, 1, None, None]
            bx, by = b[ids, 0, None, None], b[ids, 1, None, None]
            cx, cy = c[ids, 0, None, None], c[ids, 1, None, None]
            d = den[ids, None, None]
            w0 = ((by - cy) * (px - cx) + (cx - bx) * (py - cy)) / d
            w1 = ((cy - ay) * (px - cx) + (ax - cx) * (py - cy)) / d
            w2 = 1 - w0 - w1
            eps = -1e-7
            inside = (w0 >= eps) & (w1 >= eps) & (w2 >= eps) & (px <= hi[ids, 0, None, None]) & (py <= hi[ids, 1, None, None])
            k, yy, xx = np.nonzero(inside)
            face_id[py[k, yy, xx], px[k, yy, xx]] = ids[k]
            bary[py[k, yy, xx], px[k, yy, xx]] = np.stack([w0[k, yy, xx], w1[k, yy, xx], w2[k, yy, xx]], axis=1)
        cap_prev, cap = cap, min(cap * 2, size)
    return face_id, bary


def fill_gutters(image: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Copy into every uncovered texel the value of the nearest covered one, so bilinear filtering and
    mipmaps at chart borders never blend in an unbaked colour (the reference inpaints with OpenCV)."""
    from scipy import ndimage

    if covered.all() or not covered.any():
        return image
    _, (iy, ix) = ndimage.distance_transform_edt(~covered, return_indices=True)
    return image[iy, ix]
