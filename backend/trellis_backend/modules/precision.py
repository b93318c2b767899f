"""The reference's `use_fp16` semantics: only linear and conv weights of the torso become float16.

Norms, RMS-norm gammas and everything outside the converted sub-modules stay
float32, which is what the released checkpoints store.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..sparse.conv import SparseConv3d
from ..sparse.layers import SparseLinear


def _half_precision_types():
    return (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
            nn.Linear, SparseConv3d, SparseLinear)


def convert_module_to(module: nn.Module, dtype: torch.dtype) -> None:
    """Cast the parameters of linear/conv layers (not norms) to `dtype`; use with `.apply()`."""
    if isinstance(module, _half_precision_types()):
        for p in module.parameters():
            p.data = p.data.to(dtype)


def convert_module_to_f16(module: nn.Module) -> None:
    convert_module_to(module, torch.float16)


def convert_module_to_f32(module: nn.Module) -> None:
    convert_module_to(module, torch.float32)


def zero_module(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.detach().zero_()
    return module
