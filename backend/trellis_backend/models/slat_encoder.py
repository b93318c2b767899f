"""SLat VAE encoder: per-voxel features (e.g. aggregated image features) -> 8-d structured latent."""
from __future__ import annotations

import torch

from .. import fastpath
from ..sparse import SparseLinear, SparseTensor
from .slat_vae_base import SparseTransformerBase


class SLatEncoder(SparseTransformerBase):
    def __init__(self, resolution: int, in_channels: int, model_channels: int, latent_channels: int,
                 num_blocks: int, num_heads=None, num_head_channels: int = 64, mlp_ratio: float = 4,
                 attn_mode: str = "swin", window_size: int = 8, pe_mode: str = "ape", use_fp16: bool = False,
                 use_checkpoint: bool = False, qk_rms_norm: bool = False):
        super().__init__(in_channels, model_channels, num_blocks, num_heads, num_head_channels, mlp_ratio,
                         attn_mode, window_size, pe_mode, use_fp16, use_checkpoint, qk_rms_norm)
        self.resolution, self.latent_channels = resolution, latent_channels
        self.out_layer = SparseLinear(model_channels, 2 * latent_channels)
        self.finish_init(use_fp16)

    @fastpath.model_entry
    def forward(self, x: SparseTensor, sample_posterior: bool = True, return_raw: bool = False):
        h = self.torso_and_head(x)
        mean, logvar = h.feats.chunk(2, dim=-1)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if sample_posterior else mean
        z = h.replace(z)
        return (z, mean, logvar) if return_raw else z


class ElasticSLatEncoder(SLatEncoder):
    """The reference's low-VRAM training name; same network and weights."""
