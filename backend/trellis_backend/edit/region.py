"""Which voxels a region edit may change: boxes in object space or explicit voxel sets, and blend weights."""
from __future__ import annotations


import numpy as np
import torch

from ..errors import BadInputError

GRID = 64


def voxel_centers(coords: torch.Tensor, resolution: int = GRID) -> torch.Tensor:
    """Object-space centres (z-up, in [-0.5, 0.5]³) of voxels `[N, 3]`."""
    return (coords.float() + 0.5) / resolution - 0.5


def region_mask_grid(region: dict, resolution: int = GRID) -> torch.Tensor:
    """Dense boolean `[R, R, R]` grid of the voxels inside `region`.

    `region` is ``{"box_min": [x, y, z], "box_max": [x, y, z]}`` (object space, z-up, the unit cube
    the asset was generated in) or ``{"voxels": [[i, j, k], ...]}`` (indices of the 64³ grid).
    """
    if not isinstance(region, dict):
        raise BadInputError("the region must be a dict with box_min/box_max or voxels",
                            hint="Select a box Empty or some vertices of the generated object.")
    grid = torch.zeros(resolution, resolution, resolution, dtype=torch.bool)
    if "voxels" in region:
        vox = torch.as_tensor(np.asarray(region["voxels"], dtype=np.int64)).reshape(-1, 3)
        inside = ((vox >= 0) & (vox < resolution)).all(dim=1)
        vox = vox[inside]
        grid[vox[:, 0], vox[:, 1], vox[:, 2]] = True
    elif "box_min" in region and "box_max" in region:
        lo = torch.tensor(region["box_min"], dtype=torch.float32)
        hi = torch.tensor(region["box_max"], dtype=torch.float32)
        if lo.shape != (3,) or hi.shape != (3,):
            raise BadInputError("box_min and box_max must be 3 numbers each")
        lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)
        axis = (torch.arange(resolution, dtype=torch.float32) + 0.5) / resolution - 0.5
        ix = (axis >= lo[0]) & (axis <= hi[0])
        iy = (axis >= lo[1]) & (axis <= hi[1])
        iz = (axis >= lo[2]) & (axis <= hi[2])
        grid = ix[:, None, None] & iy[None, :, None] & iz[None, None, :]
    else:
        raise BadInputError("the region needs 'box_min' and 'box_max', or 'voxels'")
    if not grid.any():
        raise BadInputError("the selected region contains no voxel of the 64³ grid",
                            hint="Make the box larger or select more vertices of the object.")
    return grid


def lookup(grid: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    c = coords.long()
    return grid[c[:, 0], c[:, 1], c[:, 2]]


def depth_inside(grid: torch.Tensor, max_depth: int) -> torch.Tensor:
    """Chebyshev distance (in voxels, capped at max_depth + 1) from each inside cell to the outside."""
    depth = torch.zeros(grid.shape, dtype=torch.int32)
    current = grid.clone()
    for d in range(1, max_depth + 2):
        depth[current] = d
        # erode by one voxel (3×3×3 min filter); cells on the grid border count as next to the outside
        padded = torch.nn.functional.pad(current.float()[None, None], (1, 1, 1, 1, 1, 1), value=0.0)
        current = (-torch.nn.functional.max_pool3d(-padded, 3, stride=1))[0, 0] > 0.5
        if not current.any():
            break
    return depth


def blend_weights(grid: torch.Tensor, coords: torch.Tensor, margin: int) -> torch.Tensor:
    """Weight of the new features per voxel: 0 outside, ramping over `margin` voxels inside, then 1."""
    inside = lookup(grid, coords)
    if margin <= 0:
        return inside.float()
    depth = lookup(depth_inside(grid, margin), coords).float()
    return torch.clamp(depth / (margin + 1), max=1.0) * inside.float()


def latent_mask(grid: torch.Tensor, latent_resolution: int) -> torch.Tensor:
    """Latent cells `[r, r, r]` whose block of the voxel grid touches the region."""
    f = grid.shape[0] // latent_resolution
    return grid.reshape(latent_resolution, f, latent_resolution, f, latent_resolution, f).any(dim=5).any(dim=3).any(dim=1)
