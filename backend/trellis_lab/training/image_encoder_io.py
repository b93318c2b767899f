"""Saving the trained `EmbeddedImageEncoder` in the pipeline's format (float16 storage).

`load_image_encoder` (pipeline side) loads strictly into a float32 module, casting the
stored float16 tensors; the encoder's args are kept on the module as ``_train_args``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from trellis_backend.pipeline.conditioning.embedded_image import EmbeddedImageEncoder, load_image_encoder


def build_image_encoder(args: dict) -> EmbeddedImageEncoder:
    enc = EmbeddedImageEncoder(**args)
    enc._train_args = dict(args)
    return enc


def save_image_encoder_half(model: EmbeddedImageEncoder, path: str | Path) -> Path:
    from safetensors.torch import save_file

    args = getattr(model, "_train_args", None)
    if args is None:
        raise ValueError("the encoder was not built with build_image_encoder (its args are unknown)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{path}.json").write_text(json.dumps({"name": "EmbeddedImageEncoder", "args": args}, indent=2))
    save_file({k: v.detach().half().contiguous().cpu() for k, v in model.state_dict().items()},
              f"{path}.safetensors")
    return path


def load_image_encoder_for_training(path: str | Path, device="cpu") -> EmbeddedImageEncoder:
    enc = load_image_encoder(path, device=device)
    enc._train_args = json.loads(Path(f"{path}.json").read_text())["args"]
    return enc.float().train()
