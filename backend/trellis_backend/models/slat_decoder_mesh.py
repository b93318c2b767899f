"""SLat decoder to a mesh: the transformer, two 2× sparse subdivisions (64³ -> 256³), then FlexiCubes."""
from __future__ import annotations

from typing import Optional

import torch.nn as nn

from .. import fastpath
from ..modules.precision import convert_module_to_f16, convert_module_to_f32, zero_module
from ..representations.mesh import SparseFlexiCubesExtractor
from ..sparse import SparseConv3d, SparseGroupNorm32, SparseLinear, SparseSiLU, SparseSubdivide, SparseTensor
from .slat_vae_base import SLatDecoderBase


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


class SLatMeshDecoder(SLatDecoderBase):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rep_config = self.rep_config or {}
        self.mesh_extractor = SparseFlexiCubesExtractor(res=self.resolution * 4,
                                                        use_color=self.rep_config.get("use_color", False))
        self.out_channels = self.mesh_extractor.feats_channels
        c, res = self.model_channels, self.resolution
        self.upsample = nn.ModuleList([
            SparseSubdivideBlock3d(c, res, out_channels=c // 4),
            SparseSubdivideBlock3d(c // 4, res * 2, out_channels=c // 8),
        ])
        self.out_layer = SparseLinear(c // 8, self.out_channels)
        self.finish_init(self.use_fp16)

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
