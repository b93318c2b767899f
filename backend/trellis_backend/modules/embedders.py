"""Sinusoidal embeddings of timesteps and of voxel positions, and rotary phases of voxel positions."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of the (1000-scaled) flow time, then a 2-layer MLP."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000) -> torch.Tensor:
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.timestep_embedding(t, self.frequency_embedding_size))


class AbsolutePositionEmbedder(nn.Module):
    """Per-axis sin/cos features of integer positions, zero-padded to `channels`."""

    def __init__(self, channels: int, in_channels: int = 3):
        super().__init__()
        self.channels = channels
        self.in_channels = in_channels
        self.freq_dim = channels // in_channels // 2

    def _freqs(self, device) -> torch.Tensor:
        # computed on the fly (not a buffer) so that casting the model never lowers its precision
        f = torch.arange(self.freq_dim, dtype=torch.float32, device=device) / self.freq_dim
        return 1.0 / (10000 ** f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, d = x.shape
        if d != self.in_channels:
            raise ValueError(f"expected {self.in_channels}-d positions, got {d}")
        out = torch.outer(x.reshape(-1).float(), self._freqs(x.device))
        emb = torch.cat([torch.sin(out), torch.cos(out)], dim=-1).reshape(n, -1)
        if emb.shape[1] < self.channels:
            emb = torch.cat([emb, emb.new_zeros(n, self.channels - emb.shape[1])], dim=-1)
        return emb


class RotaryPositionEmbedder:
    """Rotary (RoPE) phases of integer 3-D positions, as TRELLIS.2 uses them in self-attention.

    Each axis gets ``head_dim // 2 // 3`` frequencies ``rope_freq[0] / rope_freq[1] ** (i / n)``; a
    position's phases are ``exp(i · coord · freq)`` for x, then y, then z, padded with phase 0 (a unit
    rotation) up to ``head_dim // 2`` (e.g. head dim 128: 3·21 = 63 phases + 1 pad). Holds no weights.
    """

    def __init__(self, head_dim: int, dim: int = 3, rope_freq: Sequence[float] = (1.0, 10000.0)):
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head dimension, got {head_dim}")
        self.head_dim, self.dim = head_dim, dim
        self.rope_freq = (float(rope_freq[0]), float(rope_freq[1]))
        self.freq_dim = head_dim // 2 // dim

    def _freqs(self, device) -> torch.Tensor:
        f = torch.arange(self.freq_dim, dtype=torch.float32, device=device) / self.freq_dim
        return self.rope_freq[0] / (self.rope_freq[1] ** f)

    def __call__(self, positions: torch.Tensor) -> torch.Tensor:
        """Complex64 phases ``[..., head_dim // 2]`` of positions ``[..., dim]``."""
        if positions.shape[-1] != self.dim:
            raise ValueError(f"expected {self.dim}-d positions, got {positions.shape[-1]}")
        angles = torch.outer(positions.reshape(-1).float(), self._freqs(positions.device))
        phases = torch.polar(torch.ones_like(angles), angles).reshape(*positions.shape[:-1], -1)
        pad = self.head_dim // 2 - phases.shape[-1]
        if pad > 0:
            unit = torch.polar(phases.real.new_ones(*phases.shape[:-1], pad), phases.real.new_zeros(*phases.shape[:-1], pad))
            phases = torch.cat([phases, unit], dim=-1)
        return phases


def apply_rotary(x: torch.Tensor, phases: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of ``x`` ``[..., L, H, D]`` by ``phases`` ``[L, D/2]`` (in float32)."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * phases.unsqueeze(-2)).reshape(*x.shape).to(x.dtype)
