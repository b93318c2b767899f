"""SLat decoder to a Strivec radiance field: per-voxel rank-R vector-matrix factors, density and colour."""
from __future__ import annotations



from .. import fastpath
from ..sparse import SparseLinear, SparseTensor
from .slat_vae_base import SparseTransformerBase, channel_layout


class SLatRadianceFieldDecoder(SparseTransformerBase):
    def __init__(self, resolution: int, model_channels: int, latent_channels: int, num_blocks: int,
                 num_heads=None, num_head_channels: int = 64, mlp_ratio: float = 4, attn_mode: str = "swin",
                 window_size: int = 8, pe_mode: str = "ape", use_fp16: bool = False, use_checkpoint: bool = False,
                 qk_rms_norm: bool = False, representation_config: dict = None):
        super().__init__(latent_channels, model_channels, num_blocks, num_heads, num_head_channels, mlp_ratio,
                         attn_mode, window_size, pe_mode, use_fp16, use_checkpoint, qk_rms_norm)
        self.resolution = resolution
        self.rep_config = representation_config
        rank, dim = representation_config["rank"], representation_config["dim"]
        shapes = {"trivec": (rank, 3, dim), "density": (rank,), "features_dc": (rank, 1, 3)}
        self.layout, self.out_channels = channel_layout(shapes)
        self.out_layer = SparseLinear(model_channels, self.out_channels)
        self.finish_init(use_fp16)

    def to_representation(self, x: SparseTensor) -> list:
        from ..representations.strivec import StrivecFields  # representations import models' outputs only

        out = []
        for sl in x.layout:
            feats = x.feats[sl]
            fields = {name: feats[:, a:b].reshape(-1, *spec["shape"])
                      for name, spec in self.layout.items() for a, b in [spec["range"]]}
            out.append(StrivecFields(
                position=(x.coords[sl][:, 1:].float() + 0.5) / self.resolution,
                trivec=fields["trivec"] + 1, density=fields["density"], features_dc=fields["features_dc"],
                resolution=self.resolution, aabb=[-0.5, -0.5, -0.5, 1.0, 1.0, 1.0],
            ))
        return out

    @fastpath.model_entry
    def forward(self, x: SparseTensor) -> list:
        return self.to_representation(self.torso_and_head(x))


class ElasticSLatRadianceFieldDecoder(SLatRadianceFieldDecoder):
    """The reference's low-VRAM training name; same network and weights."""
