"""Grid settings shared by the O-Voxel conversions: the voxel grid's box, size and voxel size.

TRELLIS.2 places every asset in the box ``[-0.5, 0.5]^3`` (z up) and names a grid by its
resolution ``G``; voxel ``(i, j, k)`` spans ``aabb[0] + (i, j, k) * voxel_size`` to
``aabb[0] + (i + 1, j + 1, k + 1) * voxel_size`` with ``voxel_size = (aabb[1] - aabb[0]) / G``
computed in float32, exactly as the reference does, so that positions match it bit for bit.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import numpy as np
import torch

from ...errors import BadInputError

UNIT_AABB = ((-0.5, -0.5, -0.5), (0.5, 0.5, 0.5))

GridSize = Union[int, Sequence[int], np.ndarray, torch.Tensor]
Aabb = Union[Sequence[Sequence[float]], np.ndarray, torch.Tensor]


def as_numpy(x) -> np.ndarray:
    """A numpy view of a tensor or array-like (CPU, detached)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def grid_geometry(grid_size: GridSize, aabb: Aabb = UNIT_AABB) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(grid_size int64 [3], aabb float32 [2, 3], voxel_size float32 [3]) checked and in the reference's dtypes."""
    box = as_numpy(aabb).astype(np.float32)
    if box.shape != (2, 3):
        raise BadInputError(f"aabb must be [[xmin, ymin, zmin], [xmax, ymax, zmax]], got shape {box.shape}",
                            hint="Pass the grid's box as two corners, e.g. [[-0.5]*3, [0.5]*3].")
    if not np.all(box[1] > box[0]):
        raise BadInputError(f"aabb's max corner must exceed its min corner, got {box.tolist()}",
                            hint="Swap the corners or give the box a size on every axis.")
    size = as_numpy(grid_size).astype(np.int64).reshape(-1)
    if size.size == 1:
        size = np.repeat(size, 3)
    if size.shape != (3,) or np.any(size <= 0):
        raise BadInputError(f"grid_size must be a positive int or three positive ints, got {as_numpy(grid_size).tolist()}",
                            hint="Use the O-Voxel resolution, e.g. grid_size=256.")
    voxel_size = (box[1] - box[0]) / size.astype(np.float32)
    return size, box, voxel_size.astype(np.float32)


def linear_keys(coords: np.ndarray, grid_size: np.ndarray) -> np.ndarray:
    """One int64 per voxel (x-major, like the reference's hash keys); coords must lie inside the grid."""
    c = coords.astype(np.int64)
    return (c[:, 0] * int(grid_size[1]) + c[:, 1]) * int(grid_size[2]) + c[:, 2]


class VoxelLookup:
    """Index of a voxel list by coordinate (a sorted-key stand-in for the reference's hash table).

    ``find`` returns each queried voxel's row in the list, or -1 where the list has no such voxel
    or the query lies outside the grid (the reference's lookup also answers "absent" there).
    """

    def __init__(self, coords: np.ndarray, grid_size: np.ndarray):
        self.grid_size = np.asarray(grid_size, dtype=np.int64)
        keys = linear_keys(coords, self.grid_size)
        self.order = np.argsort(keys, kind="stable")
        self.sorted_keys = keys[self.order]

    def find(self, coords: np.ndarray) -> np.ndarray:
        c = coords.astype(np.int64)
        inside = np.all((c >= 0) & (c < self.grid_size), axis=-1)
        keys = linear_keys(np.where(inside[..., None], c, 0).reshape(-1, 3), self.grid_size).reshape(inside.shape)
        pos = np.searchsorted(self.sorted_keys, keys)
        pos = np.minimum(pos, len(self.sorted_keys) - 1) if len(self.sorted_keys) else np.zeros_like(pos)
        hit = inside & (len(self.sorted_keys) > 0)
        if len(self.sorted_keys):
            hit &= self.sorted_keys[pos] == keys
        return np.where(hit, self.order[pos] if len(self.order) else -1, -1)
