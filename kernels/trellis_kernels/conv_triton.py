"""Submanifold sparse 3D convolution as a Triton implicit GEMM.

out[i, :] = bias + sum_k sum_c feats[nbr[i, k], c] * W[k, c, :]

One program computes a BLOCK_M x BLOCK_N tile of the output. Its single loop
runs over the K (=27) offsets x ceil(Cin / BLOCK_K) channel chunks (one flat
loop, so Triton pipelines all of it): gather BLOCK_M input rows through the
neighbour map (masked where -1), load the BLOCK_K x BLOCK_N weight slice, and
`tl.dot` them on the tensor cores (bf16/fp16 operands, fp32 accumulator;
float32 inputs use exact fp32 products). The weight is read in place through
strides, so spconv's `[Cout, k, k, k, Cin]` layout needs no permuted copy
(its K-major B tile is the layout wgmma wants anyway). When the output has too
few tiles to fill the GPU (few voxels, wide Cin), the reduction is split over
several programs whose float32 partial sums are added atomically (split-K).
Block config and split are picked by timing the candidates once per shape.

Importing this module needs Triton; `trellis_kernels.sparse_conv3d` imports
it lazily and falls back to the PyTorch reference elsewhere.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import torch
import triton
import triton.language as tl
from trellis_backend import settings

from . import _launch_info
from .reference import conv_weight_kcn

__all__ = ["sparse_conv3d"]

LAST_LAUNCH: dict = {}


def _configs():
    cfg = []
    for bm, bn, bk, w, s in [
        (128, 128, 64, 8, 3),
        (128, 128, 64, 8, 4),
        (128, 256, 64, 8, 3),
        (256, 128, 64, 8, 3),
        (128, 128, 32, 8, 4),
        (128, 64, 64, 4, 4),
        (64, 128, 64, 4, 4),
        (64, 64, 64, 4, 4),
        (64, 64, 32, 4, 5),
        (64, 32, 32, 4, 4),
    ]:
        cfg.append(triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s))
    return cfg


@triton.jit(do_not_specialize=["N"])  # N only bounds the row mask: one compiled variant for every voxel count
def _subm_conv_kernel(F, NBR, W, BIAS, OUT, N, CIN, COUT,
                      stride_wk, stride_wc, stride_wo, SPLIT,
                      KVOL: tl.constexpr, HAS_BIAS: tl.constexpr, EXACT_FP32: tl.constexpr, C_OUTER: tl.constexpr,
                      ATOMIC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # axis 0 walks the Cout tiles of one row tile: consecutive programs gather the same rows (L2 hits);
    # axis 2 splits the reduction (offsets x channel chunks) into SPLIT ranges whose partial sums are
    # atomically added into a float32 output (ATOMIC), which fills the GPU when there are few output tiles
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_s = tl.program_id(2)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < N
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < COUT
    kc = tl.arange(0, BLOCK_K)
    nbr_row = NBR + rows.to(tl.int64) * KVOL
    n_chunks = (CIN + BLOCK_K - 1) // BLOCK_K
    total = KVOL * n_chunks
    t_lo = pid_s * total // SPLIT
    t_hi = (pid_s + 1) * total // SPLIT
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for t in range(t_lo, t_hi):
        if C_OUTER:  # channel chunk outer, offset inner
            c0 = t // KVOL
            k = t - c0 * KVOL
        else:  # offset outer (measured within a few % of channel-outer on the H100; kept for comparison)
            k = t // n_chunks
            c0 = t - k * n_chunks
        cs = c0 * BLOCK_K + kc
        csm = cs < CIN
        idx = tl.load(nbr_row + k, mask=rmask, other=-1)
        valid = idx >= 0
        a = tl.load(F + idx.to(tl.int64)[:, None] * CIN + cs[None, :],
                    mask=valid[:, None] & csm[None, :], other=0.0)
        b = tl.load(W + k * stride_wk + cs[:, None] * stride_wc + cols[None, :] * stride_wo,
                    mask=csm[:, None] & cmask[None, :], other=0.0)
        if EXACT_FP32:
            acc = tl.dot(a, b, acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b, acc)
    if HAS_BIAS:
        bias = tl.load(BIAS + cols, mask=cmask, other=0.0).to(tl.float32)
        if ATOMIC:
            bias = bias * (pid_s == 0).to(tl.float32)
        acc += bias[None, :]
    out_ptrs = OUT + rows.to(tl.int64)[:, None] * COUT + cols[None, :]
    omask = rmask[:, None] & cmask[None, :]
    if ATOMIC:
        tl.atomic_add(out_ptrs, acc, mask=omask, sem="relaxed")
    else:
        tl.store(out_ptrs, acc.to(OUT.dtype.element_ty), mask=omask)


def heuristic_config(cin: int, cout: int, dtype: torch.dtype) -> dict:
    """A fixed block config (no tuning): for tests, the interpreter and TRELLIS_KERNELS_AUTOTUNE=0."""
    bn = 64 if cout > 32 else 32
    bk = 64 if cin > 32 and dtype != torch.float32 else 32
    return dict(BLOCK_M=64, BLOCK_N=bn, BLOCK_K=bk, num_warps=4, num_stages=3)


_DETERMINISTIC = [False]


def set_deterministic(on: bool) -> bool:
    """Tuned launches skip split-K (float32 atomics, last bits vary run to run); returns the previous setting.
    Also on with TRELLIS_KERNELS_DETERMINISTIC=1 (`trellis_backend.settings`) or
    torch.use_deterministic_algorithms(True)."""
    prev = _DETERMINISTIC[0]
    _DETERMINISTIC[0] = bool(on)
    return prev


def deterministic() -> bool:
    return (_DETERMINISTIC[0] or settings.current().kernels_deterministic
            or torch.are_deterministic_algorithms_enabled())


# (config, split) chosen per (Cin, Cout, log2 N, dtype, bias, device) by timing the candidates once
_TUNED: Dict[tuple, Tuple[dict, int]] = {}
_TABLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tuned")
_AUTOLOADED: set = set()


def _gpu_tag(device) -> str:
    name = torch.cuda.get_device_name(device)
    return "".join(c if c.isalnum() else "_" for c in name)


def tuned_table() -> List[dict]:
    """The tuner's choices so far, as JSON-able rows (for `save_tuned`)."""
    rows = []
    for (cin, cout, log2n, dtype, bias, _device), (cfg, split) in sorted(_TUNED.items(), key=lambda kv: str(kv[0])):
        rows.append(dict(cin=cin, cout=cout, log2n=log2n, dtype=str(dtype).replace("torch.", ""), bias=bias,
                         config=dict(cfg), split=split))
    return rows


