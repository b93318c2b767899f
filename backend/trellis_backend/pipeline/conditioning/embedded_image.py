"""The embedded model's image encoder: a small CNN + transformer trained by this project.

It stands in for DINOv2 ViT-L (300 M parameters) in the embedded default model. It reads
the same preprocessed condition image as DINOv2 (518x518 RGB premultiplied onto black,
values in [0, 1]) and returns condition tokens ``[B, 1 + G*G, cond_channels]`` where
``G = image_size / 2**len(stem_channels)``: one global token then a G x G grid of patch
tokens, each with a non-affine layer norm (like the DINOv2 features). The negative
condition is zeros, as for DINOv2.

Checkpoint: ``<pipeline folder>/<ref>.json`` = ``{"name": "EmbeddedImageEncoder", "args": {...}}``
plus ``<ref>.safetensors``; pipeline.json names it as
``"image_cond_model": "embedded:image_cnn:ckpts/image_encoder"`` (ref relative to the folder).

Training: construct ``EmbeddedImageEncoder(**args)``, train it (e.g. jointly with the
flow model through its cross-attention, or distilled), then ``save_image_encoder(model, path)``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...errors import CheckpointMismatchError, MissingFileError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _ConvStage(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.down = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
        self.norm1 = nn.GroupNorm(min(8, cout), cout)
        self.conv = nn.Conv2d(cout, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(min(8, cout), cout)

    def forward(self, x):
        x = F.silu(self.norm1(self.down(x)))
        return x + F.silu(self.norm2(self.conv(x)))


class _Block(nn.Module):
    def __init__(self, width: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, int(width * mlp_ratio))
        self.fc2 = nn.Linear(int(width * mlp_ratio), width)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(b, n, c)
        x = x + self.proj(a)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class EmbeddedImageEncoder(nn.Module):
    """Small image encoder producing TRELLIS condition tokens.

    Args:
        image_size: the condition image is resized (bilinear, antialiased) to this size.
        stem_channels: channels of each stride-2 conv stage (the grid is image_size / 2**len).
        width: transformer width.
        depth: number of transformer blocks (0 = conv features only).
        num_heads: attention heads.
        mlp_ratio: transformer MLP expansion.
        cond_channels: output channels (= the flow models' ``cond_channels``).
    """

    def __init__(self, image_size: int = 128, stem_channels: Sequence[int] = (32, 64, 128, 256), width: int = 256,
                 depth: int = 2, num_heads: int = 4, mlp_ratio: float = 4.0, cond_channels: int = 256):
        super().__init__()
        if image_size % (2 ** len(stem_channels)):
            raise ValueError("image_size must be divisible by 2**len(stem_channels)")
        if width % num_heads:
            raise ValueError("width must be divisible by num_heads")
        self.image_size = image_size
        self.grid = image_size // (2 ** len(stem_channels))
        self.cond_channels = cond_channels
        chans = [3] + list(stem_channels)
        self.stages = nn.Sequential(*[_ConvStage(chans[i], chans[i + 1]) for i in range(len(stem_channels))])
        self.to_tokens = nn.Linear(chans[-1], width)
        self.global_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_emb = nn.Parameter(torch.randn(1, 1 + self.grid * self.grid, width) * 0.02)
        self.blocks = nn.ModuleList([_Block(width, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, cond_channels)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def num_tokens(self) -> int:
        return 1 + self.grid * self.grid

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images ``[B, 3, H, W]`` in [0, 1] -> ``[B, 1 + G*G, cond_channels]``."""
        x = images.to(self.mean.dtype)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True,
                              align_corners=False)
        x = (x - self.mean) / self.std
        x = self.stages(x).flatten(2).transpose(1, 2)
        x = self.to_tokens(x)
        x = torch.cat([self.global_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_emb
        for blk in self.blocks:
            x = blk(x)
        x = self.out(self.norm(x))
        return F.layer_norm(x, x.shape[-1:])


def parse_name(name: str) -> str:
    """'embedded:image_cnn:ckpts/image_encoder' -> 'ckpts/image_encoder'."""
    parts = name.split(":", 2)
    if len(parts) != 3 or parts[0] != "embedded" or parts[1] != "image_cnn" or not parts[2]:
        raise ValueError(f"not an embedded image encoder name: {name!r} (expected 'embedded:image_cnn:<ref>')")
    return parts[2]


def load_image_encoder(path: Union[str, Path], device="cpu") -> EmbeddedImageEncoder:
    """Load ``<path>.json`` + ``<path>.safetensors`` strictly."""
    from safetensors.torch import load_file

    cfg_file, w_file = Path(f"{path}.json"), Path(f"{path}.safetensors")
    if not cfg_file.is_file():
        raise MissingFileError(f"image encoder config not found: {cfg_file}")
    if not w_file.is_file():
        raise MissingFileError(f"image encoder weights not found: {w_file}")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointMismatchError(f"{cfg_file} is not valid JSON: {e}") from e
    if cfg.get("name") != "EmbeddedImageEncoder":
        raise CheckpointMismatchError(f"{cfg_file} names {cfg.get('name')!r}, expected 'EmbeddedImageEncoder'")
    model = EmbeddedImageEncoder(**cfg.get("args", {}))
    try:
        sd = load_file(str(w_file))
    except Exception as e:
        raise CheckpointMismatchError(f"cannot read {w_file}: {e}") from e
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise CheckpointMismatchError(f"{w_file} does not fit {cfg_file}: {e}") from e
    return model.to(device).eval()


def save_image_encoder(model: EmbeddedImageEncoder, path: Union[str, Path], args: dict) -> None:
    """Write ``<path>.json`` (``{"name", "args"}``) and ``<path>.safetensors``."""
    from safetensors.torch import save_file

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{path}.json").write_text(json.dumps({"name": "EmbeddedImageEncoder", "args": args}, indent=2))
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, f"{path}.safetensors")
