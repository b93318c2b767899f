"""TRELLIS.2's sparse-convolutional U-Net VAE (SC-VAE): an encoder that compresses sparse voxels 16×
(four space-to-channel halvings) and a decoder that grows them back, predicting at each doubling which of
the 8 children of a voxel exist (or following another decoder's choice).

Used as is for the texture latent (6 PBR channels); `fdg_vae` wraps it for the shape latent.
Levels: `blocks[i]` holds `num_blocks[i]` blocks of `block_type[i]` at `model_channels[i]`, then (except
at the last level) one resampling block of `down_block_type[i]` / `up_block_type[i]` to level i + 1.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UnknownModelClassError
from ..modules.precision import convert_module_to_f16, convert_module_to_f32
from ..sparse import SparseLinear, SparseTensor
from .init import init_transformer_weights
from .sc_vae_blocks import SC_VAE_BLOCKS


def _block_class(name: str) -> type:
    if name not in SC_VAE_BLOCKS:
        raise UnknownModelClassError(f"unknown SC-VAE block type {name!r}; known: {', '.join(sorted(SC_VAE_BLOCKS))}",
                                     hint="The checkpoint json names a block type this backend does not build.")
    return SC_VAE_BLOCKS[name]


def build_levels(model_channels: Sequence[int], num_blocks: Sequence[int], block_type: Sequence[str],
                 resample_type: Sequence[str], block_args: Sequence[Dict[str, Any]],
                 **resample_kwargs) -> nn.ModuleList:
    """`blocks[i]` = `num_blocks[i]` × `block_type[i]`(model_channels[i]) + the resampling block to level i + 1."""
    levels = len(num_blocks)
    if not (len(model_channels) == len(block_type) == len(block_args) == levels and len(resample_type) == levels - 1):
        raise ValueError(f"SC-VAE config: model_channels ({len(model_channels)}), num_blocks ({levels}), block_type "
                         f"({len(block_type)}) and block_args ({len(block_args)}) need one entry per level, the "
                         f"resampling block types ({len(resample_type)}) one fewer")
    blocks = nn.ModuleList()
    for i in range(levels):
        level = nn.ModuleList(_block_class(block_type[i])(model_channels[i], **block_args[i])
                              for _ in range(num_blocks[i]))
        if i < levels - 1:
            level.append(_block_class(resample_type[i])(model_channels[i], model_channels[i + 1],
                                                         **resample_kwargs, **block_args[i]))
        blocks.append(level)
    return blocks


class _ScVaeBase(nn.Module):
    """`use_fp16`: the blocks' conv and linear weights are float16, the input/output layers and norms float32."""

    blocks: nn.ModuleList

    def _finish_init(self, use_fp16: bool) -> None:
        self.use_fp16 = use_fp16
        self.dtype = torch.float16 if use_fp16 else torch.float32
        init_transformer_weights(self)  # the reference's initialisation: Xavier linears, zero biases
        if use_fp16:
            self.convert_to_fp16()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def convert_to_fp16(self) -> None:
        self.blocks.apply(convert_module_to_f16)

    def convert_to_fp32(self) -> None:
        self.blocks.apply(convert_module_to_f32)


