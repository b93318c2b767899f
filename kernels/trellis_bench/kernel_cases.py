"""Kernel cases of the benchmark (groups "conv", "attention", "elementwise"): each Triton kernel of
`trellis_kernels` against the PyTorch op the backend would otherwise run, at the shapes of the
official TRELLIS-image-large stages.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from trellis_kernels import _launch_info
from trellis_kernels import reference as ref
from trellis_kernels.neighbors import build_neighbor_map

from .harness import Bench, cu_from_lengths, group_lengths, register, rel_err, shell_coords, subdivide

# ----------------------------------------------------------------------------- torch baselines
def torch_conv_gather_gemm_scatter(feats, nbr, w_kcn, bias):
    """The backend's pure-PyTorch conv: per offset, gather the rows that have a neighbour, GEMM, index_add."""
    out = feats.new_zeros(feats.shape[0], w_kcn.shape[2])
    center = w_kcn.shape[0] // 2
    for k in range(w_kcn.shape[0]):
        if k == center:
            out += feats @ w_kcn[k]
            continue
        idx = nbr[:, k]
        rows = (idx >= 0).nonzero(as_tuple=True)[0]
        out.index_add_(0, rows, feats[idx[rows].long()] @ w_kcn[k])
    if bias is not None:
        out += bias
    return out


def torch_conv_im2col(feats, nbr, w_kcn, bias):
    """Gather all 27 neighbours into one [N, 27·Cin] matrix (zero row for -1), then a single cuBLAS GEMM."""
    n, cin = feats.shape
    padded = torch.cat([feats, feats.new_zeros(1, cin)])
    idx = torch.where(nbr >= 0, nbr.long(), n)
    cols = padded[idx].reshape(n, -1)
    out = cols @ w_kcn.reshape(-1, w_kcn.shape[2])
    return out + bias if bias is not None else out


def sdpa(q, k, v, backend=None, mask=None):
    """q/k/v `[B, L, H, D]` -> `[B, L, H, D]` through SDPA, optionally pinned to one backend."""
    from torch.nn.attention import sdpa_kernel

    qb, kb, vb = (t.transpose(1, 2) for t in (q, k, v))
    if backend is None:
        return F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask).transpose(1, 2)
    with sdpa_kernel(backend):
        return F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask).transpose(1, 2)


def sdpa_padded(q, k, v, lengths: torch.Tensor, max_len: int, backend=None):
    """The backend's varlen path: scatter packed rows to `[G, Lmax, H, D]`, key-padding mask, SDPA, gather."""
    g = lengths.shape[0]
    group = torch.repeat_interleave(torch.arange(g, device=q.device), lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    pos = torch.arange(q.shape[0], device=q.device) - starts[group]

    def pack(x):
        out = x.new_zeros(g, max_len, *x.shape[1:])
        out[group, pos] = x
        return out

    mask = (torch.arange(max_len, device=q.device)[None, :] < lengths[:, None])[:, None, None, :]
    out = sdpa(pack(q), pack(k), pack(v), backend, mask)
    return out[group, pos]


# ----------------------------------------------------------------------------- cases: sparse conv
def _conv_case(bench: Bench, coords: torch.Tensor, cin: int, cout: int, dtype=torch.bfloat16):
    from trellis_kernels import conv_triton

    dev = coords.device
    nbr = build_neighbor_map(coords)
    n = coords.shape[0]
    feats = torch.randn(n, cin, device=dev, dtype=dtype)
    weight = (torch.randn(cout, 3, 3, 3, cin, device=dev) / math.sqrt(27 * cin)).to(dtype)  # spconv layout
    bias = torch.randn(cout, device=dev, dtype=dtype)
    w_kcn = ref.conv_weight_kcn(weight).contiguous()
    flops = 2.0 * n * 27 * cin * cout
    pairs = int((nbr >= 0).sum())
    bench.row("torch gather-GEMM-scatter (backend ref)", lambda: torch_conv_gather_gemm_scatter(feats, nbr, w_kcn, bias),
              flops=flops, note=f"{pairs / n:.1f} active offsets/voxel", graph=False)
    if n * 27 * cin * 2 < 16e9:
        bench.row("torch im2col + one cuBLAS GEMM", lambda: torch_conv_im2col(feats, nbr, w_kcn, bias), flops=flops)
    a = torch.randn(n, 27 * cin, device=dev, dtype=dtype)
    b = w_kcn.reshape(-1, cout)
    bench.row("cuBLAS dense GEMM [N,27Cin]x[27Cin,Cout] (floor)", lambda: a @ b, flops=flops,
              note="no gather: the roofline this kernel aims at")
    del a
    out = conv_triton.sparse_conv3d(feats, nbr, weight, bias)
    err = rel_err(out, ref.sparse_conv3d(feats.float(), nbr, weight.float(), bias.float()))
    bench.row("triton implicit GEMM", lambda: conv_triton.sparse_conv3d(feats, nbr, weight, bias), flops=flops,
              err=err, note=_launch_info.summary(conv_triton.LAST_LAUNCH))
    run1 = dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, num_warps=8, num_stages=3)
    bench.row("triton, offset-outer loop (round-1 kernel)",
              lambda: conv_triton.sparse_conv3d(feats, nbr, weight, bias, config=run1, channel_outer=False),
              flops=flops, note="BM128 BN128 BK64 w8 s3")


