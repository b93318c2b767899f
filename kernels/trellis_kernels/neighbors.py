"""Neighbour maps of submanifold sparse convolutions (torch ops: sort + searchsorted).

`build_neighbor_map(coords)` gives, for every active voxel i and kernel offset
k, the row of the active voxel at coords[i] + offset_k in the same batch item,
or -1. Offsets follow spconv's weight layout `[Cout, kx, ky, kz, Cin]`:
k = (dx + r) * K² + (dy + r) * K + (dz + r) with r = K // 2, i.e. the map feeds
a cross-correlation, exactly as spconv's SubMConv3d and torch's conv3d do.

It runs on any device without a host sync, and depends only on the
coordinates: callers build it once per coordinate set and cache it.
"""
from __future__ import annotations

import torch

__all__ = ["kernel_offsets", "build_neighbor_map", "build_neighbor_map_naive"]


def kernel_offsets(kernel_size: int = 3, dilation: int = 1, device=None) -> torch.Tensor:
    """Offsets `[K³, 3]` (dx, dy, dz) in weight order."""
    r = (torch.arange(kernel_size, device=device) - kernel_size // 2) * dilation
    grid = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), dim=-1)
    return grid.reshape(-1, 3)


def build_neighbor_map(coords: torch.Tensor, kernel_size: int = 3, dilation: int = 1) -> torch.Tensor:
    """Neighbour rows `[N, K³]` int32 (-1 = inactive) for coords `[N, 4]` (batch, x, y, z).

    Coordinates must be unique; any order and sign is accepted.
    """
    if coords.dim() != 2 or coords.shape[1] != 4:
        raise ValueError(f"coords must be [N, 4] (batch, x, y, z), got {tuple(coords.shape)}")
    device = coords.device
    offsets = kernel_offsets(kernel_size, dilation, device)
    kvol = offsets.shape[0]
    n = coords.shape[0]
    if n == 0:
        return torch.empty(0, kvol, dtype=torch.int32, device=device)
    pad = (kernel_size // 2) * dilation
    c = coords.long()
    lo = c.min(dim=0).values
    shifted = c - lo
    shifted[:, 1:] += pad
    extent = shifted.max(dim=0).values + 1  # stays on the device: no host sync
    extent[1:] += pad
    ex, ey, ez = extent[1], extent[2], extent[3]

    def keys(b, x, y, z):
        return ((b * ex + x) * ey + y) * ez + z

    sorted_keys, order = torch.sort(keys(shifted[:, 0], shifted[:, 1], shifted[:, 2], shifted[:, 3]))
    q = shifted[:, None, 1:] + offsets[None]  # [N, K, 3], inside [0, extent) thanks to the padding
    qkeys = keys(shifted[:, 0, None], q[..., 0], q[..., 1], q[..., 2]).reshape(-1)
    pos = torch.searchsorted(sorted_keys, qkeys).clamp_(max=n - 1)
    found = sorted_keys[pos] == qkeys
    nbr = torch.where(found, order[pos], -1)
    return nbr.to(torch.int32).reshape(n, kvol)


def build_neighbor_map_naive(coords: torch.Tensor, kernel_size: int = 3, dilation: int = 1) -> torch.Tensor:
    """Dictionary-based reference of `build_neighbor_map` (slow; for tests)."""
    offsets = kernel_offsets(kernel_size, dilation).tolist()
    rows = {tuple(c): i for i, c in enumerate(coords.tolist())}
    out = [[rows.get((b, x + dx, y + dy, z + dz), -1) for dx, dy, dz in offsets]
           for b, x, y, z in coords.tolist()]
    return torch.tensor(out, dtype=torch.int32).reshape(len(out), len(offsets))
