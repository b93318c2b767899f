"""Cross-attention keys/values of a constant condition, computed once per sampling run.

Every cross-attention module (`MultiHeadAttention` / `SparseMultiHeadAttention` of type
'cross') computes its keys and values in `context_kv(context)`, a function of the
condition tokens alone. During sampling the condition is the same tensor at every step
(the sampler concatenates cond/uncond once per call), so the fast path's ``context_kv``
lookup (`trellis_backend.fastpath`) answers through a `CrossKVCache` per module, which
remembers the result per context tensor: identity plus the
tensor's version counter (an in-place change of the context recomputes). Entries hold the
context weakly: when the sampler drops its condition tensors at the end of a run, their
keys/values are freed with them (and an id is never reused while its entry lives). At most
`max_entries` are kept (LRU).

Each entry also records which batch items have a *uniform* context (every token equal,
e.g. the zero negative condition of image models): there every key is the same, the
softmax is uniform and the attention output is that item's value row for every query, so
the cross-attention of a fused model skips the attention for those items (`fused.py`). Finding
them costs one host sync per condition tensor, when its entry is made.

CUDA graphs read keys/values at fixed addresses: `pin(context)` keeps an entry outside
the LRU (strongly), and `refresh(context)` recomputes a pinned entry in place after the
graph's static condition buffer was overwritten.

With gradients enabled the cache is bypassed (training must see fresh tensors).
"""
from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Callable, List, Optional, Tuple, Union

import torch

KV = Union[torch.Tensor, tuple]


def _copy_into(dst: KV, src: KV) -> None:
    if isinstance(dst, torch.Tensor):
        dst.copy_(src)
    else:
        for d, s in zip(dst, src):
            d.copy_(s)


def uniform_items(context: torch.Tensor) -> Tuple[bool, ...]:
    """Per batch item: are all its context tokens equal? (one host sync)"""
    if context.dim() < 2 or context.shape[1] == 0:
        return tuple(False for _ in range(context.shape[0]))
    same = (context == context[:, :1]).reshape(context.shape[0], -1).all(dim=1)
    return tuple(bool(v) for v in same.tolist())


class CrossKVCache:
    """`attn.context_kv` with the results kept per context tensor (the fast path calls it for `attn`)."""

    def __init__(self, attn: torch.nn.Module, compute: Callable[[torch.Tensor], KV], max_entries: int = 4):
        self.attn = attn
        self.compute = compute
        self.max_entries = max_entries
        self.entries: "OrderedDict[int, list]" = OrderedDict()  # id -> [weakref(context), version, kv, uniform]
        self.pinned: dict = {}  # id -> [context, kv, uniform]
        self.hits = 0
        self.misses = 0

    def _drop(self, key: int, ref) -> None:
        entry = self.entries.get(key)
        if entry is not None and entry[0] is ref:
            del self.entries[key]

    def _lookup(self, context: torch.Tensor) -> Optional[list]:
        key = id(context)
        pinned = self.pinned.get(key)
        if pinned is not None and pinned[0] is context:
            return [None, None, pinned[1], pinned[2]]
        entry = self.entries.get(key)
        if entry is not None and entry[0]() is context and entry[1] == context._version:
            self.entries.move_to_end(key)
            return entry
        return None

    def __call__(self, context: torch.Tensor) -> KV:
        if torch.is_grad_enabled():
            return self.compute(context)
        entry = self._lookup(context)
        if entry is not None:
            self.hits += 1
            return entry[2]
        self.misses += 1
        kv = self.compute(context)
        key = id(context)
        ref = weakref.ref(context, lambda r, k=key: self._drop(k, r))
        self.entries[key] = [ref, context._version, kv, uniform_items(context)]
        self.entries.move_to_end(key)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
        return kv

    def uniform(self, context: torch.Tensor) -> Optional[Tuple[bool, ...]]:
        """Uniform-context flags of a cached context (None when it is not cached)."""
        entry = self._lookup(context)
        return entry[3] if entry is not None else None

    # ---------------------------------------------------------------- CUDA graphs
    def pin(self, context: torch.Tensor) -> KV:
        """Compute (now, eagerly) and keep the keys/values of `context` at fixed addresses."""
        kv = self.compute(context)
        self.pinned[id(context)] = [context, kv, uniform_items(context)]
        return kv

    def refresh(self, context: torch.Tensor) -> None:
        """Recompute a pinned entry in place (its context buffer was overwritten)."""
        entry = self.pinned.get(id(context))
        if entry is None or entry[0] is not context:
            raise KeyError("context is not pinned")
        _copy_into(entry[1], self.compute(context))
        entry[2] = uniform_items(context)

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
