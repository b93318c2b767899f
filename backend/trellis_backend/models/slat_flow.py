"""Sparse DiT denoisers over a structured latent: TRELLIS's stage 2 and TRELLIS.2's shape and texture flows.

TRELLIS: sparse conv res-blocks pack the voxels 2× (mean-pooling) before the
transformer and unpack them after, with skip connections (`io_block_channels`).
TRELLIS.2: no res-blocks; rotary embeddings from the voxel coordinates
(`pe_mode='rope'`), shared modulation with per-block offsets, and two inputs the
reference takes at call time: `concat_cond` (the texture flow's shape latent,
concatenated to x channel-wise) and `cond` as a list of per-item token tensors
of different lengths.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..modules.attention import VarLenContext
from ..modules.embedders import AbsolutePositionEmbedder, TimestepEmbedder
from ..modules.norm import LayerNorm32
from ..modules.precision import convert_module_to, torso_dtype, zero_module
from ..modules.transformer import ModulatedSparseTransformerCrossBlock
from ..sparse import SparseConv3d, SparseDownsample, SparseLinear, SparseTensor, SparseUpsample, sparse_cat
from .init import init_flow_weights


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
        h = self.conv1(x.replace(F.silu(self.norm1(x.feats))))
        rows = h.batch_index
        h = h.replace(self.norm2(h.feats) * (1 + scale[rows]) + shift[rows])
        h = self.conv2(h.replace(F.silu(h.feats)))
        return h + self.skip_connection(x)


class SLatFlowModel(nn.Module):
    def __init__(self, resolution: int, in_channels: int, model_channels: int, cond_channels: int,
                 out_channels: int, num_blocks: int, num_heads: Optional[int] = None, num_head_channels: int = 64,
                 mlp_ratio: float = 4, patch_size: int = 2, num_io_res_blocks: int = 2,
                 io_block_channels: Optional[List[int]] = None, pe_mode: str = "ape",
                 rope_freq: Sequence[float] = (1.0, 10000.0), use_fp16: bool = False, dtype: Optional[str] = None,
                 use_checkpoint: bool = False, use_skip_connection: bool = True, share_mod: bool = False,
                 modulation_offset: bool = False, initialization: str = "vanilla", qk_rms_norm: bool = False,
                 qk_rms_norm_cross: bool = False):
        super().__init__()
        if pe_mode not in ("ape", "rope"):
            raise ValueError(f"pe_mode must be 'ape' or 'rope', got {pe_mode!r}")
        self.resolution, self.in_channels, self.out_channels = resolution, in_channels, out_channels
        self.model_channels, self.cond_channels, self.num_blocks = model_channels, cond_channels, num_blocks
        self.num_heads = num_heads or model_channels // num_head_channels
        self.mlp_ratio, self.patch_size = mlp_ratio, patch_size
        self.num_io_res_blocks, self.io_block_channels = num_io_res_blocks, io_block_channels
        self.pe_mode, self.use_fp16, self.use_checkpoint = pe_mode, use_fp16, use_checkpoint
        self.use_skip_connection, self.share_mod = use_skip_connection, share_mod
        self.qk_rms_norm, self.qk_rms_norm_cross = qk_rms_norm, qk_rms_norm_cross
        self.initialization = initialization
        self.dtype = torso_dtype(use_fp16, dtype)
        if io_block_channels is not None and 2 ** len(io_block_channels) != patch_size:
            raise ValueError("patch_size must be 2 ** len(io_block_channels)")

        self.t_embedder = TimestepEmbedder(model_channels)
        if share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(model_channels, 6 * model_channels))
        if pe_mode == "ape":
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
                                                 mlp_ratio=mlp_ratio, use_rope=pe_mode == "rope",
                                                 rope_freq=rope_freq, share_mod=share_mod,
                                                 modulation_offset=modulation_offset, qk_rms_norm=qk_rms_norm,
                                                 qk_rms_norm_cross=qk_rms_norm_cross)
            for _ in range(num_blocks)
        ])
        self.out_layer = SparseLinear(first, out_channels)
        init_flow_weights(self, initialization)
        self.convert_to(self.dtype)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def convert_to(self, dtype: torch.dtype) -> None:
        """Cast the torso's linear and conv layers (res-blocks and transformer blocks) to `dtype`."""
        self.dtype = dtype
        for part in (self.input_blocks, self.blocks, self.out_blocks):
            part.apply(lambda m: convert_module_to(m, dtype))

    def convert_to_fp16(self) -> None:
        self.convert_to(torch.float16)

    def convert_to_fp32(self) -> None:
        self.convert_to(torch.float32)

    def forward(self, x: SparseTensor, t: torch.Tensor, cond: Union[torch.Tensor, List[torch.Tensor]],
                concat_cond: Optional[SparseTensor] = None) -> SparseTensor:
        """`cond`: `[B, L, C]` tokens or a list of B `[L_i, C]` tensors; `concat_cond`: extra input channels on
        x's voxels (same coordinates, same order), placed after x's."""
        if concat_cond is not None:
            same = concat_cond.coords is x.coords or (concat_cond.coords.shape == x.coords.shape
                                                      and torch.equal(concat_cond.coords, x.coords))
            if not same:
                raise ValueError("concat_cond must lie on the same voxels as x, in the same order")
            x = sparse_cat([x, concat_cond], dim=-1)
        if x.feats.shape[-1] != self.in_channels:
            raise ValueError(f"input has {x.feats.shape[-1]} channels, the model takes {self.in_channels}"
                             + (" (x plus concat_cond)" if concat_cond is not None else ""))
        if isinstance(cond, (list, tuple)):
            cond = VarLenContext.from_list(cond)
        h = self.input_layer(x).type(self.dtype)
        t_emb = self.t_embedder(t)
        if self.share_mod:
            t_emb = self.adaLN_modulation(t_emb)
        t_emb, cond = t_emb.type(self.dtype), cond.type(self.dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, t_emb)
            skips.append(h.feats)
        if self.pe_mode == "ape":
            h = h + self.pos_embedder(h.coords[:, 1:]).type(self.dtype)
        for block in self.blocks:
            h = block(h, t_emb, cond)
        for block, skip in zip(self.out_blocks, reversed(skips)):
            h = block(h.replace(torch.cat([h.feats, skip], dim=1)) if self.use_skip_connection else h, t_emb)
        h = h.replace(F.layer_norm(h.feats, h.feats.shape[-1:]))
        return self.out_layer(h.type(x.dtype))


class ElasticSLatFlowModel(SLatFlowModel):
    """Same network and weights; the references' name for their low-VRAM training variant."""