class SparseUnetVaeEncoder(_ScVaeBase):
    """Sparse voxels with `in_channels` features -> latent (`latent_channels`) at 1/2^(levels-1) resolution.

    Latent voxels are sorted by (batch, x, y, z) and share the spatial cache of the input, so a decoder
    run on a latent derived from them (`replace`) restores exactly the encoded voxels.
    """

    def __init__(self, in_channels: int, model_channels: List[int], latent_channels: int, num_blocks: List[int],
                 block_type: List[str], down_block_type: List[str], block_args: List[Dict[str, Any]],
                 use_fp16: bool = False):
        super().__init__()
        self.in_channels, self.model_channels = in_channels, model_channels
        self.latent_channels, self.num_blocks = latent_channels, num_blocks
        self.input_layer = SparseLinear(in_channels, model_channels[0])
        self.to_latent = SparseLinear(model_channels[-1], 2 * latent_channels)
        self.blocks = build_levels(model_channels, num_blocks, block_type, down_block_type, block_args)
        self._finish_init(use_fp16)

    def forward(self, x: SparseTensor, sample_posterior: bool = False, return_raw: bool = False):
        """z (the posterior mean, or a sample of it), or `(z, mean, logvar)` with `return_raw`."""
        if x.feats.shape[-1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects {self.in_channels} input channels, got {x.feats.shape[-1]}")
        h = self.input_layer(x).type(self.dtype)
        for level in self.blocks:
            for block in level:
                h = block(h)
        h = h.type(x.dtype)
        h = h.replace(F.layer_norm(h.feats, h.feats.shape[-1:]))
        h = self.to_latent(h)
        mean, logvar = h.feats.chunk(2, dim=-1)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if sample_posterior else mean
        z = h.replace(z)
        return (z, mean, logvar) if return_raw else z


class SparseUnetVaeDecoder(_ScVaeBase):
    """Latent -> sparse voxels with `out_channels` features at 2^(levels-1)× the latent resolution.

    Each doubling keeps the children chosen by the decoder's own subdivision logits (`pred_subdiv`) or by
    `guide_subs` (another decoder's logits, one `SparseTensor` per doubling on that level's voxels). Output
    voxels are parent-major, children in slot order k (child k at 2·xyz + (k & 1, k >> 1 & 1, k >> 2 & 1)),
    so they are not sorted; two decoders given the same latent voxels and subdivisions emit the same order.
    """

    def __init__(self, out_channels: int, model_channels: List[int], latent_channels: int, num_blocks: List[int],
                 block_type: List[str], up_block_type: List[str], block_args: List[Dict[str, Any]],
                 use_fp16: bool = False, pred_subdiv: bool = True):
        super().__init__()
        self.out_channels, self.model_channels = out_channels, model_channels
        self.latent_channels, self.num_blocks, self.pred_subdiv = latent_channels, num_blocks, pred_subdiv
        self.low_vram = False  # set by the reference pipeline around calls; no effect here
        self.output_layer = SparseLinear(model_channels[-1], out_channels)
        self.from_latent = SparseLinear(latent_channels, model_channels[0])
        self.blocks = build_levels(model_channels, num_blocks, block_type, up_block_type, block_args,
                                   pred_subdiv=pred_subdiv)
        self._finish_init(use_fp16)

    def _is_doubling(self, level: int, index: int) -> bool:
        return level < len(self.blocks) - 1 and index == len(self.blocks[level]) - 1

    def decode(self, x: SparseTensor, guide_subs: Optional[List[SparseTensor]] = None, return_subs: bool = False):
        """The network output `h`; `(h, subs)` with `return_subs` (the subdivision logits of each doubling).

        In training mode a `pred_subdiv` decoder returns `(h, subs_gt, subs)`, `subs_gt` being the true
        subdivisions recorded by the encoder whose spatial cache the latent shares.
        """
        if guide_subs is not None and self.pred_subdiv:
            raise ValueError("guide_subs only guide decoders built with pred_subdiv=False (this one predicts its own)")
        if return_subs and not self.pred_subdiv:
            raise ValueError("return_subs needs a decoder built with pred_subdiv=True (this one has no subdivision "
                             "logits of its own)")
        if guide_subs is not None and len(guide_subs) != len(self.blocks) - 1:
            raise ValueError(f"guide_subs needs one SparseTensor per doubling ({len(self.blocks) - 1}), "
                             f"got {len(guide_subs)}")
        training_targets = self.training and self.pred_subdiv
        h = self.from_latent(x).type(self.dtype)
        subs, subs_gt = [], []
        for i, level in enumerate(self.blocks):
            for j, block in enumerate(level):
                if not self._is_doubling(i, j):
                    h = block(h)
                elif self.pred_subdiv:
                    if training_targets:
                        subs_gt.append(h.get_spatial_cache("subdivision"))
                    h, sub = block(h)
                    subs.append(sub)
                else:
                    h = block(h, subdiv=guide_subs[i] if guide_subs is not None else None)
        h = h.type(x.dtype)
        h = h.replace(F.layer_norm(h.feats, h.feats.shape[-1:]))
        h = self.output_layer(h)
        if training_targets:
            return h, subs_gt, subs
        return (h, subs) if return_subs else h

    def forward(self, x: SparseTensor, guide_subs: Optional[List[SparseTensor]] = None, return_subs: bool = False):
        return self.decode(x, guide_subs=guide_subs, return_subs=return_subs)

    @torch.no_grad()
    def upsample(self, x: SparseTensor, upsample_times: int) -> torch.Tensor:
        """The voxel coords `[M, 4]` after `upsample_times` doublings (the cascade's high-resolution structure).

        Runs the network only as far as those coords need: the last doubling computes its subdivision
        logits, not its features.
        """
        if not self.pred_subdiv:
            raise ValueError("upsample needs a decoder built with pred_subdiv=True")
        if not 0 <= upsample_times < len(self.blocks):
            raise ValueError(f"upsample_times must be in 0..{len(self.blocks) - 1}, got {upsample_times}")
        h = self.from_latent(x).type(self.dtype)
        for i, level in enumerate(self.blocks[:upsample_times]):
            for j, block in enumerate(level):
                if not self._is_doubling(i, j):
                    h = block(h)
                elif i < upsample_times - 1:
                    h, _ = block(h)
                else:
                    plan, _ = block.child_plan(h)
                    return plan.coords
        return h.coords
