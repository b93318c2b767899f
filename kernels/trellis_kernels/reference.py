"""Pure-PyTorch references of every kernel in `trellis_kernels`.

Each function here has the signature of its Triton counterpart and is the
definition that counterpart is tested against. They run on any device (CPU
in CI) and are also the fallback where Triton or CUDA is missing. Arithmetic
is done in float32 and the result is cast back to the input dtype.

Conventions shared with the kernels:
- sparse conv weights come either in spconv layout `[Cout, k, k, k, Cin]` or
  flattened `[k³, Cin, Cout]`; kernel index k = (dx+1)*9 + (dy+1)*3 + (dz+1)
  for the neighbour at offset (dx, dy, dz) (cross-correlation, as spconv and
  `torch.nn.functional.conv3d`);
- per-item modulation vectors (`shift`, `scale`, `gate`) are `[B, C]` and are
  broadcast over the tokens of item b: dense `x` is `[B, L, C]`, sparse `x` is
  `[N, C]` with `batch_index` `[N]` giving each row's item;
- attention tensors are packed `[T, H, D]` with `cu_seqlens` `[S+1]` (int32)
  delimiting the sequences, as in flash-attention's varlen API.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = [
    "conv_weight_kcn", "sparse_conv3d", "modulated_layernorm", "gated_residual", "residual_layernorm",
    "qk_rmsnorm", "varlen_attention",
]


# ----------------------------------------------------------------------------- sparse conv
def conv_weight_kcn(weight: torch.Tensor) -> torch.Tensor:
    """Weight as `[K, Cin, Cout]` (a view where possible) from spconv `[Cout, k, k, k, Cin]` or `[K, Cin, Cout]`."""
    if weight.dim() == 5:
        cout, cin = weight.shape[0], weight.shape[-1]
        return weight.reshape(cout, -1, cin).permute(1, 2, 0)
    if weight.dim() == 3:
        return weight
    raise ValueError(f"sparse conv weight must be [Cout,k,k,k,Cin] or [K,Cin,Cout], got {tuple(weight.shape)}")


def sparse_conv3d(feats: torch.Tensor, nbr: torch.Tensor, weight: torch.Tensor,
                  bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Submanifold sparse convolution by gather + matmul + sum.

    out[i] = bias + sum_k feats[nbr[i, k]] @ W[k]   (terms with nbr[i, k] == -1 skipped)

    feats `[N, Cin]`, nbr `[N, K]` (int32/int64, -1 = no neighbour), weight in
    spconv layout or `[K, Cin, Cout]`, bias `[Cout]` or None -> `[N, Cout]` in feats' dtype.
    """
    w = conv_weight_kcn(weight).float()
    kvol, cin, cout = w.shape
    n = feats.shape[0]
    if feats.shape[-1] != cin or nbr.shape != (n, kvol):
        raise ValueError(f"shape mismatch: feats {tuple(feats.shape)}, nbr {tuple(nbr.shape)}, weight K,Cin,Cout="
                         f"{kvol},{cin},{cout}")
    # one zero row at index n stands in for every missing neighbour
    padded = torch.cat([feats.float(), feats.new_zeros(1, cin, dtype=torch.float32)], dim=0)
    idx = torch.where(nbr >= 0, nbr.long(), torch.full_like(nbr, n, dtype=torch.long))
    out = torch.zeros(n, cout, dtype=torch.float32, device=feats.device)
    for k in range(kvol):
        out += padded[idx[:, k]] @ w[k]
    if bias is not None:
        out += bias.float()
    return out.to(feats.dtype)


# ----------------------------------------------------------------------------- DiT elementwise
def _per_row(mod: torch.Tensor, x: torch.Tensor, batch_index: Optional[torch.Tensor]) -> torch.Tensor:
    """Broadcast a per-item `[B, C]` vector to x's rows (float32)."""
    mod = mod.float()
    if x.dim() == 3:
        if batch_index is not None:
            raise ValueError("batch_index is only for sparse [N, C] inputs")
        return mod[:, None, :]
    if x.dim() == 2:
        if batch_index is None:
            if mod.shape[0] != 1:
                raise ValueError("sparse [N, C] input with a [B>1, C] modulation needs batch_index")
            return mod
        return mod[batch_index.long()]
    raise ValueError(f"expected [B, L, C] or [N, C], got {tuple(x.shape)}")


