"""The CUDA fast path of the TRELLIS models, filled into the `trellis_backend.fastpath` registry.

    acc = trellis_backend.accel.enable(model)          # or a list/dict of models, or a pipeline's models
    ...                                                # sampling, decoding as usual
    acc.disable()                                      # or: with accel.enable(models): ...

    pipeline.fast_path = accel.attach(pipeline)        # the pipeline's hook (None off CUDA / TRELLIS_ACCEL=0)
    with pipeline.fast_path.stage("slat"): ...         # around each sampling stage
    pipeline.fast_path.detach()                        # on release

The registry
------------
Models, modules and sparse ops never test whether the fast path is on: at each point where
it computes differently they call ``fastpath.lookup(self).<entry>``, which answers with the
`FastPath` assigned to that module, else the plain PyTorch maths (`fastpath.PLAIN`). The
entries (see `trellis_backend.fastpath.FastPath`):

==========================  ========================================  =====================================
entry                       plain (default)                           fast path (this package)
==========================  ========================================  =====================================
``sparse_conv``             None: the conv backend (torch/spconv)      `trellis_kernels.sparse_conv3d`
``varlen_attention``        None: padded SDPA for ragged groups        `trellis_kernels.varlen_attention`
``layer_norm``,             the module's LayerNorm32 and torch         fused `trellis_kernels` norms
``modulated_norm``,         elementwise ops                            (`fused.FusedPath`)
``residual_norm``,
``gated_residual``,
``qk_rms_norm``
``mlp``                     the `nn.Sequential`                        GELU as a cuBLASLt epilogue
``context_kv``              `attn.context_kv(context)`                 `kv_cache.CrossKVCache` per module
``uniform_context``         None                                       uniform-condition items (from the cache)
``downsample``              `SparseDownsample.pool`                    `sparse_cache.cached_downsample`
``run_model``               the model's forward                        `runner.ModelRunner`: autocast off for
                                                                       a converted torso, condition cast,
                                                                       CUDA graphs of flow models
==========================  ========================================  =====================================

`enable` fills it: per model it builds one `path.AcceleratedPath` (or `fused.FusedPath`) and
assigns it to every sub-module (`fastpath.assign`; a `FusedPath` leaves the modules that are not
`fastpath.fusable` to its unfused sibling); `disable` takes the assignments back, so
the models are on the plain path again. Nothing is written into a module or a pipeline.

How a model family opts in: its modules call the lookups above where they have a fused or
kernel counterpart (the TRELLIS modules in `modules/`, `sparse/` and `models/slat_flow.py` show
each), its model classes decorate `forward` with `@fastpath.model_entry` (precision scope,
CUDA graphs), a class whose torso may run in bf16/fp16 defines `convert_to_fp16()` as the
reference does, and a flow model declares ``fast_path_flow = "dense"`` or ``"sparse"`` (its
forward is ``forward(x, t, cond)``, TRELLIS.2's texture flow adding ``concat_cond=``: dense
flows keep CUDA graphs, sparse flows re-capture per voxel set). Cross-attention modules are found
by ``_type == "cross"`` and a `context_kv` method. A module whose maths the fused kernels do not
cover declares ``fast_path_fusable = False`` and keeps the plain elementwise maths (kernels and
caches still serve it); TRELLIS.2's blocks need not (rope and the modulation offsets sit outside
the fused ops).

TRELLIS.2 on this path (tests/test_trellis2_accel.py on CPU, tests/test_trellis2_gpu.py on CUDA):
the flows' rope (phases once per voxel set, in the spatial cache; the dense grid's as a buffer),
shared modulation + per-block offsets, QK RMS norm (self and cross), ``concat_cond`` and per-item
condition lists (`VarLenContext`: varlen kernel, K/V not cached, never graphed); the SC-VAEs'
flex_gemm-named convs (`SparseConv3d.kernel_params()`), ConvNeXt blocks and the space-to-channel /
channel-to-space blocks, whose children's neighbour maps derive from the parents'.

What `enable` does per model on a CUDA device (each part can be switched off by keyword):

- ``dtype`` (default: the pipeline's dtype, else bf16): the torso (`convert_to_fp16`'s modules)
  gets weights in this dtype, and the model runs with autocast off (norms in float32 as in the
  reference);
- ``conv``: submanifold convs run `trellis_kernels.sparse_conv3d` (Triton implicit GEMM);
- ``attention``: ragged varlen groups and the decoders' shifted windows run
  `trellis_kernels.varlen_attention`; equal-length groups stay on torch SDPA (cuDNN/flash);
- ``kv_cache``: cross-attention keys/values computed once per condition tensor (also on CPU);
- ``fused``: the fused elementwise maths (`fused.py`);
- ``graphs``: CUDA graphs of the flow forward: ``"dense"`` (stage 1), ``"all"``, ``"none"``;
- cached down-sampling (no host sync in the stage-2 forward, fixed summation order);
- ``deterministic``: the sparse conv skips split-K (bitwise-reproducible results for a seed).

On a CPU model only the K/V cache is installed (results are bit-identical to the plain
path). `disable()` also restores the parameter dtypes (cast back; ``keep_originals=True``
restores the exact original values from a CPU copy).

Settings (`trellis_backend.settings`): ``TRELLIS_ACCEL=0`` keeps `attach` from enabling,
``TRELLIS_ACCEL_GRAPHS`` picks the pipeline's graph mode, ``TRELLIS_ACCEL_UNIFORM_CONTEXT`` and
``TRELLIS_ACCEL_GELU_EPILOGUE`` switch those fusions off, ``TRELLIS_KERNELS*`` steer the kernels.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import torch

from .. import fastpath, settings
from .kv_cache import CrossKVCache, cross_attention_modules
from .path import AcceleratedPath
from .runner import ModelRunner

__all__ = ["enable", "attach", "hook_settings", "Accelerator", "PipelineFastPath", "kernels_available"]


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
                 deterministic: bool = False, cpu_kernels: bool = False, cpu_convert: bool = False):
        if graphs not in settings.GRAPH_MODES:
            raise ValueError("graphs must be 'none', 'dense' or 'all'")
        self.dtype = dtype
        self.conv, self.attention, self.kv_cache, self.fused = conv, attention, kv_cache, fused
        self.graphs = graphs
        self.keep_originals = keep_originals
        self.fake_graphs = fake_graphs
        self.cpu_fused = cpu_fused  # tests: fused maths on CPU too (trellis_kernels' float32 references)
        self.cpu_kernels = cpu_kernels  # tests: conv / varlen entries on CPU too (the kernels' float32 references)
        self.cpu_convert = cpu_convert  # tests: the torso of CPU models in `dtype` too (bf16 maths on the CPU)
        self.deterministic = deterministic
        self.models: List[torch.nn.Module] = []
        self.paths: Dict[torch.nn.Module, AcceleratedPath] = {}  # model -> the path assigned to its modules
        self.runners: Dict[torch.nn.Module, ModelRunner] = {}
        self.kv_caches: Dict[torch.nn.Module, CrossKVCache] = {}  # cross-attention module -> its cache
        self._kernels: Optional[Tuple[Any, Any]] = None  # (conv kernel, varlen kernel) once CUDA models come
        self._restore_deterministic: Optional[bool] = None
        self._params: List[tuple] = []  # (param, original dtype, CPU copy or None)
        self._model_attrs: List[tuple] = []  # (model, {attr: value})
        self.active = True

    # ------------------------------------------------------------------ building
    def _cuda_kernels(self) -> Tuple[Any, Any]:
        """(conv kernel, varlen kernel) for CUDA models, None where off or unavailable."""
        if self._kernels is None:
            self._kernels = (None, None)
            if kernels_available():
                import trellis_kernels as tk

                self._kernels = (tk.sparse_conv3d if self.conv else None,
                                 tk.varlen_attention if self.attention else None)
                if self.conv and self.deterministic:
                    from trellis_kernels import conv_triton

                    self._restore_deterministic = conv_triton.set_deterministic(True)
        return self._kernels

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

    def _cpu_reference_kernels(self) -> Tuple[Any, Any]:
        """(conv, varlen) entries for CPU models in tests: trellis_kernels' public ops, which run their float32
        PyTorch references on CPU tensors, so the fast path's calls (neighbour maps, cu_seqlens) are exercised."""
        import trellis_kernels as tk

        return (tk.sparse_conv3d if self.conv else None, tk.varlen_attention if self.attention else None)

    def _path_for(self, cuda: bool) -> AcceleratedPath:
        if cuda:
            conv, varlen = self._cuda_kernels()
        else:
            conv, varlen = self._cpu_reference_kernels() if self.cpu_kernels else (None, None)
        fast_ops = cuda or self.cpu_fused  # fused maths and cached down-sampling: CUDA models (tests: CPU too)
        if fast_ops and self.fused and (self.cpu_fused or kernels_available()):
            from .fused import FusedPath

            return FusedPath(self, conv, varlen, cache_downsample=True)
        return AcceleratedPath(self, conv, varlen, cache_downsample=fast_ops)

    def add(self, model: torch.nn.Module) -> torch.nn.Module:
        """Accelerate one more model (idempotent)."""
        if not self.active:
            raise RuntimeError("this Accelerator was disabled")
        if model in self.paths:
            return model
        self.models.append(model)
        device = _device_of(model)
        cuda = device.type == "cuda"
        converted = self._convert(model) if (cuda or self.cpu_convert) else False
        caches = []
        if self.kv_cache:
            for attn in cross_attention_modules(model):
                caches.append(self.kv_caches.setdefault(attn, CrossKVCache(attn, attn.context_kv)))
        path = self._path_for(cuda)
        if self.fused:
            from .fused import FusedPath, gelu_epilogue_ok

            if isinstance(path, FusedPath):
                for dt in {self.dtype or torch.float32, torch.float32}:
                    gelu_epilogue_ok(device, dt)  # probe now, never inside a graph capture
        flow = getattr(model, "fast_path_flow", None)
        graphs = flow is not None and cuda and (self.graphs == "all" or (self.graphs == "dense" and flow == "dense"))
        if self.fake_graphs and flow is not None:
            graphs = True
        if (converted or flow is not None) and fastpath.has_entry(model):
            self.runners[model] = ModelRunner(model, converted, flow is not None, caches, graphs, self.fake_graphs)
        self.paths[model] = path
        path.assign(model)
        return model

    # --------------------------------------------------------------- inspection
    def runner(self, model: torch.nn.Module) -> Optional[ModelRunner]:
        return self.runners.get(model)

    def kv_stats(self) -> Dict[str, int]:
        return {"hits": sum(c.hits for c in self.kv_caches.values()),
                "misses": sum(c.misses for c in self.kv_caches.values())}

    def release_graphs(self, sparse_only: bool = False) -> None:
        """Free the memory of the captured CUDA graphs (all, or the sparse models'); re-captured on demand."""
        for r in self.runners.values():
            r.release_graphs(sparse_only)

    # ------------------------------------------------------------------ disable
    def disable(self) -> None:
        """Every model back on the plain path, with its original parameter dtypes."""
        if not self.active:
            return
        self.release_graphs()
        for model, path in self.paths.items():
            path.unassign(model)
        if self._restore_deterministic is not None:
            from trellis_kernels import conv_triton

            conv_triton.set_deterministic(self._restore_deterministic)
            self._restore_deterministic = None
        for p, dtype, keep in self._params:
            p.data = keep.to(p.device) if keep is not None else p.data.to(dtype)
        self._params.clear()
        for model, attrs in self._model_attrs:
            for k, v in attrs.items():
                setattr(model, k, v)
        self._model_attrs.clear()
        for cache in self.kv_caches.values():
            cache.clear()
        self.kv_caches.clear()
        self.paths.clear()
        self.runners.clear()
        self.models.clear()
        self.active = False

    def __enter__(self) -> "Accelerator":
        return self

    def __exit__(self, *exc) -> None:
        self.disable()


