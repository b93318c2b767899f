"""Stage 2 denoiser: a sparse DiT over the structured latent (SLat) on the active 64³ voxels.

Sparse conv res-blocks pack the voxels 2× (mean-pooling) before the
transformer and unpack them after, with skip connections, as the reference.
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import fastpath
from ..modules.embedders import AbsolutePositionEmbedder, TimestepEmbedder
from ..modules.norm import LayerNorm32
from ..modules.precision import convert_module_to_f16, convert_module_to_f32, zero_module
from ..modules.transformer import ModulatedSparseTransformerCrossBlock
from ..sparse import SparseConv3d, SparseDownsample, SparseLinear, SparseTensor, SparseUpsample
from .init import init_dit_weights


class SparseResBlock3d(nn.Module):
    """Sparse conv res-block with timestep scale/shift, optionally down- or up-sampling first."""

    def __init__(self, channels: int, emb_channels: int, out_channels: Optional[int] = None,
                 downsample: bool = False, upsample: bool = False):
        super().__init__()
        if downsample and upsample:
            raise ValueError("a block cannot both downsample and upsample")
        self.channels, self.emb_channels = channels, emb_channels
        self.out_channels = out_channels or channels
        self.downsample, self.upsample = downsample, upsample
        self.norm1 = LayerNorm32(channels, elementwise_affine=True, eps=1e-6)
        self.norm2 = LayerNorm32(self.out_channels, elementwise_affine=False, eps=1e-6)
        self.conv1 = SparseConv3d(channels, self.out_channels, 3)
        self.conv2 = zero_module(SparseConv3d(self.out_channels, self.out_channels, 3))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * self.out_channels, bias=True))
        self.skip_connection = (SparseLinear(channels, self.out_channels)
                                if channels != self.out_channels else nn.Identity())
        self.updown = SparseDownsample(2) if downsample else SparseUpsample(2) if upsample else None

    def forward(self, x: SparseTensor, emb: torch.Tensor) -> SparseTensor:
        scale, shift = self.emb_layers(emb).type(x.dtype).chunk(2, dim=1)
        if self.updown is not None:
            x = self.updown(x)
        fast = fastpath.lookup(self)
        h = self.conv1(x.replace(F.silu(fast.layer_norm(self.norm1, x.feats))))
        h = h.replace(fast.modulated_norm(self.norm2, h.feats, shift, scale, h.batch_index))
        h = self.conv2(h.replace(F.silu(h.feats)))
        return h + self.skip_connection(x)


class SLatFlowModel(nn.Module):
    fast_path_flow = "sparse"  # fast-path capability: a flow forward(x, t, cond) over a SparseTensor

    def __init__(self, resolution: int, in_channels: int, model_channels: int, cond_channels: int,
                 out_channels: int, num_blocks: int, num_heads: Optional[int] = None, num_head_channels: int = 64,
                 mlp_ratio: float = 4, patch_size: int = 2, num_io_res_blocks: int = 2,
                 io_block_channels: Optional[List[int]] = None, pe_mode: str = "ape", use_fp16: bool = False,
                 use_checkpoint: bool = False, use_skip_connection: bool = True, share_mod: bool = False,
                 qk_rms_norm: bool = False, qk_rms_norm_cross: bool = False):
        super().__init__()
        if pe_mode != "ape":
            raise ValueError("pe_mode='rope' is not supported: no released TRELLIS checkpoint uses it; use 'ape'")
        self.resolution, self.in_channels, self.out_channels = resolution, in_channels, out_channels
        self.model_channels, self.cond_channels, self.num_blocks = model_channels, cond_channels, num_blocks
        self.num_heads = num_heads or model_channels // num_head_channels
        self.mlp_ratio, self.patch_size = mlp_ratio, patch_size
        self.num_io_res_blocks, self.io_block_channels = num_io_res_blocks, io_block_channels
        self.pe_mode, self.use_fp16, self.use_checkpoint = pe_mode, use_fp16, use_checkpoint
        self.use_skip_connection, self.share_mod = use_skip_connection, share_mod
        self.qk_rms_norm, self.qk_rms_norm_cross = qk_rms_norm, qk_rms_norm_cross
        self.dtype = torch.float16 if use_fp16 else torch.float32
        if io_block_channels is not None and 2 ** len(io_block_channels) != patch_size:
            raise ValueError("patch_size must be 2 ** len(io_block_channels)")

        self.t_embedder = TimestepEmbedder(model_channels)
        if share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(model_channels, 6 * model_channels))
        self.pos_embedder = AbsolutePositionEmbedder(model_channels)
        first = model_channels if io_block_channels is None else io_block_channels[0]
        self.input_layer = SparseLinear(in_channels, first)

        self.input_blocks = nn.ModuleList()
        self.out_blocks = nn.ModuleList()
        if io_block_channels is not None:
            for chs, next_chs in zip(io_block_channels, io_block_channels[1:] + [model_channels]):
                self.input_blocks.extend(SparseResBlock3d(chs, model_channels, out_channels=chs)
                                         for _ in range(num_io_res_blocks - 1))
                self.input_blocks.append(SparseResBlock3d(chs, model_channels, out_channels=next_chs, downsample=True))
            skip = 2 if use_skip_connection else 1
            for chs, prev_chs in zip(reversed(io_block_channels), [model_channels] + list(reversed(io_block_channels[1:]))):
                self.out_blocks.append(SparseResBlock3d(prev_chs * skip, model_channels, out_channels=chs, upsample=True))
                self.out_blocks.extend(SparseResBlock3d(chs * skip, model_channels, out_channels=chs)
                                       for _ in range(num_io_res_blocks - 1))

        self.blocks = nn.ModuleList([
            ModulatedSparseTransformerCrossBlock(model_channels, cond_channels, num_heads=self.num_heads,
                                                 mlp_ratio=mlp_ratio, share_mod=share_mod, qk_rms_norm=qk_rms_norm,
                                                 qk_rms_norm_cross=qk_rms_norm_cross)
            for _ in range(num_blocks)
        ])
        self.out_layer = SparseLinear(first, out_channels)
        init_dit_weights(self)
        if use_fp16:
            self.convert_to_fp16()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def convert_to_fp16(self) -> None:
        for part in (self.input_blocks, self.blocks, self.out_blocks):
            part.apply(convert_module_to_f16)

    def convert_to_fp32(self) -> None:
        for part in (self.input_blocks, self.blocks, self.out_blocks):
            part.apply(convert_module_to_f32)

    @fastpath.model_entry
    def forward(self, x: SparseTensor, t: torch.Tensor, cond: torch.Tensor) -> SparseTensor:
        h = self.input_layer(x).type(self.dtype)
        t_emb = self.t_embedder(t)
        if self.share_mod:
            t_emb = self.adaLN_modulation(t_emb)
        t_emb, cond = t_emb.type(self.dtype), cond.type(self.dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, t_emb)
            skips.append(h.feats)
        h = h + self.pos_embedder(h.coords[:, 1:]).type(self.dtype)
        for block in self.blocks:
            h = block(h, t_emb, cond)
        for block, skip in zip(self.out_blocks, reversed(skips)):
            h = block(h.replace(torch.cat([h.feats, skip], dim=1)) if self.use_skip_connection else h, t_emb)
        h = h.replace(F.layer_norm(h.feats, h.feats.shape[-1:]))
        return self.out_layer(h.type(x.dtype))


class ElasticSLatFlowModel(SLatFlowModel):
    """Same network and weights; the reference's name for its low-VRAM training variant."""
