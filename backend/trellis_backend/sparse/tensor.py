"""The sparse voxel tensor every TRELLIS sparse model works on.

A `SparseTensor` is a set of active voxels: integer coordinates `coords`
(int32 `[N, 4]`: batch, x, y, z) and per-voxel features `feats` (`[N, ...]`).
Voxels of one batch item are contiguous, so a batch item is a slice of rows
(`layout`). Tensors derived from one another through `replace()` share a
spatial cache (neighbour maps, window partitions, down/up-sampling maps) so
that structure computed once per coordinate set is reused by every layer.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch

Scale = Tuple[float, float, float]


class SparseTensor:
    def __init__(
        self,
        feats: torch.Tensor,
        coords: torch.Tensor,
        shape: Optional[Sequence[int]] = None,
        layout: Optional[List[slice]] = None,
        scale: Scale = (1, 1, 1),
        spatial_cache: Optional[dict] = None,
    ):
        if coords.dim() != 2 or coords.shape[1] != 4:
            raise ValueError(f"coords must be [N, 4] (batch, x, y, z), got {tuple(coords.shape)}")
        if feats.shape[0] != coords.shape[0]:
            raise ValueError(f"feats has {feats.shape[0]} rows but coords has {coords.shape[0]}")
        self.feats = feats
        self.coords = coords
        self._layout = layout
        if shape is None:
            batch_size = int(coords[:, 0].max().item()) + 1 if coords.shape[0] > 0 else 0
            shape = (batch_size, *feats.shape[1:])
        self._shape = torch.Size(shape)
        self._scale = tuple(int(v) if float(v).is_integer() else float(v) for v in scale)
        self._spatial_cache = spatial_cache if spatial_cache is not None else {}
        # set by `SparseSubdivide`: the parents' features when every row i holds parent i // 8's features
        # (convolutions then work on the parents); not carried over by `replace()` (new features)
        self._parent_feats: Optional[torch.Tensor] = None

    # ------------------------------------------------------------------ shape
    @property
    def shape(self) -> torch.Size:
        return self._shape

    @property
    def batch_size(self) -> int:
        return self._shape[0]

    @property
    def layout(self) -> List[slice]:
        """Row slice of each batch item (computed once, then kept)."""
        if self._layout is None:
            counts = torch.bincount(self.coords[:, 0].long(), minlength=self.batch_size).tolist()
            starts = [0]
            for c in counts:
                starts.append(starts[-1] + c)
            self._layout = [slice(starts[i], starts[i + 1]) for i in range(self.batch_size)]
        return self._layout

    @property
    def seqlens(self) -> List[int]:
        return [s.stop - s.start for s in self.layout]

    @property
    def batch_index(self) -> torch.Tensor:
        """Batch index of each row, as int64 (for gathers of per-item tensors)."""
        cached = self.get_spatial_cache("batch_index")
        if cached is None or cached.shape[0] != self.coords.shape[0]:
            cached = self.coords[:, 0].long()
            self.register_spatial_cache("batch_index", cached)
        return cached

    @property
    def dtype(self) -> torch.dtype:
        return self.feats.dtype

    @property
    def device(self) -> torch.device:
        return self.feats.device

    def dim(self) -> int:
        return len(self.shape)

    # --------------------------------------------------------------- rebuild
    def replace(self, feats: torch.Tensor, coords: Optional[torch.Tensor] = None) -> "SparseTensor":
        """Same voxels (or `coords`), new features; shares the spatial cache while coords are unchanged."""
        same_coords = coords is None or coords is self.coords
        return SparseTensor(
            feats,
            self.coords if coords is None else coords,
            shape=(self.batch_size, *feats.shape[1:]),
            layout=self._layout if same_coords else None,
            scale=self._scale,
            spatial_cache=self._spatial_cache if same_coords else None,
        )

    def to(self, *args, **kwargs) -> "SparseTensor":
        feats = self.feats.to(*args, **kwargs)
        device_only = {k: v for k, v in kwargs.items() if k == "device"}
        for a in args:
            if isinstance(a, (str, torch.device)):
                device_only["device"] = a
        coords = self.coords.to(**device_only) if device_only else self.coords
        if coords is self.coords:
            return self.replace(feats)
        return SparseTensor(feats, coords, shape=(self.batch_size, *feats.shape[1:]), layout=self._layout, scale=self._scale)

    def type(self, dtype: torch.dtype) -> "SparseTensor":
        return self.replace(self.feats.type(dtype))

    def float(self) -> "SparseTensor":
        return self.replace(self.feats.float())

    def half(self) -> "SparseTensor":
        return self.replace(self.feats.half())

    def detach(self) -> "SparseTensor":
        return self.replace(self.feats.detach())

    def cpu(self) -> "SparseTensor":
        return self.to("cpu")

    def reshape(self, *shape) -> "SparseTensor":
        return self.replace(self.feats.reshape(self.feats.shape[0], *shape))

    def unbind(self, dim: int) -> List["SparseTensor"]:
        return [self.replace(f) for f in self.feats.unbind(dim)]

    def dense(self, resolution: Optional[int] = None) -> torch.Tensor:
        """Scatter into a dense `[B, C, R, R, R]` grid (for tests and small grids)."""
        res = resolution or int(self.coords[:, 1:].max().item()) + 1
        feats = self.feats.reshape(self.feats.shape[0], -1)
        out = feats.new_zeros(self.batch_size, feats.shape[1], res, res, res)
        c = self.coords.long()
        out[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]] = feats
        return out

    # ------------------------------------------------------------ arithmetic
    def broadcast_per_item(self, values: torch.Tensor) -> torch.Tensor:
        """Expand a per-batch-item tensor `[B, ...]` to one row per voxel."""
        return values[self.batch_index]

    def _elementwise(self, other, op: Callable) -> "SparseTensor":
        """Like the reference: a tensor that broadcasts to `[B, ...]` is applied per batch item."""
        if isinstance(other, SparseTensor):
            other = other.feats
        elif isinstance(other, torch.Tensor) and other.dim() > 0:
            try:
                per_item = torch.broadcast_to(other, self.shape)
            except RuntimeError:
                per_item = None
            if per_item is not None:
                other = per_item[self.batch_index]
        return self.replace(op(self.feats, other))

    def __neg__(self):
        return self.replace(-self.feats)

    def __add__(self, other):
        return self._elementwise(other, torch.add)

    __radd__ = __add__

    def __sub__(self, other):
        return self._elementwise(other, torch.sub)

    def __rsub__(self, other):
        return self._elementwise(other, lambda a, b: torch.sub(b, a))

    def __mul__(self, other):
        return self._elementwise(other, torch.mul)

    __rmul__ = __mul__

    def __truediv__(self, other):
        return self._elementwise(other, torch.div)

    def __getitem__(self, idx: Union[int, slice, Sequence[int]]) -> "SparseTensor":
        """Select batch items (renumbered from 0)."""
        if isinstance(idx, int):
            items = [idx]
        elif isinstance(idx, slice):
            items = list(range(*idx.indices(self.batch_size)))
        else:
            items = [int(i) for i in idx]
        coords, feats = [], []
        for new_i, old_i in enumerate(items):
            c = self.coords[self.layout[old_i]].clone()
            c[:, 0] = new_i
            coords.append(c)
            feats.append(self.feats[self.layout[old_i]])
        return SparseTensor(torch.cat(feats), torch.cat(coords), shape=(len(items), *self.feats.shape[1:]))

    # ---------------------------------------------------------- spatial cache
    def register_spatial_cache(self, key: str, value) -> None:
        self._spatial_cache.setdefault(str(self._scale), {})[key] = value

    def get_spatial_cache(self, key: str):
        return self._spatial_cache.get(str(self._scale), {}).get(key)

    def scale_cache(self) -> dict:
        """The spatial cache of this tensor's scale, as a dict filled in place by later registrations."""
        return self._spatial_cache.setdefault(str(self._scale), {})

    def __repr__(self) -> str:
        return f"SparseTensor(shape={tuple(self.shape)}, voxels={self.coords.shape[0]}, dtype={self.dtype}, device={self.device})"


def sparse_cat(tensors: List[SparseTensor], dim: int = 0) -> SparseTensor:
    """Concatenate batch items (dim 0) or feature channels (dim > 0, same voxels)."""
    if dim == 0:
        coords, offset = [], 0
        for t in tensors:
            c = t.coords.clone()
            c[:, 0] += offset
            offset += t.batch_size
            coords.append(c)
        feats = torch.cat([t.feats for t in tensors])
        return SparseTensor(feats, torch.cat(coords), shape=(offset, *feats.shape[1:]))
    return tensors[0].replace(torch.cat([t.feats for t in tensors], dim=dim))
