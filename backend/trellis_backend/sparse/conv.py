"""Submanifold sparse 3D convolution with two interchangeable backends.

Weights are stored in spconv's layout `[out, k, k, k, in]` (+ bias `[out]`); kernel
index (a, b, c) reads the neighbour at (x + a - k//2, y + b - k//2, z + c - k//2).
Their state_dict names follow the backend the released checkpoints were saved
with (`param_naming`): TRELLIS's spconv checkpoints say `<layer>.conv.weight`
(the default here), TRELLIS.2's flex_gemm checkpoints say `<layer>.weight`.
The naming changes nothing else. Backends:
- `torch`: our own pure-PyTorch path (neighbour map by hashing, cached per
  coordinate set); runs anywhere, used on the GPU machine where spconv has no
  build. It gathers the K³ neighbour rows of a block of voxels into one
  `[rows, K³·in]` matrix (a zero row stands for a missing neighbour) and does
  one GEMM with the `[K³·in, out]` weight (`gather_gemm_conv`); with autograd
  the same kernel serves the backward pass (the neighbour map of a submanifold
  conv is symmetric, so the input gradient is the conv of the output gradient
  with the flipped, transposed weight). A conv of freshly subdivided voxels
  (`SparseSubdivide`: every child holds its parent's features) runs on the
  parents with the weights folded per child position (`subdivided_conv`):
  3.4× fewer multiply-adds on 8× fewer rows. Under autocast the conv computes
  and returns the autocast dtype (features, weight and bias cast first), like
  torch's own convolutions.
- `spconv`: spconv's SubMConv3d where importable (its CPU path refuses a fused
  bias, so the bias is added afterwards).
Select with `set_conv_backend()` or the env var `TRELLIS_CONV_BACKEND`.
`auto` picks, on CUDA, a registered fast kernel (trellis_kernels' Triton conv),
else spconv when importable, else torch; on CPU always torch.

Two facts of spconv that the released weights and the reference depend on:
- a 1×1×1 submanifold conv is computed as `feats @ weight.view(in, out)`
  (spconv's conv1x1 fast path reinterprets the `[out,1,1,1,in]` buffer), so the
  trained 1×1 weights of the spconv naming are used that way here too (the
  flex_gemm naming's 1×1 is the plain `feats @ weight.view(out, in).T`);
- spconv's CPU indice-pair generation races when torch uses several threads
  (the same input gives different outputs run to run), so our spconv backend
  runs it single-threaded on CPU.
"""
from __future__ import annotations

import contextlib

import math
import os
from typing import Optional

import torch
import torch.nn as nn

from .neighbors import (build_neighbor_map, children_neighbor_map, padded_neighbor_index, subdivided_neighbor_map,
                        subdivision_tables)
from .tensor import SparseTensor

_BACKEND = os.environ.get("TRELLIS_CONV_BACKEND", "auto")
_VALID = ("auto", "torch", "spconv")  # "fast" is chosen by auto only
_fast_kernel = None  # optional CUDA kernel hook: fn(feats, nbr, weight[K,in,out], bias) -> out


def set_conv_backend(name: str) -> None:
    if name not in _VALID:
        raise ValueError(f"unknown sparse conv backend {name!r}; choose one of {_VALID}")
    global _BACKEND
    _BACKEND = name


def get_conv_backend() -> str:
    return _BACKEND


def register_fast_kernel(fn) -> None:
    """Let an accelerated implementation (e.g. trellis_kernels' Triton conv) serve CUDA tensors."""
    global _fast_kernel
    _fast_kernel = fn


def spconv_available() -> bool:
    try:
        import spconv.pytorch  # noqa: F401
        return True
    except Exception:
        return False


def _resolve_backend(device: torch.device) -> str:
    if _BACKEND != "auto":
        return _BACKEND
    if device.type == "cuda":
        if _fast_kernel is not None:
            return "fast"
        return "spconv" if spconv_available() else "torch"
    return "torch"


