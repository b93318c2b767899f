"""Strivec radiance-field fields, as the radiance-field decoder emits them.

Each occupied voxel (a leaf of a full-depth octree) carries ``rank`` rank-1 tensor components:
for component r, ``trivec[r]`` holds three 1-D vectors of ``dim`` samples along x, y and z
across the voxel, and the field at a point inside the voxel is the product of the three
vectors (linearly interpolated) weighted by ``density[r]`` for density (no activation, shifted
by ``density_shift`` in the renderer) and by ``features_dc[r]`` (degree-0 SH) for colour.
The decoder adds 1 to the raw trivec output so that a zero network output is a constant field.

No renderer lives here; this is the container the decoder returns and exports consume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import torch

DEFAULT_AABB = (-0.5, -0.5, -0.5, 1.0, 1.0, 1.0)


def strivec_layout(rank: int, dim: int) -> Dict[str, Dict]:
    """Channel layout of the decoder output: trivec, density, features_dc (in that order)."""
    shapes: List[Tuple[str, Tuple[int, ...]]] = [
        ("trivec", (rank, 3, dim)),
        ("density", (rank,)),
        ("features_dc", (rank, 1, 3)),
    ]
    layout, start = {}, 0
    for name, shape in shapes:
        size = math.prod(shape)
        layout[name] = {"shape": shape, "size": size, "range": (start, start + size)}
        start += size
    return layout


def strivec_channels(rank: int, dim: int) -> int:
    return sum(v["size"] for v in strivec_layout(rank, dim).values())


@dataclass
class StrivecFields:
    """Per-voxel Strivec fields of one object.

    position [N,3]: voxel centres in [0,1]³ of the aabb, ``(coord + 0.5) / resolution``;
    trivec [N,rank,3,dim]; density [N,rank]; features_dc [N,rank,1,3];
    resolution: voxels per axis (a power of two, the octree depth is its log2);
    aabb: (x0, y0, z0, sx, sy, sz), world = aabb[:3] + position · aabb[3:].
    """

    position: torch.Tensor
    trivec: torch.Tensor
    density: torch.Tensor
    features_dc: torch.Tensor
    resolution: int
    aabb: Sequence[float] = field(default_factory=lambda: list(DEFAULT_AABB))
    sh_degree: int = 0
    density_shift: float = 0.0

    def __post_init__(self):
        if self.resolution <= 0 or (self.resolution & (self.resolution - 1)) != 0:
            raise ValueError(f"resolution must be a power of two, got {self.resolution}")
        n = self.position.shape[0]
        rank = self.density.shape[1]
        assert self.position.shape == (n, 3)
        assert self.trivec.shape[:3] == (n, rank, 3)
        assert self.features_dc.shape == (n, rank, 1, 3)

    @classmethod
    def from_decoder_output(cls, coords: torch.Tensor, feats: torch.Tensor, resolution: int,
                            rank: int, dim: int, aabb: Sequence[float] = DEFAULT_AABB) -> "StrivecFields":
        """Split the decoder's output layer ([N, C] for voxel coords [N,3] x,y,z) into fields."""
        layout = strivec_layout(rank, dim)
        channels = strivec_channels(rank, dim)
        if feats.shape[1] != channels:
            raise ValueError(f"expected {channels} channels for rank={rank}, dim={dim}, got {feats.shape[1]}")
        parts = {}
        for name, spec in layout.items():
            lo, hi = spec["range"]
            parts[name] = feats[:, lo:hi].reshape(-1, *spec["shape"])
        return cls(
            position=(coords.float() + 0.5) / resolution,
            trivec=parts["trivec"] + 1,
            density=parts["density"],
            features_dc=parts["features_dc"],
            resolution=resolution,
            aabb=list(aabb),
        )

    @property
    def rank(self) -> int:
        return self.density.shape[1]

    @property
    def dim(self) -> int:
        return self.trivec.shape[3]

    @property
    def depth(self) -> torch.Tensor:
        """Octree depth of every leaf [N,1] uint8 (all voxels are at full depth)."""
        return torch.full((self.position.shape[0], 1), int(round(math.log2(self.resolution))),
                          dtype=torch.uint8, device=self.position.device)

    @property
    def get_xyz(self) -> torch.Tensor:
        return self.position

    @property
    def get_density(self) -> torch.Tensor:
        return self.density  # identity activation for trivec primitives

    @property
    def world_position(self) -> torch.Tensor:
        aabb = torch.as_tensor(list(self.aabb), dtype=self.position.dtype, device=self.position.device)
        return aabb[:3] + self.position * aabb[3:]

    def __len__(self) -> int:
        return self.position.shape[0]

    def to(self, device) -> "StrivecFields":
        return StrivecFields(self.position.to(device), self.trivec.to(device), self.density.to(device),
                             self.features_dc.to(device), self.resolution, list(self.aabb),
                             self.sh_degree, self.density_shift)
