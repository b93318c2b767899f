"""Fused elementwise work of the TRELLIS DiT blocks, in Triton.

- `modulated_layernorm`: adaLN, LN(x) (no affine) * (1 + scale) + shift, one
  pass over x (the reference stack is LayerNorm32 + cast + mul + add: four).
- `gated_residual`: x + h * gate, one pass.
- `residual_layernorm`: the residual update and the next norm fused (x + h·gate, then LN with optional affine
  and/or adaLN modulation), returning both; one read of x and h instead of three.
- `qk_rmsnorm`: per-head normalize(q) * gamma * sqrt(D), reading q in place
  from a packed qkv tensor through strides.
All math is float32; results are cast to the input dtype. Per-item vectors
`[B, C]` may be strided views (as `adaLN_modulation(t).chunk(6, dim=1)` gives).
Same contracts as `trellis_kernels.reference`.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

__all__ = ["modulated_layernorm", "gated_residual", "residual_layernorm", "qk_rmsnorm"]


def _launch_shape(c: int):
    block_c = triton.next_power_of_2(max(c, 1))
    rows = max(1, min(16, 4096 // block_c))
    warps = 8 if block_c >= 4096 else 4
    return block_c, rows, warps


@triton.jit
def _row_item(rows, rmask, BIDX, L, HAS_BIDX: tl.constexpr):
    if HAS_BIDX:
        b = tl.load(BIDX + rows, mask=rmask, other=0).to(tl.int64)
    else:
        b = (rows // L).to(tl.int64)
    return b


@triton.jit
def _residual_norm_kernel(X, H, G, SHIFT, SCALE, WEIGHT, BIAS, BIDX, XOUT, Y, R, C, L,
                          stride_x, stride_h, stride_g, stride_shift, stride_scale, eps,
                          HAS_H: tl.constexpr, HAS_GATE: tl.constexpr, HAS_MOD: tl.constexpr,
                          HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_BIDX: tl.constexpr,
                          ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    rmask = rows < R
    cols = tl.arange(0, BLOCK_C)
    cmask = cols < C
    m = rmask[:, None] & cmask[None, :]
    r64 = rows.to(tl.int64)
    x = tl.load(X + r64[:, None] * stride_x + cols[None, :], mask=m, other=0.0)
    if HAS_GATE or HAS_MOD:
        b = _row_item(rows, rmask, BIDX, L, HAS_BIDX)
    if HAS_H:
        h = tl.load(H + r64[:, None] * stride_h + cols[None, :], mask=m, other=0.0).to(tl.float32)
        if HAS_GATE:
            h = h * tl.load(G + b[:, None] * stride_g + cols[None, :], mask=m, other=0.0).to(tl.float32)
        x = (x.to(tl.float32) + h).to(XOUT.dtype.element_ty)  # round as the unfused residual add would
        tl.store(XOUT + r64[:, None] * C + cols[None, :], x, mask=m)
    x = x.to(tl.float32)
    mean = tl.sum(x, axis=1) / C
    xc = tl.where(m, x - mean[:, None], 0.0)
    var = tl.sum(xc * xc, axis=1) / C
    y = xc * (1.0 / tl.sqrt(var + eps))[:, None]
    if HAS_WEIGHT:
        y = y * tl.load(WEIGHT + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    if HAS_BIAS:
        y = y + tl.load(BIAS + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    if HAS_MOD:
        sc = tl.load(SCALE + b[:, None] * stride_scale + cols[None, :], mask=m, other=0.0).to(tl.float32)
        sh = tl.load(SHIFT + b[:, None] * stride_shift + cols[None, :], mask=m, other=0.0).to(tl.float32)
        y = y * (1.0 + sc) + sh
    tl.store(Y + r64[:, None] * C + cols[None, :], y.to(Y.dtype.element_ty), mask=m)


@triton.jit
def _gated_residual_kernel(X, H, G, BIDX, Y, R, C, L, stride_x, stride_h, stride_g,
                           HAS_BIDX: tl.constexpr, ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    rmask = rows < R
    cols = tl.arange(0, BLOCK_C)
    cmask = cols < C
    m = rmask[:, None] & cmask[None, :]
    r64 = rows.to(tl.int64)
    x = tl.load(X + r64[:, None] * stride_x + cols[None, :], mask=m, other=0.0).to(tl.float32)
    h = tl.load(H + r64[:, None] * stride_h + cols[None, :], mask=m, other=0.0).to(tl.float32)
    b = _row_item(rows, rmask, BIDX, L, HAS_BIDX)
    g = tl.load(G + b[:, None] * stride_g + cols[None, :], mask=m, other=0.0).to(tl.float32)
    tl.store(Y + r64[:, None] * C + cols[None, :], (x + h * g).to(Y.dtype.element_ty), mask=m)


@triton.jit
def _qk_rmsnorm_kernel(Q, GAMMA, Y, R, NH, D, stride_r, stride_h, scale,
                       ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    # rows enumerate (token, head) pairs; output is contiguous [R, NH, D]
    i = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    imask = i < R * NH
    tok = (i // NH).to(tl.int64)
    head = i % NH
    d = tl.arange(0, BLOCK_D)
    dmask = d < D
    m = imask[:, None] & dmask[None, :]
    q = tl.load(Q + (tok * stride_r + head * stride_h)[:, None] + d[None, :], mask=m, other=0.0).to(tl.float32)
    norm = tl.maximum(tl.sqrt(tl.sum(q * q, axis=1)), 1e-12)
    g = tl.load(GAMMA + head[:, None] * D + d[None, :], mask=m, other=0.0).to(tl.float32)
    y = q / norm[:, None] * g * scale
    tl.store(Y + i.to(tl.int64)[:, None] * D + d[None, :], y.to(Y.dtype.element_ty), mask=m)


def _rows_view(x: torch.Tensor) -> torch.Tensor:
    """x as [R, C] with unit stride along C (a view when possible)."""
    c = x.shape[-1]
    if x.stride(-1) != 1:
        x = x.contiguous()
    try:
        return x.view(-1, c)
    except RuntimeError:
        return x.contiguous().view(-1, c)


def _mod_vec(v: torch.Tensor) -> torch.Tensor:
    if v.dim() == 1:
        v = v[None]
    return v if v.stride(-1) == 1 else v.contiguous()


def _item_args(x: torch.Tensor, batch_index: Optional[torch.Tensor], nitems: int):
    """(batch index tensor or None, tokens per item L) for the kernels' row -> item lookup."""
    if x.dim() == 3:
        if batch_index is not None:
            raise ValueError("batch_index is only for sparse [N, C] inputs")
        return None, x.shape[1]
    if x.dim() != 2:
        raise ValueError(f"expected [B, L, C] or [N, C], got {tuple(x.shape)}")
    if batch_index is None:
        if nitems != 1:
            raise ValueError("sparse [N, C] input with a [B>1, C] modulation needs batch_index")
        return None, max(x.shape[0], 1)
    return batch_index.contiguous(), 1


