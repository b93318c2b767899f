"""Normalisations computed in float32 whatever the activation dtype (the reference's *32 norms)."""
from __future__ import annotations

import torch
import torch.nn as nn


class LayerNorm32(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


class GroupNorm32(nn.GroupNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


class ChannelLayerNorm32(LayerNorm32):
    """LayerNorm over the channel axis of a `[B, C, *spatial]` tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = x.dim()
        x = x.permute(0, *range(2, dims), 1).contiguous()
        x = super().forward(x)
        return x.permute(0, dims - 1, *range(1, dims - 1)).contiguous()
