"""Surface voxelisation of an arbitrary mesh at 64^3 (for `TrellisPipeline.variants`).

Like the reference's ``TrellisTextTo3DPipeline.voxelize``: the mesh is centred on its
bounding box, scaled so the longest side is 1, clipped into [-0.5, 0.5]^3, and every
voxel of the 64^3 grid that the surface passes through is active. Points are sampled on
each triangle densely enough (spacing < voxel/3) that no crossed voxel is missed in
practice.
"""
from __future__ import annotations

import numpy as np

Y_UP_TO_Z_UP = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=np.float64)  # row vectors: v @ M


def voxelize_surface(vertices: np.ndarray, faces: np.ndarray, resolution: int = 64, normalize: bool = True,
                     max_points: int = 20_000_000) -> np.ndarray:
    """int32 ``[N, 3]`` voxel coordinates (x, y, z), sorted, unique."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(v) == 0 or len(f) == 0:
        raise ValueError("cannot voxelise an empty mesh")
    if normalize:
        lo, hi = v.min(0), v.max(0)
        center = (lo + hi) / 2
        scale = float((hi - lo).max())
        v = (v - center) / (scale if scale > 0 else 1.0)
    v = np.clip(v, -0.5 + 1e-6, 0.5 - 1e-6)
    tri = v[f]  # [F, 3, 3]
    edge = np.maximum(np.linalg.norm(tri[:, 1] - tri[:, 0], axis=1),
                      np.maximum(np.linalg.norm(tri[:, 2] - tri[:, 1], axis=1),
                                 np.linalg.norm(tri[:, 0] - tri[:, 2], axis=1)))
    n = np.clip(np.ceil(edge * resolution * 3).astype(np.int64), 1, 256)  # subdivisions per edge
    points = [v]
    # group triangles by subdivision count: barycentric lattice of n per edge
    for k in np.unique(n):
        sel = tri[n == k]
        i, j = np.meshgrid(np.arange(k + 1), np.arange(k + 1), indexing="ij")
        keep = (i + j) <= k
        a = (i[keep] / k)[None, :, None]
        b = (j[keep] / k)[None, :, None]
        pts = sel[:, None, 0] * (1 - a - b) + sel[:, None, 1] * a + sel[:, None, 2] * b
        points.append(pts.reshape(-1, 3))
        if sum(len(p) for p in points) > max_points:
            raise ValueError("mesh too large to voxelise")
    p = np.concatenate(points)
    idx = np.clip(np.floor((p + 0.5) * resolution).astype(np.int64), 0, resolution - 1)
    flat = np.unique((idx[:, 0] * resolution + idx[:, 1]) * resolution + idx[:, 2])
    out = np.stack([flat // (resolution * resolution), (flat // resolution) % resolution, flat % resolution], 1)
    return out.astype(np.int32)
