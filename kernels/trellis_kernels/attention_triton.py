"""Variable-length (cu_seqlens) flash-attention forward in Triton.

Packed q `[Tq, H, D]`, k/v `[Tk, H, D]` (any row/head strides, unit stride
along D, so q/k/v may be views of a packed `[T, 3, H, D]` qkv), sequence s
spanning cu_seqlens_q[s]:cu_seqlens_q[s+1] (and likewise for k/v). Non-causal,
no dropout, inference only. One program handles BLOCK_M queries of one
(sequence, head) and streams the sequence's keys in BLOCK_N blocks with an
online softmax in exp2 form; fp32 accumulation. Grid:
(ceil(max_seqlen_q / BLOCK_M), num_sequences, H): programs past their
sequence's end return at once, so many short sequences (sparse windows) cost
no padding work beyond one partial tile each.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import triton
import triton.language as tl
from trellis_backend import settings

from . import _launch_info

__all__ = ["varlen_attention"]

LAST_LAUNCH: dict = {}


def _configs():
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
            for bm, bn, w, s in [(128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 4, 3), (64, 64, 4, 3),
                                 (64, 32, 4, 3), (128, 32, 4, 4)]]


@triton.jit
def _attn_block(acc, l_i, m_i, q, k_ptrs, v_ptrs, offs_n, start_n, k_len, stride_kt, stride_vt, qk_scale,
                dmask, MASK_N: tl.constexpr, EVEN_D: tl.constexpr, EXACT_FP32: tl.constexpr):
    n_idx = start_n + offs_n
    if MASK_N:
        nmask = n_idx < k_len
        if EVEN_D:
            k = tl.load(k_ptrs + start_n * stride_kt, mask=nmask[None, :], other=0.0)
            v = tl.load(v_ptrs + start_n * stride_vt, mask=nmask[:, None], other=0.0)
        else:
            k = tl.load(k_ptrs + start_n * stride_kt, mask=nmask[None, :] & dmask[:, None], other=0.0)
            v = tl.load(v_ptrs + start_n * stride_vt, mask=nmask[:, None] & dmask[None, :], other=0.0)
    else:
        if EVEN_D:
            k = tl.load(k_ptrs + start_n * stride_kt)
            v = tl.load(v_ptrs + start_n * stride_vt)
        else:
            k = tl.load(k_ptrs + start_n * stride_kt, mask=dmask[:, None], other=0.0)
            v = tl.load(v_ptrs + start_n * stride_vt, mask=dmask[None, :], other=0.0)
    if EXACT_FP32:
        s = tl.dot(q, k, input_precision="ieee")
    else:
        s = tl.dot(q, k)
    s = s * qk_scale
    if MASK_N:
        s = tl.where(nmask[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    p = tl.math.exp2(s - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, axis=1)
    if EXACT_FP32:
        acc = tl.dot(p, v, acc * alpha[:, None], input_precision="ieee")
    else:
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
    return acc, l_i, m_new


@triton.jit
def _varlen_fwd_kernel(Q, K, V, O, CU_Q, CU_K, qk_scale,
                       stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
                       D, MAXQ_LOG2,
                       BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr, EXACT_FP32: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_m = tl.program_id(0)
    seq = tl.program_id(1)
    head = tl.program_id(2).to(tl.int64)
    q_start = tl.load(CU_Q + seq)
    q_len = tl.load(CU_Q + seq + 1) - q_start
    if pid_m * BLOCK_M >= q_len:
        return
    k_start = tl.load(CU_K + seq)
    k_len = tl.load(CU_K + seq + 1) - k_start

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mmask = offs_m < q_len
    dmask = offs_d < D
    q_rows = (q_start + offs_m).to(tl.int64)
    q = tl.load(Q + q_rows[:, None] * stride_qt + head * stride_qh + offs_d[None, :],
                mask=mmask[:, None] & dmask[None, :], other=0.0)
    k_base = K + k_start.to(tl.int64) * stride_kt + head * stride_kh
    v_base = V + k_start.to(tl.int64) * stride_vt + head * stride_vh
    k_ptrs = k_base + offs_n[None, :].to(tl.int64) * stride_kt + offs_d[:, None]  # [D, BLOCK_N]
    v_ptrs = v_base + offs_n[:, None].to(tl.int64) * stride_vt + offs_d[None, :]  # [BLOCK_N, D]

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    n_full = (k_len // BLOCK_N) * BLOCK_N
    for start_n in range(0, n_full, BLOCK_N):
        acc, l_i, m_i = _attn_block(acc, l_i, m_i, q, k_ptrs, v_ptrs, offs_n, start_n, k_len, stride_kt,
                                    stride_vt, qk_scale, dmask, False, EVEN_D, EXACT_FP32)
    if n_full < k_len:
        acc, l_i, m_i = _attn_block(acc, l_i, m_i, q, k_ptrs, v_ptrs, offs_n, n_full, k_len, stride_kt,
                                    stride_vt, qk_scale, dmask, True, EVEN_D, EXACT_FP32)
    l_safe = tl.where(l_i > 0.0, l_i, 1.0)  # a sequence without keys yields zeros
    out = acc / l_safe[:, None]
    o_ptrs = O + q_rows[:, None] * stride_ot + head * stride_oh + offs_d[None, :]
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=mmask[:, None] & dmask[None, :])


_varlen_fwd_tuned = triton.autotune(configs=_configs(), key=["BLOCK_D", "MAXQ_LOG2", "EXACT_FP32"])(
    _varlen_fwd_kernel)


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                     cu_seqlens_k: torch.Tensor, max_seqlen_q: Optional[int] = None,
                     max_seqlen_k: Optional[int] = None, softmax_scale: Optional[float] = None,
                     autotune: Optional[bool] = None) -> torch.Tensor:
    """Triton varlen attention; same contract as `trellis_kernels.reference.varlen_attention`.

    Pass `max_seqlen_q` to avoid a host sync (it only sizes the grid).
    """
    import os

    tq, nh, d = q.shape
    if k.shape[1:] != (nh, d) or v.shape[1:] != (nh, d) or k.shape[0] != v.shape[0]:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: need [T, H, D] with equal H, D")
    out = torch.empty(tq, nh, d, dtype=q.dtype, device=q.device)
    nseq = cu_seqlens_q.numel() - 1
    if tq == 0 or nh == 0 or nseq <= 0:
        return out
    if d == 0:
        return out
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    cu_q = cu_seqlens_q.to(torch.int32).contiguous()
    cu_k = cu_seqlens_k.to(torch.int32).contiguous()
    if max_seqlen_q is None:
        max_seqlen_q = int((cu_q[1:] - cu_q[:-1]).max().item())
    if max_seqlen_q <= 0:
        return out.zero_()
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    block_d = max(16, triton.next_power_of_2(d))
    exact = q.dtype == torch.float32
    args = (q, k, v, out, cu_q, cu_k, scale * 1.4426950408889634,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
            out.stride(0), out.stride(1), d, max_seqlen_q.bit_length())
    meta = dict(BLOCK_D=block_d, EVEN_D=block_d == d, EXACT_FP32=exact)
    if autotune is None:
        autotune = settings.current().kernels_autotune and q.is_cuda
    if autotune and not exact:
        grid = lambda m: (triton.cdiv(max_seqlen_q, m["BLOCK_M"]), nseq, nh)
        kernel = _varlen_fwd_tuned[grid](*args, **meta)
        _launch_info.record(LAST_LAUNCH, kernel, _varlen_fwd_tuned.best_config)
    else:
        bm, bn = (64, 32) if exact else (64, 64)
        grid = (triton.cdiv(max_seqlen_q, bm), nseq, nh)
        kernel = _varlen_fwd_kernel[grid](*args, **meta, BLOCK_M=bm, BLOCK_N=bn, num_warps=4, num_stages=2)
        _launch_info.record(LAST_LAUNCH, kernel, dict(BLOCK_M=bm, BLOCK_N=bn))
    return out
