"""Sparse conv under CUDA autocast for training and batched evaluation.

`sparse.conv.conv_with_neighbor_map` accumulates into a buffer of the input's dtype, so
under bf16 autocast (float32 features, bf16 matmul results) `index_add_` fails on mixed
dtypes. `install()` registers, as the conv module's CUDA "fast kernel" hook, the same
gather-GEMM-scatter run entirely in the autocast dtype (autograd-safe). It only acts when
the conv backend is 'auto' and no other fast kernel was registered first.
"""
from __future__ import annotations

import torch

from ..sparse import conv as _conv


def autocast_conv(feats, nbr, weight, bias):
    dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else feats.dtype
    return _conv.conv_with_neighbor_map(feats.to(dtype), nbr, weight.to(dtype),
                                        None if bias is None else bias.to(dtype))


def install() -> bool:
    if _conv._fast_kernel is None and torch.cuda.is_available():
        _conv.register_fast_kernel(autocast_conv)
        return True
    return False