@register("conv", "stage2 io block 64^3 (2x20K vox, 128->128)")
def _b_conv_io(bench):
    """Stage-2 flow input/output res blocks at 64³, CFG batch of 2."""
    _conv_case(bench, shell_coords(64, 20000, batch=2), 128, 128)


@register("conv", "stage2 out block 64^3 (2x20K vox, 2048->128)")
def _b_conv_out(bench):
    """out_blocks.0.conv1: skip-concatenated 2048 channels after upsampling to 64³."""
    _conv_case(bench, shell_coords(64, 20000, batch=2), 2048, 128)


@register("conv", "stage2 32^3 (2x~5.5K vox, 1024->1024)")
def _b_conv_mid(bench):
    """input_blocks.1.conv2 at 32³ (after the downsample)."""
    c = shell_coords(64, 20000, batch=2)
    c = torch.unique(torch.cat([c[:, :1], torch.div(c[:, 1:], 2, rounding_mode="floor")], 1), dim=0).int()
    _conv_case(bench, c, 1024, 1024)


@register("conv", "mesh dec 128^3 (160K vox, 768->192)")
def _b_conv_mesh1(bench):
    """Mesh decoder upsample.0 first conv: 20K voxels subdivided once."""
    _conv_case(bench, subdivide(shell_coords(64, 20000)), 768, 192)


@register("conv", "mesh dec 256^3 (1.28M vox, 192->96)")
def _b_conv_mesh2(bench):
    """Mesh decoder upsample.1 first conv: 20K voxels subdivided twice."""
    _conv_case(bench, subdivide(subdivide(shell_coords(64, 20000))), 192, 96)


@register("conv", "neighbour map build (20K vox / 1.28M vox)")
def _b_nbr(bench):
    """build_neighbor_map (sort + searchsorted) at 20K and 1.28M voxels."""
    c1 = shell_coords(64, 20000)
    c2 = subdivide(subdivide(c1))
    bench.row(f"torch sort+searchsorted, N={c1.shape[0]}", lambda: build_neighbor_map(c1), graph=False)
    bench.row(f"torch sort+searchsorted, N={c2.shape[0]}", lambda: build_neighbor_map(c2), baseline=True, graph=False)


# ----------------------------------------------------------------------------- cases: attention
def _sdpa_backends():
    from torch.nn.attention import SDPBackend

    return [("SDPA flash", SDPBackend.FLASH_ATTENTION), ("SDPA cuDNN", SDPBackend.CUDNN_ATTENTION),
            ("SDPA mem-efficient", SDPBackend.EFFICIENT_ATTENTION)]


