"""Custom GPU kernels (Triton) for the hot ops of TRELLIS, each with a pure-PyTorch reference.

Public ops dispatch on their inputs: CUDA tensors with Triton importable run
the Triton kernel, everything else runs the reference in
`trellis_kernels.reference` (identical signature). Importing this package
never imports Triton; `available()` says whether the Triton path can run.
Set `TRELLIS_KERNELS=0` to force the references, `TRELLIS_KERNELS_AUTOTUNE=0`
to use fixed block configs instead of autotuning (read once, by
`trellis_backend.settings`, a standard-library-only module).

Ops:
- `build_neighbor_map(coords, kernel_size=3, dilation=1)` -> int32 `[N, K³]`
  (torch ops on any device; cache it per coordinate set)
- `sparse_conv3d(feats, nbr, weight, bias=None)`: submanifold conv, weight in
  spconv layout `[Cout, k, k, k, Cin]` or `[K, Cin, Cout]`
- `modulated_layernorm(x, shift, scale, eps=1e-6, batch_index=None)`
- `gated_residual(x, h, gate, batch_index=None)`
- `residual_layernorm(x, h=None, gate=None, shift=None, scale=None, weight=None, bias=None, eps=1e-6,
  batch_index=None)` -> `(x + h·gate, LN(...)[·w+b][·(1+scale)+shift])`
- `qk_rmsnorm(q, gamma)`
- `varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None, softmax_scale=None)`
"""
from __future__ import annotations

import functools
import importlib
import os

from trellis_backend import settings

from . import reference
from .neighbors import build_neighbor_map, kernel_offsets

__all__ = [
    "available", "triton_available", "reference", "build_neighbor_map", "kernel_offsets", "sparse_conv3d",
    "modulated_layernorm", "gated_residual", "residual_layernorm", "qk_rmsnorm", "varlen_attention",
]


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """Triton importable (it may still lack a GPU: see `available`)."""
    try:
        importlib.import_module("triton")
        importlib.import_module("triton.language")
        return True
    except Exception:
        return False


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available() -> bool:
    """True when the Triton kernels can serve CUDA tensors here (Triton + a CUDA device, not disabled)."""
    if not settings.current().kernels or not triton_available():
        return False
    import torch

    return torch.cuda.is_available()


def _use_triton(t) -> bool:
    if not settings.current().kernels or not triton_available():
        return False
    return t.is_cuda or _interpreting()


def _impl(module: str):
    return importlib.import_module(f".{module}", __name__)


def sparse_conv3d(feats, nbr, weight, bias=None):
    """Submanifold sparse conv: out[i] = bias + sum_k feats[nbr[i,k]] @ W[k] (see reference.sparse_conv3d)."""
    if _use_triton(feats):
        return _impl("conv_triton").sparse_conv3d(feats, nbr, weight, bias)
    return reference.sparse_conv3d(feats, nbr, weight, bias)


def modulated_layernorm(x, shift, scale, eps: float = 1e-6, batch_index=None):
    """adaLN: LN(x, no affine) * (1 + scale) + shift, per-item vectors `[B, C]`."""
    if _use_triton(x):
        return _impl("norm_triton").modulated_layernorm(x, shift, scale, eps, batch_index)
    return reference.modulated_layernorm(x, shift, scale, eps, batch_index)


def gated_residual(x, h, gate, batch_index=None):
    """x + h * gate, per-item gate `[B, C]`."""
    if _use_triton(x):
        return _impl("norm_triton").gated_residual(x, h, gate, batch_index)
    return reference.gated_residual(x, h, gate, batch_index)


def residual_layernorm(x, h=None, gate=None, shift=None, scale=None, weight=None, bias=None, eps: float = 1e-6,
                       batch_index=None):
    """Residual update and next norm in one pass: returns (x + h·gate, LN(·) [·w + b] [·(1 + scale) + shift])."""
    mod = "norm_triton" if _use_triton(x) else None
    fn = _impl(mod).residual_layernorm if mod else reference.residual_layernorm
    return fn(x, h, gate, shift, scale, weight, bias, eps, batch_index)


def qk_rmsnorm(q, gamma):
    """normalize(q, dim=-1) * gamma * sqrt(D), q `[..., H, D]`, gamma `[H, D]`."""
    if _use_triton(q):
        return _impl("norm_triton").qk_rmsnorm(q, gamma)
    return reference.qk_rmsnorm(q, gamma)


def varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None,
                     softmax_scale=None):
    """Non-causal attention over packed sequences `[T, H, D]` delimited by cu_seqlens."""
    if _use_triton(q):
        return _impl("attention_triton").varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                                          max_seqlen_k, softmax_scale)
    return reference.varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                      softmax_scale)
