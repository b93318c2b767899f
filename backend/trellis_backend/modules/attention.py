"""Multi-head attention for dense token grids and for sparse voxels, with the reference's options.

Self-attention uses a fused `to_qkv`, cross-attention `to_q` + `to_kv`, both
optionally with per-head RMS-normalised queries and keys (`q_rms_norm`,
`k_rms_norm`, gammas kept in float32). Rotary embeddings (`use_rope`, TRELLIS.2)
rotate the self-attention queries and keys after the RMS norm: dense models pass
the phases of their token grid, sparse models derive them from the voxel
coordinates. Sparse self-attention is either full (per batch item) or windowed
(Swin-style shifted cubic windows); sparse cross-attention takes a dense context
`[B, L, C]` or per-item contexts of different lengths (`VarLenContext`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..sparse.attention import (sparse_cross_attention, sparse_self_attention, sparse_windowed_self_attention,
                                varlen_attention)
from ..sparse.tensor import SparseTensor
from .embedders import RotaryPositionEmbedder, apply_rotary


class MultiHeadRMSNorm(nn.Module):
    """normalize(x) · gamma · sqrt(head_dim), in float32."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(heads, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (F.normalize(x.float(), dim=-1) * self.gamma * self.scale).to(x.dtype)


@dataclass
class VarLenContext:
    """Condition tokens of a different count per batch item, packed: `feats` `[T, C]`, item i is the next
    `lengths[i]` rows (TRELLIS.2's flows accept `cond` as a list of `[L_i, C]` tensors)."""

    feats: torch.Tensor
    lengths: List[int]

    @classmethod
    def from_list(cls, tensors: Sequence[torch.Tensor]) -> "VarLenContext":
        if not tensors or any(t.dim() != 2 for t in tensors):
            raise ValueError("a condition list must hold one [tokens, channels] tensor per batch item")
        return cls(torch.cat(list(tensors), dim=0), [int(t.shape[0]) for t in tensors])

    @property
    def batch_size(self) -> int:
        return len(self.lengths)

    def type(self, dtype: torch.dtype) -> "VarLenContext":
        return VarLenContext(self.feats.type(dtype), self.lengths)


class MultiHeadAttention(nn.Module):
    """Attention over dense tokens `[B, L, C]` (full self- or cross-attention)."""

    def __init__(self, channels: int, num_heads: int, ctx_channels: Optional[int] = None, type: str = "self",
                 attn_mode: str = "full", window_size: Optional[int] = None, shift_window=None,
                 qkv_bias: bool = True, use_rope: bool = False, rope_freq: Sequence[float] = (1.0, 10000.0),
                 qk_rms_norm: bool = False):
        super().__init__()
        if channels % num_heads:
            raise ValueError("channels must be divisible by num_heads")
        if attn_mode != "full":
            raise ValueError("dense attention supports attn_mode='full' only (as the reference)")
        if use_rope and type != "self":
            raise ValueError("rotary embeddings apply to self-attention only")
        self.channels = channels
        self.num_heads = num_heads
        self.head_dim = channels // num_heads
        self.ctx_channels = ctx_channels if ctx_channels is not None else channels
        self._type = type
        self.use_rope = use_rope
        self.qk_rms_norm = qk_rms_norm
        if type == "self":
            self.to_qkv = nn.Linear(channels, channels * 3, bias=qkv_bias)
        else:
            self.to_q = nn.Linear(channels, channels, bias=qkv_bias)
            self.to_kv = nn.Linear(self.ctx_channels, channels * 2, bias=qkv_bias)
        if qk_rms_norm:
            self.q_rms_norm = MultiHeadRMSNorm(self.head_dim, num_heads)
            self.k_rms_norm = MultiHeadRMSNorm(self.head_dim, num_heads)
        self.to_out = nn.Linear(channels, channels)

    def context_kv(self, context: torch.Tensor):
        """Cross-attention keys and values of `context` `[B, Lc, ctx]`: `([B, Lc, H, D], [B, Lc, H, D])`, keys
        RMS-normalised when `qk_rms_norm`. Depends on the context only (`trellis_backend.accel` caches it per
        sampling run)."""
        k, v = self.to_kv(context).reshape(context.shape[0], context.shape[1], 2, self.num_heads, -1).unbind(dim=2)
        if self.qk_rms_norm:
            k = self.k_rms_norm(k)
        return k, v

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None,
                phases: Optional[torch.Tensor] = None) -> torch.Tensor:
        """`phases`: complex rotary phases `[L, head_dim / 2]` of the tokens (required with `use_rope`)."""
        b, l, _ = x.shape
        if self._type == "self":
            q, k, v = self.to_qkv(x).reshape(b, l, 3, self.num_heads, -1).unbind(dim=2)
            if self.qk_rms_norm:
                q, k = self.q_rms_norm(q), self.k_rms_norm(k)
            if self.use_rope:
                if phases is None:
                    raise ValueError("this attention uses rotary embeddings: pass the tokens' phases")
                q, k = apply_rotary(q, phases), apply_rotary(k, phases)
        else:
            q = self.to_q(x).reshape(b, l, self.num_heads, -1)
            if self.qk_rms_norm:
                q = self.q_rms_norm(q)
            k, v = self.context_kv(context)
        h = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.to_out(h.transpose(1, 2).reshape(b, l, -1))


