"""Resolution changes of sparse tensors: mean-pool to the parent voxel, its inverse, and subdivision."""
from __future__ import annotations

import torch
import torch.nn as nn

from .. import fastpath
from .tensor import SparseTensor


class SparseDownsample(nn.Module):
    """Pool children into their parent voxel (coords // factor).

    Matches the reference exactly, including its reduction: a scatter-mean into
    a zero-initialised buffer that counts the zero itself, i.e. sum / (n + 1).
    The output is ordered by (batch, x, y, z); the parents are found once per coordinate set
    (spatial cache) and the map back is cached for `SparseUpsample`. The fast path may serve the
    pooling (`trellis_backend.fastpath`'s ``downsample``); `pool` is this reference.
    """

    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor

    def _parents(self, x: SparseTensor):
        """(parent coords, child -> parent row), computed once per coordinate set (spatial cache)."""
        f = self.factor
        key = f"downsample_{f}"
        cached = x.get_spatial_cache(key)
        if cached is not None and cached[1].shape[0] == x.coords.shape[0]:
            return cached
        coarse = x.coords.long().clone()
        coarse[:, 1:] = torch.div(coarse[:, 1:], f, rounding_mode="floor")
        extent = coarse[:, 1:].max(dim=0).values + 1
        code = ((coarse[:, 0] * extent[0] + coarse[:, 1]) * extent[1] + coarse[:, 2]) * extent[2] + coarse[:, 3]
        code, inverse = torch.unique(code, return_inverse=True)
        z = code % extent[2]
        rest = code // extent[2]
        y = rest % extent[1]
        rest = rest // extent[1]
        xx = rest % extent[0]
        b = rest // extent[0]
        new_coords = torch.stack([b, xx, y, z], dim=1).to(x.coords.dtype)
        x.register_spatial_cache(key, (new_coords, inverse))
        return new_coords, inverse

    def forward(self, x: SparseTensor) -> SparseTensor:
        return fastpath.lookup(self).downsample(self, x)

    def pool(self, x: SparseTensor) -> SparseTensor:
        """The reference's scatter-mean into the parent voxels."""
        f = self.factor
        new_coords, inverse = self._parents(x)
        feats = x.feats
        pooled = torch.zeros(new_coords.shape[0], *feats.shape[1:], dtype=feats.dtype, device=feats.device)
        index = inverse.view(-1, *([1] * (feats.dim() - 1))).expand_as(feats)
        pooled = pooled.scatter_reduce(0, index, feats, reduce="mean", include_self=True)
        out = SparseTensor(pooled, new_coords, shape=x.shape,
                           scale=tuple(s * f for s, f in zip(x._scale, (f, f, f))),
                           spatial_cache=x._spatial_cache)
        out.register_spatial_cache(f"upsample_{f}", (x.coords, x._layout, inverse))
        return out


class SparseUpsample(nn.Module):
    """Copy each parent's features back to the children recorded by the paired `SparseDownsample`."""

    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor

    def forward(self, x: SparseTensor) -> SparseTensor:
        f = self.factor
        cached = x.get_spatial_cache(f"upsample_{f}")
        if cached is None:
            raise ValueError("SparseUpsample must follow a SparseDownsample of the same tensor")
        fine_coords, fine_layout, inverse = cached
        return SparseTensor(x.feats[inverse], fine_coords, shape=x.shape, layout=fine_layout,
                            scale=tuple(s / f for s in x._scale), spatial_cache=x._spatial_cache)


class SparseSubdivide(nn.Module):
    """Split every voxel into its 8 children (2x resolution), children consecutive in (x, y, z) order."""

    def forward(self, x: SparseTensor) -> SparseTensor:
        child = torch.stack(torch.meshgrid(*[torch.arange(2, device=x.device)] * 3, indexing="ij"), -1).reshape(8, 3)
        coords = x.coords.clone()
        coords[:, 1:] *= 2
        coords = coords.unsqueeze(1).repeat(1, 8, 1)
        coords[:, :, 1:] += child.to(coords.dtype)
        feats = x.feats.unsqueeze(1).expand(x.feats.shape[0], 8, *x.feats.shape[1:])
        out = SparseTensor(feats.flatten(0, 1), coords.flatten(0, 1), shape=x.shape,
                           scale=tuple(s / 2 for s in x._scale), spatial_cache=x._spatial_cache)
        # the children's structure follows from the parents': convolutions on `out` and on tensors of its
        # coordinates derive their neighbour maps from the parents' (`neighbors.subdivided_neighbor_map`), and a
        # convolution of `out` itself runs on the parents' features (`conv.subdivided_conv`)
        record = out.get_spatial_cache("subdivided_from")
        if record is None or record["coords"].shape[0] != x.coords.shape[0]:
            out.register_spatial_cache("subdivided_from", {"coords": x.coords})
        out._parent_feats = x.feats
        return out