def residual_layernorm(x: torch.Tensor, h: Optional[torch.Tensor] = None, gate: Optional[torch.Tensor] = None,
                       shift: Optional[torch.Tensor] = None, scale: Optional[torch.Tensor] = None,
                       weight: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None,
                       eps: float = 1e-6, batch_index: Optional[torch.Tensor] = None):
    """(x + h·gate, LN(·)[·w + b][·(1 + scale) + shift]) in one pass; see reference.residual_layernorm."""
    if (shift is None) != (scale is None):
        raise ValueError("shift and scale come together")
    if gate is not None and h is None:
        raise ValueError("gate needs h")
    mods = [_mod_vec(t) if t is not None else None for t in (gate, shift, scale)]
    gate, shift, scale = mods
    nitems = next((t.shape[0] for t in mods if t is not None), 1)
    bidx, seq = _item_args(x, batch_index, nitems)
    c = x.shape[-1]
    x2 = _rows_view(x)
    r = x2.shape[0]
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if h is not None:
        if h.shape != x.shape:
            raise ValueError(f"x {tuple(x.shape)} and h {tuple(h.shape)} differ")
        h2 = _rows_view(h)
        x_out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    else:
        h2, x_out = x2, x
    if r == 0 or c == 0:
        return x_out, y
    block_c, rows, warps = _launch_shape(c)
    dummy = x2
    _residual_norm_kernel[(triton.cdiv(r, rows),)](
        x2, h2, gate if gate is not None else dummy, shift if shift is not None else dummy,
        scale if scale is not None else dummy, weight.contiguous() if weight is not None else dummy,
        bias.contiguous() if bias is not None else dummy, bidx if bidx is not None else dummy,
        x_out, y, r, c, seq, x2.stride(0), h2.stride(0), gate.stride(0) if gate is not None else 0,
        shift.stride(0) if shift is not None else 0, scale.stride(0) if scale is not None else 0, eps,
        HAS_H=h is not None, HAS_GATE=gate is not None, HAS_MOD=shift is not None, HAS_WEIGHT=weight is not None,
        HAS_BIAS=bias is not None, HAS_BIDX=bidx is not None, ROWS=rows, BLOCK_C=block_c, num_warps=warps)
    return x_out, y


def modulated_layernorm(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6,
                        batch_index: Optional[torch.Tensor] = None) -> torch.Tensor:
    return residual_layernorm(x, shift=shift, scale=scale, eps=eps, batch_index=batch_index)[1]


def gated_residual(x: torch.Tensor, h: torch.Tensor, gate: torch.Tensor,
                   batch_index: Optional[torch.Tensor] = None) -> torch.Tensor:
    gate = _mod_vec(gate)
    if h.shape != x.shape:
        raise ValueError(f"x {tuple(x.shape)} and h {tuple(h.shape)} differ")
    bidx, seq = _item_args(x, batch_index, gate.shape[0])
    c = x.shape[-1]
    x2, h2 = _rows_view(x), _rows_view(h)
    r = x2.shape[0]
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if r == 0 or c == 0:
        return y
    block_c, rows, warps = _launch_shape(c)
    _gated_residual_kernel[(triton.cdiv(r, rows),)](
        x2, h2, gate, bidx if bidx is not None else x2, y, r, c, seq, x2.stride(0), h2.stride(0),
        gate.stride(0), HAS_BIDX=bidx is not None, ROWS=rows, BLOCK_C=block_c, num_warps=warps)
    return y


def qk_rmsnorm(q: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    nh, d = q.shape[-2], q.shape[-1]
    if gamma.shape != (nh, d):
        raise ValueError(f"gamma must be [H, D] = [{nh}, {d}], got {tuple(gamma.shape)}")
    if q.stride(-1) != 1:
        q = q.contiguous()
    try:
        q3 = q.view(-1, nh, d)
    except RuntimeError:
        q3 = q.contiguous().view(-1, nh, d)
    r = q3.shape[0]
    y = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if r == 0 or d == 0:
        return y
    gamma = gamma.contiguous()
    block_d = triton.next_power_of_2(d)
    rows = max(1, min(64, 4096 // block_d))
    _qk_rmsnorm_kernel[(triton.cdiv(r * nh, rows),)](
        q3, gamma, y, r, nh, d, q3.stride(0), q3.stride(1), float(d) ** 0.5,
        ROWS=rows, BLOCK_D=block_d, num_warps=4)
    return y
