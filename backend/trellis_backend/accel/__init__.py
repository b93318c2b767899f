"""The CUDA fast path of the TRELLIS models: one call turns it on for a pipeline or a set of models.

    acc = trellis_backend.accel.enable(pipeline)      # or a model, a list/dict of models
    ...                                               # sampling, decoding as usual
    acc.disable()                                     # or: with accel.enable(models): ...

What `enable` does, per model on a CUDA device (each part can be switched off by keyword):

- ``dtype`` (default: the pipeline's dtype, else bf16): the torso the reference runs in fp16
  (`convert_to_fp16`'s modules: transformer blocks, conv/io blocks) gets weights in this
  dtype, and the model runs with autocast off (norms in float32 as in the reference);
- ``conv``: submanifold convs run `trellis_kernels.sparse_conv3d` (Triton implicit GEMM; the
  neighbour map is cached per coordinate set by the sparse tensor's spatial cache);
- ``attention``: ragged varlen groups and the decoders' shifted windows run
  `trellis_kernels.varlen_attention`; equal-length groups stay on torch SDPA (cuDNN/flash);
- ``kv_cache``: cross-attention keys/values of the condition are computed once per condition
  tensor, i.e. once per sampling run (`kv_cache.CrossKVCache`; also on CPU);
- ``fused``: adaLN / gated residual / qk RMS-norm / GELU epilogue fused forwards (`fused.py`);
- ``graphs``: CUDA graphs of the flow-model forward: ``"dense"`` (default: stage 1, fixed
  shapes), ``"all"`` (stage 2 too, re-captured per voxel set), or ``"none"``;
- cached down-sampling (no host sync in the stage-2 forward, fixed summation order, `sparse_cache.py`);
- ``deterministic`` (off; on in the pipeline hook): the sparse conv skips split-K, so a seed gives bitwise
  identical results on the same device.

On a CPU model only the K/V cache is installed (results are bit-identical to the plain
path); the float32 CPU path of the models is otherwise untouched. `disable()` restores
every patched forward, the global kernel hooks and the parameter dtypes (cast back; pass
``keep_originals=True`` to restore the exact original values from a CPU copy).

`maybe_enable(pipeline)` is the pipeline's hook: enables on CUDA unless ``TRELLIS_ACCEL=0``, with
CUDA graphs for both flow stages (``TRELLIS_ACCEL_GRAPHS=dense|none`` to change), and frees the
stage-2 graphs when `sample_slat` returns.
"""
from __future__ import annotations

import os
import types
from typing import Any, Dict, Iterable, List, Optional, Union

import torch

from .kv_cache import CrossKVCache, cross_attention_modules
from .runner import ModelRunner

__all__ = ["enable", "maybe_enable", "hook_settings", "Accelerator", "kernels_available"]

_FLOW_CLASSES = ("SparseStructureFlowModel", "SLatFlowModel", "ElasticSLatFlowModel")


def kernels_available() -> bool:
    """trellis_kernels' Triton path can serve CUDA tensors here."""
    try:
        import trellis_kernels

        return trellis_kernels.available()
    except Exception:
        return False


