"""Attention over sparse tokens on torch SDPA: per-item (varlen) full attention and shifted windows.

Variable-length groups (batch items, or windows) are packed into a padded
batch with a key-padding mask, so one SDPA call serves them all; groups that
are all the same length skip the mask. A varlen `kernel` (the fast path's
`trellis_kernels.varlen_attention`, looked up by the attention modules in
`trellis_backend.fastpath`) serves ragged groups and windows instead of the padded
SDPA wherever it is given (the fast path gives it for CUDA tensors; CPU tests give
the kernel's float32 reference); equal-length groups stay on SDPA (cuDNN/flash).
A kernel is `fn(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k) -> [Tq, H, C]`.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .tensor import SparseTensor


def _use_kernel(kernel: Optional[Callable], x: torch.Tensor) -> bool:
    """A kernel is given only by the fast path: for CUDA tensors, and in CPU tests (`accel.enable(_cpu_kernels=
    True)`: trellis_kernels' float32 references through the same calls)."""
    return kernel is not None


def _cu_seqlens(lengths: torch.Tensor) -> torch.Tensor:
    return torch.cat([lengths.new_zeros(1), torch.cumsum(lengths, 0)]).to(torch.int32)


def _pack(x: torch.Tensor, group: torch.Tensor, pos: torch.Tensor, n_groups: int, max_len: int) -> torch.Tensor:
    """Scatter rows `[T, H, C]` into `[G, L, H, C]` at (group, position)."""
    out = x.new_zeros(n_groups, max_len, *x.shape[1:])
    out[group, pos] = x
    return out


def _group_positions(lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """For consecutive groups of the given lengths: each row's group and position in it."""
    group = torch.repeat_interleave(torch.arange(lengths.shape[0], device=lengths.device), lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    pos = torch.arange(group.shape[0], device=lengths.device) - starts[group]
    return group, pos


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     q_lens: Sequence[int], kv_lens: Sequence[int], kernel: Optional[Callable] = None,
                     cu_seqlens: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
    """Attention of consecutive groups of queries `[Tq, H, C]` on their own keys/values `[Tk, H, C]`.

    Ragged CUDA groups go to `kernel` when given, with `cu_seqlens` (q, k) when the caller keeps them."""
    n = len(q_lens)
    if n == 0 or q.shape[0] == 0:
        return q.new_zeros(q.shape[0], q.shape[1], v.shape[-1])
    if len(set(q_lens)) == 1 and len(set(kv_lens)) == 1:
        qb = q.reshape(n, q_lens[0], *q.shape[1:]).transpose(1, 2)
        kb = k.reshape(n, kv_lens[0], *k.shape[1:]).transpose(1, 2)
        vb = v.reshape(n, kv_lens[0], *v.shape[1:]).transpose(1, 2)
        out = F.scaled_dot_product_attention(qb, kb, vb)
        return out.transpose(1, 2).reshape(q.shape[0], q.shape[1], v.shape[-1])
    if _use_kernel(kernel, q):
        if cu_seqlens is None:
            cu_seqlens = (_cu_seqlens(torch.as_tensor(list(q_lens), device=q.device)),
                          _cu_seqlens(torch.as_tensor(list(kv_lens), device=q.device)))
        return kernel(q, k, v, cu_seqlens[0], cu_seqlens[1], max(q_lens), max(kv_lens))
    ql = torch.as_tensor(list(q_lens), device=q.device)
    kl = torch.as_tensor(list(kv_lens), device=q.device)
    qg, qp = _group_positions(ql)
    kg, kp = _group_positions(kl)
    lq, lk = max(q_lens), max(kv_lens)
    qb = _pack(q, qg, qp, n, lq).transpose(1, 2)
    kb = _pack(k, kg, kp, n, lk).transpose(1, 2)
    vb = _pack(v, kg, kp, n, lk).transpose(1, 2)
    mask = torch.arange(lk, device=q.device)[None, :] < kl[:, None]  # [G, Lk]
    out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask[:, None, None, :])
    return out.transpose(1, 2)[qg, qp]


def _cached_cu_seqlens(x: SparseTensor, key: str, lens: Sequence[int]) -> torch.Tensor:
    """cu_seqlens of `lens` on x's device, kept in x's spatial cache: no host->device copy per call, so the
    ragged kernel path stays capturable in a CUDA graph."""
    cu = x.get_spatial_cache(key)
    if cu is None or cu.device != x.device:
        offsets = [0]
        for n in lens:
            offsets.append(offsets[-1] + n)
        cu = torch.tensor(offsets, dtype=torch.int32, device=x.device)
        x.register_spatial_cache(key, cu)
    return cu


def attend_per_item(x: SparseTensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_len: int = 0,
                    kernel: Optional[Callable] = None) -> torch.Tensor:
    """Attention of each batch item's rows of `q` `[T, H, C]` on its own rows of k/v (`kv_len=0`: self-attention
    over x's voxels) or on `kv_len` context rows per item (cross-attention); `[T, H, C]`."""
    lens = x.seqlens
    kv_lens = [kv_len] * len(lens) if kv_len else lens
    cu = None
    if len(set(lens)) > 1 and _use_kernel(kernel, q):  # the ragged kernel path: cu_seqlens once per voxel set
        cu_q = _cached_cu_seqlens(x, "attn_cu_seqlens", lens)
        cu = (cu_q, _cached_cu_seqlens(x, f"attn_cu_seqlens_kv{kv_len}", kv_lens) if kv_len else cu_q)
    return varlen_attention(q, k, v, lens, kv_lens, kernel=kernel, cu_seqlens=cu)


def sparse_self_attention(qkv: SparseTensor, kernel: Optional[Callable] = None) -> SparseTensor:
    """Full self-attention within each batch item; `qkv.feats` is `[T, 3, H, C]`."""
    q, k, v = qkv.feats.unbind(dim=1)
    return qkv.replace(attend_per_item(qkv, q, k, v, kernel=kernel))


def sparse_cross_attention(q: SparseTensor, kv: torch.Tensor, kernel: Optional[Callable] = None) -> SparseTensor:
    """Each batch item's voxels attend to its dense context `kv` `[B, L, 2, H, C]`."""
    b, l = kv.shape[:2]
    k, v = kv.reshape(b * l, *kv.shape[2:]).unbind(dim=1)
    return q.replace(attend_per_item(q, q.feats, k, v, kv_len=l, kernel=kernel))


def window_partition(x: SparseTensor, window_size: int, shift: int):
    """Group voxels into cubic windows (after shifting coords by `shift`); cached per tensor scale.

    Returns (order, group, pos, n_groups, max_len): rows sorted window by window,
    each row's window and position in it.
    """
    key = f"window_{window_size}_{shift}"
    cached = x.get_spatial_cache(key)
    if cached is not None:
        return cached
    c = x.coords.long().clone()
    c[:, 1:] += shift
    c[:, 1:] = torch.div(c[:, 1:], window_size, rounding_mode="floor")
    n_win = c[:, 1:].max(dim=0).values + 1
    wid = ((c[:, 0] * n_win[0] + c[:, 1]) * n_win[1] + c[:, 2]) * n_win[2] + c[:, 3]
    order = torch.argsort(wid, stable=True)
    _, lengths = torch.unique_consecutive(wid[order], return_counts=True)
    group, pos = _group_positions(lengths)
    result = (order, group, pos, int(lengths.shape[0]), int(lengths.max().item()), lengths)
    x.register_spatial_cache(key, result)
    return result


def sparse_windowed_self_attention(qkv: SparseTensor, window_size: int, shift: int,
                                   kernel: Optional[Callable] = None) -> SparseTensor:
    """Self-attention inside non-overlapping cubic windows (Swin-style shift by `shift` voxels)."""
    if qkv.feats.shape[0] == 0:
        return qkv.replace(qkv.feats[:, 0])
    order, group, pos, n_groups, max_len, lengths = window_partition(qkv, window_size, shift)
    q, k, v = qkv.feats[order].unbind(dim=1)
    if _use_kernel(kernel, q):
        key = f"window_{window_size}_{shift}_cu"
        cu = qkv.get_spatial_cache(key)
        if cu is None:
            cu = _cu_seqlens(lengths)
            qkv.register_spatial_cache(key, cu)
        out = kernel(q, k, v, cu, cu, max_len, max_len)
        result = torch.empty_like(out)
        result[order] = out
        return qkv.replace(result)
    qb = _pack(q, group, pos, n_groups, max_len).transpose(1, 2)
    kb = _pack(k, group, pos, n_groups, max_len).transpose(1, 2)
    vb = _pack(v, group, pos, n_groups, max_len).transpose(1, 2)
    mask = torch.arange(max_len, device=q.device)[None, :] < lengths[:, None]
    out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask[:, None, None, :])
    out = out.transpose(1, 2)[group, pos]
    result = torch.empty_like(out)
    result[order] = out
    return qkv.replace(result)
