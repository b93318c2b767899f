"""Cross-attention keys/values of a constant condition, computed once per sampling run.

Every cross-attention module (`MultiHeadAttention` / `SparseMultiHeadAttention` of type
'cross') computes its keys and values in `context_kv(context)`, a function of the
condition tokens alone. During sampling the condition is the same tensor at every step
(the sampler concatenates cond/uncond once per call), so `CrossKVCache` replaces the
module's `context_kv` and remembers the result per context tensor: identity plus the
tensor's version counter (an in-place change of the context recomputes). Entries are
kept LRU (a handful: cond/uncond batch and cond alone, per run) and hold a reference to
their context so that an id is never reused while cached.

CUDA graphs read keys/values at fixed addresses: `pin(context)` keeps an entry outside
the LRU, and `refresh(context)` recomputes a pinned entry in place after the graph's
static condition buffer was overwritten.

With gradients enabled the cache is bypassed (training must see fresh tensors).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, List, Union

import torch

KV = Union[torch.Tensor, tuple]


def _copy_into(dst: KV, src: KV) -> None:
    if isinstance(dst, torch.Tensor):
        dst.copy_(src)
    else:
        for d, s in zip(dst, src):
            d.copy_(s)


class CrossKVCache:
    """Callable that stands in for `attn.context_kv` (installed as an instance attribute)."""

    def __init__(self, attn: torch.nn.Module, compute: Callable[[torch.Tensor], KV], max_entries: int = 4):
        self.attn = attn
        self.compute = compute
        self.max_entries = max_entries
        self.entries: "OrderedDict[int, list]" = OrderedDict()  # id -> [context, version, kv]
        self.pinned: dict = {}  # id -> [context, kv]
        self.hits = 0
        self.misses = 0

    def __call__(self, context: torch.Tensor) -> KV:
        if torch.is_grad_enabled():
            return self.compute(context)
        key = id(context)
        pinned = self.pinned.get(key)
        if pinned is not None and pinned[0] is context:
            self.hits += 1
            return pinned[1]
        entry = self.entries.get(key)
        if entry is not None and entry[0] is context and entry[1] == context._version:
            self.entries.move_to_end(key)
            self.hits += 1
            return entry[2]
        self.misses += 1
        kv = self.compute(context)
        self.entries[key] = [context, context._version, kv]
        self.entries.move_to_end(key)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
        return kv

    # ---------------------------------------------------------------- CUDA graphs
    def pin(self, context: torch.Tensor) -> KV:
        """Compute (now, eagerly) and keep the keys/values of `context` at fixed addresses."""
        kv = self.compute(context)
        self.pinned[id(context)] = [context, kv]
        return kv

    def refresh(self, context: torch.Tensor) -> None:
        """Recompute a pinned entry in place (its context buffer was overwritten)."""
        entry = self.pinned.get(id(context))
        if entry is None or entry[0] is not context:
            raise KeyError("context is not pinned")
        _copy_into(entry[1], self.compute(context))

    def unpin(self, context: torch.Tensor) -> None:
        entry = self.pinned.get(id(context))
        if entry is not None and entry[0] is context:
            del self.pinned[id(context)]

    def clear(self) -> None:
        self.entries.clear()
        self.pinned.clear()


def cross_attention_modules(model: torch.nn.Module) -> List[torch.nn.Module]:
    """The cross-attention modules of a model (those with a `context_kv` method and type 'cross')."""
    return [m for m in model.modules() if getattr(m, "_type", None) == "cross" and hasattr(m, "context_kv")]
