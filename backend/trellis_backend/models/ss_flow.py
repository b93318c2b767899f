"""Stage 1 denoiser: a dense DiT over the sparse-structure latent (TRELLIS 16³×8, TRELLIS.2 16³×8).

One class for both families; the options that differ are explicit arguments, and the
registry (`build_model(..., family=...)`) supplies the ones a TRELLIS.2 config leaves out:
TRELLIS patchifies by `patch_size` (released configs say 1) and adds absolute position
embeddings; TRELLIS.2 never patchifies, uses rotary embeddings (`pe_mode='rope'`, phases
of the grid in the derived buffer `rope_phases`, not saved in checkpoints), a shared
modulation with per-block offsets, and names its torso dtype `dtype`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..modules.embedders import AbsolutePositionEmbedder, RotaryPositionEmbedder, TimestepEmbedder
from ..modules.precision import convert_module_to, torso_dtype
from ..modules.transformer import ModulatedTransformerCrossBlock
from .init import init_flow_weights


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """`[B, C, R, R, R] -> [B, C·p³, R/p, R/p, R/p]` (channel-major, then the offset inside the patch)."""
    if p == 1:
        return x
    b, c, *spatial = x.shape
    x = x.reshape(b, c, *sum([[s // p, p] for s in spatial], []))
    x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * p ** 3, *[s // p for s in spatial])


def unpatchify(x: torch.Tensor, p: int) -> torch.Tensor:
    if p == 1:
        return x
    b, c, *spatial = x.shape
    x = x.reshape(b, c // p ** 3, p, p, p, *spatial)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c // p ** 3, *[s * p for s in spatial])


def grid_coords(grid: int) -> torch.Tensor:
    """Integer (x, y, z) of every cell of a grid³, x slowest (the token order of the flattened latent)."""
    axes = torch.meshgrid(*[torch.arange(grid)] * 3, indexing="ij")
    return torch.stack(axes, dim=-1).reshape(-1, 3)


class SparseStructureFlowModel(nn.Module):
    # buffers computed in __init__ that released checkpoints do not carry (the loader tolerates them)
    DERIVED_BUFFERS = ("rope_phases",)

    def __init__(self, resolution: int, in_channels: int, model_channels: int, cond_channels: int,
                 out_channels: int, num_blocks: int, num_heads: Optional[int] = None, num_head_channels: int = 64,
                 mlp_ratio: float = 4, patch_size: int = 2, pe_mode: str = "ape",
                 rope_freq: Sequence[float] = (1.0, 10000.0), use_fp16: bool = False, dtype: Optional[str] = None,
                 use_checkpoint: bool = False, share_mod: bool = False, modulation_offset: bool = False,
                 initialization: str = "vanilla", qk_rms_norm: bool = False, qk_rms_norm_cross: bool = False):
        super().__init__()
        if pe_mode not in ("ape", "rope"):
            raise ValueError(f"pe_mode must be 'ape' or 'rope', got {pe_mode!r}")
        self.resolution, self.in_channels, self.out_channels = resolution, in_channels, out_channels
        self.model_channels, self.cond_channels, self.num_blocks = model_channels, cond_channels, num_blocks
        self.num_heads = num_heads or model_channels // num_head_channels
        self.mlp_ratio, self.patch_size, self.pe_mode = mlp_ratio, patch_size, pe_mode
        self.use_fp16, self.use_checkpoint, self.share_mod = use_fp16, use_checkpoint, share_mod
        self.initialization = initialization
        self.qk_rms_norm, self.qk_rms_norm_cross = qk_rms_norm, qk_rms_norm_cross
        self.dtype = torso_dtype(use_fp16, dtype)

        self.t_embedder = TimestepEmbedder(model_channels)
        if share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(model_channels, 6 * model_channels))
        coords = grid_coords(resolution // patch_size)
        if pe_mode == "ape":
            self.register_buffer("pos_emb", AbsolutePositionEmbedder(model_channels, 3)(coords))
        else:
            head_dim = model_channels // self.num_heads
            phases = RotaryPositionEmbedder(head_dim, 3, rope_freq)(coords)
            self.register_buffer("rope_phases", phases, persistent=False)
        self.input_layer = nn.Linear(in_channels * patch_size ** 3, model_channels)
        self.blocks = nn.ModuleList([
            ModulatedTransformerCrossBlock(model_channels, cond_channels, num_heads=self.num_heads,
                                           mlp_ratio=mlp_ratio, use_rope=pe_mode == "rope", rope_freq=rope_freq,
                                           share_mod=share_mod, modulation_offset=modulation_offset,
                                           qk_rms_norm=qk_rms_norm, qk_rms_norm_cross=qk_rms_norm_cross)
            for _ in range(num_blocks)
        ])
        self.out_layer = nn.Linear(model_channels, out_channels * patch_size ** 3)
        init_flow_weights(self, initialization)
        self.convert_to(self.dtype)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def convert_to(self, dtype: torch.dtype) -> None:
        """Cast the torso's linear layers (inside `blocks`) to `dtype`."""
        self.dtype = dtype
        self.blocks.apply(lambda m: convert_module_to(m, dtype))

    def convert_to_fp16(self) -> None:
        self.convert_to(torch.float16)

    def convert_to_fp32(self) -> None:
        self.convert_to(torch.float32)

    def _apply(self, fn, recurse=True):
        # the complex rope phases follow device moves only: a cast to a real dtype (`model.to(torch.float16)`)
        # would drop their imaginary part
        phases = self._buffers.pop("rope_phases", None)
        try:
            out = super()._apply(fn, recurse)
        finally:
            if phases is not None:
                self._buffers["rope_phases"] = phases
        if phases is not None:
            device = fn(torch.empty(0, device=phases.device)).device
            self._buffers["rope_phases"] = phases.to(device)
        return out

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        expected = [x.shape[0], self.in_channels, *[self.resolution] * 3]
        if list(x.shape) != expected:
            raise ValueError(f"input shape {list(x.shape)} does not match the model's {expected}")
        h = patchify(x, self.patch_size)
        h = h.reshape(*h.shape[:2], -1).permute(0, 2, 1).contiguous()
        h = self.input_layer(h)
        if self.pe_mode == "ape":
            h = h + self.pos_emb[None]
        phases = self.rope_phases if self.pe_mode == "rope" else None
        t_emb = self.t_embedder(t)
        if self.share_mod:
            t_emb = self.adaLN_modulation(t_emb)
        t_emb, h, cond = t_emb.type(self.dtype), h.type(self.dtype), cond.type(self.dtype)
        for block in self.blocks:
            h = block(h, t_emb, cond) if phases is None else block(h, t_emb, cond, phases)
        h = h.type(x.dtype)
        h = self.out_layer(F.layer_norm(h, h.shape[-1:]))
        grid = self.resolution // self.patch_size
        h = h.permute(0, 2, 1).reshape(h.shape[0], h.shape[2], grid, grid, grid)
        return unpatchify(h, self.patch_size).contiguous()