def save_tuned(path: str, device=None) -> int:
    """Write the tuned (config, split) table as JSON (GPU name included); returns the number of rows."""
    import json

    rows = tuned_table()
    gpu = torch.cuda.get_device_name(device) if torch.cuda.is_available() else "cpu"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"gpu": gpu, "triton": triton.__version__, "rows": rows}, f, indent=1)
    return len(rows)


def load_tuned(path: str, device=None) -> int:
    """Seed the tuner from a table written by `save_tuned` on the same kind of GPU (others are ignored)."""
    import json

    device = torch.device(device if device is not None else "cuda")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    with open(path) as f:
        table = json.load(f)
    if table.get("gpu") != torch.cuda.get_device_name(device):
        return 0
    n = 0
    for r in table.get("rows", []):
        key = (r["cin"], r["cout"], r["log2n"], getattr(torch, r["dtype"]), r["bias"], device)
        _TUNED.setdefault(key, (dict(r["config"]), int(r["split"])))
        n += 1
    return n


def _autoload(device) -> None:
    """Once per device: seed the tuner from $TRELLIS_KERNELS_TUNED or tuned/<GPU name>.json when present."""
    if device in _AUTOLOADED:
        return
    _AUTOLOADED.add(device)
    paths = [settings.current().kernels_tuned or "", os.path.join(_TABLE_DIR, _gpu_tag(device) + ".json")]
    for path in paths:
        if path and os.path.isfile(path):
            try:
                load_tuned(path, device)
            except Exception:  # a damaged table only costs tuning time
                pass


def _candidates(n: int, cin: int, cout: int, num_sms: int) -> List[Tuple[dict, int]]:
    max_bn = max(32, triton.next_power_of_2(cout))
    max_bk = max(32, triton.next_power_of_2(cin))
    out = []
    for c in _configs():
        cfg = dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages)
        if cfg["BLOCK_N"] > max_bn or cfg["BLOCK_K"] > max_bk:
            continue
        tiles = triton.cdiv(n, cfg["BLOCK_M"]) * triton.cdiv(cout, cfg["BLOCK_N"])
        iters = 27 * triton.cdiv(cin, cfg["BLOCK_K"])
        out.append((cfg, 1))
        for split in (2, 3, 4):  # split the reduction only when the output tiles leave SMs idle
            if tiles < 4 * num_sms and iters // split >= 16:
                out.append((cfg, split))
    return out or [(heuristic_config(cin, cout, torch.bfloat16), 1)]