def modulated_layernorm(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6,
                        batch_index: Optional[torch.Tensor] = None) -> torch.Tensor:
    """adaLN: LayerNorm(x) without affine, then `* (1 + scale) + shift` per item; float32 math."""
    y = F.layer_norm(x.float(), (x.shape[-1],), eps=eps)
    y = y * (1 + _per_row(scale, x, batch_index)) + _per_row(shift, x, batch_index)
    return y.to(x.dtype)


def gated_residual(x: torch.Tensor, h: torch.Tensor, gate: torch.Tensor,
                   batch_index: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x + h * gate per item; float32 math."""
    return (x.float() + h.float() * _per_row(gate, x, batch_index)).to(x.dtype)


def residual_layernorm(x: torch.Tensor, h: Optional[torch.Tensor] = None, gate: Optional[torch.Tensor] = None,
                       shift: Optional[torch.Tensor] = None, scale: Optional[torch.Tensor] = None,
                       weight: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None,
                       eps: float = 1e-6, batch_index: Optional[torch.Tensor] = None):
    """Residual update and the next block's norm in one pass; returns `(x_out, y)`.

    x_out = x + h * gate   (gate per item, optional; x_out = x when h is None), rounded to x's dtype
    y = LN(x_out) [* weight + bias] [* (1 + scale) + shift]   (float32 math, y in x's dtype)

    Covers the three norms of a TRELLIS modulated block: norm1/norm3 (adaLN: shift/scale, no affine) after
    the gated residual, norm2 (affine LayerNorm32) after the plain cross-attention residual.
    """
    if h is not None:
        upd = h.float() * _per_row(gate, x, batch_index) if gate is not None else h.float()
        x = (x.float() + upd).to(x.dtype)
    y = F.layer_norm(x.float(), (x.shape[-1],), eps=eps)
    if weight is not None:
        y = y * weight.float()
    if bias is not None:
        y = y + bias.float()
    if scale is not None:
        y = y * (1 + _per_row(scale, x, batch_index))
    if shift is not None:
        y = y + _per_row(shift, x, batch_index)
    return x, y.to(x.dtype)


def qk_rmsnorm(q: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Per-head RMS norm of TRELLIS' MultiHeadRMSNorm: normalize(q, dim=-1) * gamma * sqrt(D).

    q `[..., H, D]`, gamma `[H, D]`; float32 math, result in q's dtype.
    """
    d = q.shape[-1]
    return (F.normalize(q.float(), dim=-1) * gamma.float() * math.sqrt(d)).to(q.dtype)


# ----------------------------------------------------------------------------- attention
def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                     cu_seqlens_k: torch.Tensor, max_seqlen_q: Optional[int] = None,
                     max_seqlen_k: Optional[int] = None, softmax_scale: Optional[float] = None) -> torch.Tensor:
    """Non-causal attention of each packed sequence of `q [Tq, H, D]` on its own `k, v [Tk, H, D]`.

    Sequence s spans rows cu_seqlens_q[s]:cu_seqlens_q[s+1] of q and
    cu_seqlens_k[s]:cu_seqlens_k[s+1] of k/v. A sequence with no keys gets zeros.
    The max_seqlen arguments only size the Triton grid; they are ignored here.
    """
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    out = torch.zeros(q.shape[0], q.shape[1], v.shape[-1], dtype=torch.float32, device=q.device)
    cq = cu_seqlens_q.tolist()
    ck = cu_seqlens_k.tolist()
    for s in range(len(cq) - 1):
        q0, q1, k0, k1 = cq[s], cq[s + 1], ck[s], ck[s + 1]
        if q1 == q0 or k1 == k0:
            continue
        qs = q[q0:q1].float().transpose(0, 1)  # [H, Lq, D]
        ks = k[k0:k1].float().transpose(0, 1)
        vs = v[k0:k1].float().transpose(0, 1)
        p = torch.softmax((qs @ ks.transpose(1, 2)) * scale, dim=-1)
        out[q0:q1] = (p @ vs).transpose(0, 1)
    return out.to(q.dtype)