def _attn_flops(lq: torch.Tensor, lk: torch.Tensor, h: int, d: int) -> float:
    return float(4.0 * h * d * (lq.double() * lk.double()).sum())


def _dense_attn_case(bench: Bench, b: int, lq: int, lk: int, h: int = 16, d: int = 64, dtype=torch.bfloat16):
    from trellis_kernels import attention_triton

    q = torch.randn(b, lq, h, d, device="cuda", dtype=dtype)
    k = torch.randn(b, lk, h, d, device="cuda", dtype=dtype)
    v = torch.randn(b, lk, h, d, device="cuda", dtype=dtype)
    flops = 4.0 * b * h * lq * lk * d
    bench.row("SDPA (default backend choice)", lambda: sdpa(q, k, v), flops=flops)
    for name, be in _sdpa_backends():
        bench.row(name, lambda be=be: sdpa(q, k, v, be), flops=flops)
    qp, kp, vp = q.reshape(-1, h, d), k.reshape(-1, h, d), v.reshape(-1, h, d)
    cq = torch.arange(b + 1, device="cuda", dtype=torch.int32) * lq
    ck = torch.arange(b + 1, device="cuda", dtype=torch.int32) * lk
    out = attention_triton.varlen_attention(qp, kp, vp, cq, ck, lq, lk)
    want = sdpa(q.float(), k.float(), v.float()).reshape(-1, h, d)
    bench.row("triton varlen flash fwd", lambda: attention_triton.varlen_attention(qp, kp, vp, cq, ck, lq, lk),
              flops=flops, err=rel_err(out, want), note=_launch_info.summary(attention_triton.LAST_LAUNCH))


@register("attention", "stage1 self-attn dense (B=2, L=4096, 16x64)")
def _b_attn_s1(bench):
    """Stage-1 DiT-L self-attention, cond+uncond batched."""
    _dense_attn_case(bench, 2, 4096, 4096)


@register("attention", "stage1 cross-attn dense (B=2, 4096 x 1374 cond tokens)")
def _b_attn_s1x(bench):
    """Stage-1 cross-attention on the DINOv2 tokens."""
    _dense_attn_case(bench, 2, 4096, 1374)


def _varlen_case(bench: Bench, lengths: torch.Tensor, h: int, d: int, dtype=torch.bfloat16, loop_ok=True):
    from trellis_kernels import attention_triton

    lengths = lengths.to("cuda")
    t = int(lengths.sum())
    max_len = int(lengths.max())
    qkv = torch.randn(t, 3, h, d, device="cuda", dtype=dtype)
    q, k, v = qkv.unbind(1)
    cu = cu_from_lengths(lengths)
    flops = _attn_flops(lengths, lengths, h, d)
    from torch.nn.attention import SDPBackend

    bench.row("SDPA padded + key mask (backend ref)", lambda: sdpa_padded(q, k, v, lengths, max_len), flops=flops,
              note=f"{lengths.numel()} seqs, max {max_len}, mean {t / lengths.numel():.0f}", graph=False)
    bench.row("SDPA padded, mem-efficient + mask",
              lambda: sdpa_padded(q, k, v, lengths, max_len, SDPBackend.EFFICIENT_ATTENTION), flops=flops, graph=False)
    if loop_ok:
        lens = lengths.tolist()

        def loop():
            outs, s = [], 0
            for n in lens:
                outs.append(sdpa(q[None, s:s + n], k[None, s:s + n], v[None, s:s + n], SDPBackend.FLASH_ATTENTION)[0])
                s += n
            return torch.cat(outs)

        bench.row("SDPA flash, loop over sequences", loop, flops=flops)

    qc, kc, vc = q.contiguous(), k.contiguous(), v.contiguous()  # jagged SDPA wants contiguous q/k/v

    def nested():
        offs = cu.long()
        qn, kn, vn = (torch.nested.nested_tensor_from_jagged(x, offs) for x in (qc, kc, vc))
        return sdpa(qn, kn, vn).values()

    bench.row("SDPA on nested jagged tensors", nested, flops=flops, graph=False)
    out = attention_triton.varlen_attention(q, k, v, cu, cu, max_len, max_len)
    want = ref.varlen_attention(q.float(), k.float(), v.float(), cu, cu)
    bench.row("triton varlen flash fwd", lambda: attention_triton.varlen_attention(q, k, v, cu, cu, max_len, max_len),
              flops=flops, err=rel_err(out, want), note=_launch_info.summary(attention_triton.LAST_LAUNCH))


