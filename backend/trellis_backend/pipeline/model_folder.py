"""The models of a pipeline folder, shared by every family's pipeline: loaded on first use from the
``ckpts/<name>`` (or ``<org>/<repo>/ckpts/<name>``) references of pipeline.json, in the pipeline's
device and precision.

Weights are held in float32 unless the pipeline runs in exactly the half precision a checkpoint was
released in (TRELLIS's ``use_fp16`` with float16, TRELLIS.2's ``dtype`` with that dtype); otherwise
bf16/fp16 runs go through autocast (`ModelFolder.precision`). So a CPU pipeline is float32 throughout.
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from ..errors import MissingFileError
from .folder import resolve_model_ref
from .sequence import free_memory

HALF_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def load_folder_model(path: Path, device: torch.device, dtype: torch.dtype, family: str = "trellis") -> torch.nn.Module:
    """Load ``<path>.json/.safetensors`` of `family` strictly, its half-precision torso as float32 unless the
    pipeline's `dtype` is the one the checkpoint declares."""
    from ..models import load_model, read_config

    args = read_config(path)["args"]
    overrides = {}
    if args.get("use_fp16") and dtype != torch.float16:
        overrides["use_fp16"] = False
    if args.get("dtype") in HALF_DTYPES and HALF_DTYPES[args["dtype"]] != dtype:
        overrides["dtype"] = "float32"
    from ..models.folder_check import check_checkpoint

    check_checkpoint(path, family=family, **overrides)  # types, header, shapes, memory: before allocating
    return load_model(path, device=device, family=family, **overrides)


class ModelFolder:
    """Lazily loaded models of one pipeline folder. A family's pipeline sets the attributes below (see
    `init_models`) and reaches every model through `get_model`."""

    family = "trellis"

    def init_models(self, folder: Path, config: dict, model_paths: Dict[str, Optional[Path]], conditioner,
                    device: torch.device, dtype: torch.dtype, models_root: Optional[Path] = None,
                    allow_network: bool = False) -> None:
        self.conditioner = conditioner
        self.folder = Path(folder)
        self.config = config
        self.name = config.get("name", "")
        self.model_paths = model_paths
        self.models: Dict[str, torch.nn.Module] = {}
        self.device = device
        self.dtype = dtype
        self.models_root = models_root
        self.allow_network = allow_network
        self.fast_path = None  # a family's CUDA fast-path hook, when it has one

    def get_model(self, key: str) -> torch.nn.Module:
        """A model of pipeline.json ``args.models`` (loaded on first use)."""
        if key not in self.models:
            refs = self.config["args"]["models"]
            if key not in refs:
                raise MissingFileError(f"{self.folder / 'pipeline.json'} has no model '{key}'",
                                       hint="This model folder does not provide that output.")
            path = self.model_paths.get(key) or resolve_model_ref(self.folder, refs[key], self.models_root,
                                                                  self.allow_network)
            self.model_paths[key] = path
            self.models[key] = load_folder_model(path, self.device, self.dtype, self.family).eval()
            if self.fast_path is not None:  # a model loaded after the first stage joins the fast path now
                self.fast_path.add(self.models[key])
        return self.models[key]

    def release(self) -> None:
        """Drop every model (and the condition encoder) and free accelerator memory."""
        if self.fast_path is not None:
            self.fast_path.detach()
            self.fast_path = None
        self.models.clear()
        self.conditioner = None
        free_memory(self.device)

    def precision(self):
        """The context the models run in: autocast to the pipeline's dtype, or nothing (float32, or a fast
        path, which holds the torso in the target dtype itself and runs with autocast off)."""
        if self.dtype == torch.float32 or self.fast_path is not None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def attach_fast_path(pipeline) -> Optional[Any]:
    """The CUDA fast path's hook for `pipeline` (`accel.attach`: ``stage(name)``, ``add(model)``, ``detach()``);
    None on the CPU, with TRELLIS_ACCEL=0, or when it cannot start (then a warning: the plain path still works)."""
    if pipeline.device.type != "cuda":
        return None
    try:
        from ..accel import attach
    except ImportError:
        return None
    try:
        return attach(pipeline)
    except Exception as e:  # the plain path still works
        warnings.warn(f"CUDA fast path disabled: {type(e).__name__}: {e}")
        return None
