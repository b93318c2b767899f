"""FLOP counts of the benchmarked stages, so a report can show the fraction of the bf16 peak reached.

Conventions (as docs/BENCHMARKS.md counts TRELLIS stage 1): a multiply-add is 2 FLOPs; GEMMs count
their shapes; attention counts 4·H·D·Lq·Lk (QKᵀ and PV); a submanifold conv counts its dense
equivalent 2·N·K³·Cin·Cout (missing neighbours included, as the implicit GEMM does the work);
norms, activations and the sampler's elementwise maths are not counted (they are bandwidth, not
FLOPs). The work counted is the work the fast path runs: cross-attention keys/values once per
sampling run, and nothing for a batch item whose condition is uniform (the zero negative
condition: its attention output is the value row, `accel.fused`).

- `flow_forward_flops`: one forward of a TRELLIS.2 / TRELLIS flow transformer, per batch item;
- `sampling_flops`: a whole sampling run (which steps run the negative item, from the sampler's
  own schedule and guidance interval);
- `LayerFlops`: hooks counting the linears and sparse convs of a real call (the SC-VAEs, which
  have no attention).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch


def _mlp_hidden(model) -> int:
    return model.blocks[0].mlp.mlp[0].out_features


def block_flops(model, tokens: int, cond_tokens: Optional[int]) -> Dict[str, float]:
    """FLOPs of one transformer block of `model` on one item of `tokens` tokens; `cond_tokens` None: a uniform
    condition (cross-attention skipped). Keys/values of the condition are not included (`context_kv_flops`)."""
    c, hidden = model.model_channels, _mlp_hidden(model)
    gemm = 2 * tokens * c * 3 * c + 2 * tokens * c * c        # self-attention qkv + out
    gemm += 2 * tokens * c * hidden * 2                          # MLP
    attn = 4 * tokens * tokens * c                               # self-attention, all heads (H·D = C)
    if cond_tokens is not None:
        gemm += 2 * tokens * c * c * 2                           # cross-attention q + out
        attn += 4 * tokens * cond_tokens * c
    return {"gemm": float(gemm), "attention": float(attn)}


def context_kv_flops(model, cond_tokens: int) -> float:
    """Cross-attention keys/values of one condition item, all blocks (computed once per sampling run)."""
    return float(model.num_blocks * 2 * cond_tokens * model.cond_channels * 2 * model.model_channels)


def flow_forward_flops(model, item_tokens: Sequence[int], cond_tokens: Sequence[Optional[int]],
                       with_context_kv: bool = False) -> Dict[str, float]:
    """One forward of a flow: items of `item_tokens` tokens, item i with `cond_tokens[i]` condition tokens
    (None: uniform condition). Returns {"gemm", "attention", "total"} (input/output layers in "gemm")."""
    gemm = attn = 0.0
    for n, lc in zip(item_tokens, cond_tokens):
        per = block_flops(model, n, lc)
        gemm += model.num_blocks * per["gemm"]
        attn += model.num_blocks * per["attention"]
        gemm += 2 * n * (model.in_channels + model.out_channels) * model.model_channels
        if with_context_kv and lc is not None:
            gemm += context_kv_flops(model, lc)
    return {"gemm": gemm, "attention": attn, "total": gemm + attn}


def guided_steps(steps: int, rescale_t: float, guidance_strength: float, guidance_interval) -> int:
    """How many steps of TRELLIS.2's sampler run the negative condition too (strength not 1, t in the interval)."""
    from trellis_backend.pipeline.samplers import timestep_schedule

    if guidance_strength == 1:
        return 0
    return sum(1 for t, _ in timestep_schedule(steps, rescale_t) if guidance_interval[0] <= t <= guidance_interval[1])


def sampling_flops(model, tokens: int, cond_tokens: int, steps: int, rescale_t: float, guidance_strength: float,
                   guidance_interval=(0.0, 1.0), **_) -> Dict[str, float]:
    """A sampling run of one item: guided steps run (cond, zero negative) as one B=2 forward, the others B=1;
    condition keys/values once (the negative's too: uniform, but its keys are still computed once)."""
    guided = guided_steps(steps, rescale_t, guidance_strength, guidance_interval)
    one = flow_forward_flops(model, [tokens], [cond_tokens])
    pair = flow_forward_flops(model, [tokens, tokens], [cond_tokens, None])
    kv = context_kv_flops(model, cond_tokens) * (2 if guided else 1)
    out = {k: guided * pair[k] + (steps - guided) * one[k] for k in one}
    out["total"] += kv
    out["gemm"] += kv
    out["guided_steps"] = float(guided)
    return out


class LayerFlops:
    """Counts the FLOPs of every `nn.Linear` (2·rows·in·out) and `SparseConv3d` (2·N·K³·Cin·Cout) under `model`
    during the calls inside the `with` block (forward hooks: run it eagerly, outside CUDA-graph replays)."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.total = 0.0
        self.by_kind: Dict[str, float] = {"linear": 0.0, "sparse_conv": 0.0}
        self._handles = []

    def _linear(self, module, inputs, output):
        x = inputs[0]
        rows = x.feats.shape[0] if hasattr(x, "feats") else x.numel() // x.shape[-1]
        self._add("linear", 2.0 * rows * module.in_features * module.out_features)

    def _conv(self, module, inputs, output):
        rows = inputs[0].feats.shape[0]
        self._add("sparse_conv", 2.0 * rows * module.kernel_size ** 3 * module.in_channels * module.out_channels)

    def _add(self, kind: str, flops: float) -> None:
        self.by_kind[kind] += flops
        self.total += flops

    def __enter__(self) -> "LayerFlops":
        from trellis_backend.sparse import SparseConv3d, SparseLinear

        for m in self.model.modules():
            if isinstance(m, (torch.nn.Linear, SparseLinear)):
                self._handles.append(m.register_forward_hook(self._linear))
            elif isinstance(m, SparseConv3d):
                self._handles.append(m.register_forward_hook(self._conv))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
