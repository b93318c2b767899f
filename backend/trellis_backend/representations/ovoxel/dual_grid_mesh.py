"""Flexible dual grid -> triangle mesh, exactly as TRELLIS.2's ``o_voxel.convert.flexible_dual_grid_to_mesh``.

Every voxel holds one vertex (its dual vertex, an offset in voxel units inside the voxel) and three
flags saying whether the surface crosses the voxel's edge along x, y or z. Each crossed edge that
is shared by four existing voxels becomes a quad of their four vertices, in the reference's order
(voxel-major, then axis x, y, z); a quad becomes two triangles:

* ``split_weight`` given (the SC-VAE decoder's output): diagonal 0-2 when
  ``w0 * w2 > w1 * w3``, else diagonal 1-3;
* ``split_weight=None``: the diagonal whose two triangle normals are better aligned (larger
  ``|n0 . n1|``, unnormalised normals, as the reference compares them);
* ``train=True``: a fifth vertex per quad, the split-weighted mean of the two diagonals' midpoints,
  and four triangles around it (the reference's training-time mesh, differentiable in the weights).

Vertex maths runs in torch (gradients flow to ``dual_vertices`` and ``split_weight``); the
neighbour search is an exact sorted-key lookup on the CPU in place of the reference's CUDA hash.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from ...errors import BadInputError
from .grid import UNIT_AABB, Aabb, GridSize, VoxelLookup, as_numpy, grid_geometry

# the four voxels around voxel v's edge along each axis (offsets from v), in the reference's order
EDGE_NEIGHBOUR_OFFSETS = np.array([
    [[0, 0, 0], [0, 0, 1], [0, 1, 1], [0, 1, 0]],  # x edge
    [[0, 0, 0], [1, 0, 0], [1, 0, 1], [0, 0, 1]],  # y edge
    [[0, 0, 0], [0, 1, 0], [1, 1, 0], [1, 0, 0]],  # z edge
], dtype=np.int64)
QUAD_SPLIT_02 = (0, 1, 2, 0, 2, 3)   # diagonal between quad corners 0 and 2
QUAD_SPLIT_13 = (0, 1, 3, 3, 1, 2)   # diagonal between quad corners 1 and 3
QUAD_SPLIT_TRAIN = (0, 1, 4, 1, 2, 4, 2, 3, 4, 3, 0, 4)  # corner 4 is the quad's mid vertex


def dual_grid_quads(coords: np.ndarray, intersected: np.ndarray, grid_size: np.ndarray) -> np.ndarray:
    """int64 [L, 4]: the voxel rows of each quad (one per crossed edge whose four voxels all exist)."""
    neighbours = coords.astype(np.int64)[:, None, None, :] + EDGE_NEIGHBOUR_OFFSETS[None]  # [N, 3, 4, 3]
    candidates = neighbours[intersected]                                                 # [M, 4, 3]
    rows = VoxelLookup(coords, grid_size).find(candidates.reshape(-1, 3)).reshape(-1, 4)
    return rows[np.all(rows >= 0, axis=1)]


def _check_inputs(coords, dual_vertices, intersected, split_weight):
    if coords.ndim != 2 or coords.shape[1] != 3:
        raise BadInputError(f"coords must be [N, 3] voxel indices (no batch column), got {tuple(coords.shape)}",
                            hint="Drop the batch column of a sparse tensor's coords before meshing.")
    n = coords.shape[0]
    if tuple(dual_vertices.shape) != (n, 3):
        raise BadInputError(f"dual_vertices must be [{n}, 3] like coords, got {tuple(dual_vertices.shape)}")
    if tuple(intersected.shape) != (n, 3):
        raise BadInputError(f"intersected must be [{n}, 3] booleans (x, y, z edges), got {tuple(intersected.shape)}")
    if split_weight is not None and tuple(split_weight.shape) not in ((n, 1), (n,)):
        raise BadInputError(f"split_weight must be [{n}, 1] or None, got {tuple(split_weight.shape)}")


def flexible_dual_grid_to_mesh(
    coords,
    dual_vertices: torch.Tensor,
    intersected,
    split_weight: Optional[torch.Tensor] = None,
    grid_size: Optional[GridSize] = None,
    aabb: Aabb = UNIT_AABB,
    voxel_size=None,
    train: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mesh of a flexible dual grid: ``(vertices float32 [V, 3], faces int64 [F, 3])``.

    Args:
        coords: int [N, 3] voxel indices in the grid (unique; no batch column).
        dual_vertices: float [N, 3] vertex offsets in voxel units (0..1 inside the voxel), the
            decoder's / the dataset's convention; the vertex is ``aabb[0] + (coords + dual) * voxel_size``.
        intersected: bool [N, 3], surface crosses the voxel's x / y / z edge.
        split_weight: float [N, 1] (or [N]) quad split weights, or None for the min-angle rule.
        grid_size: the grid's resolution (int or 3 ints); or give ``voxel_size`` instead.
        aabb: the grid's box, default ``[-0.5, 0.5]^3``.
        train: the reference's training mesh (one extra vertex per quad, four triangles); needs split_weight.

    Vertices are one per voxel in ``coords`` order (followed, with ``train``, by one per quad);
    faces come in the reference's order. Outputs live on ``dual_vertices``' device.
    """
    dual = dual_vertices if isinstance(dual_vertices, torch.Tensor) else torch.as_tensor(np.asarray(dual_vertices))
    device = dual.device
    coords_np = as_numpy(coords).astype(np.int64)
    inter_np = as_numpy(intersected).astype(bool)
    _check_inputs(coords_np, dual, inter_np, split_weight)
    if voxel_size is not None:
        box = as_numpy(aabb).astype(np.float32)
        vs = np.broadcast_to(np.asarray(as_numpy(voxel_size), np.float32), (3,))
        grid_size = np.round((box[1] - box[0]) / vs).astype(np.int64)
    elif grid_size is None:
        raise BadInputError("flexible_dual_grid_to_mesh needs grid_size or voxel_size",
                            hint="Pass the O-Voxel resolution, e.g. grid_size=256.")
    size, box, vs = grid_geometry(grid_size, aabb)
    if voxel_size is not None:
        vs = np.broadcast_to(np.asarray(as_numpy(voxel_size), np.float32), (3,)).copy()
    if train and split_weight is None:
        raise BadInputError("train=True needs split_weight (the mid vertex is weighted by it)")

    quads = torch.from_numpy(dual_grid_quads(coords_np, inter_np, size)).to(device)
    vs_t = torch.from_numpy(vs).to(device)
    origin = torch.from_numpy(box[0]).to(device).reshape(1, 3)
    vertices = (torch.from_numpy(coords_np).to(device=device, dtype=torch.float32) + dual.float()) * vs_t + origin

    if split_weight is not None:
        weights = split_weight.reshape(-1, 1).to(device).float()
        w = weights[quads]                                     # [L, 4, 1]
        w02 = w[:, 0] * w[:, 2]
        w13 = w[:, 1] * w[:, 3]
    if train:
        corners = vertices[quads]
        mid02 = (corners[:, 0] + corners[:, 2]) / 2
        mid13 = (corners[:, 1] + corners[:, 3]) / 2
        mid = (w02 * mid02 + w13 * mid13) / (w02 + w13)
        n, l = vertices.shape[0], quads.shape[0]
        vertices = torch.cat([vertices, mid], dim=0)
        quads = torch.cat([quads, torch.arange(n, n + l, device=device).unsqueeze(1)], dim=1)
        faces = quads[:, list(QUAD_SPLIT_TRAIN)].reshape(-1, 3)
        return vertices, faces

    tri02 = quads[:, list(QUAD_SPLIT_02)]
    tri13 = quads[:, list(QUAD_SPLIT_13)]
    if split_weight is not None:
        use02 = w02 > w13
    else:
        use02 = _normal_alignment(vertices, tri02) > _normal_alignment(vertices, tri13)
    faces = torch.where(use02, tri02, tri13).reshape(-1, 3)
    return vertices, faces


def _normal_alignment(vertices: torch.Tensor, tris: torch.Tensor) -> torch.Tensor:
    """|n0 . n1| of a split given as six indices t: n0 = (t1 - t0) x (t2 - t0), n1 = (t2 - t1) x (t3 - t1).

    These are the reference's two (unnormalised) normals, term for term; t3 is the second triangle's
    first index, so the comparison matches it exactly rather than being a textbook dihedral angle.
    """
    v = vertices
    n0 = torch.cross(v[tris[:, 1]] - v[tris[:, 0]], v[tris[:, 2]] - v[tris[:, 0]], dim=1)
    n1 = torch.cross(v[tris[:, 2]] - v[tris[:, 1]], v[tris[:, 3]] - v[tris[:, 1]], dim=1)
    return (n0 * n1).sum(dim=1, keepdim=True).abs()