class SparseMultiHeadAttention(nn.Module):
    """Attention over the voxels of a SparseTensor: full or windowed self-attention, or cross-attention
    to a dense per-item context."""

    def __init__(self, channels: int, num_heads: int, ctx_channels: Optional[int] = None, type: str = "self",
                 attn_mode: str = "full", window_size: Optional[int] = None, shift_window: int = 0,
                 qkv_bias: bool = True, use_rope: bool = False, rope_freq: Sequence[float] = (1.0, 10000.0),
                 qk_rms_norm: bool = False):
        super().__init__()
        if channels % num_heads:
            raise ValueError("channels must be divisible by num_heads")
        if attn_mode not in ("full", "windowed"):
            raise ValueError(f"sparse attention mode {attn_mode!r} is not supported; TRELLIS checkpoints use "
                             "'full' and 'swin' (windowed)")
        if type == "cross" and (attn_mode != "full" or use_rope):
            raise ValueError("cross-attention is always full attention without rope")
        self.channels = channels
        self.num_heads = num_heads
        self.ctx_channels = ctx_channels if ctx_channels is not None else channels
        self._type = type
        self.attn_mode = attn_mode
        self.window_size = window_size
        self.shift_window = shift_window or 0
        self.use_rope = use_rope
        self.qk_rms_norm = qk_rms_norm
        if type == "self":
            self.to_qkv = nn.Linear(channels, channels * 3, bias=qkv_bias)
        else:
            self.to_q = nn.Linear(channels, channels, bias=qkv_bias)
            self.to_kv = nn.Linear(self.ctx_channels, channels * 2, bias=qkv_bias)
        if qk_rms_norm:
            self.q_rms_norm = MultiHeadRMSNorm(channels // num_heads, num_heads)
            self.k_rms_norm = MultiHeadRMSNorm(channels // num_heads, num_heads)
        self.to_out = nn.Linear(channels, channels)
        if use_rope:
            self.rope = RotaryPositionEmbedder(channels // num_heads, rope_freq=rope_freq)

    def rope_phases(self, x: SparseTensor) -> torch.Tensor:
        """Rotary phases of each voxel's (x, y, z) at this tensor's scale, cached with its coordinates."""
        key = f"rope_phases_hd{self.rope.head_dim}_freq{self.rope.rope_freq[0]}-{self.rope.rope_freq[1]}"
        phases = x.get_spatial_cache(key)
        if phases is None:
            phases = self.rope(x.coords[:, 1:])
            x.register_spatial_cache(key, phases)
        return phases

    def forward(self, x: SparseTensor, context: Union[torch.Tensor, VarLenContext, None] = None) -> SparseTensor:
        heads = self.num_heads
        if self._type == "self":
            qkv = self.to_qkv(x.feats).reshape(-1, 3, heads, self.channels // heads)
            if self.qk_rms_norm or self.use_rope:
                q, k, v = qkv.unbind(dim=1)
                if self.qk_rms_norm:
                    q, k = self.q_rms_norm(q), self.k_rms_norm(k)
                if self.use_rope:
                    phases = self.rope_phases(x)
                    q, k = apply_rotary(q, phases), apply_rotary(k, phases)
                qkv = torch.stack([q, k, v], dim=1)
            qkv = x.replace(qkv)
            if self.attn_mode == "full":
                h = sparse_self_attention(qkv)
            else:
                h = sparse_windowed_self_attention(qkv, self.window_size, self.shift_window)
        else:
            q = self.to_q(x.feats).reshape(-1, heads, self.channels // heads)
            if self.qk_rms_norm:
                q = self.q_rms_norm(q)
            if isinstance(context, VarLenContext):
                h = self._varlen_cross_attention(x.replace(q), context)
            else:
                h = sparse_cross_attention(x.replace(q), self.context_kv(context))
        return x.replace(self.to_out(h.feats.reshape(h.feats.shape[0], -1)))

    def _varlen_cross_attention(self, q: SparseTensor, context: VarLenContext) -> SparseTensor:
        """Each batch item's voxels attend to its own run of context tokens."""
        if context.batch_size != q.batch_size:
            raise ValueError(f"{context.batch_size} conditions for a batch of {q.batch_size}")
        k, v = self.to_kv(context.feats).reshape(context.feats.shape[0], 2, self.num_heads, -1).unbind(dim=1)
        if self.qk_rms_norm:
            k = self.k_rms_norm(k)
        return q.replace(varlen_attention(q.feats, k, v, q.seqlens, context.lengths))

    def context_kv(self, context: torch.Tensor) -> torch.Tensor:
        """Cross-attention keys and values of the dense context `[B, Lc, ctx]` as `[B, Lc, 2, H, D]` (keys
        RMS-normalised when `qk_rms_norm`). Depends on the context only (`trellis_backend.accel` caches it per
        sampling run)."""
        b, lc = context.shape[:2]
        kv = self.to_kv(context).reshape(b, lc, 2, self.num_heads, -1)
        if self.qk_rms_norm:
            k, v = kv.unbind(dim=2)
            kv = torch.stack([self.k_rms_norm(k), v], dim=2)
        return kv
