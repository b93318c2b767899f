"""TRELLIS.2's shape SC-VAE: the sparse U-Net VAE on flexible-dual-grid voxels (a dual vertex and three
edge-intersection flags per voxel in; a dual vertex, three intersection logits and a quad split weight out),
the decoder's voxels turned into a mesh by `representations.ovoxel.flexible_dual_grid_to_mesh`.
"""
from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional

import torch
import torch.nn.functional as F

from ..sparse import SparseTensor
from .sc_vae import SparseUnetVaeDecoder, SparseUnetVaeEncoder

# the decoder's meshes live in the unit cube centred at the origin
MESH_AABB = ((-0.5, -0.5, -0.5), (0.5, 0.5, 0.5))


class DualGrid(NamedTuple):
    """One decoded item as flexible dual grid: voxel `coords` `[n, 3]` (int32, in the decoder's order),
    `dual_vertices` `[n, 3]` (position inside the voxel, in voxel units, within [-margin, 1 + margin]),
    `intersected` `[n, 3]` (bool edge flags, or logits in training mode) and `split_weight` `[n, 1]` (> 0)."""

    coords: torch.Tensor
    dual_vertices: torch.Tensor
    intersected: torch.Tensor
    split_weight: torch.Tensor


class DualGridMesh(NamedTuple):
    """A decoded mesh: `vertices` `[V, 3]` float, `faces` `[F, 3]` (what `flexible_dual_grid_to_mesh` returns)."""

    vertices: torch.Tensor
    faces: torch.Tensor


class FlexiDualGridVaeEncoder(SparseUnetVaeEncoder):
    """Encodes dual vertices (`[N, 3]` in [0, 1]) and intersection flags (`[N, 3]` bool) on the same voxels."""

    def __init__(self, model_channels: List[int], latent_channels: int, num_blocks: List[int], block_type: List[str],
                 down_block_type: List[str], block_args: List[Dict[str, Any]], use_fp16: bool = False):
        super().__init__(6, model_channels, latent_channels, num_blocks, block_type, down_block_type, block_args,
                         use_fp16)

    def forward(self, vertices: SparseTensor, intersected: SparseTensor, sample_posterior: bool = False,
                return_raw: bool = False):
        if vertices.feats.shape[0] != intersected.feats.shape[0]:
            raise ValueError(f"vertices ({vertices.feats.shape[0]} voxels) and intersected "
                             f"({intersected.feats.shape[0]} voxels) must describe the same voxels")
        x = vertices.replace(torch.cat([vertices.feats - 0.5, intersected.feats.float() - 0.5], dim=1))
        return super().forward(x, sample_posterior, return_raw)


class FlexiDualGridVaeDecoder(SparseUnetVaeDecoder):
    """Decodes a shape latent to meshes at `resolution` (set per call with `set_resolution`)."""

    def __init__(self, resolution: int, model_channels: List[int], latent_channels: int, num_blocks: List[int],
                 block_type: List[str], up_block_type: List[str], block_args: List[Dict[str, Any]],
                 voxel_margin: float = 0.5, use_fp16: bool = False):
        self.resolution, self.voxel_margin = resolution, voxel_margin
        super().__init__(7, model_channels, latent_channels, num_blocks, block_type, up_block_type, block_args,
                         use_fp16)

    def set_resolution(self, resolution: int) -> None:
        self.resolution = resolution

    def dual_grids(self, h: SparseTensor, binarize: bool = True) -> List[DualGrid]:
        """The network output `h` (7 channels) as one `DualGrid` per batch item.

        dual vertex = (1 + 2·margin)·sigmoid(h[:, 0:3]) - margin; intersected = h[:, 3:6] > 0 (the logits
        themselves when not `binarize`); split weight = softplus(h[:, 6:7]).
        """
        feats = h.feats
        dual = (1 + 2 * self.voxel_margin) * torch.sigmoid(feats[:, 0:3]) - self.voxel_margin
        logits = feats[:, 3:6]
        intersected = logits > 0 if binarize else logits
        split = F.softplus(feats[:, 6:7])
        return [DualGrid(h.coords[sl, 1:], dual[sl], intersected[sl], split[sl]) for sl in h.layout]

    def meshes(self, grids: List[DualGrid], train: bool = False) -> List[DualGridMesh]:
        """Each item's mesh in the unit cube around the origin (one vertex per voxel, in voxel order)."""
        from ..representations.ovoxel import flexible_dual_grid_to_mesh  # the O-Voxel module, loaded on first use

        return [DualGridMesh(*flexible_dual_grid_to_mesh(g.coords, g.dual_vertices, g.intersected, g.split_weight,
                                                         aabb=MESH_AABB, grid_size=self.resolution, train=train))
                for g in grids]

    def forward(self, x: SparseTensor, gt_intersected: Optional[SparseTensor] = None,
                guide_subs: Optional[List[SparseTensor]] = None, return_subs: bool = False):
        """Meshes, or `(meshes, subs)` with `return_subs`.

        Training mode returns `(meshes, vertices, intersected_logits, subs_gt, subs)` as the reference does,
        the meshes built (differentiably) on the true intersection flags `gt_intersected`.
        """
        decoded = self.decode(x, guide_subs=guide_subs, return_subs=return_subs)
        if self.training:
            if gt_intersected is None:
                raise ValueError("FlexiDualGridVaeDecoder in training mode needs gt_intersected (the true edge flags "
                                 "on the decoded voxels); call .eval() to decode")
            h, subs_gt, subs = decoded
            grids = self.dual_grids(h, binarize=False)
            truth = [gt_intersected.feats[sl] for sl in gt_intersected.layout]
            if len(truth) != len(grids):
                raise ValueError(f"gt_intersected has {len(truth)} items for {len(grids)} decoded items")
            meshes = self.meshes([g._replace(intersected=t) for g, t in zip(grids, truth)], train=True)
            vertices = h.replace(torch.cat([g.dual_vertices for g in grids]))
            return meshes, vertices, h.replace(h.feats[:, 3:6]), subs_gt, subs
        h, subs = decoded if return_subs else (decoded, None)
        meshes = self.meshes(self.dual_grids(h))
        return (meshes, subs) if return_subs else meshes
