"""Neighbour maps of submanifold sparse convolutions, built by coordinate hashing.

For every active voxel and every kernel offset the map holds the row of the
neighbouring active voxel (same batch item), or -1. Offsets are enumerated in
the order of the spconv weight layout `[out, kx, ky, kz, in]`:
k = (i * K + j) * K + l for the offset (i, j, l) - K // 2 along (x, y, z).
The map depends only on the coordinates, so callers cache it per coordinate set.
"""
from __future__ import annotations

import torch


def kernel_offsets(kernel_size: int, device=None) -> torch.Tensor:
    """Offsets `[K³, 3]` in weight order."""
    r = torch.arange(kernel_size, device=device) - kernel_size // 2
    grid = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), dim=-1)
    return grid.reshape(-1, 3)


def _linear_keys(coords: torch.Tensor, extent: torch.Tensor) -> torch.Tensor:
    """Row-major integer key of (batch, x, y, z); coords already shifted to be >= 0."""
    c = coords.long()
    return ((c[:, 0] * extent[0] + c[:, 1]) * extent[1] + c[:, 2]) * extent[2] + c[:, 3]


def build_neighbor_map(coords: torch.Tensor, kernel_size: int = 3, dilation: int = 1) -> torch.Tensor:
    """Neighbour rows `[N, K³]` (int64, -1 where the neighbour is not active)."""
    n = coords.shape[0]
    offsets = kernel_offsets(kernel_size, coords.device) * dilation
    if n == 0:
        return torch.empty(0, offsets.shape[0], dtype=torch.long, device=coords.device)
    pad = (kernel_size // 2) * dilation
    shifted = coords.long().clone()
    shifted[:, 1:] += pad
    extent = shifted[:, 1:].max(dim=0).values + pad + 1
    keys = _linear_keys(shifted, extent)
    sorted_keys, order = torch.sort(keys)

    query = shifted.unsqueeze(1).repeat(1, offsets.shape[0], 1)
    query[:, :, 1:] += offsets.unsqueeze(0)
    qkeys = _linear_keys(query.reshape(-1, 4), extent)
    pos = torch.searchsorted(sorted_keys, qkeys).clamp_(max=n - 1)
    found = sorted_keys[pos] == qkeys
    nbr = torch.where(found, order[pos], torch.full_like(pos, -1))
    return nbr.reshape(n, offsets.shape[0])
