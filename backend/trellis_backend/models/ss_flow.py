"""Stage 1 denoiser: a dense DiT over the 16³×8 sparse-structure latent."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import fastpath
from ..modules.embedders import AbsolutePositionEmbedder, TimestepEmbedder
from ..modules.precision import convert_module_to_f16, convert_module_to_f32
from ..modules.transformer import ModulatedTransformerCrossBlock
from .init import init_dit_weights


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """`[B, C, R, R, R] -> [B, C·p³, R/p, R/p, R/p]` (channel-major, then the offset inside the patch)."""
    if p == 1:
        return x
    b, c, *spatial = x.shape
    x = x.reshape(b, c, *sum([[s // p, p] for s in spatial], []))
    x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * p ** 3, *[s // p for s in spatial])


def unpatchify(x: torch.Tensor, p: int) -> torch.Tensor:
    if p == 1:
        return x
    b, c, *spatial = x.shape
    x = x.reshape(b, c // p ** 3, p, p, p, *spatial)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c // p ** 3, *[s * p for s in spatial])


class SparseStructureFlowModel(nn.Module):
    fast_path_flow = "dense"  # fast-path capability: a flow forward(x, t, cond) over a dense grid

    def __init__(self, resolution: int, in_channels: int, model_channels: int, cond_channels: int,
                 out_channels: int, num_blocks: int, num_heads: Optional[int] = None, num_head_channels: int = 64,
                 mlp_ratio: float = 4, patch_size: int = 2, pe_mode: str = "ape", use_fp16: bool = False,
                 use_checkpoint: bool = False, share_mod: bool = False, qk_rms_norm: bool = False,
                 qk_rms_norm_cross: bool = False):
        super().__init__()
        if pe_mode != "ape":
            raise ValueError("pe_mode='rope' is not supported: no released TRELLIS checkpoint uses it; use 'ape'")
        self.resolution, self.in_channels, self.out_channels = resolution, in_channels, out_channels
        self.model_channels, self.cond_channels, self.num_blocks = model_channels, cond_channels, num_blocks
        self.num_heads = num_heads or model_channels // num_head_channels
        self.mlp_ratio, self.patch_size, self.pe_mode = mlp_ratio, patch_size, pe_mode
        self.use_fp16, self.use_checkpoint, self.share_mod = use_fp16, use_checkpoint, share_mod
        self.qk_rms_norm, self.qk_rms_norm_cross = qk_rms_norm, qk_rms_norm_cross
        self.dtype = torch.float16 if use_fp16 else torch.float32

        self.t_embedder = TimestepEmbedder(model_channels)
        if share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(model_channels, 6 * model_channels))
        grid = resolution // patch_size
        axes = torch.meshgrid(*[torch.arange(grid)] * 3, indexing="ij")
        coords = torch.stack(axes, dim=-1).reshape(-1, 3)
        self.register_buffer("pos_emb", AbsolutePositionEmbedder(model_channels, 3)(coords))
        self.input_layer = nn.Linear(in_channels * patch_size ** 3, model_channels)
        self.blocks = nn.ModuleList([
            ModulatedTransformerCrossBlock(model_channels, cond_channels, num_heads=self.num_heads,
                                           mlp_ratio=mlp_ratio, share_mod=share_mod, qk_rms_norm=qk_rms_norm,
                                           qk_rms_norm_cross=qk_rms_norm_cross)
            for _ in range(num_blocks)
        ])
        self.out_layer = nn.Linear(model_channels, out_channels * patch_size ** 3)
        init_dit_weights(self)
        if use_fp16:
            self.convert_to_fp16()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def convert_to_fp16(self) -> None:
        self.blocks.apply(convert_module_to_f16)

    def convert_to_fp32(self) -> None:
        self.blocks.apply(convert_module_to_f32)

    @fastpath.model_entry
    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        expected = [x.shape[0], self.in_channels, *[self.resolution] * 3]
        if list(x.shape) != expected:
            raise ValueError(f"input shape {list(x.shape)} does not match the model's {expected}")
        h = patchify(x, self.patch_size)
        h = h.reshape(*h.shape[:2], -1).permute(0, 2, 1).contiguous()
        h = self.input_layer(h) + self.pos_emb[None]
        t_emb = self.t_embedder(t)
        if self.share_mod:
            t_emb = self.adaLN_modulation(t_emb)
        t_emb, h, cond = t_emb.type(self.dtype), h.type(self.dtype), cond.type(self.dtype)
        for block in self.blocks:
            h = block(h, t_emb, cond)
        h = h.type(x.dtype)
        h = self.out_layer(F.layer_norm(h, h.shape[-1:]))
        grid = self.resolution // self.patch_size
        h = h.permute(0, 2, 1).reshape(h.shape[0], h.shape[2], grid, grid, grid)
        return unpatchify(h, self.patch_size).contiguous()