@register("attention", "stage2 self-attn CFG (2 equal items, 16x64)")
def _b_attn_s2(bench):
    """Stage-2 full attention over the 2×2×2 patches of a 20K-voxel shell, cond+uncond (equal lengths)."""
    from trellis_kernels import attention_triton

    n_tok = int(group_lengths(shell_coords(64, 20000), 2).numel())
    _dense_attn_case(bench, 2, n_tok, n_tok)


@register("attention", "stage2 self-attn ragged batch (4 items, 16x64)")
def _b_attn_s2r(bench):
    """Four different objects in one batch: 2.2K-5.7K tokens each."""
    _varlen_case(bench, torch.tensor([5700, 3100, 4500, 2200]), 16, 64)


@register("attention", "decoder swin windows 8^3 (20K vox, 12x64)")
def _b_attn_swin(bench):
    """SLAT decoder shifted-window attention: 20K voxels at 64³ in 8³ windows (shift 4)."""
    lengths = group_lengths(shell_coords(64, 20000), 8, shift=4)
    _varlen_case(bench, lengths, 12, 64, loop_ok=False)


# ----------------------------------------------------------------------------- cases: DiT elementwise
def _torch_mod_ln(x, shift, scale):
    """TRELLIS: LayerNorm32 (float32, no affine) cast back, then * (1 + scale) + shift in the activation dtype."""
    h = F.layer_norm(x.float(), x.shape[-1:], eps=1e-6).to(x.dtype)
    if x.dim() == 3:
        return h * (1 + scale.to(x.dtype)[:, None]) + shift.to(x.dtype)[:, None]
    return h * (1 + scale.to(x.dtype)) + shift.to(x.dtype)


@register("elementwise", "adaLN modulated LN dense [2,4096,1024]")
def _b_modln(bench):
    from trellis_kernels import norm_triton

    x = torch.randn(2, 4096, 1024, device="cuda", dtype=torch.bfloat16)
    mod = torch.randn(2, 6 * 1024, device="cuda", dtype=torch.bfloat16)
    shift, scale = mod.chunk(6, dim=1)[:2]
    nbytes = 2 * x.numel() * 2
    bench.row("torch LayerNorm32 + modulate", lambda: _torch_mod_ln(x, shift, scale), nbytes=nbytes)
    err = rel_err(norm_triton.modulated_layernorm(x, shift, scale), ref.modulated_layernorm(x.float(), shift, scale))
    bench.row("triton fused", lambda: norm_triton.modulated_layernorm(x, shift, scale), nbytes=nbytes, err=err)


