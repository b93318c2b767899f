"""SLat decoder to 3D Gaussians: each voxel emits `num_gaussians` Gaussians near its centre."""
from __future__ import annotations

from typing import List

import torch

from .. import fastpath
from ..sparse import SparseLinear, SparseTensor
from .slat_vae_base import SLatDecoderBase, channel_layout

PRIMES = (2, 3, 5, 7, 11, 13)


def radical_inverse(base: int, n: int) -> float:
    value, inv, factor = 0.0, 1.0 / base, 1.0 / base
    while n > 0:
        value += (n % base) * factor
        n //= base
        factor *= inv
    return value


def hammersley_point(dim: int, n: int, num_samples: int) -> List[float]:
    """n-th of `num_samples` Hammersley points in [0, 1)^dim (first axis n/N, then Halton axes)."""
    return [n / num_samples] + [radical_inverse(PRIMES[d], n) for d in range(dim - 1)]


class SLatGaussianDecoder(SLatDecoderBase):
    FIELDS = ("_xyz", "_features_dc", "_scaling", "_rotation", "_opacity")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        g = self.rep_config["num_gaussians"]
        shapes = {"_xyz": (g, 3), "_features_dc": (g, 1, 3), "_scaling": (g, 3), "_rotation": (g, 4), "_opacity": (g, 1)}
        self.layout, self.out_channels = channel_layout({name: shapes[name] for name in self.FIELDS})
        self.out_layer = SparseLinear(self.model_channels, self.out_channels)
        points = torch.tensor([hammersley_point(3, i, g) for i in range(g)], dtype=torch.float32) * 2 - 1
        self.register_buffer("offset_perturbation", torch.atanh(points / self.rep_config["voxel_size"]))
        self.finish_init(self.use_fp16)

    def to_representation(self, x: SparseTensor) -> list:
        cfg = self.rep_config
        from ..representations.gaussian import Gaussians  # representations import models' outputs only

        out = []
        for sl in x.layout:
            g = Gaussians(sh_degree=0, aabb=[-0.5, -0.5, -0.5, 1.0, 1.0, 1.0],
                          mininum_kernel_size=cfg["3d_filter_kernel_size"], scaling_bias=cfg["scaling_bias"],
                          opacity_bias=cfg["opacity_bias"], scaling_activation=cfg["scaling_activation"],
                          device=x.device)
            feats = x.feats[sl]
            centers = (x.coords[sl][:, 1:].float() + 0.5) / self.resolution
            for name, spec in self.layout.items():
                a, b = spec["range"]
                value = feats[:, a:b].reshape(-1, *spec["shape"]) * cfg["lr"][name]
                if name == "_xyz":
                    if cfg["perturb_offset"]:
                        value = value + self.offset_perturbation
                    offset = torch.tanh(value) / self.resolution * 0.5 * cfg["voxel_size"]
                    value = centers.unsqueeze(1) + offset
                setattr(g, name, value.flatten(0, 1))
            out.append(g)
        return out

    @fastpath.model_entry
    def forward(self, x: SparseTensor) -> list:
        return self.to_representation(self.torso_and_head(x))


class ElasticSLatGaussianDecoder(SLatGaussianDecoder):
    """The reference's low-VRAM training name; same network and weights."""
