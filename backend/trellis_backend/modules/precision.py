"""The references' `use_fp16` (TRELLIS) / `dtype` (TRELLIS.2) semantics: only linear and conv weights of
the torso become float16 (or bfloat16).

Norms, RMS-norm gammas and everything outside the converted sub-modules stay
float32, which is what the released checkpoints store.
"""
from __future__ import annotations

from typing import Optional

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


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def torso_dtype(use_fp16: bool = False, dtype: Optional[str] = None) -> torch.dtype:
    """The torso dtype from TRELLIS's `use_fp16` flag or TRELLIS.2's `dtype` name (not both)."""
    if dtype is None:
        return torch.float16 if use_fp16 else torch.float32
    if use_fp16:
        raise ValueError("give either use_fp16 (TRELLIS) or dtype (TRELLIS.2), not both")
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def convert_module_to_f16(module: nn.Module) -> None:
    convert_module_to(module, torch.float16)


def convert_module_to_f32(module: nn.Module) -> None:
    convert_module_to(module, torch.float32)


def zero_module(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.detach().zero_()
    return module
