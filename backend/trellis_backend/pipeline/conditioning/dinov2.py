"""DINOv2 ViT/14 image features exactly as TRELLIS takes them.

The reference loads ``torch.hub.load('facebookresearch/dinov2', 'dinov2_vitl14_reg')``
and uses ``model(image, is_training=True)['x_prenorm']``: all tokens (CLS, 4 registers,
37x37 patches = 1374 for a 518x518 input) after the last block and *before* the final
norm, followed by a non-affine ``layer_norm``. Input: RGB in [0, 1] normalised with the
ImageNet mean/std.

Architecture: timm's ``vit_large_patch14_reg4_dinov2`` (``img_size=518``,
``num_classes=0``) when timm imports cleanly; otherwise `DinoV2ViT` below, a plain
re-statement of the same network with the same module and parameter names, so either
loads the same state_dict. (timm needs torchvision, and a CUDA torchvision wheel next to
a CPU torch fails at import; the built-in network keeps the CPU install free of both.)

Weights come from a local file in the official hub format
(``dinov2_vitl14_reg4_pretrain.pth``: keys ``cls_token``, ``pos_embed`` [1, 1+37*37, C],
``register_tokens``, ``mask_token``, ``blocks.N.*``, ``norm.*``) or already in timm's
format (``reg_token``, ``pos_embed`` [1, 37*37, C]); a ``.safetensors`` file of either
works too. The hub model adds ``pos_embed[:, 0]`` to the CLS token and no position to
the registers; timm's ``no_embed_class`` layout folds that into ``cls_token``, which is
exact at the native 518 resolution (no position interpolation happens there).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ... import settings
from ...errors import CheckpointMismatchError, MissingFileError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DINO_RESOLUTION = 518

# hub name -> (embed_dim, depth, num_heads, register tokens, checkpoint file name, timm name)
DINOV2_VARIANTS = {
    "dinov2_vits14": (384, 12, 6, 0, "dinov2_vits14_pretrain.pth", "vit_small_patch14_dinov2"),
    "dinov2_vitb14": (768, 12, 12, 0, "dinov2_vitb14_pretrain.pth", "vit_base_patch14_dinov2"),
    "dinov2_vitl14": (1024, 24, 16, 0, "dinov2_vitl14_pretrain.pth", "vit_large_patch14_dinov2"),
    "dinov2_vits14_reg": (384, 12, 6, 4, "dinov2_vits14_reg4_pretrain.pth", "vit_small_patch14_reg4_dinov2"),
    "dinov2_vitb14_reg": (768, 12, 12, 4, "dinov2_vitb14_reg4_pretrain.pth", "vit_base_patch14_reg4_dinov2"),
    "dinov2_vitl14_reg": (1024, 24, 16, 4, "dinov2_vitl14_reg4_pretrain.pth", "vit_large_patch14_reg4_dinov2"),
}


# --------------------------------------------------------------------------- network
class _PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class _Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class _LayerScale(nn.Module):
    def __init__(self, dim: int, init_values: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, num_heads)
        self.ls1 = _LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = _LayerScale(dim)

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoV2ViT(nn.Module):
    """DINOv2 ViT with optional register tokens, in timm's parameter layout (no_embed_class)."""

    def __init__(self, img_size: int = DINO_RESOLUTION, patch_size: int = 14, embed_dim: int = 1024,
                 depth: int = 24, num_heads: int = 16, mlp_ratio: float = 4.0, reg_tokens: int = 4):
        super().__init__()
        self.patch_size = patch_size
        self.grid = img_size // patch_size
        self.num_prefix_tokens = 1 + reg_tokens
        self.patch_embed = _PatchEmbed(patch_size, 3, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.reg_token = nn.Parameter(torch.zeros(1, reg_tokens, embed_dim)) if reg_tokens else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid, embed_dim))
        self.blocks = nn.Sequential(*[_Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def forward_prenorm(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens (CLS, registers, patches) after the last block, before the final norm."""
        if x.shape[-1] != self.grid * self.patch_size or x.shape[-2] != self.grid * self.patch_size:
            raise ValueError(f"DINOv2 expects {self.grid * self.patch_size}x{self.grid * self.patch_size} input, "
                             f"got {tuple(x.shape[-2:])}")
        x = self.patch_embed(x) + self.pos_embed
        prefix = [self.cls_token.expand(x.shape[0], -1, -1)]
        if self.reg_token is not None:
            prefix.append(self.reg_token.expand(x.shape[0], -1, -1))
        return self.blocks(torch.cat(prefix + [x], dim=1))


def _timm_prenorm(model, x):
    x = model.patch_embed(x)
    x = model._pos_embed(x)
    x = model.patch_drop(x)
    x = model.norm_pre(x)
    return model.blocks(x)


def timm_importable() -> bool:
    try:
        import timm  # noqa: F401
        return True
    except Exception:  # ImportError, or torchvision's RuntimeError on a mismatched install
        return False


# ------------------------------------------------------------------------ checkpoints
def hub_to_timm_state_dict(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Map an official hub checkpoint (``dinov2_*_pretrain.pth``) to timm's key layout.

    Also accepts a checkpoint already in timm's layout (returned unchanged, minus a head).
    """
    sd = dict(sd)
    for prefix in ("module.", "backbone."):
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    sd.pop("mask_token", None)
    for k in [k for k in sd if k.startswith("head.")]:
        sd.pop(k)
    if "register_tokens" in sd or ("pos_embed" in sd and "reg_token" not in sd
                                   and _is_square_plus_one(sd["pos_embed"].shape[1])):
        pos = sd.pop("pos_embed")
        sd["cls_token"] = sd.pop("cls_token") + pos[:, :1]
        sd["pos_embed"] = pos[:, 1:]
        if "register_tokens" in sd:
            sd["reg_token"] = sd.pop("register_tokens")
    if any(k.startswith("blocks.0.0.") for k in sd):  # chunked blocks (block_chunks > 0)
        sd = {_unchunk(k): v for k, v in sd.items()}
    return sd


def _is_square_plus_one(n: int) -> bool:
    r = int(round((n - 1) ** 0.5))
    return r * r == n - 1 and n > 1


def _unchunk(k: str) -> str:
    parts = k.split(".")
    if parts[0] == "blocks" and len(parts) > 3 and parts[1].isdigit() and parts[2].isdigit():
        return ".".join([parts[0]] + parts[2:])
    return k


def read_checkpoint(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"DINOv2 checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointMismatchError(f"cannot read DINOv2 checkpoint {path}: {e}",
                                      hint="Re-download the checkpoint; it may be truncated.") from e
    if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    return sd


def checkpoint_search_paths(name: str, model_folder: Optional[Path] = None,
                            models_root: Optional[Path] = None) -> List[Path]:
    """Where a local DINOv2 checkpoint is looked for, in order."""
    fname = DINOV2_VARIANTS[name][4]
    stems = [fname, fname.replace(".pth", ".safetensors")]
    dirs: List[Path] = []
    env = settings.current().dinov2_checkpoint
    out: List[Path] = [Path(env)] if env else []
    if model_folder is not None:
        dirs += [Path(model_folder), Path(model_folder) / "ckpts"]
    if models_root is not None:
        dirs += [Path(models_root), Path(models_root) / "facebookresearch" / "dinov2"]
    torch_home = Path(os.environ.get("TORCH_HOME", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torch"))
    dirs.append(torch_home / "hub" / "checkpoints")
    for d in dirs:
        out += [d / s for s in stems]
    return out


# ---------------------------------------------------------------------------- encoder
class DinoV2Encoder(nn.Module):
    """Image -> TRELLIS condition tokens ``[B, 1374, 1024]`` (for ViT-L/14-reg4 at 518)."""

    def __init__(self, name: str = "dinov2_vitl14_reg", backend: str = "auto", img_size: int = DINO_RESOLUTION,
                 arch_overrides: Optional[dict] = None):
        super().__init__()
        if name not in DINOV2_VARIANTS:
            raise ValueError(f"unknown DINOv2 variant {name!r}; known: {', '.join(DINOV2_VARIANTS)}")
        dim, depth, heads, regs, _, timm_name = DINOV2_VARIANTS[name]
        arch = dict(embed_dim=dim, depth=depth, num_heads=heads, reg_tokens=regs, img_size=img_size, patch_size=14)
        arch.update(arch_overrides or {})
        self.name = name
        self.img_size = arch["img_size"]
        if backend == "auto":
            backend = "timm" if (timm_importable() and not arch_overrides) else "builtin"
        self.backend = backend
        if backend == "timm":
            import timm

            self.vit = timm.create_model(timm_name, pretrained=False, img_size=self.img_size, num_classes=0)
        else:
            self.vit = DinoV2ViT(**arch)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def load_checkpoint(self, path_or_state: Union[str, Path, Dict[str, torch.Tensor]]) -> "DinoV2Encoder":
        sd = read_checkpoint(path_or_state) if not isinstance(path_or_state, dict) else path_or_state
        sd = hub_to_timm_state_dict(sd)
        own = self.vit.state_dict()
        missing = sorted(set(own) - set(sd))
        unexpected = sorted(set(sd) - set(own))
        bad = sorted(k for k in set(own) & set(sd) if own[k].shape != sd[k].shape)
        if missing or unexpected or bad:
            raise CheckpointMismatchError(
                f"DINOv2 checkpoint does not fit {self.name}: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                f"shape mismatches {bad[:5]}",
                hint=f"Use the official {DINOV2_VARIANTS[self.name][4]} checkpoint.")
        self.vit.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=True)
        return self

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: ``[B, 3, H, W]`` RGB in [0, 1] at the model resolution."""
        x = (images.to(self.mean.dtype) - self.mean) / self.std
        x = x.to(next(self.vit.parameters()).dtype)
        feats = _timm_prenorm(self.vit, x) if self.backend == "timm" else self.vit.forward_prenorm(x)
        return F.layer_norm(feats.float(), feats.shape[-1:])