def _device_of(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _collect(target) -> List[torch.nn.Module]:
    if isinstance(target, torch.nn.Module):
        return [target]
    if isinstance(target, dict):
        return [m for m in target.values() if isinstance(m, torch.nn.Module)]
    if hasattr(target, "models") and isinstance(getattr(target, "models"), dict):
        return [m for m in target.models.values() if isinstance(m, torch.nn.Module)]
    if isinstance(target, Iterable):
        return [m for m in target if isinstance(m, torch.nn.Module)]
    raise TypeError(f"cannot accelerate {type(target).__name__}: pass a pipeline, a model, or models")


class Accelerator:
    """Handle of an enabled fast path; `disable()` (or leaving the `with` block) undoes it."""

    def __init__(self, dtype: Optional[torch.dtype], conv: bool, attention: bool, kv_cache: bool, fused: bool,
                 graphs: str, keep_originals: bool, fake_graphs: bool = False, cpu_fused: bool = False,
                 deterministic: bool = False):
        if graphs not in ("none", "dense", "all"):
            raise ValueError("graphs must be 'none', 'dense' or 'all'")
        self.dtype = dtype
        self.conv, self.attention, self.kv_cache, self.fused = conv, attention, kv_cache, fused
        self.graphs = graphs
        self.keep_originals = keep_originals
        self.fake_graphs = fake_graphs
        self.cpu_fused = cpu_fused  # tests: fused forwards on CPU too (trellis_kernels' float32 references)
        self.deterministic = deterministic
        self.models: List[torch.nn.Module] = []
        self.runners: Dict[int, ModelRunner] = {}
        self._patched: List[tuple] = []  # (obj, attr name, had own attribute, previous value)
        self._params: List[tuple] = []  # (param, original dtype, CPU copy or None)
        self._model_attrs: List[tuple] = []  # (model, {attr: value})
        self._hooks: List[tuple] = []  # (setter, previous value)
        self._pipeline = None
        self.active = True

    # ------------------------------------------------------------------ patching
    def _patch(self, obj, name: str, value) -> None:
        had = name in obj.__dict__
        self._patched.append((obj, name, had, obj.__dict__.get(name)))
        obj.__dict__[name] = value

    def _install_hooks(self) -> None:
        if self._hooks or not kernels_available():
            return
        import trellis_kernels as tk

        from ..sparse import attention as sattn
        from ..sparse import conv as sconv

        if self.conv:
            self._hooks.append((sconv.register_fast_kernel, sconv._fast_kernel))
            sconv.register_fast_kernel(tk.sparse_conv3d)
            if self.deterministic:
                from trellis_kernels import conv_triton

                self._hooks.append((conv_triton.set_deterministic, conv_triton.set_deterministic(True)))
        if self.attention:
            self._hooks.append((sattn.register_varlen_kernel, sattn.get_varlen_kernel()))
            sattn.register_varlen_kernel(tk.varlen_attention)

    def _convert(self, model: torch.nn.Module) -> bool:
        """Torso weights -> self.dtype (the modules the model's own convert_to_fp16 converts)."""
        if self.dtype is None or not hasattr(model, "convert_to_fp16"):
            return False
        before = {name: p.detach() for name, p in model.named_parameters()}
        attrs = {k: getattr(model, k) for k in ("dtype", "use_fp16") if hasattr(model, k)}
        model.convert_to_fp16()
        for name, p in model.named_parameters():
            if p.dtype != torch.float16:
                continue
            orig = before[name]
            keep = orig.to("cpu", copy=True) if self.keep_originals else None
            p.data = orig.to(self.dtype)
            self._params.append((p, orig.dtype, keep))
        del before
        if hasattr(model, "dtype"):
            model.dtype = self.dtype
        self._model_attrs.append((model, attrs))
        return True

    def add(self, model: torch.nn.Module) -> torch.nn.Module:
        """Accelerate one more model (idempotent)."""
        if not self.active:
            raise RuntimeError("this Accelerator was disabled")
        if any(m is model for m in self.models):
            return model
        self.models.append(model)
        cuda = _device_of(model).type == "cuda"
        converted = self._convert(model) if cuda else False
        caches = []
        if self.kv_cache:
            for attn in cross_attention_modules(model):
                cache = CrossKVCache(attn, attn.context_kv)
                self._patch(attn, "context_kv", cache)
                caches.append(cache)
        if cuda:
            self._install_hooks()
        if cuda or self.cpu_fused:
            if self.fused and (self.cpu_fused or kernels_available()):
                from .fused import forwards_for, gelu_epilogue_ok

                dev = _device_of(model)
                for dt in {self.dtype or torch.float32, torch.float32}:
                    gelu_epilogue_ok(dev, dt)  # probe now, never inside a graph capture
                for m in model.modules():
                    fn = forwards_for(m)
                    if fn is not None:
                        self._patch(m, "forward", types.MethodType(fn, m))
            from ..sparse.spatial import SparseDownsample
            from .sparse_cache import cached_downsample_forward

            for m in model.modules():
                if type(m) is SparseDownsample:
                    self._patch(m, "forward", types.MethodType(cached_downsample_forward, m))
        flow = type(model).__name__ in _FLOW_CLASSES
        sparse_flow = flow and type(model).__name__ != "SparseStructureFlowModel"
        graphs = flow and cuda and (self.graphs == "all" or (self.graphs == "dense" and not sparse_flow))
        if self.fake_graphs and flow:
            graphs = True
        if converted or flow or graphs:
            runner = ModelRunner(model, model.forward, converted, flow, caches, graphs, self.fake_graphs)
            self._patch(model, "forward", runner)
            self.runners[id(model)] = runner
        return model

    def attach_pipeline(self, pipeline) -> None:
        """Accelerate the pipeline's models, and those it loads later (`get_model`)."""
        self._pipeline = pipeline
        acc = self
        for m in list(pipeline.models.values()):
            self.add(m)
        if hasattr(pipeline, "get_model"):
            orig = pipeline.get_model

            def get_model(key: str):
                model = orig(key)
                if acc.active:
                    acc.add(model)
                return model

            self._patch(pipeline, "get_model", get_model)
        if hasattr(pipeline, "sample_slat"):
            orig_slat = pipeline.sample_slat

            def sample_slat(*args, **kwargs):
                try:
                    return orig_slat(*args, **kwargs)
                finally:  # stage-2 graphs hold this voxel set's activations: free them before the decoders
                    if acc.active:
                        acc.release_graphs(sparse_only=True)

            self._patch(pipeline, "sample_slat", sample_slat)
        if hasattr(pipeline, "release"):
            orig_release = pipeline.release

            def release(*args, **kwargs):
                acc.disable()  # drop the graphs, caches and every reference to the models first
                return orig_release(*args, **kwargs)

            self._patch(pipeline, "release", release)

    # --------------------------------------------------------------- inspection
    def runner(self, model: torch.nn.Module) -> Optional[ModelRunner]:
        return self.runners.get(id(model))

    def kv_stats(self) -> Dict[str, int]:
        hits = misses = 0
        for obj, name, _, _ in self._patched:
            val = obj.__dict__.get(name)
            if isinstance(val, CrossKVCache):
                hits += val.hits
                misses += val.misses
        return {"hits": hits, "misses": misses}

    def release_graphs(self, sparse_only: bool = False) -> None:
        """Free the memory of the captured CUDA graphs (all, or the sparse models'); re-captured on demand."""
        for r in self.runners.values():
            r.release_graphs(sparse_only)

    # ------------------------------------------------------------------ disable
    def disable(self) -> None:
        if not self.active:
            return
        self.release_graphs()
        for obj, name, had, prev in reversed(self._patched):
            if had:
                obj.__dict__[name] = prev
            else:
                obj.__dict__.pop(name, None)
        self._patched.clear()
        for setter, prev in reversed(self._hooks):
            setter(prev)
        self._hooks.clear()
        for p, dtype, keep in self._params:
            p.data = keep.to(p.device) if keep is not None else p.data.to(dtype)
        self._params.clear()
        for model, attrs in self._model_attrs:
            for k, v in attrs.items():
                setattr(model, k, v)
        self._model_attrs.clear()
        self.runners.clear()
        self.models.clear()
        self.active = False

    def __enter__(self) -> "Accelerator":
        return self

    def __exit__(self, *exc) -> None:
        self.disable()


def enable(target, *, dtype: Union[torch.dtype, str, None] = "auto", conv: bool = True, attention: bool = True,
           kv_cache: bool = True, fused: bool = True, graphs: str = "dense", keep_originals: bool = False,
           deterministic: bool = False, _fake_graphs: bool = False, _cpu_fused: bool = False) -> Accelerator:
    """Turn the fast path on for a pipeline (its `.models`, and models it loads later), a model, or models.

    dtype: "auto" = the pipeline's dtype when it is bf16/fp16, else bf16; None keeps the weights' dtype.
    deterministic: bitwise-reproducible results for a seed: the sparse conv skips split-K (float32 atomics);
    costs ~2 % of stage 2 (the shapes that split are the 2048/256->128 and 128/1024->1024 convs).
    """
    if dtype == "auto":
        pdt = getattr(target, "dtype", None)
        dtype = pdt if pdt in (torch.bfloat16, torch.float16) else torch.bfloat16
    acc = Accelerator(dtype, conv, attention, kv_cache, fused, graphs, keep_originals, _fake_graphs, _cpu_fused,
                      deterministic)
    if hasattr(target, "models") and isinstance(getattr(target, "models"), dict) and not isinstance(
            target, torch.nn.Module):
        acc.attach_pipeline(target)
    else:
        for m in _collect(target):
            acc.add(m)
    return acc


def hook_settings(dtype: Optional[torch.dtype] = None) -> Dict[str, Any]:
    """The keywords `maybe_enable` passes to `enable` for a pipeline of `dtype` (the benchmark times these).

    Deterministic always: the pipeline promises identical results for a seed on the same device (no
    split-K atomics). A half-precision pipeline also captures stage-2 graphs: on the H100 host the eager
    sparse forward is launch-bound (docs/BENCHMARKS.md)."""
    if dtype == torch.float32:
        return {"dtype": None, "fused": False, "deterministic": True}
    return {"graphs": os.environ.get("TRELLIS_ACCEL_GRAPHS", "all"), "deterministic": True}


def maybe_enable(pipeline) -> Optional[Accelerator]:
    """The pipeline's hook: enable on CUDA unless TRELLIS_ACCEL=0; keeps the handle as `pipeline.accel`."""
    device = getattr(pipeline, "device", None)
    if device is None or torch.device(device).type != "cuda" or os.environ.get("TRELLIS_ACCEL", "1") == "0":
        return None
    acc = enable(pipeline, **hook_settings(getattr(pipeline, "dtype", None)))
    pipeline.accel = acc
    return acc
