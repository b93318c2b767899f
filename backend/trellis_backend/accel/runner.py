"""Model-level runner of the accelerated path: precision scope, condition cast, CUDA graphs.

`ModelRunner` runs a model's forward for the fast path's ``run_model`` (the lookup of a
forward decorated with `trellis_backend.fastpath.model_entry`):

- with the torso converted to bf16/fp16 it runs the forward with autocast off, i.e. the
  reference's `use_fp16` semantics (torso in half precision, norms and the outer layers in
  float32) instead of per-op autocast casts (no weight casts, nothing for a CUDA graph to
  hold on to);
- for the flow models (classes declaring `fast_path_flow`, `forward(x, t, cond)`, optionally with
  TRELLIS.2's ``concat_cond=`` on x's voxels) it casts the condition to the model dtype once per
  condition tensor, so the model sees the same tensor at every step and the cross-attention K/V
  cache hits;
- optionally it captures the forward in CUDA graphs, one per input signature (batch size):
  the first call at a signature runs eagerly (builds neighbour maps, picks kernel configs,
  compiles), the second captures and replays, later calls replay. Inputs are copied into
  static buffers (a ``concat_cond``'s features beside x's); the condition and its keys/values are
  refreshed in place only when a new
  condition tensor arrives (once per sampling run). Dense models (stage 1) keep their graphs
  (fixed shapes); sparse models keep one graph per batch size for the current voxel set and
  drop it when another voxel set arrives (or on `release_graphs()`).

Graph mode needs every op in the forward to be capturable (no host syncs): the sparse
path gets that from the cached down-sampling (`sparse_cache.py`) and the varlen attention
taking its maximum length from the host.
"""
from __future__ import annotations

import contextlib
import functools
import weakref
from collections import OrderedDict
from typing import Any, Callable, List, Optional, Sequence

import torch

from .kv_cache import CrossKVCache


def _is_sparse(x) -> bool:
    return hasattr(x, "feats") and hasattr(x, "coords")


def x_is_cuda(x) -> bool:
    return (x.feats if _is_sparse(x) else x).is_cuda


class _FakeGraph:
    """Stand-in for torch.cuda.CUDAGraph off CUDA (tests): replay re-runs the captured function."""

    def __init__(self):
        self.fn: Optional[Callable] = None
        self.out = None

    def capture(self, fn):
        self.fn = fn
        self.out = fn()
        return self.out

    def replay(self):
        new = self.fn()
        if _is_sparse(new):
            self.out.feats.copy_(new.feats)
        else:
            self.out.copy_(new)


class _Graph:
    """One captured forward with its static inputs."""

    def __init__(self, runner: "ModelRunner", x, t, cond, concat_cond=None):
        self.runner = runner
        self.sparse = _is_sparse(x)
        feats = x.feats if self.sparse else x
        self.static_x = feats.clone()
        self.static_in = x.replace(self.static_x) if self.sparse else self.static_x
        self.static_concat = None  # concat_cond: the same voxels as x (the model checks), its features static
        if concat_cond is not None:
            self.static_concat = concat_cond.replace(concat_cond.feats.clone())
        extra = {} if concat_cond is None else {"concat_cond": self.static_concat}
        self.coords = x.coords if self.sparse else None
        self.static_t = t.clone()
        self.static_cond = cond.clone() if cond is not None else None
        self.cond_src = cond
        self.cond_version = cond._version if cond is not None else None
        self.caches: List[CrossKVCache] = list(runner.kv_caches) if cond is not None else []
        for c in self.caches:
            c.pin(self.static_cond)

        def call():
            return runner.orig_forward(self.static_in, self.static_t, self.static_cond, **extra)

        if feats.is_cuda and not runner.fake_graphs:
            if not self.sparse or runner.sparse_warmup:
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):  # warm-up on a side stream, as torch.cuda.graph's docs ask
                    call()
                torch.cuda.current_stream().wait_stream(side)
            # sparse graphs are re-captured per voxel set: the eager call just made at this signature was the
            # warm-up (kernels compiled and tuned, neighbour maps built), so one more forward is not spent here
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.static_out = call()
        else:
            self.graph = _FakeGraph()
            self.static_out = self.graph.capture(call)

    def matches(self, x) -> bool:
        return not self.sparse or (x.coords is self.coords and x._spatial_cache is self.static_in._spatial_cache)

    def run(self, x, t, cond, concat_cond=None):
        self.static_x.copy_(x.feats if self.sparse else x)
        self.static_t.copy_(t)
        if concat_cond is not None:
            self.static_concat.feats.copy_(concat_cond.feats)
        if cond is not None and (cond is not self.cond_src or cond._version != self.cond_version):
            self.static_cond.copy_(cond)
            for c in self.caches:
                c.refresh(self.static_cond)
            self.cond_src, self.cond_version = cond, cond._version
        self.graph.replay()
        if self.sparse:
            return x.replace(self.static_out.feats.clone())
        return self.static_out.clone()

    def drop(self) -> None:
        for c in self.caches:
            c.unpin(self.static_cond)
        self.caches = []
        self.graph = None
        self.static_out = None
        self.static_in = None
        self.static_concat = None


