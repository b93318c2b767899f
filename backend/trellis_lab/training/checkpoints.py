"""Inference checkpoints in the official layout: ``<name>.json`` ({name, args}) + ``<name>.safetensors``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from trellis_backend.models import build_model, load_state_dict_strict


def export_model(folder: str | Path, ckpt: str, cls: str, args: dict, model: nn.Module) -> Path:
    """Write `model`'s weights as the class/args checkpoint ``folder/ckpt``; the dtypes follow
    the config (a ``use_fp16`` torso is stored in float16, the rest in float32)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    target = build_model(cls, args)
    sd = {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu()
          for k, v in model.state_dict().items()}
    load_state_dict_strict(target, sd, source=f"trained {cls}")
    (folder / f"{ckpt}.json").write_text(json.dumps({"name": cls, "args": args}, indent=2))
    save_file({k: v.contiguous() for k, v in target.state_dict().items()}, str(folder / f"{ckpt}.safetensors"))
    return folder / ckpt


def load_for_training(path: str | Path, device="cpu") -> nn.Module:
    """Load an exported checkpoint as a float32 model (to continue training or to encode data)."""
    from trellis_backend.models import load_model

    from .loop import prepare_for_training

    return prepare_for_training(load_model(path, device="cpu", use_fp16=False)).to(device)


def build_fresh(cls: str, args: dict, seed: Optional[int] = None) -> nn.Module:
    if seed is not None:
        torch.manual_seed(seed)
    from .loop import prepare_for_training

    return prepare_for_training(build_model(cls, {**args, "use_fp16": False}))