@register("elementwise", "adaLN modulated LN sparse [2x5.7K,1024] + batch index")
def _b_modln_sparse(bench):
    from trellis_kernels import norm_triton

    lens = torch.tensor([5700, 5700], device="cuda")
    bi = torch.repeat_interleave(torch.arange(2, device="cuda"), lens)
    x = torch.randn(int(lens.sum()), 1024, device="cuda", dtype=torch.bfloat16)
    mod = torch.randn(2, 6 * 1024, device="cuda", dtype=torch.bfloat16)
    shift, scale = mod.chunk(6, dim=1)[:2]
    nbytes = 2 * x.numel() * 2
    bench.row("torch LayerNorm32 + modulate (gathered per row)",
              lambda: _torch_mod_ln(x, shift[bi], scale[bi]), nbytes=nbytes)
    err = rel_err(norm_triton.modulated_layernorm(x, shift, scale, batch_index=bi),
                  ref.modulated_layernorm(x.float(), shift, scale, batch_index=bi))
    bench.row("triton fused", lambda: norm_triton.modulated_layernorm(x, shift, scale, batch_index=bi),
              nbytes=nbytes, err=err)


@register("elementwise", "gated residual dense [2,4096,1024]")
def _b_gres(bench):
    from trellis_kernels import norm_triton

    x = torch.randn(2, 4096, 1024, device="cuda", dtype=torch.bfloat16)
    h = torch.randn_like(x)
    gate = torch.randn(2, 6 * 1024, device="cuda", dtype=torch.bfloat16).chunk(6, dim=1)[2]
    nbytes = 3 * x.numel() * 2
    bench.row("torch x + h * gate", lambda: x + h * gate[:, None], nbytes=nbytes)
    err = rel_err(norm_triton.gated_residual(x, h, gate), ref.gated_residual(x.float(), h.float(), gate))
    bench.row("triton fused", lambda: norm_triton.gated_residual(x, h, gate), nbytes=nbytes, err=err)


@register("elementwise", "gated residual + adaLN (next norm) [2,4096,1024]")
def _b_resnorm(bench):
    """x = x + h·gate_msa followed by norm3 + modulate (the seam between two halves of a DiT block)."""
    from trellis_kernels import norm_triton

    x = torch.randn(2, 4096, 1024, device="cuda", dtype=torch.bfloat16)
    h = torch.randn_like(x)
    gate, shift, scale = torch.randn(2, 6 * 1024, device="cuda", dtype=torch.bfloat16).chunk(6, dim=1)[:3]
    nbytes = 4 * x.numel() * 2  # read x, h; write x_out, y

    def torch_unfused():
        xo = x + h * gate[:, None]
        return xo, _torch_mod_ln(xo, shift, scale)

    def triton_unfused():
        xo = norm_triton.gated_residual(x, h, gate)
        return xo, norm_triton.modulated_layernorm(xo, shift, scale)

    bench.row("torch (residual, LayerNorm32, modulate)", torch_unfused, nbytes=nbytes)
    bench.row("triton gated_residual + modulated_layernorm", triton_unfused, nbytes=nbytes)
    xo, y = norm_triton.residual_layernorm(x, h, gate, shift, scale)
    _, want = ref.residual_layernorm(xo.float(), shift=shift, scale=scale)
    err = max(rel_err(xo, ref.gated_residual(x.float(), h.float(), gate)), rel_err(y, want))
    bench.row("triton residual_layernorm (fused)", lambda: norm_triton.residual_layernorm(x, h, gate, shift, scale),
              nbytes=nbytes, err=err)


@register("elementwise", "qk RMS-norm q of packed qkv [2,4096,3,16,64]")
def _b_qk(bench):
    from trellis_kernels import norm_triton

    qkv = torch.randn(2, 4096, 3, 16, 64, device="cuda", dtype=torch.bfloat16)
    q = qkv[:, :, 0]
    gamma = torch.randn(16, 64, device="cuda")
    nbytes = 2 * q.numel() * 2
    bench.row("torch MultiHeadRMSNorm", lambda: (F.normalize(q.float(), dim=-1) * gamma * 8.0).to(q.dtype),
              nbytes=nbytes)
    err = rel_err(norm_triton.qk_rmsnorm(q, gamma), ref.qk_rmsnorm(q.float(), gamma))
    bench.row("triton fused", lambda: norm_triton.qk_rmsnorm(q, gamma), nbytes=nbytes, err=err)
