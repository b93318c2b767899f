"""Resolution changes of sparse tensors: mean-pool to the parent voxel, its inverse, subdivision, and
TRELLIS.2's space-to-channel / channel-to-space pair."""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple, Union

import torch
import torch.nn as nn

from .tensor import SparseTensor


def parent_voxels(x: SparseTensor, factor: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(parent coords sorted by (batch, x, y, z), row of each voxel's parent): the voxels at `coords // factor`.

    Computed once per coordinate set (spatial cache `downsample_<factor>`).
    """
    key = f"downsample_{factor}"
    cached = x.get_spatial_cache(key)
    if cached is not None and cached[1].shape[0] == x.coords.shape[0]:
        return cached
    coarse = x.coords.long().clone()
    coarse[:, 1:] = torch.div(coarse[:, 1:], factor, rounding_mode="floor")
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


class SparseDownsample(nn.Module):
    """Pool children into their parent voxel (coords // factor).

    Matches the reference exactly, including its reduction: a scatter-mean into
    a zero-initialised buffer that counts the zero itself, i.e. sum / (n + 1).
    The output is ordered by (batch, x, y, z); the parents are found once per coordinate set
    (spatial cache) and the map back is cached for `SparseUpsample`.
    """

    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor

    def forward(self, x: SparseTensor) -> SparseTensor:
        f = self.factor
        new_coords, inverse = parent_voxels(x, f)
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


def child_slot(coords: torch.Tensor, factor: int) -> torch.Tensor:
    """Slot of each voxel among its parent's `factor³` children: x % f + f·(y % f) + f²·(z % f) (int64)."""
    r = torch.remainder(coords[:, 1:].long(), factor)
    return r[:, 0] + factor * r[:, 1] + factor * factor * r[:, 2]


class SparseSpatial2Channel(nn.Module):
    """Lower the resolution by `factor`, moving space into channels (TRELLIS.2's SC-VAE encoder).

    Each parent voxel (coords // factor, sorted by (batch, x, y, z)) gets the features of its
    `factor³` children side by side: channels `[slot·C, (slot+1)·C)` hold the child in `child_slot`
    `slot`, zeros where that child is absent. The output records, at its own scale, how to undo
    this (`channel2spatial_<factor>`), so a `SparseChannel2Spatial` of a tensor that shares its
    spatial cache restores exactly these voxels; in training mode it also records which children
    exist (`subdivision`, bool `[parents, factor³]`), the decoder's subdivision targets.
    """

    def __init__(self, factor: int = 2):
        super().__init__()
        self.factor = factor

    def forward(self, x: SparseTensor) -> SparseTensor:
        f, slots = self.factor, self.factor ** 3
        key = f"spatial2channel_{f}"
        plan = x.get_spatial_cache(key)
        if plan is None or plan[1].shape[0] != x.coords.shape[0]:
            new_coords, inverse = parent_voxels(x, f)
            plan = (new_coords, inverse, child_slot(x.coords, f))
            x.register_spatial_cache(key, plan)
        new_coords, inverse, slot = plan
        n_parents, channels = new_coords.shape[0], x.feats.shape[1]
        feats = x.feats.new_zeros(n_parents * slots, channels)
        feats[inverse * slots + slot] = x.feats
        out = SparseTensor(feats.reshape(n_parents, slots * channels), new_coords,
                           shape=(x.batch_size, slots * channels), scale=tuple(s * f for s in x._scale),
                           spatial_cache=x._spatial_cache)
        out.register_spatial_cache(f"channel2spatial_{f}", (x.coords, inverse, slot))
        if self.training:
            subdivision = torch.zeros(n_parents, slots, dtype=torch.bool, device=x.device)
            subdivision[inverse, slot] = True
            out.register_spatial_cache("subdivision", subdivision)
        return out


class ChildPlan(NamedTuple):
    """Where the children of a voxel set go: their `coords`, each child's `parent` row and `slot`;
    `from_cache` when taken from a space-to-channel record; `record` lets convolutions on the children
    derive their neighbour map from the parents' (`neighbors.children_neighbor_map`)."""

    coords: torch.Tensor
    parent: torch.Tensor
    slot: torch.Tensor
    from_cache: bool
    record: Optional[dict] = None


def _children_record(x: SparseTensor, parent: torch.Tensor, slot: torch.Tensor) -> dict:
    """The `children_of` spatial record of 2× children: child index in `subdivision_tables` order and the
    `[parents, 8]` table of child rows (-1: absent)."""
    child = (slot & 1) * 4 + (slot >> 1 & 1) * 2 + (slot >> 2 & 1)
    child_rows = torch.full((x.coords.shape[0], 8), -1, dtype=torch.long, device=x.device)
    child_rows[parent, child] = torch.arange(parent.shape[0], device=x.device)
    return {"coords": x.coords, "parent_cache": x.scale_cache(), "parent": parent, "child": child,
            "child_rows": child_rows}


class SparseChannel2Spatial(nn.Module):
    """Raise the resolution by `factor`, moving channels into space (TRELLIS.2's SC-VAE decoder).

    The children come from the `channel2spatial_<factor>` record of the paired
    `SparseSpatial2Channel` when the input shares its spatial cache (then `subdivision` is ignored,
    as in the reference), else from `subdivision` (bool `[N, factor³]`): child `k` of voxel `i` exists
    iff `subdivision[i, k]`, at `factor·xyz + (k % f, k // f % f, k // f² % f)`, emitted parent-major
    in `k` order (not sorted). Child `k` takes channels `[k·C/f³, (k+1)·C/f³)` of its parent.
    Children from a cache keep the cache chain; new children start a fresh spatial cache.
    """

    def __init__(self, factor: int = 2):
        super().__init__()
        self.factor = factor

    def plan(self, x: SparseTensor, subdivision: Optional[Union[torch.Tensor, SparseTensor]] = None) -> ChildPlan:
        """Where the children of `x`'s voxels go (`ChildPlan`); apply it to any tensor on `x`'s voxels."""
        f, slots = self.factor, self.factor ** 3
        cached = x.get_spatial_cache(f"channel2spatial_{f}")
        if cached is not None:
            return ChildPlan(*cached, from_cache=True)
        if subdivision is None:
            raise ValueError("SparseChannel2Spatial needs a subdivision mask [N, factor³] unless its input shares the "
                             "spatial cache of a SparseSpatial2Channel output")
        mask = subdivision.feats if isinstance(subdivision, SparseTensor) else subdivision
        if mask.shape != (x.coords.shape[0], slots):
            raise ValueError(f"subdivision mask must be [{x.coords.shape[0]}, {slots}] (one row per voxel, one column "
                             f"per child), got {tuple(mask.shape)}")
        parent, slot = mask.bool().nonzero(as_tuple=True)  # row-major: parent-major, children in slot order
        child_coords = x.coords[parent].clone()
        child_coords[:, 1:] *= f
        for axis in range(3):
            child_coords[:, 1 + axis] += (torch.div(slot, f ** axis, rounding_mode="floor") % f).to(child_coords.dtype)
        return ChildPlan(child_coords, parent, slot, False, _children_record(x, parent, slot) if f == 2 else None)

    def apply_plan(self, x: SparseTensor, plan: ChildPlan) -> SparseTensor:
        """`x`'s features spread to the children of `plan` (from `self.plan` on `x` or a tensor on its voxels)."""
        f, slots = self.factor, self.factor ** 3
        channels = x.feats.shape[1]
        if channels % slots:
            raise ValueError(f"channel-to-space by {f} needs channels divisible by {slots}, got {channels}")
        feats = x.feats.reshape(x.feats.shape[0] * slots, channels // slots)[plan.parent * slots + plan.slot]
        out = SparseTensor(feats, plan.coords, shape=(x.batch_size, channels // slots),
                           scale=tuple(s / f for s in x._scale),
                           spatial_cache=x._spatial_cache if plan.from_cache else None)
        if plan.record is not None:
            out.register_spatial_cache("children_of", plan.record)
        return out

    def forward(self, x: SparseTensor, subdivision: Optional[Union[torch.Tensor, SparseTensor]] = None) -> SparseTensor:
        return self.apply_plan(x, self.plan(x, subdivision))