class ModelRunner:
    """Runs one model's forward: `runner(forward, args, kwargs)` with the class's undecorated forward."""

    def __init__(self, model: torch.nn.Module, converted: bool, flow: bool, kv_caches: Sequence[CrossKVCache],
                 graphs: bool, fake_graphs: bool = False):
        self.model = model
        self.orig_forward: Optional[Callable] = None  # the model's forward, bound (set at every call)
        self.converted = converted
        self.flow = flow
        self.kv_caches: List[CrossKVCache] = list(kv_caches)
        self.graphs_enabled = graphs
        self.fake_graphs = fake_graphs
        self.graphs: "OrderedDict[Any, Any]" = OrderedDict()  # signature -> "warm" | _Graph
        self._casts: "OrderedDict[int, list]" = OrderedDict()  # id(cond) -> [cond, version, cast]
        self.replays = 0
        self.captures = 0
        self.graph_error: Optional[str] = None
        self.sparse_warmup = False

    # ------------------------------------------------------------------ helpers
    def _precision(self):
        if self.converted and torch.is_autocast_enabled("cuda"):
            return torch.autocast("cuda", enabled=False)
        if self.converted and torch.is_autocast_enabled("cpu"):
            return torch.autocast("cpu", enabled=False)
        return contextlib.nullcontext()

    def _drop_cast(self, key: int, ref) -> None:
        e = self._casts.get(key)
        if e is not None and e[0] is ref:
            del self._casts[key]

    def _cast_cond(self, cond):
        """The condition in the model dtype, the same tensor for every call with the same `cond` (held weakly)."""
        dtype = getattr(self.model, "dtype", None)
        if cond is None or not isinstance(cond, torch.Tensor) or dtype is None or cond.dtype == dtype:
            return cond
        key = id(cond)
        e = self._casts.get(key)
        if e is not None and e[0]() is cond and e[1] == cond._version:
            self._casts.move_to_end(key)
            return e[2]
        cast = cond.to(dtype)
        ref = weakref.ref(cond, lambda r, k=key: self._drop_cast(k, r))
        self._casts[key] = [ref, cond._version, cast]
        while len(self._casts) > 4:
            self._casts.popitem(last=False)
        return cast

    def _uniform(self, cond) -> tuple:
        """Uniform-context flags of `cond` (part of a graph's signature: they shape the captured work)."""
        for c in self.kv_caches:
            c(cond)  # makes (or finds) the entry, flags included
            flags = c.uniform(cond)
            return flags if flags is not None else ()
        return ()

    def _signature(self, x, t, cond, concat_cond=None):
        sig = lambda a: None if a is None else (tuple(a.shape), a.dtype, a.device)  # noqa: E731
        flags = self._uniform(cond) if cond is not None else ()
        concat = sig(concat_cond.feats) if concat_cond is not None else None
        if _is_sparse(x):
            return ("sparse", x.batch_size, sig(x.feats), sig(t), sig(cond), flags, concat)
        return ("dense", sig(x), sig(t), sig(cond), flags, concat)

    def release_graphs(self, sparse_only: bool = False) -> None:
        for key in [k for k in self.graphs if not sparse_only or k[0] == "sparse"]:
            g = self.graphs.pop(key)
            if isinstance(g, _Graph):
                g.drop()

    # --------------------------------------------------------------------- call
    def __call__(self, forward: Callable, args: tuple, kwargs: dict):
        self.orig_forward = functools.partial(forward, self.model)
        with self._precision():
            if not self.flow or len(args) != 3 or set(kwargs) - {"concat_cond"}:
                return self.orig_forward(*args, **kwargs)
            x, t, cond = args
            concat_cond = kwargs.get("concat_cond")
            extra = {} if concat_cond is None else {"concat_cond": concat_cond}
            cond = self._cast_cond(cond)
            if (not self.graphs_enabled or torch.is_grad_enabled()
                    or not (cond is None or isinstance(cond, torch.Tensor))  # per-item lists: shapes vary
                    or (concat_cond is not None and not (_is_sparse(x) and _is_sparse(concat_cond)))
                    or not (x.feats if _is_sparse(x) else x).is_cuda and not self.fake_graphs):
                return self.orig_forward(x, t, cond, **extra)
            return self._graphed(x, t, cond, concat_cond)

    def _graphed(self, x, t, cond, concat_cond=None):
        extra = {} if concat_cond is None else {"concat_cond": concat_cond}
        key = self._signature(x, t, cond, concat_cond)
        g = self.graphs.get(key)
        if isinstance(g, _Graph) and not g.matches(x):
            del self.graphs[key]
            g.drop()  # another voxel set: this graph's neighbour maps are not the input's
            g = None
        if g is None:
            if _is_sparse(x):  # one voxel set at a time: forget graphs of earlier sets
                for k in [k for k, v in self.graphs.items() if k[0] == "sparse" and isinstance(v, _Graph)
                          and not v.matches(x)]:
                    self.graphs.pop(k).drop()
            self.graphs[key] = ("warm", x.coords if _is_sparse(x) else None)
            return self.orig_forward(x, t, cond, **extra)
        if isinstance(g, tuple):
            if _is_sparse(x) and g[1] is not x.coords:
                self.graphs[key] = ("warm", x.coords)
                return self.orig_forward(x, t, cond, **extra)
            try:
                g = _Graph(self, x, t, cond, concat_cond)
            except Exception as exc:  # a capture that fails leaves this runner eager (and says why)
                import warnings

                self.graph_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                warnings.warn(f"CUDA-graph capture failed, running eagerly: {self.graph_error}")
                self.graphs_enabled = False
                self.graphs.pop(key, None)
                for c in self.kv_caches:
                    c.pinned.clear()
                if x_is_cuda(x):
                    torch.cuda.synchronize()
                return self.orig_forward(x, t, cond, **extra)
            self.graphs[key] = g
            self.captures += 1
        self.replays += 1
        return g.run(x, t, cond, concat_cond)
