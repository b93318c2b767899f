"""Down-sampling of a sparse tensor with its coordinate work done once per voxel set.

`SparseDownsample.forward` finds the parent voxels with `torch.unique` at every call (a
host sync: the number of parents is data-dependent), leaves the coarse tensor's layout to
be counted again (another sync), and pools with a scatter-mean whose CUDA atomics add in
a varying order (the last bits of the result change from run to run). The stage-2 flow
model down-samples the same voxels at every sampling step, so `cached_downsample` (the fast
path's ``downsample``, `trellis_backend.fastpath`) keeps, in the fine tensor's spatial cache after the first
call, the coarse coords, layout and a `[parents, f³]` table of each parent's child rows.
Every call then pools by one gather and a fixed-order sum in float32 - the reference's
reduction, sum / (children + 1), deterministic and without host syncs, hence capturable in
a CUDA graph.
"""
from __future__ import annotations

import torch

from ..sparse.tensor import SparseTensor


def _child_table(inverse: torch.Tensor, n_out: int, slots: int):
    """(table [n_out, slots] of child rows, padded with n_in; denominators [n_out, 1] = children + 1)."""
    n_in = inverse.shape[0]
    inverse = inverse.long()
    order = torch.argsort(inverse, stable=True)
    counts = torch.bincount(inverse, minlength=n_out)
    starts = torch.cumsum(counts, 0) - counts
    parent = inverse[order]
    slot = torch.arange(n_in, device=inverse.device) - starts[parent]
    table = torch.full((n_out, slots), n_in, dtype=torch.long, device=inverse.device)
    table[parent, slot] = order
    return table, (counts + 1).to(torch.float32)[:, None]


def pool(feats: torch.Tensor, table: torch.Tensor, denom: torch.Tensor) -> torch.Tensor:
    padded = torch.cat([feats, feats.new_zeros(1, feats.shape[1])])
    return (padded[table].float().sum(dim=1) / denom).to(feats.dtype)


def cached_downsample(down, x: SparseTensor) -> SparseTensor:
    """`down.pool(x)` (a SparseDownsample), its coordinate work done once per voxel set."""
    f = down.factor
    key = f"accel_downsample_{f}"
    cached = x.get_spatial_cache(key)
    if cached is None:
        ref = down.pool(x)  # the reference: parent coords, order, child -> parent map
        _, _, inverse = ref.get_spatial_cache(f"upsample_{f}")
        n_out = int(ref.coords.shape[0])
        table, denom = _child_table(inverse, n_out, f ** 3)
        cached = (ref.coords, ref._scale, inverse, n_out, ref.layout, table, denom)
        x.register_spatial_cache(key, cached)
    coords, scale, inverse, n_out, layout, table, denom = cached
    feats = x.feats
    if feats.dim() == 2:
        pooled = pool(feats, table, denom)
    else:  # not used by TRELLIS: the reference's scatter-mean
        pooled = torch.zeros(n_out, *feats.shape[1:], dtype=feats.dtype, device=feats.device)
        index = inverse.view(-1, *([1] * (feats.dim() - 1))).expand_as(feats)
        pooled = pooled.scatter_reduce(0, index, feats, reduce="mean", include_self=True)
    out = SparseTensor(pooled, coords, shape=x.shape, layout=layout, scale=scale, spatial_cache=x._spatial_cache)
    out.register_spatial_cache(f"upsample_{f}", (x.coords, x._layout, inverse))
    return out
