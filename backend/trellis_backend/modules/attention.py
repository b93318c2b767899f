"""Multi-head attention for dense token grids and for sparse voxels, with the reference's options.

Self-attention uses a fused `to_qkv`, cross-attention `to_q` + `to_kv`, both
optionally with per-head RMS-normalised queries and keys (`q_rms_norm`,
`k_rms_norm`, gammas kept in float32). Rotary embeddings (`pe_mode='rope'`)
are refused: no released checkpoint uses them. Sparse self-attention is either full
(per batch item) or windowed (Swin-style shifted cubic windows).
"""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..sparse.attention import sparse_cross_attention, sparse_self_attention, sparse_windowed_self_attention
from ..sparse.tensor import SparseTensor


class MultiHeadRMSNorm(nn.Module):
    """normalize(x) · gamma · sqrt(head_dim), in float32."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(heads, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (F.normalize(x.float(), dim=-1) * self.gamma * self.scale).to(x.dtype)


def _refuse_rope(use_rope: bool) -> None:
    if use_rope:
        raise ValueError("pe_mode='rope' is not supported: no released TRELLIS checkpoint uses it; use 'ape'")


class MultiHeadAttention(nn.Module):
    """Attention over dense tokens `[B, L, C]` (full self- or cross-attention)."""

    def __init__(self, channels: int, num_heads: int, ctx_channels: Optional[int] = None, type: str = "self",
                 attn_mode: str = "full", window_size: Optional[int] = None, shift_window=None,
                 qkv_bias: bool = True, use_rope: bool = False, qk_rms_norm: bool = False):
        super().__init__()
        if channels % num_heads:
            raise ValueError("channels must be divisible by num_heads")
        if attn_mode != "full":
            raise ValueError("dense attention supports attn_mode='full' only (as the reference)")
        _refuse_rope(use_rope)
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

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, l, _ = x.shape
        if self._type == "self":
            q, k, v = self.to_qkv(x).reshape(b, l, 3, self.num_heads, -1).unbind(dim=2)
            if self.qk_rms_norm:
                q, k = self.q_rms_norm(q), self.k_rms_norm(k)
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
                 qkv_bias: bool = True, use_rope: bool = False, qk_rms_norm: bool = False):
        super().__init__()
        if channels % num_heads:
            raise ValueError("channels must be divisible by num_heads")
        if attn_mode not in ("full", "windowed"):
            raise ValueError(f"sparse attention mode {attn_mode!r} is not supported; TRELLIS checkpoints use "
                             "'full' and 'swin' (windowed)")
        _refuse_rope(use_rope)
        if type == "cross" and attn_mode != "full":
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

    def forward(self, x: SparseTensor, context: Optional[torch.Tensor] = None) -> SparseTensor:
        heads = self.num_heads
        if self._type == "self":
            qkv = self.to_qkv(x.feats).reshape(-1, 3, heads, self.channels // heads)
            if self.qk_rms_norm:
                q, k, v = qkv.unbind(dim=1)
                qkv = torch.stack([self.q_rms_norm(q), self.k_rms_norm(k), v], dim=1)
            qkv = x.replace(qkv)
            if self.attn_mode == "full":
                h = sparse_self_attention(qkv)
            else:
                h = sparse_windowed_self_attention(qkv, self.window_size, self.shift_window)
        else:
            q = self.to_q(x.feats).reshape(-1, heads, self.channels // heads)
            if self.qk_rms_norm:
                q = self.q_rms_norm(q)
            h = sparse_cross_attention(x.replace(q), self.context_kv(context))
        return x.replace(self.to_out(h.feats.reshape(h.feats.shape[0], -1)))

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
