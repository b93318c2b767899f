"""Per-voxel layers: linear maps, activations and the per-item normalisations."""
from __future__ import annotations

import torch
import torch.nn as nn

from .tensor import SparseTensor


class SparseLinear(nn.Linear):
    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(super().forward(x.feats))


class SparseSiLU(nn.SiLU):
    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(super().forward(x.feats))


class SparseGELU(nn.GELU):
    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(super().forward(x.feats))


class SparseGroupNorm32(nn.GroupNorm):
    """GroupNorm over all voxels of each batch item, computed in float32."""

    def forward(self, x: SparseTensor) -> SparseTensor:
        feats = x.feats.float()
        out = torch.empty_like(feats)
        for sl in x.layout:
            item = feats[sl].t().unsqueeze(0)  # [1, C, n]
            out[sl] = nn.functional.group_norm(item, self.num_groups, self.weight, self.bias, self.eps)[0].t()
        return x.replace(out.to(x.dtype))


class SparseLayerNorm32(nn.LayerNorm):
    """Per-voxel LayerNorm in float32."""

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(super().forward(x.feats.float()).to(x.dtype))
