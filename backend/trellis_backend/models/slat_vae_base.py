"""Shared torso of the SLat VAE encoder and decoders: a sparse transformer with (shifted) window attention."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..modules.embedders import AbsolutePositionEmbedder
from ..modules.precision import convert_module_to_f16, convert_module_to_f32
from ..modules.transformer import SparseTransformerBlock
from ..sparse import SparseLinear, SparseTensor
from .init import init_transformer_weights


def channel_layout(shapes: dict):
    """({name: {"shape", "range"}}, total channels) for output fields packed one after another."""
    layout, start = {}, 0
    for name, shape in shapes.items():
        size = int(torch.Size(shape).numel())
        layout[name] = {"shape": shape, "range": (start, start + size)}
        start += size
    return layout, start


def block_attention(attn_mode: str, window_size: Optional[int], index: int):
    """(mode, window, shift) of block `index`: 'swin' alternates unshifted and half-window-shifted windows."""
    if attn_mode == "full":
        return "full", None, 0
    if attn_mode == "swin":
        return "windowed", window_size, window_size // 2 * (index % 2)
    raise ValueError(f"attn_mode {attn_mode!r} is not supported; released TRELLIS VAEs use 'swin' or 'full'")


class SparseTransformerBase(nn.Module):
    def __init__(self, in_channels: int, model_channels: int, num_blocks: int, num_heads: Optional[int] = None,
                 num_head_channels: int = 64, mlp_ratio: float = 4.0, attn_mode: str = "full",
                 window_size: Optional[int] = None, pe_mode: str = "ape", use_fp16: bool = False,
                 use_checkpoint: bool = False, qk_rms_norm: bool = False):
        super().__init__()
        if pe_mode != "ape":
            raise ValueError("pe_mode='rope' is not supported: no released TRELLIS checkpoint uses it; use 'ape'")
        self.in_channels, self.model_channels, self.num_blocks = in_channels, model_channels, num_blocks
        self.window_size, self.num_heads = window_size, num_heads or model_channels // num_head_channels
        self.mlp_ratio, self.attn_mode, self.pe_mode = mlp_ratio, attn_mode, pe_mode
        self.use_fp16, self.use_checkpoint, self.qk_rms_norm = use_fp16, use_checkpoint, qk_rms_norm
        self.dtype = torch.float16 if use_fp16 else torch.float32
        self.pos_embedder = AbsolutePositionEmbedder(model_channels)
        self.input_layer = SparseLinear(in_channels, model_channels)
        blocks = []
        for i in range(num_blocks):
            mode, window, shift = block_attention(attn_mode, window_size, i)
            blocks.append(SparseTransformerBlock(model_channels, self.num_heads, mlp_ratio, attn_mode=mode,
                                                 window_size=window, shift_window=shift, qk_rms_norm=qk_rms_norm))
        self.blocks = nn.ModuleList(blocks)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def convert_to_fp16(self) -> None:
        self.blocks.apply(convert_module_to_f16)

    def convert_to_fp32(self) -> None:
        self.blocks.apply(convert_module_to_f32)

    def initialize_weights(self) -> None:
        init_transformer_weights(self)

    def finish_init(self, use_fp16: bool) -> None:
        """Fresh-model init (zeroed output layer, as the reference) and the fp16 torso."""
        self.initialize_weights()
        nn.init.zeros_(self.out_layer.weight)
        nn.init.zeros_(self.out_layer.bias)
        if use_fp16:
            self.convert_to_fp16()

    def torso_and_head(self, x: SparseTensor) -> SparseTensor:
        """Torso, back to the input dtype, parameter-free LayerNorm, output layer."""
        h = SparseTransformerBase.forward(self, x).type(x.dtype)
        return self.out_layer(h.replace(F.layer_norm(h.feats, h.feats.shape[-1:])))

    def forward(self, x: SparseTensor) -> SparseTensor:
        h = self.input_layer(x)
        h = h + self.pos_embedder(x.coords[:, 1:])
        h = h.type(self.dtype)
        for block in self.blocks:
            h = block(h)
        return h


class SLatDecoderBase(SparseTransformerBase):
    """The torso every TRELLIS SLAT decoder (Gaussians, radiance field, mesh) shares, with the released configs'
    argument names; a subclass adds its representation's output head from ``rep_config`` and calls
    `finish_init`."""

    def __init__(self, resolution: int, model_channels: int, latent_channels: int, num_blocks: int,
                 num_heads=None, num_head_channels: int = 64, mlp_ratio: float = 4, attn_mode: str = "swin",
                 window_size: int = 8, pe_mode: str = "ape", use_fp16: bool = False, use_checkpoint: bool = False,
                 qk_rms_norm: bool = False, representation_config: dict = None):
        super().__init__(latent_channels, model_channels, num_blocks, num_heads, num_head_channels, mlp_ratio,
                         attn_mode, window_size, pe_mode, use_fp16, use_checkpoint, qk_rms_norm)
        self.resolution = resolution
        self.rep_config = representation_config