def enable(target, *, dtype: Union[torch.dtype, str, None] = "auto", conv: bool = True, attention: bool = True,
           kv_cache: bool = True, fused: bool = True, graphs: str = "dense", keep_originals: bool = False,
           deterministic: bool = False, _fake_graphs: bool = False, _cpu_fused: bool = False,
           _cpu_kernels: bool = False, _cpu_convert: bool = False) -> Accelerator:
    """Turn the fast path on for a model, models (list or dict), or the models a pipeline holds now.

    dtype: "auto" = the target's dtype when it is bf16/fp16, else bf16; None keeps the weights' dtype.
    deterministic: bitwise-reproducible results for a seed: the sparse conv skips split-K (float32 atomics);
    costs ~2 % of stage 2 (the shapes that split are the 2048/256->128 and 128/1024->1024 convs).
    Test switches (CPU models): _fake_graphs (graph runner with stand-in graphs), _cpu_fused (fused maths),
    _cpu_kernels (conv / varlen entries), each on trellis_kernels' float32 references; _cpu_convert (the torso
    in `dtype`, as on CUDA).
    """
    if dtype == "auto":
        pdt = getattr(target, "dtype", None)
        dtype = pdt if pdt in (torch.bfloat16, torch.float16) else torch.bfloat16
    acc = Accelerator(dtype, conv, attention, kv_cache, fused, graphs, keep_originals, _fake_graphs, _cpu_fused,
                      deterministic, _cpu_kernels, _cpu_convert)
    for m in _collect(target):
        acc.add(m)
    return acc


