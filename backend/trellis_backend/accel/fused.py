"""Fused elementwise maths of the TRELLIS blocks: `FusedPath`, the fast path of a model whose blocks fuse.

The modules' forwards call these through `trellis_backend.fastpath` lookups; here they run
`trellis_kernels` ops (Triton on CUDA; their float32 PyTorch references elsewhere, which is
how the CPU tests check the wiring):

- adaLN modulate + LayerNorm in one pass (`modulated_norm`), the gated residual fused with
  the next norm (`residual_norm`), the last gated residual in one pass (`gated_residual`);
  per-item modulation vectors are read through the row's batch index instead of gathered;
- per-head q/k RMS norm in one pass reading the packed qkv in place (`qk_rms_norm`);
- the MLP's first linear with its tanh-GELU as a cuBLASLt epilogue (`mlp`:
  `torch._addmm_activation`, the same tanh approximation the model uses);
- cross-attention skips batch items whose condition is uniform (`uniform_context`, from the
  K/V cache entry; ``TRELLIS_ACCEL_UNIFORM_CONTEXT=0`` turns it off; a `VarLenContext` never is).

Modules that declare ``fast_path_fusable = False`` are served by `FusedPath.unfused()` instead:
same kernels and caches, plain elementwise maths. TRELLIS.2's blocks fuse like TRELLIS's (their
rope and modulation offsets are outside these ops).

Norm statistics and modulation are float32 inside the kernels (the reference rounds the
LayerNorm32 output to the activation dtype before modulating; here it is rounded once,
after), so results agree with the plain path to activation-dtype rounding.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

import trellis_kernels as tk

from .. import fastpath, settings
from .path import AcceleratedPath

_EPILOGUE: dict = {}  # (device, dtype) -> torch._addmm_activation(use_gelu=True) computes the tanh GELU there


def gelu_epilogue_ok(device, dtype) -> bool:
    """Whether `torch._addmm_activation(..., use_gelu=True)` computes the tanh-approximate GELU on this device.

    cuBLASLt's GELU epilogue is the tanh approximation (the one TRELLIS uses); other backends may compute
    the exact (erf) GELU (PyTorch's CPU path does). Probed once per (device, dtype) at a pre-activation of
    -3, where the two differ by 12% (about 30 bf16 ulps); call it outside CUDA-graph capture (host sync).
    """
    if not settings.current().accel_gelu_epilogue:
        return False
    key = (str(device), dtype)
    if key not in _EPILOGUE:
        try:
            m, k, n = 64, 64, 128
            a = torch.zeros(m, k, device=device, dtype=dtype)
            a[:, 0] = -3.0
            w = torch.zeros(n, k, device=device, dtype=dtype)
            w[:, 0] = 1.0
            b = torch.zeros(n, device=device, dtype=dtype)
            y = torch._addmm_activation(b, a, w.t(), use_gelu=True).float().cpu()
            x = torch.tensor(-3.0)
            tanh, erf = F.gelu(x, approximate="tanh"), F.gelu(x)
            _EPILOGUE[key] = bool(((y - tanh).abs() < (y - erf).abs()).all())
        except Exception:
            _EPILOGUE[key] = False
    return _EPILOGUE[key]


def ffn(seq: torch.nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """`Linear -> GELU(tanh) -> Linear`, the GELU fused into the first GEMM's epilogue where that is exact."""
    fc1, fc2 = seq[0], seq[2]
    if (x.shape[0] == 0 or fc1.bias is None or x.dtype != fc1.weight.dtype
            or not _EPILOGUE.get((str(x.device), x.dtype), False)):
        return seq(x)
    lead = x.shape[:-1]
    h = torch._addmm_activation(fc1.bias, x.reshape(-1, x.shape[-1]), fc1.weight.t(), use_gelu=True)
    return fc2(h).reshape(*lead, fc2.out_features)


def _affine(norm):
    return getattr(norm, "weight", None), getattr(norm, "bias", None)


class FusedPath(AcceleratedPath):
    """`AcceleratedPath` with the blocks' elementwise work in `trellis_kernels`' fused ops, for the modules that
    are `fastpath.fusable`."""

    _unfused: Optional[AcceleratedPath] = None

    def layer_norm(self, norm, x):
        weight, bias = _affine(norm)
        return tk.residual_layernorm(x, weight=weight, bias=bias, eps=norm.eps)[1]

    def modulated_norm(self, norm, x, shift, scale, batch_index=None):
        return tk.modulated_layernorm(x, shift, scale, eps=norm.eps, batch_index=batch_index)

    def residual_norm(self, norm, x, h, gate=None, shift=None, scale=None, batch_index=None):
        weight, bias = _affine(norm)
        return tk.residual_layernorm(x, h, gate, shift=shift, scale=scale, weight=weight, bias=bias, eps=norm.eps,
                                     batch_index=batch_index)

    def gated_residual(self, x, h, gate, batch_index=None):
        return tk.gated_residual(x, h, gate, batch_index=batch_index)

    def qk_rms_norm(self, norm, t):
        return tk.qk_rmsnorm(t, norm.gamma)

    def mlp(self, seq, x):
        return ffn(seq, x)

    def uniform_context(self, attn, context) -> Optional[tuple]:
        if not isinstance(context, torch.Tensor) or not settings.current().accel_uniform_context:
            return None  # per-item condition lists (VarLenContext) are never uniform here
        cache = self.accelerator.kv_caches.get(attn)
        flags = cache.uniform(context) if cache is not None else None
        return flags if flags and any(flags) else None

    # ---------------------------------------------------------------- assignment
    def unfused(self) -> AcceleratedPath:
        """The same kernels and caches without the fused maths: serves the modules that are not `fusable`."""
        if self._unfused is None:
            self._unfused = AcceleratedPath(self.accelerator, self.sparse_conv, self.varlen_attention,
                                            self.cache_downsample)
        return self._unfused

    def assign(self, model: torch.nn.Module) -> None:
        """Serve `model`; the sub-trees of modules that declare ``fast_path_fusable = False`` get `unfused()`."""
        fastpath.assign(model, self)
        for module in model.modules():
            if not fastpath.fusable(module):
                fastpath.assign(module, self.unfused())

    def unassign(self, model: torch.nn.Module) -> None:
        fastpath.unassign(model, self)
        if self._unfused is not None:
            fastpath.unassign(model, self._unfused)
