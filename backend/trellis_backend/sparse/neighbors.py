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


def padded_neighbor_index(nbr: torch.Tensor) -> torch.Tensor:
    """The neighbour map with -1 replaced by N (the row of a zero padding row appended to the features)."""
    n = nbr.shape[0]
    return torch.where(nbr >= 0, nbr, torch.full_like(nbr, n))


_SUBDIVISION_TABLES = {}


def subdivision_tables(device=None):
    """Index tables relating a 3×3×3 submanifold conv on subdivided voxels to their parents.

    Children of parent P are rows 8P + c, c = (cx * 2 + cy) * 2 + cz (`SparseSubdivide`'s order).
    Fine offset k (weight order) of child c lands in the child `child[c, k]` of the parent at
    coarse offset `parent[c, k]` (both in the same orders). Each child reaches 8 of the 27
    parent offsets: `slots[c]` (sorted), and `fold[c, j, k]` = 1 when fine offset k lands in
    parent slot `slots[c, j]`.
    """
    key = str(device)
    if key not in _SUBDIVISION_TABLES:
        d = kernel_offsets(3)  # [27, 3]
        r = torch.arange(2)
        child = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), dim=-1).reshape(8, 3)
        s = child[:, None, :] + d[None]  # [8, 27, 3] in {-1, 0, 1, 2}
        q = torch.div(s, 2, rounding_mode="floor") + 1  # parent offset + 1, in {0, 1, 2}
        c = s - 2 * (q - 1)  # child position in the neighbouring parent, in {0, 1}
        parent = (q[..., 0] * 3 + q[..., 1]) * 3 + q[..., 2]
        child_idx = (c[..., 0] * 2 + c[..., 1]) * 2 + c[..., 2]
        slots = torch.stack([torch.unique(parent[i]) for i in range(8)])  # [8, 8], sorted
        fold = (parent[:, None, :] == slots[:, :, None]).float()  # [8, 8 slots, 27]
        _SUBDIVISION_TABLES[key] = {name: t.to(device) for name, t in
                                    dict(parent=parent, child=child_idx, slots=slots, fold=fold).items()}
    return _SUBDIVISION_TABLES[key]


def subdivided_neighbor_map(parent_nbr: torch.Tensor) -> torch.Tensor:
    """The 3×3×3 neighbour map of the subdivided voxels (`SparseSubdivide`: children of parent P are
    rows 8P..8P+7, all present), derived from the parents' 3×3×3 map without hashing.

    Equal to `build_neighbor_map` of the children's coordinates.
    """
    t = subdivision_tables(parent_nbr.device)
    n = parent_nbr.shape[0]
    if n == 0:
        return torch.empty(0, 27, dtype=torch.long, device=parent_nbr.device)
    p = parent_nbr[:, t["parent"].reshape(-1)].reshape(n, 8, 27)  # [N, 8 children, 27]
    fine = p * 8 + t["child"][None]
    return torch.where(p >= 0, fine, torch.full_like(fine, -1)).reshape(n * 8, 27)


def children_neighbor_map(parent_nbr: torch.Tensor, parent: torch.Tensor, child: torch.Tensor,
                          child_rows: torch.Tensor) -> torch.Tensor:
    """The 3×3×3 neighbour map of some of the children of a voxel set, derived from the parents' 3×3×3 map
    without hashing.

    Row j is child `child[j]` (in `subdivision_tables` order, c = (cx * 2 + cy) * 2 + cz) of parent row
    `parent[j]`; `child_rows[P, c]` is the row of child c of parent P, -1 where it is absent. Equal to
    `build_neighbor_map` of the children's coordinates.
    """
    if parent.numel() == 0:
        return torch.empty(0, 27, dtype=torch.long, device=parent_nbr.device)
    t = subdivision_tables(parent_nbr.device)
    neighbour_parent = parent_nbr[parent[:, None], t["parent"][child]]  # [n, 27]
    fine = child_rows[neighbour_parent.clamp_min(0), t["child"][child]]
    return torch.where(neighbour_parent >= 0, fine, torch.full_like(fine, -1))
