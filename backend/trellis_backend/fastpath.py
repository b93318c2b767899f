"""The registry through which models, modules and sparse ops find their implementation.

Every place where the CUDA fast path (`trellis_backend.accel`) computes something
differently from the plain PyTorch path is a lookup here::

    fast = fastpath.lookup(self)          # in a module's forward
    h = fast.modulated_norm(self.norm1, x, shift, scale)

`lookup(module)` returns the `FastPath` assigned to that module, or `PLAIN`, whose methods
are the reference maths (what the modules computed inline before the fast path existed).
`trellis_backend.accel` assigns its own `FastPath` subclass to every module of the models it
accelerates (`assign`) and takes it back on disable (`unassign`); nothing else changes on
the modules. The lookup points:

- ``sparse_conv``: kernel for 3³ submanifold convs of CUDA tensors (`SparseConv3d`);
- ``varlen_attention``: kernel for ragged groups and windows of CUDA tensors (sparse attention);
- ``layer_norm``, ``modulated_norm``, ``residual_norm``, ``gated_residual``, ``qk_rms_norm``,
  ``mlp``: the elementwise work of the transformer blocks, which the fast path fuses;
- ``context_kv`` / ``uniform_context``: cross-attention keys/values of a dense condition tensor
  (cached per sampling run by the fast path) and which batch items have a uniform condition
  (per-item condition lists, `VarLenContext`, are never asked: they count as non-uniform);
- ``downsample``: the mean-pooling of `SparseDownsample` (cached per voxel set by the fast path);
- ``run_model``: the call of a model class's forward decorated with `model_entry` (precision
  scope and CUDA graphs in the fast path).

A module whose maths the fused elementwise kernels do not cover declares
``fast_path_fusable = False``: `fusable` says so, and a fast path that fuses serves such a
module and its sub-modules with its unfused sibling (kernels and caches only). No model here
needs it today: TRELLIS.2's rope and per-block modulation offsets sit outside the fused ops
(checked against the plain path in tests/test_trellis2_accel.py).

This module imports nothing from the project: every layer may use it.
"""
from __future__ import annotations

import functools
import weakref
from typing import Callable, Optional

import torch


def _per_row(values: torch.Tensor, batch_index: Optional[torch.Tensor]) -> torch.Tensor:
    """Per-item vectors `[B, C]` broadcast to the rows: `[B, 1, C]` for dense `[B, L, C]`, else gathered."""
    return values.unsqueeze(1) if batch_index is None else values[batch_index]


class FastPath:
    """The plain implementations (PyTorch, any device); `trellis_backend.accel` overrides them."""

    #: fn(feats, nbr, weight, bias) -> out for the submanifold convs of CUDA tensors, or None (conv backend)
    sparse_conv: Optional[Callable] = None
    #: fn(q, k, v, cu_seqlens_q, cu_seqlens_k, max_q, max_k) -> out for ragged CUDA groups, or None (padded SDPA)
    varlen_attention: Optional[Callable] = None

    # ------------------------------------------------------------------ model level
    def run_model(self, model: torch.nn.Module, forward: Callable, args: tuple, kwargs: dict):
        """Call `forward` (a model class's undecorated forward) on `model`."""
        return forward(model, *args, **kwargs)

    # ---------------------------------------------------------------- elementwise
    def layer_norm(self, norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """`norm(x)` (a LayerNorm32)."""
        return norm(x)

    def modulated_norm(self, norm: torch.nn.Module, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor,
                       batch_index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """adaLN: `norm(x) · (1 + scale) + shift` with per-item `[B, C]` vectors (rows of item `batch_index`)."""
        return norm(x) * (1 + _per_row(scale, batch_index)) + _per_row(shift, batch_index)

    def residual_norm(self, norm: torch.nn.Module, x: torch.Tensor, h: torch.Tensor,
                      gate: Optional[torch.Tensor] = None, shift: Optional[torch.Tensor] = None,
                      scale: Optional[torch.Tensor] = None, batch_index: Optional[torch.Tensor] = None):
        """The residual update and the next norm: `(x + h·gate, norm(x + h·gate)[·(1 + scale) + shift])`."""
        x = x + h * _per_row(gate, batch_index) if gate is not None else x + h
        if scale is None:
            return x, norm(x)
        return x, self.modulated_norm(norm, x, shift, scale, batch_index)

    def gated_residual(self, x: torch.Tensor, h: torch.Tensor, gate: torch.Tensor,
                       batch_index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """`x + h · gate` with a per-item gate."""
        return x + h * _per_row(gate, batch_index)

    def qk_rms_norm(self, norm: torch.nn.Module, t: torch.Tensor) -> torch.Tensor:
        """Per-head RMS norm of queries or keys (`MultiHeadRMSNorm`)."""
        return norm(t)

    def mlp(self, seq: torch.nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        """The `Linear -> GELU(tanh) -> Linear` MLP of a transformer block."""
        return seq(x)

    # ------------------------------------------------------------------ attention
    def context_kv(self, attn: torch.nn.Module, context: torch.Tensor):
        """Cross-attention keys/values of `context` (`attn.context_kv`)."""
        return attn.context_kv(context)

    def uniform_context(self, attn: torch.nn.Module, context: torch.Tensor):
        """Per batch item, whether every context token is equal (the attention may then take the value row);
        None: attend normally."""
        return None

    # ----------------------------------------------------------------- sparse ops
    def downsample(self, down: torch.nn.Module, x):
        """`SparseDownsample`'s mean-pooling to the parent voxels."""
        return down.pool(x)


PLAIN = FastPath()

_assigned: "weakref.WeakKeyDictionary[torch.nn.Module, FastPath]" = weakref.WeakKeyDictionary()


def lookup(module: torch.nn.Module) -> FastPath:
    """The implementations serving `module`: those assigned to it, else the plain ones."""
    return _assigned.get(module, PLAIN)


def assign(model: torch.nn.Module, path: FastPath) -> None:
    """Let `path` serve `model` and all its sub-modules."""
    for m in model.modules():
        _assigned[m] = path


def unassign(model: torch.nn.Module, path: Optional[FastPath] = None) -> None:
    """Back to the plain path for `model` and its sub-modules (only those `path` serves, when given)."""
    for m in model.modules():
        if path is None or _assigned.get(m) is path:
            _assigned.pop(m, None)


def fusable(module: torch.nn.Module) -> bool:
    """Whether a fused fast path may serve `module` (it did not declare ``fast_path_fusable = False``)."""
    return getattr(module, "fast_path_fusable", True)


def model_entry(forward: Callable) -> Callable:
    """Decorator of a model class's `forward`: calls go through `lookup(model).run_model`, where the fast
    path scopes precision and replays CUDA graphs. `forward.__wrapped__` is the undecorated forward."""
    @functools.wraps(forward)
    def entry(self, *args, **kwargs):
        return lookup(self).run_model(self, forward, args, kwargs)

    entry.fast_path_entry = True
    return entry


def has_entry(model: torch.nn.Module) -> bool:
    """Whether `model`'s class routes its forward through `model_entry`."""
    return getattr(type(model).forward, "fast_path_entry", False)
