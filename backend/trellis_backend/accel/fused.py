"""Fused forwards of the TRELLIS blocks (installed per module instance by `trellis_backend.accel`).

Each function here computes what the module's own `forward` computes, with the
elementwise work of the block fused into `trellis_kernels` ops (Triton on CUDA; their
float32 PyTorch references elsewhere, which is how the CPU tests check the wiring):

- DiT blocks: adaLN modulate+LayerNorm in one pass, the gated residual fused with the next
  norm (`residual_layernorm`), the last gated residual in one pass; per-item modulation
  vectors are read through the row's batch index instead of gathered per row;
- attention: per-head q/k RMS-norm in one pass reading the packed qkv in place; sparse full
  self-attention on separate q/k/v (no restacking);
- MLP: the first linear with its tanh-GELU as a cuBLASLt epilogue (`torch._addmm_activation`,
  the same tanh approximation the model uses);
- sparse conv res-blocks (stage-2 io blocks): affine LN and adaLN in one pass each.

Norm statistics and modulation are float32 inside the kernels (the reference rounds the
LayerNorm32 output to the activation dtype before modulating; here it is rounded once,
after), so results agree with the module forwards to activation-dtype rounding.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

import trellis_kernels as tk

from ..modules.transformer import _adaln
from ..sparse import attention as sattn
from ..sparse.attention import sparse_cross_attention, sparse_windowed_self_attention, varlen_attention


# ------------------------------------------------------------------------------ MLP
_EPILOGUE: dict = {}  # (device, dtype) -> torch._addmm_activation(use_gelu=True) computes the tanh GELU there


def gelu_epilogue_ok(device, dtype) -> bool:
    """Whether `torch._addmm_activation(..., use_gelu=True)` computes the tanh-approximate GELU on this device.

    cuBLASLt's GELU epilogue is the tanh approximation (the one TRELLIS uses); other backends may compute
    the exact (erf) GELU (PyTorch's CPU path does). Probed once per (device, dtype) at a pre-activation of
    -3, where the two differ by 12% (about 30 bf16 ulps); call it outside CUDA-graph capture (host sync).
    """
    if os.environ.get("TRELLIS_ACCEL_GELU_EPILOGUE", "1") == "0":
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


def ffn_forward(self, x):
    """FeedForwardNet.forward."""
    return ffn(self.mlp, x)


def sparse_ffn_forward(self, x):
    """SparseFeedForwardNet.forward."""
    return x.replace(ffn(self.mlp, x.feats))


# ------------------------------------------------------------------------ attention
def _rms(norm, t: torch.Tensor) -> torch.Tensor:
    return tk.qk_rmsnorm(t, norm.gamma)


def _uniform_flags(attn, context):
    """Which batch items have a uniform context (from the K/V cache entry; None without the cache)."""
    if os.environ.get("TRELLIS_ACCEL_UNIFORM_CONTEXT", "1") == "0":
        return None
    cache = attn.__dict__.get("context_kv")
    uniform = getattr(cache, "uniform", None)
    flags = uniform(context) if uniform is not None else None
    return flags if flags and any(flags) else None


def _runs(flags):
    """Consecutive runs (start, stop, uniform) of equal flags."""
    out, start = [], 0
    for i in range(1, len(flags) + 1):
        if i == len(flags) or flags[i] != flags[start]:
            out.append((start, i, flags[start]))
            start = i
    return out


def _value_row_out(attn, v: torch.Tensor, item: int) -> torch.Tensor:
    """Attention output of an item whose keys are all equal: its value row, projected (`[1, C]`)."""
    return attn.to_out(v[item, 0].reshape(1, -1))


def mha_forward(self, x: torch.Tensor, context=None) -> torch.Tensor:
    """MultiHeadAttention.forward (dense; full self- or cross-attention).

    Cross-attention skips batch items whose context is uniform (every key equal: the softmax is uniform,
    the output is the value row; e.g. the zero negative condition of the CFG batch).
    """
    b, l, _ = x.shape
    if self._type == "self":
        q, k, v = self.to_qkv(x).reshape(b, l, 3, self.num_heads, -1).unbind(dim=2)
        if self.qk_rms_norm:
            q, k = _rms(self.q_rms_norm, q), _rms(self.k_rms_norm, k)
        return _dense_attend(self, q, k, v)
    k, v = self.context_kv(context)
    flags = _uniform_flags(self, context)
    if flags is None:
        return _dense_attend(self, _dense_q(self, x), k, v)
    pieces = []
    for a, z, uniform in _runs(flags):
        if uniform:
            for i in range(a, z):
                pieces.append(_value_row_out(self, v, i).expand(1, l, -1))
        else:
            pieces.append(_dense_attend(self, _dense_q(self, x[a:z]), k[a:z], v[a:z]))
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=0)


def _dense_q(attn, x: torch.Tensor) -> torch.Tensor:
    q = attn.to_q(x).reshape(x.shape[0], x.shape[1], attn.num_heads, -1)
    return _rms(attn.q_rms_norm, q) if attn.qk_rms_norm else q


def _dense_attend(attn, q, k, v) -> torch.Tensor:
    b, l = q.shape[:2]
    h = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return attn.to_out(h.transpose(1, 2).reshape(b, l, -1))


def _cu_seqlens(x, key: str, lens) -> torch.Tensor:
    """cu_seqlens of `lens` on x's device, kept in x's spatial cache (no host->device copy per call, so the
    ragged path stays capturable in a CUDA graph)."""
    cu = x.get_spatial_cache(key)
    if cu is None or cu.device != x.device:
        offsets = [0]
        for n in lens:
            offsets.append(offsets[-1] + n)
        cu = torch.tensor(offsets, dtype=torch.int32, device=x.device)
        x.register_spatial_cache(key, cu)
    return cu


def _varlen(x, q, k, v, kv_len: int = 0):
    """Attention of each batch item's rows of q on its keys: the item's own rows (kv_len=0, self-attention)
    or `kv_len` context rows per item (cross-attention). Equal lengths: SDPA (cuDNN/flash); ragged: the
    registered varlen kernel with cu_seqlens cached per voxel set; else the padded SDPA reference."""
    lens = x.seqlens
    kv_lens = [kv_len] * len(lens) if kv_len else lens
    kernel = sattn.get_varlen_kernel()
    if len(set(lens)) <= 1 or kernel is None or not q.is_cuda:
        return varlen_attention(q, k, v, lens, kv_lens)
    cu_q = _cu_seqlens(x, "accel_cu_seqlens", lens)
    cu_k = _cu_seqlens(x, f"accel_cu_seqlens_kv{kv_len}", kv_lens) if kv_len else cu_q
    return kernel(q, k, v, cu_q, cu_k, max(lens), max(kv_lens))


def sparse_mha_forward(self, x, context=None):
    """SparseMultiHeadAttention.forward."""
    heads = self.num_heads
    d = self.channels // heads
    if self._type == "self":
        qkv = self.to_qkv(x.feats).reshape(-1, 3, heads, d)
        if self.attn_mode == "full":
            q, k, v = qkv.unbind(dim=1)
            if self.qk_rms_norm:
                q, k = _rms(self.q_rms_norm, q), _rms(self.k_rms_norm, k)
            h = _varlen(x, q, k, v)
        else:
            if self.qk_rms_norm:
                q, k, v = qkv.unbind(dim=1)
                qkv = torch.stack([_rms(self.q_rms_norm, q), _rms(self.k_rms_norm, k), v], dim=1)
            h = sparse_windowed_self_attention(x.replace(qkv), self.window_size, self.shift_window).feats
    else:
        kv = self.context_kv(context)
        flags = _uniform_flags(self, context)
        if flags is not None and x.feats.shape[0] > 0:
            return x.replace(_sparse_cross_uniform(self, x, kv, flags))
        q = self.to_q(x.feats).reshape(-1, heads, d)
        if self.qk_rms_norm:
            q = _rms(self.q_rms_norm, q)
        if x.feats.shape[0] == 0:
            h = sparse_cross_attention(x.replace(q), kv).feats
        else:
            b, lc = kv.shape[:2]
            k, v = kv.reshape(b * lc, *kv.shape[2:]).unbind(dim=1)
            h = _varlen(x, q, k, v, kv_len=lc)
    return x.replace(self.to_out(h.reshape(h.shape[0], -1)))


def _sparse_cross_uniform(attn, x, kv: torch.Tensor, flags) -> torch.Tensor:
    """Sparse cross-attention output rows, skipping the attention of items with a uniform context."""
    heads = attn.num_heads
    d = attn.channels // heads
    layout = x.layout
    lc = kv.shape[1]
    pieces = []
    for a, z, uniform in _runs(flags):
        if uniform:
            v = kv[:, :1, 1]  # [B, 1, H, D]
            for i in range(a, z):
                n = layout[i].stop - layout[i].start
                pieces.append(_value_row_out(attn, v, i).expand(n, -1))
            continue
        r0, r1 = layout[a].start, layout[z - 1].stop
        q = attn.to_q(x.feats[r0:r1]).reshape(-1, heads, d)
        if attn.qk_rms_norm:
            q = _rms(attn.q_rms_norm, q)
        k, v = kv[a:z].reshape((z - a) * lc, *kv.shape[2:]).unbind(dim=1)
        lens = [layout[i].stop - layout[i].start for i in range(a, z)]
        h = varlen_attention(q, k, v, lens, [lc] * (z - a))
        pieces.append(attn.to_out(h.reshape(h.shape[0], -1)))
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=0)


# ---------------------------------------------------------------------------- blocks
def _affine(norm):
    return getattr(norm, "weight", None), getattr(norm, "bias", None)


def dit_block_forward(self, x: torch.Tensor, mod: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """ModulatedTransformerCrossBlock.forward (stage-1 DiT block)."""
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = _adaln(self, mod)
    h = tk.modulated_layernorm(x, shift_msa, scale_msa, eps=self.norm1.eps)
    w2, b2 = _affine(self.norm2)
    x, h = tk.residual_layernorm(x, self.self_attn(h), gate_msa, weight=w2, bias=b2, eps=self.norm2.eps)
    x, h = tk.residual_layernorm(x, self.cross_attn(h, context), shift=shift_mlp, scale=scale_mlp,
                                 eps=self.norm3.eps)
    return tk.gated_residual(x, ffn(self.mlp.mlp, h), gate_mlp)


def sparse_dit_block_forward(self, x, mod: torch.Tensor, context: torch.Tensor):
    """ModulatedSparseTransformerCrossBlock.forward (stage-2 DiT block)."""
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = _adaln(self, mod)
    bi = x.batch_index
    f = x.feats
    h = tk.modulated_layernorm(f, shift_msa, scale_msa, eps=self.norm1.eps, batch_index=bi)
    a = self.self_attn(x.replace(h)).feats
    w2, b2 = _affine(self.norm2)
    f, h = tk.residual_layernorm(f, a, gate_msa, weight=w2, bias=b2, eps=self.norm2.eps, batch_index=bi)
    c = self.cross_attn(x.replace(h), context).feats
    f, h = tk.residual_layernorm(f, c, shift=shift_mlp, scale=scale_mlp, eps=self.norm3.eps, batch_index=bi)
    return x.replace(tk.gated_residual(f, ffn(self.mlp.mlp, h), gate_mlp, batch_index=bi))


def sparse_block_forward(self, x):
    """SparseTransformerBlock.forward (SLat VAE torso)."""
    f = x.feats
    w1, b1 = _affine(self.norm1)
    _, h = tk.residual_layernorm(f, weight=w1, bias=b1, eps=self.norm1.eps)
    a = self.attn(x.replace(h)).feats
    w2, b2 = _affine(self.norm2)
    f, h = tk.residual_layernorm(f, a, weight=w2, bias=b2, eps=self.norm2.eps)
    return x.replace(f + ffn(self.mlp.mlp, h))


def sparse_resblock_forward(self, x, emb: torch.Tensor):
    """SparseResBlock3d.forward (stage-2 flow io blocks)."""
    scale, shift = self.emb_layers(emb).type(x.dtype).chunk(2, dim=1)
    if self.updown is not None:
        x = self.updown(x)
    w1, b1 = _affine(self.norm1)
    _, h = tk.residual_layernorm(x.feats, weight=w1, bias=b1, eps=self.norm1.eps)
    h = self.conv1(x.replace(F.silu(h)))
    hn = tk.modulated_layernorm(h.feats, shift, scale, eps=self.norm2.eps, batch_index=h.batch_index)
    h = self.conv2(h.replace(F.silu(hn)))
    return h + self.skip_connection(x)


def forwards_for(module: torch.nn.Module):
    """The fused forward for this module's class, or None."""
    from ..models.slat_flow import SparseResBlock3d
    from ..modules.attention import MultiHeadAttention, SparseMultiHeadAttention
    from ..modules.transformer import (FeedForwardNet, ModulatedSparseTransformerCrossBlock,
                                       ModulatedTransformerCrossBlock, SparseFeedForwardNet, SparseTransformerBlock)

    table = [
        (ModulatedTransformerCrossBlock, dit_block_forward),
        (ModulatedSparseTransformerCrossBlock, sparse_dit_block_forward),
        (SparseTransformerBlock, sparse_block_forward),
        (SparseResBlock3d, sparse_resblock_forward),
        (MultiHeadAttention, mha_forward),
        (SparseMultiHeadAttention, sparse_mha_forward),
        (FeedForwardNet, ffn_forward),
        (SparseFeedForwardNet, sparse_ffn_forward),
    ]
    if _uses_trellis2_options(module):
        return None  # the fused forwards implement TRELLIS's options only (no rope, no modulation offsets)
    for cls, fn in table:
        if type(module) is cls:
            return fn
    return None


def _uses_trellis2_options(module: torch.nn.Module) -> bool:
    """Rotary self-attention or per-block modulation offsets (TRELLIS.2), which the fused forwards lack."""
    if getattr(module, "use_rope", False) or getattr(module, "modulation_offset", False):
        return True
    attn = getattr(module, "self_attn", None)
    return bool(getattr(attn, "use_rope", False))
