"""Transformer blocks of TRELLIS and TRELLIS.2: dense (stage-1 DiT) and sparse (SLat DiT, SLat VAE).

Modulated blocks take adaLN parameters (shift, scale, gate for attention and
MLP) from the timestep embedding; cross blocks add cross-attention to the
condition tokens behind an affine LayerNorm. With `share_mod` the model computes
the modulation once for all blocks; TRELLIS.2 then adds a learned per-block
offset (`modulation_offset=True`: parameter `modulation`, 6·C).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn

from ..sparse.tensor import SparseTensor
from .attention import MultiHeadAttention, SparseMultiHeadAttention
from .norm import LayerNorm32


class FeedForwardNet(nn.Module):
    def __init__(self, channels: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


def _adaln(block: nn.Module, mod: torch.Tensor):
    """The six modulation vectors of a block, from a shared (optionally offset) or the block's own projection."""
    if block.share_mod:
        if block.modulation_offset:
            return (block.modulation + mod).type(mod.dtype).chunk(6, dim=1)
        return mod.chunk(6, dim=1)
    return block.adaLN_modulation(mod).chunk(6, dim=1)


def _add_modulation(block: nn.Module, channels: int, share_mod: bool, modulation_offset: bool) -> None:
    """The block's own adaLN projection, or (shared modulation) TRELLIS.2's per-block offset; the offset
    option has no effect without share_mod."""
    block.share_mod = share_mod
    block.modulation_offset = share_mod and modulation_offset
    if not share_mod:
        block.adaLN_modulation = _adaln_projection(channels)
    elif modulation_offset:
        block.modulation = nn.Parameter(torch.randn(6 * channels) / channels ** 0.5)


def _adaln_projection(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.SiLU(), nn.Linear(channels, 6 * channels, bias=True))