def _launch(feats, nbr, w, bias, n, cin, cout, dtype, cfg, split, channel_outer):
    kvol = w.shape[0]
    atomic = split > 1
    out = (torch.zeros if atomic else torch.empty)(n, cout, dtype=torch.float32 if atomic else dtype,
                                                   device=feats.device)
    cfg = dict(cfg)
    grid = (triton.cdiv(cout, cfg["BLOCK_N"]), triton.cdiv(n, cfg["BLOCK_M"]), split)
    kernel = _subm_conv_kernel[grid](
        feats, nbr, w, bias if bias is not None else out, out, n, cin, cout, w.stride(0), w.stride(1), w.stride(2),
        split, KVOL=kvol, HAS_BIAS=bias is not None, EXACT_FP32=feats.dtype == torch.float32,
        C_OUTER=channel_outer, ATOMIC=atomic, **cfg)
    _launch_info.record(LAST_LAUNCH, kernel, cfg, split=split)
    return out.to(dtype) if atomic and dtype != torch.float32 else out


def _tune(key, feats, nbr, w, bias, n, cin, cout, dtype):
    from triton.testing import do_bench

    num_sms = torch.cuda.get_device_properties(feats.device).multi_processor_count
    best, best_ms = None, float("inf")
    for cfg, split in _candidates(n, cin, cout, num_sms):
        try:
            ms = do_bench(lambda: _launch(feats, nbr, w, bias, n, cin, cout, dtype, cfg, split, True),
                          warmup=5, rep=25, return_mode="median")
        except Exception:  # e.g. out of shared memory for float32 tiles
            continue
        if ms < best_ms:
            best, best_ms = (cfg, split), ms
    if best is None:
        best = (heuristic_config(cin, cout, dtype), 1)
    _TUNED[key] = best
    return best


def sparse_conv3d(feats: torch.Tensor, nbr: torch.Tensor, weight: torch.Tensor,
                  bias: Optional[torch.Tensor] = None, autotune: Optional[bool] = None,
                  config: Optional[dict] = None, split: int = 1, channel_outer: bool = True) -> torch.Tensor:
    """Triton submanifold conv; same contract as `trellis_kernels.reference.sparse_conv3d`.

    By default the block config and reduction split are tuned once per (Cin, Cout, log2 N, dtype) on CUDA
    (timing each candidate; do not let the first call of a new shape happen inside CUDA-graph capture).
    `config` (BLOCK_M/N/K, num_warps, num_stages) with `split` pins them instead; `channel_outer=False`
    selects the offset-outer loop order (for comparisons only). With split > 1 the float32 partial sums are
    added atomically, so the last bits vary from run to run.
    """
    w = conv_weight_kcn(weight)
    kvol, cin, cout = w.shape
    n = feats.shape[0]
    if feats.dim() != 2 or feats.shape[1] != cin or nbr.shape != (n, kvol):
        raise ValueError(f"shape mismatch: feats {tuple(feats.shape)}, nbr {tuple(nbr.shape)}, weight K,Cin,Cout="
                         f"{kvol},{cin},{cout}")
    dtype = feats.dtype
    if n == 0 or cout == 0:
        return torch.empty(n, cout, dtype=dtype, device=feats.device)
    if cin == 0:
        out = torch.zeros(n, cout, dtype=dtype, device=feats.device)
        return out + bias.to(dtype) if bias is not None else out
    feats = feats.contiguous()
    nbr = nbr.contiguous()
    if w.dtype != dtype:
        w = w.to(dtype)
    if bias is not None:
        bias = bias.contiguous()
    if autotune is None:
        autotune = settings.current().kernels_autotune and feats.is_cuda
    if config is not None:
        cfg = config
    elif autotune:
        _autoload(feats.device)
        key = (cin, cout, n.bit_length(), dtype, bias is not None, feats.device)
        cfg, split = _TUNED.get(key) or _tune(key, feats, nbr, w, bias, n, cin, cout, dtype)
        if split > 1 and deterministic():
            split = 1  # same tile config, no atomics: bitwise reproducible
    else:
        cfg, split = heuristic_config(cin, cout, dtype), 1
    return _launch(feats, nbr, w, bias, n, cin, cout, dtype, cfg, split, channel_outer)
