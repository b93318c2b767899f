"""SLat decoder to a mesh: the transformer, two 2× sparse subdivisions (64³ -> 256³), then FlexiCubes."""
from __future__ import annotations

from typing import Optional

import torch.nn as nn

from .. import fastpath
from ..modules.precision import convert_module_to_f16, convert_module_to_f32, zero_module
from ..representations.mesh import SparseFlexiCubesExtractor
from ..sparse import SparseConv3d, SparseGroupNorm32, SparseLinear, SparseSiLU, SparseSubdivide, SparseTensor
from .slat_vae_base import SparseTransformerBase


class SparseSubdivideBlock3d(nn.Module):
    """Norm + SiLU, subdivide every voxel into 8, then a sparse conv res-block at the finer grid."""

    def __init__(self, channels: int, resolution: int, out_channels: Optional[int] = None, num_groups: int = 32):
        super().__init__()
        self.channels, self.resolution = channels, resolution
        self.out_resolution = resolution * 2
        self.out_channels = out_channels or channels
        self.act_layers = nn.Sequential(SparseGroupNorm32(num_groups, channels), SparseSiLU())
        self.sub = SparseSubdivide()
        self.out_layers = nn.Sequential(
            SparseConv3d(channels, self.out_channels, 3),
            SparseGroupNorm32(num_groups, self.out_channels),
            SparseSiLU(),
            zero_module(SparseConv3d(self.out_channels, self.out_channels, 3)),
        )
        self.skip_connection = (nn.Identity() if self.out_channels == channels
                                else SparseConv3d(channels, self.out_channels, 1))

    def forward(self, x: SparseTensor) -> SparseTensor:
        h = self.out_layers(self.sub(self.act_layers(x)))
        return h + self.skip_connection(self.sub(x))


class SLatMeshDecoder(SparseTransformerBase):
    def __init__(self, resolution: int, model_channels: int, latent_channels: int, num_blocks: int,
                 num_heads=None, num_head_channels: int = 64, mlp_ratio: float = 4, attn_mode: str = "swin",
                 window_size: int = 8, pe_mode: str = "ape", use_fp16: bool = False, use_checkpoint: bool = False,
                 qk_rms_norm: bool = False, representation_config: dict = None):
        super().__init__(latent_channels, model_channels, num_blocks, num_heads, num_head_channels, mlp_ratio,
                         attn_mode, window_size, pe_mode, use_fp16, use_checkpoint, qk_rms_norm)
        self.resolution = resolution
        self.rep_config = representation_config or {}
        self.mesh_extractor = SparseFlexiCubesExtractor(res=resolution * 4, use_color=self.rep_config.get("use_color", False))
        self.out_channels = self.mesh_extractor.feats_channels
        self.upsample = nn.ModuleList([
            SparseSubdivideBlock3d(model_channels, resolution, out_channels=model_channels // 4),
            SparseSubdivideBlock3d(model_channels // 4, resolution * 2, out_channels=model_channels // 8),
        ])
        self.out_layer = SparseLinear(model_channels // 8, self.out_channels)
        self.finish_init(use_fp16)

    def convert_to_fp16(self) -> None:
        super().convert_to_fp16()
        self.upsample.apply(convert_module_to_f16)

    def convert_to_fp32(self) -> None:
        super().convert_to_fp32()
        self.upsample.apply(convert_module_to_f32)

    def decode_features(self, x: SparseTensor) -> SparseTensor:
        """The network output at 4× resolution (101 FlexiCubes channels per fine voxel)."""
        h = super().forward(x)
        for block in self.upsample:
            h = block(h)
        return self.out_layer(h.type(x.dtype))

    def to_representation(self, feats: SparseTensor):
        return [self.mesh_extractor(feats[i], training=self.training) for i in range(feats.batch_size)]

    @fastpath.model_entry
    def forward(self, x: SparseTensor):
        return self.to_representation(self.decode_features(x))


class ElasticSLatMeshDecoder(SLatMeshDecoder):
    """The reference's low-VRAM training name; same network and weights."""
