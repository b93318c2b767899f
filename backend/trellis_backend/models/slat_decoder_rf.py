"""SLat decoder to a Strivec radiance field: per-voxel rank-R vector-matrix factors, density and colour."""
from __future__ import annotations



from .. import fastpath
from ..sparse import SparseLinear, SparseTensor
from .slat_vae_base import SLatDecoderBase, channel_layout


class SLatRadianceFieldDecoder(SLatDecoderBase):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        rank, dim = self.rep_config["rank"], self.rep_config["dim"]
        shapes = {"trivec": (rank, 3, dim), "density": (rank,), "features_dc": (rank, 1, 3)}
        self.layout, self.out_channels = channel_layout(shapes)
        self.out_layer = SparseLinear(self.model_channels, self.out_channels)
        self.finish_init(self.use_fp16)

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