def hook_settings(dtype: Optional[torch.dtype] = None) -> Dict[str, Any]:
    """The keywords `attach` passes to `enable` for a pipeline of `dtype` (the benchmark times these).

    Deterministic always: the pipeline promises identical results for a seed on the same device (no
    split-K atomics). A half-precision pipeline also captures stage-2 graphs (``TRELLIS_ACCEL_GRAPHS``,
    default ``all``): on the H100 host the eager sparse forward is launch-bound (docs/BENCHMARKS.md)."""
    if dtype == torch.float32:
        return {"dtype": None, "fused": False, "deterministic": True}
    return {"graphs": settings.current().accel_graphs, "deterministic": True}


class PipelineFastPath:
    """The fast path of one pipeline (`attach`): its models, the stage scopes, `detach`."""

    def __init__(self, pipeline, accelerator: Accelerator):
        self.pipeline = pipeline
        self.accelerator = accelerator

    def add(self, model: torch.nn.Module) -> torch.nn.Module:
        """Accelerate a model the pipeline loaded after `attach` (the pipeline's `get_model` calls this)."""
        if self.accelerator.active:
            self.accelerator.add(model)
        return model

    def adopt_models(self) -> None:
        """Accelerate the pipeline's models that are not yet (loaded since the last stage)."""
        for model in _collect(self.pipeline):
            self.add(model)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator["PipelineFastPath"]:
        """Scope of one sampling stage (`name`, e.g. "sparse_structure", "slat"): adopts the pipeline's newly
        loaded models first, and frees the sparse flows' CUDA graphs when the stage ends (they hold that voxel
        set's activations; the decoders need the memory). Dense graphs stay for the next run."""
        self.adopt_models()
        try:
            yield self
        finally:
            if self.accelerator.active:
                self.accelerator.release_graphs(sparse_only=True)

    def runner(self, model: torch.nn.Module) -> Optional[ModelRunner]:
        return self.accelerator.runner(model)

    def kv_stats(self) -> Dict[str, int]:
        return self.accelerator.kv_stats()

    @property
    def active(self) -> bool:
        return self.accelerator.active

    def detach(self) -> None:
        """Every model back on the plain path (graphs, caches and model references dropped)."""
        self.accelerator.disable()


def attach(pipeline) -> Optional[PipelineFastPath]:
    """The pipeline's hook: the fast path for its models on CUDA, unless ``TRELLIS_ACCEL=0``; None otherwise."""
    device = getattr(pipeline, "device", None)
    if device is None or torch.device(device).type != "cuda" or not settings.current().accel:
        return None
    acc = enable(pipeline, **hook_settings(getattr(pipeline, "dtype", None)))
    return PipelineFastPath(pipeline, acc)