class ModulatedTransformerCrossBlock(nn.Module):
    """Dense DiT block: adaLN self-attention, cross-attention, adaLN MLP."""

    def __init__(self, channels: int, ctx_channels: int, num_heads: int, mlp_ratio: float = 4.0,
                 attn_mode: str = "full", window_size: Optional[int] = None, shift_window=None,
                 use_checkpoint: bool = False, use_rope: bool = False, rope_freq: Sequence[float] = (1.0, 10000.0),
                 qk_rms_norm: bool = False, qk_rms_norm_cross: bool = False, qkv_bias: bool = True,
                 share_mod: bool = False, modulation_offset: bool = False):
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.norm1 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6)
        self.norm2 = LayerNorm32(channels, elementwise_affine=True, eps=1e-6)
        self.norm3 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6)
        self.self_attn = MultiHeadAttention(channels, num_heads, type="self", attn_mode=attn_mode,
                                            qkv_bias=qkv_bias, use_rope=use_rope, rope_freq=rope_freq,
                                            qk_rms_norm=qk_rms_norm)
        self.cross_attn = MultiHeadAttention(channels, num_heads, ctx_channels=ctx_channels, type="cross",
                                             qkv_bias=qkv_bias, qk_rms_norm=qk_rms_norm_cross)
        self.mlp = FeedForwardNet(channels, mlp_ratio)
        _add_modulation(self, channels, share_mod, modulation_offset)

    def forward(self, x: torch.Tensor, mod: torch.Tensor, context: torch.Tensor,
                phases: Optional[torch.Tensor] = None) -> torch.Tensor:
        """`phases`: the tokens' rotary phases when the self-attention uses rope."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = _adaln(self, mod)
        h = self.norm1(x) * (1 + scale_msa.unsqueeze(1)) + shift_msa.unsqueeze(1)
        x = x + (self.self_attn(h, phases=phases) if phases is not None else self.self_attn(h)) * gate_msa.unsqueeze(1)
        x = x + self.cross_attn(self.norm2(x), context)
        h = self.norm3(x) * (1 + scale_mlp.unsqueeze(1)) + shift_mlp.unsqueeze(1)
        return x + self.mlp(h) * gate_mlp.unsqueeze(1)


class SparseFeedForwardNet(nn.Module):
    def __init__(self, channels: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.mlp = FeedForwardNet(channels, mlp_ratio).mlp  # same keys: mlp.0 / mlp.2

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(self.mlp(x.feats))


class SparseTransformerBlock(nn.Module):
    """Plain sparse block (SLat VAE): self-attention (full or shifted windows) + MLP."""

    def __init__(self, channels: int, num_heads: int, mlp_ratio: float = 4.0, attn_mode: str = "full",
                 window_size: Optional[int] = None, shift_window: int = 0, use_checkpoint: bool = False,
                 use_rope: bool = False, qk_rms_norm: bool = False, qkv_bias: bool = True, ln_affine: bool = False):
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.norm1 = LayerNorm32(channels, elementwise_affine=ln_affine, eps=1e-6)
        self.norm2 = LayerNorm32(channels, elementwise_affine=ln_affine, eps=1e-6)
        self.attn = SparseMultiHeadAttention(channels, num_heads, attn_mode=attn_mode, window_size=window_size,
                                             shift_window=shift_window, qkv_bias=qkv_bias, use_rope=use_rope,
                                             qk_rms_norm=qk_rms_norm)
        self.mlp = SparseFeedForwardNet(channels, mlp_ratio)

    def forward(self, x: SparseTensor) -> SparseTensor:
        x = x + self.attn(x.replace(self.norm1(x.feats)))
        return x + self.mlp(x.replace(self.norm2(x.feats)))


class ModulatedSparseTransformerCrossBlock(nn.Module):
    """Sparse DiT block (stage 2): adaLN self-attention, cross-attention, adaLN MLP, per batch item."""

    def __init__(self, channels: int, ctx_channels: int, num_heads: int, mlp_ratio: float = 4.0,
                 attn_mode: str = "full", window_size: Optional[int] = None, shift_window: int = 0,
                 use_checkpoint: bool = False, use_rope: bool = False, rope_freq: Sequence[float] = (1.0, 10000.0),
                 qk_rms_norm: bool = False, qk_rms_norm_cross: bool = False, qkv_bias: bool = True,
                 share_mod: bool = False, modulation_offset: bool = False):
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.norm1 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6)
        self.norm2 = LayerNorm32(channels, elementwise_affine=True, eps=1e-6)
        self.norm3 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6)
        self.self_attn = SparseMultiHeadAttention(channels, num_heads, type="self", attn_mode=attn_mode,
                                                  window_size=window_size, shift_window=shift_window,
                                                  qkv_bias=qkv_bias, use_rope=use_rope, rope_freq=rope_freq,
                                                  qk_rms_norm=qk_rms_norm)
        self.cross_attn = SparseMultiHeadAttention(channels, num_heads, ctx_channels=ctx_channels, type="cross",
                                                   qkv_bias=qkv_bias, qk_rms_norm=qk_rms_norm_cross)
        self.mlp = SparseFeedForwardNet(channels, mlp_ratio)
        _add_modulation(self, channels, share_mod, modulation_offset)

    def forward(self, x: SparseTensor, mod: torch.Tensor, context) -> SparseTensor:
        """`context`: dense condition tokens `[B, L, C]` or a `VarLenContext`."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = _adaln(self, mod)
        rows = x.batch_index
        h = self.norm1(x.feats) * (1 + scale_msa[rows]) + shift_msa[rows]
        feats = x.feats + self.self_attn(x.replace(h)).feats * gate_msa[rows]
        feats = feats + self.cross_attn(x.replace(self.norm2(feats)), context).feats
        h = self.norm3(feats) * (1 + scale_mlp[rows]) + shift_mlp[rows]
        return x.replace(feats + self.mlp.mlp(h) * gate_mlp[rows])
