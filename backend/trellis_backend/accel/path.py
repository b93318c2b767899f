"""The fast path's implementations of the `trellis_backend.fastpath` lookups, one instance per accelerated model.

`AcceleratedPath` serves every module of one model: the Triton conv and varlen attention
kernels (CUDA models), the cross-attention K/V cache (`kv_cache.py`), the cached
down-sampling (`sparse_cache.py`) and the model runner (`runner.py`: precision scope, CUDA
graphs). The fused elementwise maths are the subclass `fused.FusedPath`.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from .. import fastpath
from ..fastpath import FastPath
from .sparse_cache import cached_downsample


class AcceleratedPath(FastPath):
    """Kernels, caches and the runner of one model; elementwise maths stay plain."""

    # `accelerator`: the owning `accel.Accelerator` (typed Any: importing it here would make a circle)
    def __init__(self, accelerator: Any, sparse_conv: Optional[Callable] = None,
                 varlen_attention: Optional[Callable] = None, cache_downsample: bool = False):
        self.accelerator = accelerator
        self.sparse_conv = sparse_conv
        self.varlen_attention = varlen_attention
        self.cache_downsample = cache_downsample

    def assign(self, model: torch.nn.Module) -> None:
        """Serve every module of `model` (`fastpath.assign`)."""
        fastpath.assign(model, self)

    def unassign(self, model: torch.nn.Module) -> None:
        """Hand `model`'s modules back to the plain path."""
        fastpath.unassign(model, self)

    def run_model(self, model: torch.nn.Module, forward: Callable, args: tuple, kwargs: dict):
        runner = self.accelerator.runners.get(model)
        if runner is None:
            return forward(model, *args, **kwargs)
        return runner(forward, args, kwargs)

    def context_kv(self, attn: torch.nn.Module, context: torch.Tensor):
        cache = self.accelerator.kv_caches.get(attn)
        return cache(context) if cache is not None else attn.context_kv(context)

    def downsample(self, down: torch.nn.Module, x):
        return cached_downsample(down, x) if self.cache_downsample else down.pool(x)
