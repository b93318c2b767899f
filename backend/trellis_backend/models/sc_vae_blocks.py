"""The sparse-conv blocks of TRELLIS.2's SC-VAEs: a ConvNeXt-style block and the residual blocks that
halve (space-to-channel) or double (channel-to-space, with predicted subdivision) the resolution.

Their convolutions carry TRELLIS.2's parameter names (flex_gemm's `<conv>.weight` `[Co, 3, 3, 3, Ci]`).
With `use_checkpoint`, training passes recompute a block's activations in the backward pass.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from ..modules.norm import LayerNorm32
from ..modules.precision import zero_module
from ..sparse import SparseChannel2Spatial, SparseConv3d, SparseLinear, SparseSpatial2Channel, SparseTensor


def sc_vae_conv(in_channels: int, out_channels: int) -> SparseConv3d:
    """The 3×3×3 submanifold conv of the SC-VAEs, under TRELLIS.2's parameter names."""
    return SparseConv3d(in_channels, out_channels, 3, param_naming="flex_gemm")


class _Block(nn.Module):
    """Runs `_forward`, through activation checkpointing when asked and useful (training with gradients)."""

    use_checkpoint = False

    def forward(self, *args, **kwargs):
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(self._forward, *args, use_reentrant=False, **kwargs)
        return self._forward(*args, **kwargs)


def _feats(x: SparseTensor, fn) -> SparseTensor:
    return x.replace(fn(x.feats))


class SparseConvNeXtBlock3d(_Block):
    """x + MLP(norm(conv(x))): one 3×3×3 sparse conv, a per-voxel LayerNorm and a wide pointwise MLP."""

    def __init__(self, channels: int, mlp_ratio: float = 4.0, use_checkpoint: bool = False):
        super().__init__()
        self.channels, self.use_checkpoint = channels, use_checkpoint
        hidden = int(channels * mlp_ratio)
        self.norm = LayerNorm32(channels, elementwise_affine=True, eps=1e-6)
        self.conv = sc_vae_conv(channels, channels)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.SiLU(), zero_module(nn.Linear(hidden, channels)))

    def _forward(self, x: SparseTensor) -> SparseTensor:
        h = self.conv(x)
        h = _feats(h, lambda f: self.mlp(self.norm(f)))
        return h + x


def _check_ratio(name: str, channels: int, out_channels: int, condition: bool) -> None:
    if not condition:
        raise ValueError(f"{name}({channels} -> {out_channels}): the channel counts do not fit a 2× space/channel "
                         f"rearrangement (8 children per voxel); check model_channels in the model config")


class SparseResBlockS2C3d(_Block):
    """Residual block that halves the resolution: conv to out/8 channels, space-to-channel (8 children side
    by side), conv; the shortcut space-to-channels the input and averages groups of 8·in/out channels."""

    def __init__(self, channels: int, out_channels: Optional[int] = None, use_checkpoint: bool = False):
        super().__init__()
        self.channels, self.use_checkpoint = channels, use_checkpoint
        self.out_channels = out_channels or channels
        _check_ratio(type(self).__name__, channels, self.out_channels,
                     self.out_channels % 8 == 0 and (8 * channels) % self.out_channels == 0)
        self.norm1 = LayerNorm32(channels, elementwise_affine=True, eps=1e-6)
        self.norm2 = LayerNorm32(self.out_channels, elementwise_affine=False, eps=1e-6)
        self.conv1 = sc_vae_conv(channels, self.out_channels // 8)
        self.conv2 = zero_module(sc_vae_conv(self.out_channels, self.out_channels))
        self.updown = SparseSpatial2Channel(2)

    def _shortcut(self, x: SparseTensor) -> SparseTensor:
        group = 8 * self.channels // self.out_channels
        return _feats(x, lambda f: f.reshape(f.shape[0], self.out_channels, group).mean(dim=-1))

    def _forward(self, x: SparseTensor) -> SparseTensor:
        h = self.conv1(_feats(x, lambda f: F.silu(self.norm1(f))))
        h = self.updown(h)
        x = self.updown(x)
        h = self.conv2(_feats(h, lambda f: F.silu(self.norm2(f))))
        return h + self._shortcut(x)


class SparseResBlockC2S3d(_Block):
    """Residual block that doubles the resolution: conv to 8·out channels, channel-to-space into the kept
    children, conv; the shortcut channel-to-spaces the input and repeats each channel out/(in/8) times.

    Which children exist: with `pred_subdiv`, logits `to_subdiv(x)` (child k kept iff logit > 0), returned
    beside the output as `(h, subdiv)`; else the `subdiv` argument (logits of another decoder, e.g. the shape
    decoder's for the texture decoder), or, when the input shares the spatial cache of an encoder's
    space-to-channel, the voxels that encoder saw (the guide is then ignored, as in the reference).
    """

    def __init__(self, channels: int, out_channels: Optional[int] = None, use_checkpoint: bool = False,
                 pred_subdiv: bool = True):
        super().__init__()
        self.channels, self.use_checkpoint, self.pred_subdiv = channels, use_checkpoint, pred_subdiv
        self.out_channels = out_channels or channels
        _check_ratio(type(self).__name__, channels, self.out_channels,
                     channels % 8 == 0 and self.out_channels % (channels // 8) == 0)
        self.norm1 = LayerNorm32(channels, elementwise_affine=True, eps=1e-6)
        self.norm2 = LayerNorm32(self.out_channels, elementwise_affine=False, eps=1e-6)
        self.conv1 = sc_vae_conv(channels, self.out_channels * 8)
        self.conv2 = zero_module(sc_vae_conv(self.out_channels, self.out_channels))
        if pred_subdiv:
            self.to_subdiv = SparseLinear(channels, 8)
        self.updown = SparseChannel2Spatial(2)

    def _shortcut(self, x: SparseTensor) -> SparseTensor:
        return _feats(x, lambda f: f.repeat_interleave(self.out_channels // (self.channels // 8), dim=1))

    def child_plan(self, x: SparseTensor, subdiv: Optional[SparseTensor] = None):
        """(child plan of `x`'s voxels, subdivision logits or None): which children the block will emit."""
        if self.pred_subdiv:
            subdiv = self.to_subdiv(x)
        mask = None
        if subdiv is not None:
            if subdiv.feats.shape[0] != x.feats.shape[0]:
                raise ValueError(f"guide subdivision has {subdiv.feats.shape[0]} rows for {x.feats.shape[0]} voxels; "
                                 "pass the shape decoder's subs of the same latent (same voxels, same order)")
            mask = subdiv.feats > 0
        return self.updown.plan(x, mask), subdiv

    def _forward(self, x: SparseTensor, subdiv: Optional[SparseTensor] = None
                 ) -> Union[SparseTensor, Tuple[SparseTensor, SparseTensor]]:
        plan, subdiv = self.child_plan(x, subdiv)
        h = self.conv1(_feats(x, lambda f: F.silu(self.norm1(f))))
        h = self.updown.apply_plan(h, plan)
        x = self.updown.apply_plan(x, plan)
        h = self.conv2(_feats(h, lambda f: F.silu(self.norm2(f))))
        h = h + self._shortcut(x)
        return (h, subdiv) if self.pred_subdiv else h


SC_VAE_BLOCKS = {cls.__name__: cls for cls in (SparseConvNeXtBlock3d, SparseResBlockS2C3d, SparseResBlockC2S3d)}