@contextlib.contextmanager
def _single_threaded():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _add_conv_params(module: nn.Module, in_channels: int, out_channels: int, kernel_size: int, bias: bool) -> None:
    """Register `weight` `[out, k, k, k, in]` and `bias` `[out]` (or None) on `module`."""
    k = kernel_size
    module.weight = nn.Parameter(torch.empty(out_channels, k, k, k, in_channels))
    module.register_parameter("bias", nn.Parameter(torch.empty(out_channels)) if bias else None)
    fan_in = in_channels * k ** 3
    nn.init.uniform_(module.weight, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class _ConvParams(nn.Module):
    """Holds `weight` and `bias` under spconv's key names (`<layer>.conv.*`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool):
        super().__init__()
        _add_conv_params(self, in_channels, out_channels, kernel_size, bias)


# state_dict names of the parameters: spconv's (`<layer>.conv.weight`, TRELLIS) or flex_gemm's
# (`<layer>.weight`, TRELLIS.2)
PARAM_NAMINGS = ("spconv", "flex_gemm")


def conv_with_neighbor_map(feats: torch.Tensor, nbr: torch.Tensor, weight: torch.Tensor,
                           bias: Optional[torch.Tensor]) -> torch.Tensor:
    """Reference gather-GEMM-scatter: out[i] = sum_k W_k · feats[nbr[i, k]] (+ bias).

    `weight` is in spconv layout `[out, k, k, k, in]`. Kept as the plain definition (tests,
    hooks); `SparseConv3d` runs `gather_gemm_conv`.
    """
    out_ch, in_ch = weight.shape[0], weight.shape[-1]
    w = weight.reshape(out_ch, -1, in_ch).permute(1, 2, 0)  # [K, in, out]
    n = feats.shape[0]
    out = feats.new_zeros(n, out_ch)
    center = w.shape[0] // 2
    for k in range(w.shape[0]):
        idx = nbr[:, k]
        if k == center:
            out += (feats @ w[k]).to(out.dtype)  # autocast may compute the product in bf16
            continue
        rows = (idx >= 0).nonzero(as_tuple=True)[0]
        if rows.numel() == 0:
            continue
        out.index_add_(0, rows, (feats[idx[rows]] @ w[k]).to(out.dtype))
    if bias is not None:
        out = out + bias
    return out


# elements of the gathered block (rows x K³·in) per GEMM: on the CPU big enough for an efficient GEMM and small
# enough to stay in cache (measured best around 1M); on a GPU large, so that few launches cover the voxels
_BLOCK_ELEMS = 1 << 20
_BLOCK_ELEMS_CUDA = 1 << 26


def _block_rows(width: int, device: torch.device) -> int:
    elems = _BLOCK_ELEMS if device.type == "cpu" else _BLOCK_ELEMS_CUDA
    return max(1, elems // max(1, width))


def weight_matrix(weight: torch.Tensor) -> torch.Tensor:
    """spconv layout `[out, k, k, k, in]` -> the GEMM matrix `[K³·in, out]` (row k·in + c: offset k, channel c)."""
    out_ch, in_ch = weight.shape[0], weight.shape[-1]
    return weight.reshape(out_ch, -1, in_ch).permute(1, 2, 0).reshape(-1, out_ch)


def _gathered_blocks(feats: torch.Tensor, index: torch.Tensor):
    """Yield (start, end, cols): rows start..end of the im2col matrix `[feats; 0][index].view(-1, K·in)`,
    one cache-sized block at a time (the block buffer is reused)."""
    n, in_ch = feats.shape
    k = index.shape[1]
    padded = torch.cat([feats, feats.new_zeros(1, in_ch)])
    rows = min(n, _block_rows(k * in_ch, feats.device))
    buf = feats.new_empty(rows * k, in_ch)
    for s in range(0, n, rows):
        e = min(n, s + rows)
        cols = torch.index_select(padded, 0, index[s:e].reshape(-1), out=buf[: (e - s) * k])
        yield s, e, cols.view(e - s, k * in_ch)


def _gather_gemm(feats: torch.Tensor, index: torch.Tensor, w2d: torch.Tensor,
                 bias: Optional[torch.Tensor]) -> torch.Tensor:
    """out = [feats; 0][index].view(N, K·in) @ w2d (+ bias), block by block; no autograd."""
    out = feats.new_empty(feats.shape[0], w2d.shape[1])
    if feats.shape[0] == 0:
        return out
    for s, e, cols in _gathered_blocks(feats, index):
        if bias is None:
            torch.mm(cols, w2d, out=out[s:e])
        else:
            torch.addmm(bias, cols, w2d, out=out[s:e])
    return out


def _gather_gemm_weight_grad(feats: torch.Tensor, index: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    """sum over blocks of gathered(feats)^T @ grad_out: the gradient of the `[K·in, out]` weight matrix."""
    grad = grad_out.new_zeros(index.shape[1] * feats.shape[1], grad_out.shape[1])
    if feats.shape[0] == 0:
        return grad
    for s, e, cols in _gathered_blocks(feats, index):
        grad.addmm_(cols.t(), grad_out[s:e])
    return grad


class _GatherGemmConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feats, w2d, bias, index):
        ctx.save_for_backward(feats, w2d, index)
        ctx.has_bias = bias is not None
        return _gather_gemm(feats, index, w2d, bias)

    @staticmethod
    def backward(ctx, grad_out):
        feats, w2d, index = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_feats = grad_w = grad_bias = None
        k = index.shape[1]
        in_ch, out_ch = feats.shape[1], w2d.shape[1]
        if ctx.needs_input_grad[0]:
            # submanifold maps are symmetric (nbr[i, k] = j <=> nbr[j, K-1-k] = i): the input gradient is the
            # same conv of grad_out with the offset-flipped, transposed weight
            w_t = w2d.view(k, in_ch, out_ch).flip(0).transpose(1, 2).reshape(k * out_ch, in_ch)
            grad_feats = _gather_gemm(grad_out, index, w_t, None)
        if ctx.needs_input_grad[1]:
            grad_w = _gather_gemm_weight_grad(feats, index, grad_out)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum(0)
        return grad_feats, grad_w, grad_bias, None


def gather_gemm_conv(feats: torch.Tensor, index: torch.Tensor, weight: torch.Tensor,
                     bias: Optional[torch.Tensor]) -> torch.Tensor:
    """Submanifold conv as gather + GEMM: `index` is the padded neighbour map (`padded_neighbor_index`,
    missing = N), `weight` in spconv layout; all tensors of one dtype. Differentiable."""
    w2d = weight_matrix(weight)
    if torch.is_grad_enabled() and (feats.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return _GatherGemmConv.apply(feats, w2d, bias, index)
    return _gather_gemm(feats, index, w2d.contiguous(), bias)


def folded_subdivision_weight(weight: torch.Tensor) -> torch.Tensor:
    """A 3×3×3 weight `[out, 3, 3, 3, in]` folded for subdivided inputs: `[8 children, 8 slots·in, out]`,
    slot j of child c summing the offsets that land in parent offset `subdivision_tables()['slots'][c, j]`."""
    out_ch, in_ch = weight.shape[0], weight.shape[-1]
    fold = subdivision_tables(weight.device)["fold"].to(weight.dtype)  # [8, 8, 27]
    wk = weight.reshape(out_ch, 27, in_ch)
    return torch.einsum("cjk,oki->cjio", fold, wk).reshape(8, 8 * in_ch, out_ch)


def subdivided_conv(parent_feats: torch.Tensor, parent_index: torch.Tensor, folded: torch.Tensor,
                    bias: Optional[torch.Tensor]) -> torch.Tensor:
    """3×3×3 submanifold conv of subdivided voxels whose features are their parents' (`SparseSubdivide`).

    Child c of parent P (row 8P + c) sees, through its 27 offsets, only the 8 parents at
    `slots[c]`; with the weights summed per slot (`folded_subdivision_weight`) the output is
    `gather(parents, 8 slots) @ folded[c]`. `parent_index` is the parents' padded 3×3×3 map.
    No autograd (inference path).
    """
    n, in_ch = parent_feats.shape
    out_ch = folded.shape[-1]
    out = parent_feats.new_empty(n, 8, out_ch)
    if n == 0:
        return out.view(0, out_ch)
    slots = subdivision_tables(parent_feats.device)["slots"]
    padded = torch.cat([parent_feats, parent_feats.new_zeros(1, in_ch)])
    rows = min(n, _block_rows(8 * in_ch, parent_feats.device))
    buf = parent_feats.new_empty(rows * 8, in_ch)
    res = parent_feats.new_empty(rows, out_ch)
    for s in range(0, n, rows):
        e = min(n, s + rows)
        block = parent_index[s:e]
        for c in range(8):
            cols = torch.index_select(padded, 0, block[:, slots[c]].reshape(-1), out=buf[: (e - s) * 8])
            cols = cols.view(e - s, 8 * in_ch)
            if bias is None:
                torch.mm(cols, folded[c], out=res[: e - s])
            else:
                torch.addmm(bias, cols, folded[c], out=res[: e - s])
            out[s:e, c] = res[: e - s]
    return out.view(n * 8, out_ch)


def _compute_dtype(feats: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The autocast dtype where autocast is on for this device, else the weight's dtype."""
    dev = feats.device.type
    try:
        if torch.is_autocast_enabled(dev):
            return torch.get_autocast_dtype(dev)
    except (TypeError, RuntimeError):  # device types without autocast
        pass
    return weight.dtype


class SparseConv3d(nn.Module):
    """Submanifold conv (stride 1, output voxels = input voxels, same order).

    `param_naming` picks the state_dict names (`PARAM_NAMINGS`): "spconv" keeps the parameters in a
    `conv` child (`<layer>.conv.weight`), "flex_gemm" on the layer itself (`<layer>.weight`); use
    `kernel_params()` to reach them either way.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, padding=None, bias: bool = True, indice_key: Optional[str] = None,
                 param_naming: str = "spconv"):
        super().__init__()
        if param_naming not in PARAM_NAMINGS:
            raise ValueError(f"unknown sparse conv param_naming {param_naming!r}; choose one of {PARAM_NAMINGS}")
        if stride != 1 or padding is not None:
            raise ValueError("only submanifold (stride 1, no padding) sparse convolutions are used by TRELLIS "
                             "and supported here")
        if kernel_size % 2 != 1:
            raise ValueError("submanifold convolution needs an odd kernel size")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.param_naming = param_naming
        if param_naming == "spconv":
            self.conv = _ConvParams(in_channels, out_channels, kernel_size, bias)
        else:
            _add_conv_params(self, in_channels, out_channels, kernel_size, bias)

    def kernel_params(self):
        """(weight `[out, k, k, k, in]`, bias `[out]` or None), whatever `param_naming` is."""
        holder = self.conv if self.param_naming == "spconv" else self
        return holder.weight, holder.bias

    def neighbor_map(self, x: SparseTensor) -> torch.Tensor:
        """`[N, K³]` neighbour rows (-1: none), cached per coordinate set; derived from the parents' map for
        subdivided voxels (all children: `SparseSubdivide`; some: `SparseChannel2Spatial`)."""
        key = f"nbr_k{self.kernel_size}_d{self.dilation}"
        nbr = x.get_spatial_cache(key)
        if nbr is None:
            full = x.get_spatial_cache("subdivided_from")
            some = x.get_spatial_cache("children_of")
            plain_3x3x3 = self.kernel_size == 3 and self.dilation == 1
            if plain_3x3x3 and full is not None and 8 * full["coords"].shape[0] == x.coords.shape[0]:
                nbr = subdivided_neighbor_map(self._parent_map(full))
            elif plain_3x3x3 and some is not None and some["parent"].shape[0] == x.coords.shape[0]:
                nbr = children_neighbor_map(self._parent_map(some), some["parent"], some["child"], some["child_rows"])
            else:
                nbr = build_neighbor_map(x.coords, self.kernel_size, self.dilation)
            x.register_spatial_cache(key, nbr)
        return nbr

    @staticmethod
    def _parent_map(record: dict) -> torch.Tensor:
        """The parents' 3×3×3 map: the one their own convs cached (`parent_cache`), else built once here."""
        if "nbr" not in record:
            known = record.get("parent_cache", {}).get("nbr_k3_d1")
            if known is None or known.shape[0] != record["coords"].shape[0]:
                known = build_neighbor_map(record["coords"], 3, 1)
            record["nbr"] = known
        return record["nbr"]

    def _padded_map(self, x: SparseTensor) -> torch.Tensor:
        key = f"nbr_k{self.kernel_size}_d{self.dilation}_padded"
        index = x.get_spatial_cache(key)
        if index is None:
            index = padded_neighbor_index(self.neighbor_map(x))
            x.register_spatial_cache(key, index)
        return index

    def _subdivision_parents(self, x: SparseTensor, needs_grad: bool):
        """(parent features, parents' spatial record) when `x` holds its parents' features row for row."""
        parent = x._parent_feats
        if parent is None or needs_grad or parent.shape[0] * 8 != x.feats.shape[0]:
            return None
        record = x.get_spatial_cache("subdivided_from")
        if record is None or record["coords"].shape[0] != parent.shape[0]:
            return None
        return parent, record

    def _folded_weight(self, weight: torch.Tensor) -> torch.Tensor:
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
        cached = getattr(self, "_folded_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, folded_subdivision_weight(weight))
            self._folded_cache = cached
        return cached[1]

    def forward(self, x: SparseTensor) -> SparseTensor:
        weight, bias = self.kernel_params()
        backend = _resolve_backend(x.device)
        if self.kernel_size != 1 and backend in ("fast", "spconv"):
            feats = x.feats.to(weight.dtype) if x.feats.dtype != weight.dtype else x.feats
            if backend == "fast":
                return x.replace(_fast_kernel(feats, self.neighbor_map(x), weight, bias))
            return x.replace(self._spconv_forward(x, feats))
        # torch backend and 1×1 convs: one dtype throughout (autocast's where it is on)
        dtype = _compute_dtype(x.feats, weight)
        weight = weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
        needs_grad = torch.is_grad_enabled() and (x.feats.requires_grad or weight.requires_grad
                                                  or (bias is not None and bias.requires_grad))
        parents = self._subdivision_parents(x, needs_grad)
        if self.kernel_size == 1:
            if self.param_naming == "spconv":
                w = weight.reshape(self.in_channels, self.out_channels)  # spconv's conv1x1 semantics
            else:
                w = weight.reshape(self.out_channels, self.in_channels).t()  # flex_gemm: the plain 1×1 conv
            src = parents[0].to(dtype) if parents is not None else x.feats.to(dtype)
            out = torch.addmm(bias, src, w) if bias is not None else src @ w
            if parents is not None:
                out = out.repeat_interleave(8, dim=0)
            return x.replace(out)
        if parents is not None and self.kernel_size == 3 and self.dilation == 1:
            parent_feats, record = parents
            key = "nbr_k3_d1_padded"
            if key not in record:
                record[key] = padded_neighbor_index(self._parent_map(record))
            out = subdivided_conv(parent_feats.to(dtype), record[key], self._folded_weight(weight), bias)
            return x.replace(out)
        return x.replace(gather_gemm_conv(x.feats.to(dtype), self._padded_map(x), weight, bias))

    def _spconv_forward(self, x: SparseTensor, feats: torch.Tensor) -> torch.Tensor:
        import spconv.pytorch as spconv

        layer = spconv.SubMConv3d(self.in_channels, self.out_channels, self.kernel_size,
                                  dilation=self.dilation, bias=False)
        weight, bias = self.kernel_params()
        layer.weight = weight  # share, not copy; the helper layer is not registered
        coords = x.coords.int()
        spatial_shape = (coords[:, 1:].max(dim=0).values + 1).tolist() if coords.shape[0] else [1, 1, 1]
        st = spconv.SparseConvTensor(feats, coords, spatial_shape, x.batch_size)
        guard = _single_threaded() if feats.device.type == "cpu" else contextlib.nullcontext()
        with guard:
            out = layer(st).features
        if bias is not None:
            out = out + bias
        return out
