"""Submanifold sparse 3D convolution with two interchangeable backends.

Weights are stored as spconv stores them (`conv.weight` of shape
`[out, k, k, k, in]`, `conv.bias` `[out]`), so the released checkpoints load
as they are. Backends:
- `torch`: our own pure-PyTorch path (neighbour map by hashing, then one
  gather-GEMM-scatter per kernel offset); runs anywhere, used on the GPU
  machine where spconv has no build.
- `spconv`: spconv's SubMConv3d where importable (its CPU path refuses a fused
  bias, so the bias is added afterwards).
Select with `set_conv_backend()` or the env var `TRELLIS_CONV_BACKEND`.
`auto` picks, on CUDA, a registered fast kernel (trellis_kernels' Triton conv),
else spconv when importable, else torch; on CPU always torch.

Two facts of spconv that the released weights and the reference depend on:
- a 1×1×1 submanifold conv is computed as `feats @ weight.view(in, out)`
  (spconv's conv1x1 fast path reinterprets the `[out,1,1,1,in]` buffer), so the
  trained 1×1 weights are used that way here too;
- spconv's CPU indice-pair generation races when torch uses several threads
  (the same input gives different outputs run to run), so our spconv backend
  runs it single-threaded on CPU.
"""
from __future__ import annotations

import contextlib

import math
import os
from typing import Optional

import torch
import torch.nn as nn

from .neighbors import build_neighbor_map
from .tensor import SparseTensor

_BACKEND = os.environ.get("TRELLIS_CONV_BACKEND", "auto")
_VALID = ("auto", "torch", "spconv")  # "fast" is chosen by auto only
_fast_kernel = None  # optional CUDA kernel hook: fn(feats, nbr, weight[K,in,out], bias) -> out


def set_conv_backend(name: str) -> None:
    if name not in _VALID:
        raise ValueError(f"unknown sparse conv backend {name!r}; choose one of {_VALID}")
    global _BACKEND
    _BACKEND = name


def get_conv_backend() -> str:
    return _BACKEND


def register_fast_kernel(fn) -> None:
    """Let an accelerated implementation (e.g. trellis_kernels' Triton conv) serve CUDA tensors."""
    global _fast_kernel
    _fast_kernel = fn


def spconv_available() -> bool:
    try:
        import spconv.pytorch  # noqa: F401
        return True
    except Exception:
        return False


def _resolve_backend(device: torch.device) -> str:
    if _BACKEND != "auto":
        return _BACKEND
    if device.type == "cuda":
        if _fast_kernel is not None:
            return "fast"
        return "spconv" if spconv_available() else "torch"
    return "torch"


@contextlib.contextmanager
def _single_threaded():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _ConvParams(nn.Module):
    """Holds `weight` and `bias` under the key names of the released checkpoints (`<layer>.conv.*`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool):
        super().__init__()
        k = kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, k, k, k, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        fan_in = in_channels * k ** 3
        nn.init.uniform_(self.weight, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        if self.bias is not None:
            nn.init.zeros_(self.bias)


def conv_with_neighbor_map(feats: torch.Tensor, nbr: torch.Tensor, weight: torch.Tensor,
                           bias: Optional[torch.Tensor]) -> torch.Tensor:
    """Reference gather-GEMM-scatter: out[i] = sum_k W_k · feats[nbr[i, k]] (+ bias).

    `weight` is in spconv layout `[out, k, k, k, in]`.
    """
    out_ch, in_ch = weight.shape[0], weight.shape[-1]
    w = weight.reshape(out_ch, -1, in_ch).permute(1, 2, 0)  # [K, in, out]
    n = feats.shape[0]
    out = feats.new_zeros(n, out_ch)
    center = w.shape[0] // 2
    for k in range(w.shape[0]):
        idx = nbr[:, k]
        if k == center:
            out += (feats @ w[k]).to(out.dtype)  # autocast may compute the product in bf16
            continue
        rows = (idx >= 0).nonzero(as_tuple=True)[0]
        if rows.numel() == 0:
            continue
        out.index_add_(0, rows, (feats[idx[rows]] @ w[k]).to(out.dtype))
    if bias is not None:
        out = out + bias
    return out


class SparseConv3d(nn.Module):
    """Submanifold conv (stride 1, output voxels = input voxels, same order)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, padding=None, bias: bool = True, indice_key: Optional[str] = None):
        super().__init__()
        if stride != 1 or padding is not None:
            raise ValueError("only submanifold (stride 1, no padding) sparse convolutions are used by TRELLIS "
                             "and supported here")
        if kernel_size % 2 != 1:
            raise ValueError("submanifold convolution needs an odd kernel size")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.conv = _ConvParams(in_channels, out_channels, kernel_size, bias)

    def neighbor_map(self, x: SparseTensor) -> torch.Tensor:
        key = f"nbr_k{self.kernel_size}_d{self.dilation}"
        nbr = x.get_spatial_cache(key)
        if nbr is None:
            nbr = build_neighbor_map(x.coords, self.kernel_size, self.dilation)
            x.register_spatial_cache(key, nbr)
        return nbr

    def forward(self, x: SparseTensor) -> SparseTensor:
        weight, bias = self.conv.weight, self.conv.bias
        feats = x.feats.to(weight.dtype) if x.feats.dtype != weight.dtype else x.feats
        if self.kernel_size == 1:
            out = feats @ weight.reshape(self.in_channels, self.out_channels)  # spconv's conv1x1 semantics
            if bias is not None:
                out = out + bias
            return x.replace(out)
        backend = _resolve_backend(x.device)
        if backend == "fast":
            out = _fast_kernel(feats, self.neighbor_map(x), weight, bias)
        elif backend == "spconv":
            out = self._spconv_forward(x, feats)
        else:
            out = conv_with_neighbor_map(feats, self.neighbor_map(x), weight, bias)
        return x.replace(out)

    def _spconv_forward(self, x: SparseTensor, feats: torch.Tensor) -> torch.Tensor:
        import spconv.pytorch as spconv

        layer = spconv.SubMConv3d(self.in_channels, self.out_channels, self.kernel_size,
                                  dilation=self.dilation, bias=False)
        layer.weight = self.conv.weight  # share, not copy; the helper layer is not registered
        coords = x.coords.int()
        spatial_shape = (coords[:, 1:].max(dim=0).values + 1).tolist() if coords.shape[0] else [1, 1, 1]
        st = spconv.SparseConvTensor(feats, coords, spatial_shape, x.batch_size)
        guard = _single_threaded() if feats.device.type == "cpu" else contextlib.nullcontext()
        with guard:
            out = layer(st).features
        if self.conv.bias is not None:
            out = out + self.conv.bias
        return out
