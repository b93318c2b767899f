"""Build models by their official class names and load released checkpoints strictly.

A checkpoint is `<path>.json` (`{"name": <class>, "args": {...}}`) next to
`<path>.safetensors` holding the state_dict under the reference's key names.

Model families: TRELLIS (`family="trellis"`, the default) and TRELLIS.2 (`"trellis2"`)
reuse class names whose configs cannot always be told apart: TRELLIS.2's
`SparseStructureFlowModel` has no `patch_size` (TRELLIS's default is 2) and its
`share_mod` blocks carry a per-block `modulation` offset that TRELLIS's lack. So a
family maps each class name to the one backend class plus the options that family
fixes (`FAMILY_OPTIONS`); the checkpoint json alone never has to decide.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Tuple, Type, Union

import torch
import torch.nn as nn

from ..errors import CheckpointMismatchError, MissingFileError, UnknownModelClassError


FAMILIES = ("trellis", "trellis2")

# options a family fixes for a class (a config may repeat them, not contradict them)
FAMILY_OPTIONS: Dict[str, Dict[str, dict]] = {
    "trellis": {},
    "trellis2": {
        "SparseStructureFlowModel": {"patch_size": 1, "modulation_offset": True},
        "SLatFlowModel": {"modulation_offset": True},
        "ElasticSLatFlowModel": {"modulation_offset": True},
    },
}


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; use one of {', '.join(FAMILIES)}")


def _trellis_classes() -> Dict[str, Type[nn.Module]]:
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


def _trellis2_classes() -> Dict[str, Type[nn.Module]]:
    """TRELLIS.2's classes under its names: the shared flow / sparse-structure classes and the SC-VAEs."""
    from .fdg_vae import FlexiDualGridVaeDecoder, FlexiDualGridVaeEncoder
    from .sc_vae import SparseUnetVaeDecoder, SparseUnetVaeEncoder
    from .slat_flow import ElasticSLatFlowModel, SLatFlowModel
    from .ss_flow import SparseStructureFlowModel
    from .ss_vae import SparseStructureDecoder, SparseStructureEncoder

    classes = [SparseStructureFlowModel, SLatFlowModel, ElasticSLatFlowModel, SparseStructureEncoder,
               SparseStructureDecoder, SparseUnetVaeEncoder, SparseUnetVaeDecoder, FlexiDualGridVaeEncoder,
               FlexiDualGridVaeDecoder]
    return {c.__name__: c for c in classes}


def model_classes(family: str = "trellis") -> Dict[str, Type[nn.Module]]:
    """Class name -> backend class of one model family."""
    _check_family(family)
    return _trellis_classes() if family == "trellis" else _trellis2_classes()


def resolve_args(name: str, args: dict, family: str = "trellis") -> dict:
    """`args` plus the options `family` fixes for class `name`; a contradicting config is an error."""
    _check_family(family)
    fixed = FAMILY_OPTIONS[family].get(name, {})
    clash = {k: args[k] for k in fixed if k in args and args[k] != fixed[k]}
    if clash:
        raise CheckpointMismatchError(
            f"{name} of the {family} family does not take {clash} (it always uses {fixed})",
            hint="Check that the model folder belongs to the model family it was loaded as.")
    return {**args, **fixed}


def build_model(name: str, args: dict, device: Optional[Union[str, torch.device]] = None,
                family: str = "trellis") -> nn.Module:
    """Instantiate class `name` of `family` with `args`; `device='meta'` builds without allocating weights."""
    classes = model_classes(family)
    if name not in classes:
        raise UnknownModelClassError(f"unknown {family} model class {name!r}; known classes: "
                                     f"{', '.join(sorted(classes))}")
    args = resolve_args(name, args, family)
    if device is None:
        return classes[name](**args)
    with torch.device(device):
        return classes[name](**args)


def derived_buffers(model: nn.Module) -> Tuple[str, ...]:
    """Names of buffers the model computes itself and checkpoints need not carry (e.g. `rope_phases`)."""
    names = []
    for prefix, module in model.named_modules():
        for key in getattr(type(module), "DERIVED_BUFFERS", ()):
            names.append(f"{prefix}.{key}" if prefix else key)
    return tuple(names)


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
    elsewhere they are cast to the model's parameter dtype. Buffers the model derives itself
    (`DERIVED_BUFFERS`, not in its state_dict) are ignored if a checkpoint carries them.
    """
    own = model.state_dict()
    derived = set(derived_buffers(model)) - set(own)
    state_dict = {k: v for k, v in state_dict.items() if k not in derived}
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


def load_model(path: Union[str, Path], device: Union[str, torch.device] = "cpu", family: str = "trellis",
               **overrides) -> nn.Module:
    """Load `<path>.json` + `<path>.safetensors` of `family` strictly (extra constructor args in `overrides`)."""
    from safetensors.torch import load_file

    from .weight_values import check_weight_values

    config = read_config(path)
    weights = Path(f"{path}.safetensors")
    if not weights.is_file():
        raise MissingFileError(f"model weights not found: {weights}")
    model = build_model(config["name"], {**config["args"], **overrides}, family=family)
    state = load_file(str(weights))
    check_weight_values(state, weights)
    load_state_dict_strict(model, state, source=str(weights))
    return model.to(device).eval()
