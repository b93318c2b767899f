"""The one generation sequence of every pipeline family: condition -> seed -> sampling stages -> decode ->
export, with progress reports, cancel checks between steps, per-step timings and out-of-memory advice.

`TrellisPipeline.generate`, `TrellisPipeline.variants` and `trellis_backend.edit.edit_region` compose it
from their own stages; `Trellis2Pipeline.generate` (TRELLIS.2: structure, shape and texture flows, PBR
export) runs the same sequence with its own. A pipeline that a `GenerationRun` drives provides:

- ``device`` and ``fast_path`` (None, or the CUDA fast path's hook: ``fast_path.stage(name)`` is a
  context manager around each sampling stage, see `trellis_backend.accel`);
- ``encode_condition(prompt, image, background_threshold, **options) -> (cond, info)``;
- ``latent_arrays(latent) -> {what: tensor}`` (checked for NaN/inf before anything is decoded or written);
- ``decode(latent, formats, progress) -> decoded``, ``output_kinds(formats) -> {kind: suffix}`` and
  ``export(latent, decoded, formats, files, settings, progress, cancel, texture_size) -> result``
  with ``result = {"files": ..., "meta": ..., "outputs": ...}``; `files` is None (no output folder) or the
  job's `output_files.OutputSet`: export writes each kind to ``files.temp(kind)`` and `finish` commits the
  set, so every family's files appear together under a fresh name, or not at all.
"""
from __future__ import annotations

import contextlib
import gc
import time
from typing import Any, Callable, Dict, Optional, Sequence

import torch

from ..errors import Cancelled, TrellisError, is_out_of_memory, out_of_memory_error

ProgressFn = Callable[[str, int, int, str], None]


def free_memory(device: torch.device) -> None:
    """Drop what the previous step left behind (between stages, and after an out-of-memory)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def check_cancel(cancel, where: str) -> None:
    """Cooperative cancel: raise `Cancelled` once the job's event is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"cancelled {where}")


@contextlib.contextmanager
def inference_guard(device: torch.device):
    """No autograd, and an out-of-memory anywhere inside becomes `OutOfMemoryError` with advice (after
    freeing what the failed attempt held); errors the user can act on pass through."""
    try:
        with torch.no_grad():
            yield
    except TrellisError:
        raise
    except BaseException as e:
        if is_out_of_memory(e):
            free_memory(device)
            raise out_of_memory_error(e, on_gpu=device.type == "cuda") from e
        raise


class GenerationRun:
    """One pass through the sequence; a context manager (inside it: `inference_guard`).

        with GenerationRun(pipe, seed, progress, cancel) as run:
            cond, info = run.condition(prompt, image)
            coords = run.stage("sparse_structure", pipe.sample_structure, cond, run.generator, params, ...)
            slat = run.stage("slat", pipe.sample_latent, cond, coords, run.generator, params, ...)
            result = run.finish(slat, formats, output_dir, name, settings)

    The noise of every stage comes from one CPU generator seeded with `seed`, in stage order, so a
    seed gives the same noise on every device.
    """

    def __init__(self, pipeline, seed: int, progress: Optional[ProgressFn] = None, cancel=None):
        self.pipeline = pipeline
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.progress = progress
        self.cancel = cancel
        self.timings: Dict[str, float] = {}
        self._started = time.perf_counter()
        self._guard = contextlib.ExitStack()

    def __enter__(self) -> "GenerationRun":
        self._guard.enter_context(inference_guard(self.pipeline.device))
        return self

    def __exit__(self, *exc) -> bool:
        return self._guard.__exit__(*exc)

    def report(self, stage: str, step: int, total: int, message: str = "") -> None:
        if self.progress is not None:
            self.progress(stage, step, total, message)

    def condition(self, prompt: Optional[str] = None, image=None, background_threshold: Optional[float] = None,
                  **options):
        """Encode the condition (progress stage "condition"); returns the pipeline's ``(cond, info)``.
        `options` go to the family's ``encode_condition`` (TRELLIS.2: the encoder resolutions a mode needs)."""
        started = time.perf_counter()
        self.report("condition", 0, 1, "encoding the condition")
        cond, info = self.pipeline.encode_condition(prompt, image, background_threshold, **options)
        self.report("condition", 1, 1, "condition encoded")
        self.timings["condition"] = time.perf_counter() - started
        check_cancel(self.cancel, "after encoding the condition")
        return cond, info

    def stage(self, name: str, sample: Callable[..., Any], *args, **kwargs) -> Any:
        """Run one sampling stage ``sample(*args, **kwargs)`` inside the fast path's hook; timed as `name`;
        frees memory and checks for cancel after it."""
        started = time.perf_counter()
        hook = self.pipeline.fast_path
        with hook.stage(name) if hook is not None else contextlib.nullcontext():
            out = sample(*args, **kwargs)
        self.timings[name] = time.perf_counter() - started
        free_memory(self.pipeline.device)
        check_cancel(self.cancel, f"after the {name} stage")
        return out

    def finish(self, latent, formats: Sequence[str], output_dir, name: str, settings: dict,
               texture_size: int = 0, overwrite: bool = False, decode: Optional[Callable] = None,
               export: Optional[Callable] = None) -> dict:
        """Decode `latent`, write the files (when `output_dir` is given: as one set, under `name` or the first
        free ``name_2``, ... unless `overwrite`) and add the timings to the meta. `decode` / `export` replace
        the pipeline's own (same signatures) for a task with other outputs (TRELLIS.2 texturing bakes onto
        the input mesh); the files are always the pipeline's `output_kinds`."""
        from .finite_check import check_finite
        from .output_files import OutputSet

        decode = decode or self.pipeline.decode
        export = export or self.pipeline.export
        for what, tensor in self.pipeline.latent_arrays(latent).items():
            check_finite(tensor, what)
        started = time.perf_counter()
        decoded = decode(latent, formats, self.progress)
        self.timings["decode"] = time.perf_counter() - started
        check_cancel(self.cancel, "after decoding")
        started = time.perf_counter()
        if output_dir is None:
            result = export(latent, decoded, formats, None, settings, self.progress, self.cancel, texture_size)
        else:
            kinds = self.pipeline.output_kinds(formats)
            with OutputSet(output_dir, name, kinds, overwrite=overwrite, cancel=self.cancel) as files:
                result = export(latent, decoded, formats, files, settings, self.progress, self.cancel,
                                texture_size)
            result["files"] = dict(files.paths)
            self.report("export", len(kinds), len(kinds), "files written")
            self.timings["export"] = time.perf_counter() - started
        result["meta"]["timings"] = {**self.timings, "total": time.perf_counter() - self._started}
        return result
