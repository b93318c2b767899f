"""Sparse-structure VAE (dense 3D conv): 64³ occupancy <-> 16³×8 latent."""
from __future__ import annotations

from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import fastpath
from ..modules.norm import ChannelLayerNorm32, GroupNorm32
from ..modules.precision import convert_module_to_f16, convert_module_to_f32, zero_module


def norm_layer(norm_type: str, channels: int) -> nn.Module:
    if norm_type == "group":
        return GroupNorm32(32, channels)
    if norm_type == "layer":
        return ChannelLayerNorm32(channels)
    raise ValueError(f"unknown norm type {norm_type!r}")


def pixel_shuffle_3d(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Move channel blocks of factor³ into space: `[B, C·f³, H, W, D] -> [B, C, fH, fW, fD]`."""
    b, c, h, w, d = x.shape
    c_out = c // factor ** 3
    x = x.reshape(b, c_out, factor, factor, factor, h, w, d)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c_out, h * factor, w * factor, d * factor)


class ResBlock3d(nn.Module):
    def __init__(self, channels: int, out_channels: int = None, norm_type: str = "layer"):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.norm1 = norm_layer(norm_type, channels)
        self.norm2 = norm_layer(norm_type, self.out_channels)
        self.conv1 = nn.Conv3d(channels, self.out_channels, 3, padding=1)
        self.conv2 = zero_module(nn.Conv3d(self.out_channels, self.out_channels, 3, padding=1))
        self.skip_connection = (nn.Conv3d(channels, self.out_channels, 1)
                                if channels != self.out_channels else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip_connection(x)


class DownsampleBlock3d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, mode: str = "conv"):
        super().__init__()
        if mode == "conv":
            self.conv = nn.Conv3d(in_channels, out_channels, 2, stride=2)
        elif mode != "avgpool" or in_channels != out_channels:
            raise ValueError(f"invalid downsample mode {mode!r} for {in_channels}->{out_channels}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) if hasattr(self, "conv") else F.avg_pool3d(x, 2)


class UpsampleBlock3d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, mode: str = "conv"):
        super().__init__()
        if mode == "conv":
            self.conv = nn.Conv3d(in_channels, out_channels * 8, 3, padding=1)
        elif mode != "nearest" or in_channels != out_channels:
            raise ValueError(f"invalid upsample mode {mode!r} for {in_channels}->{out_channels}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "conv"):
            return pixel_shuffle_3d(self.conv(x), 2)
        return F.interpolate(x, scale_factor=2, mode="nearest")


class _HalfTorso:
    """`use_fp16`: the residual blocks and middle block hold float16 weights."""

    def convert_to_fp16(self) -> None:
        self.use_fp16, self.dtype = True, torch.float16
        self.blocks.apply(convert_module_to_f16)
        self.middle_block.apply(convert_module_to_f16)

    def convert_to_fp32(self) -> None:
        self.use_fp16, self.dtype = False, torch.float32
        self.blocks.apply(convert_module_to_f32)
        self.middle_block.apply(convert_module_to_f32)


class SparseStructureEncoder(_HalfTorso, nn.Module):
    def __init__(self, in_channels: int, latent_channels: int, num_res_blocks: int, channels: List[int],
                 num_res_blocks_middle: int = 2, norm_type: str = "layer", use_fp16: bool = False):
        super().__init__()
        self.in_channels, self.latent_channels = in_channels, latent_channels
        self.num_res_blocks, self.channels = num_res_blocks, channels
        self.num_res_blocks_middle, self.norm_type = num_res_blocks_middle, norm_type
        self.use_fp16, self.dtype = use_fp16, torch.float16 if use_fp16 else torch.float32
        self.input_layer = nn.Conv3d(in_channels, channels[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        for i, ch in enumerate(channels):
            self.blocks.extend(ResBlock3d(ch, ch) for _ in range(num_res_blocks))
            if i < len(channels) - 1:
                self.blocks.append(DownsampleBlock3d(ch, channels[i + 1]))
        self.middle_block = nn.Sequential(*[ResBlock3d(channels[-1], channels[-1]) for _ in range(num_res_blocks_middle)])
        self.out_layer = nn.Sequential(norm_layer(norm_type, channels[-1]), nn.SiLU(),
                                       nn.Conv3d(channels[-1], latent_channels * 2, 3, padding=1))
        if use_fp16:
            self.convert_to_fp16()

    @fastpath.model_entry
    def forward(self, x: torch.Tensor, sample_posterior: bool = False, return_raw: bool = False):
        h = self.input_layer(x).type(self.dtype)
        for block in self.blocks:
            h = block(h)
        h = self.middle_block(h).type(x.dtype)
        mean, logvar = self.out_layer(h).chunk(2, dim=1)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if sample_posterior else mean
        return (z, mean, logvar) if return_raw else z


class SparseStructureDecoder(_HalfTorso, nn.Module):
    def __init__(self, out_channels: int, latent_channels: int, num_res_blocks: int, channels: List[int],
                 num_res_blocks_middle: int = 2, norm_type: str = "layer", use_fp16: bool = False):
        super().__init__()
        self.out_channels, self.latent_channels = out_channels, latent_channels
        self.num_res_blocks, self.channels = num_res_blocks, channels
        self.num_res_blocks_middle, self.norm_type = num_res_blocks_middle, norm_type
        self.use_fp16, self.dtype = use_fp16, torch.float16 if use_fp16 else torch.float32
        self.input_layer = nn.Conv3d(latent_channels, channels[0], 3, padding=1)
        self.middle_block = nn.Sequential(*[ResBlock3d(channels[0], channels[0]) for _ in range(num_res_blocks_middle)])
        self.blocks = nn.ModuleList()
        for i, ch in enumerate(channels):
            self.blocks.extend(ResBlock3d(ch, ch) for _ in range(num_res_blocks))
            if i < len(channels) - 1:
                self.blocks.append(UpsampleBlock3d(ch, channels[i + 1]))
        self.out_layer = nn.Sequential(norm_layer(norm_type, channels[-1]), nn.SiLU(),
                                       nn.Conv3d(channels[-1], out_channels, 3, padding=1))
        if use_fp16:
            self.convert_to_fp16()

    @fastpath.model_entry
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.input_layer(x).type(self.dtype)
        h = self.middle_block(h)
        for block in self.blocks:
            h = block(h)
        return self.out_layer(h.type(x.dtype))
