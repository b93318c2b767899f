"""Build models by their official class names and load released checkpoints strictly.

A checkpoint is `<path>.json` (`{"name": <class>, "args": {...}}`) next to
`<path>.safetensors` holding the state_dict under the reference's key names.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Type, Union

import torch
import torch.nn as nn

from ..errors import CheckpointMismatchError, MissingFileError, UnknownModelClassError


def model_classes() -> Dict[str, Type[nn.Module]]:
    from .slat_decoder_gs import ElasticSLatGaussianDecoder, SLatGaussianDecoder
    from .slat_decoder_mesh import ElasticSLatMeshDecoder, SLatMeshDecoder
    from .slat_decoder_rf import ElasticSLatRadianceFieldDecoder, SLatRadianceFieldDecoder
    from .slat_encoder import ElasticSLatEncoder, SLatEncoder
    from .slat_flow import ElasticSLatFlowModel, SLatFlowModel
    from .ss_flow import SparseStructureFlowModel
    from .ss_vae import SparseStructureDecoder, SparseStructureEncoder

    classes = [SparseStructureEncoder, SparseStructureDecoder, SparseStructureFlowModel, SLatFlowModel,
               ElasticSLatFlowModel, SLatEncoder, ElasticSLatEncoder, SLatGaussianDecoder,
               ElasticSLatGaussianDecoder, SLatRadianceFieldDecoder, ElasticSLatRadianceFieldDecoder,
               SLatMeshDecoder, ElasticSLatMeshDecoder]
    return {c.__name__: c for c in classes}


def build_model(name: str, args: dict, device: Optional[Union[str, torch.device]] = None) -> nn.Module:
    """Instantiate `name(**args)`; `device='meta'` builds without allocating weights."""
    classes = model_classes()
    if name not in classes:
        raise UnknownModelClassError(f"unknown model class {name!r}; known classes: {', '.join(sorted(classes))}")
    if device is None:
        return classes[name](**args)
    with torch.device(device):
        return classes[name](**args)


def read_config(path: Union[str, Path]) -> dict:
    config_file = Path(f"{path}.json")
    if not config_file.is_file():
        raise MissingFileError(f"model config not found: {config_file}")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointMismatchError(f"{config_file} is not valid JSON: {e}",
                                      hint="Re-download or re-create the checkpoint json.") from e
    if "name" not in config or "args" not in config:
        raise CheckpointMismatchError(f"{config_file} must contain 'name' and 'args'")
    return config


def load_state_dict_strict(model: nn.Module, state_dict: Dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load every key with matching shapes, or fail listing what is missing, unexpected or mis-shaped.

    Tensors keep the checkpoint dtype only where the model holds that dtype (fp16 torso);
    elsewhere they are cast to the model's parameter dtype.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = sorted(f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(state_dict) if tuple(own[k].shape) != tuple(state_dict[k].shape))
    if missing or unexpected or shapes:
        def listing(title, items):
            return f"\n  {title} ({len(items)}): " + ", ".join(items[:20]) + (" ..." if len(items) > 20 else "") if items else ""
        raise CheckpointMismatchError(
            f"{source} does not fit {type(model).__name__}:" + listing("missing keys", missing)
            + listing("unexpected keys", unexpected) + listing("shape mismatches", shapes))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state_dict.items()}, strict=True)


def load_model(path: Union[str, Path], device: Union[str, torch.device] = "cpu", **overrides) -> nn.Module:
    """Load `<path>.json` + `<path>.safetensors` strictly (extra constructor args in `overrides`)."""
    from safetensors.torch import load_file

    from .folder_check import check_checkpoint, check_weight_values

    check_checkpoint(path, **overrides)  # types, header, shapes and memory, before anything is allocated
    config = read_config(path)
    weights = Path(f"{path}.safetensors")
    if not weights.is_file():
        raise MissingFileError(f"model weights not found: {weights}")
    model = build_model(config["name"], {**config["args"], **overrides})
    state = load_file(str(weights))
    check_weight_values(state, weights)
    load_state_dict_strict(model, state, source=str(weights))
    return model.to(device).eval()
