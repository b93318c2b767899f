"""Validate a model folder before any work, naming the damaged file and field.

Three layers, each cheap compared with what it prevents:

* `check_model_folder`: ``pipeline.json`` is UTF-8 JSON with the right types and finite values in
  every field the pipeline reads, and no model reference leaves the folder (``../x``, absolute
  paths) unless the user passed the models root explicitly and the reference stays inside it.
* `check_checkpoint`: ``<name>.json`` has the right types for its class's constructor, the
  ``.safetensors`` header is intact and matches the model built on the meta device (no memory),
  and the model would fit in free memory (a config asking for terabytes is refused as out of memory
  instead of being met by the kernel's OOM killer).
* `check_weight_values`: weights that hold NaN/inf or absurd magnitudes (random bytes) are refused
  at load, instead of failing later as "the mesh is empty".
"""
from __future__ import annotations

import inspect
import json
import math
import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Dict, Optional, Union

from ..errors import CheckpointMismatchError, MissingFileError, OutOfMemoryError
from ..pipeline import limits as L

PathLike = Union[str, Path]
MAX_CONFIG_INT = 1 << 20          # no TRELLIS config value (channels, blocks, resolution) comes near this
MEMORY_HEADROOM = 1.1             # weights are built once in float32 before they are cast or moved

from .weight_values import REDOWNLOAD, check_weight_values  # noqa: E402,F401  (re-exported)


def _bad(file: PathLike, field: str, problem: str, hint: str = REDOWNLOAD) -> CheckpointMismatchError:
    where = f"{file}: {field}" if field else str(file)
    return CheckpointMismatchError(f"{where} {problem}", hint=hint)


def read_json_file(path: PathLike) -> Any:
    """Parsed JSON of `path`; damaged, binary or non-JSON files are CheckpointMismatchError naming the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise MissingFileError(f"file not found: {path}") from None
    except OSError as e:
        raise _bad(path, "", f"cannot be read: {e}") from e
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _bad(path, "", "is not UTF-8 text (a binary or damaged file where JSON belongs)") from None
    except (ValueError, RecursionError) as e:
        raise _bad(path, "", f"is not valid JSON: {e}") from None


# -------------------------------------------------------------------- pipeline.json
def _finite_number(file, field, value, lo=-math.inf, hi=math.inf):
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise _bad(file, field, f"must be a number, got {type(value).__name__}")
    try:
        ok = math.isfinite(float(value)) and lo <= float(value) <= hi
    except OverflowError:
        ok = False
    if not ok:
        raise _bad(file, field, f"must be a finite number in [{lo:g}, {hi:g}], got {value!r:.40}")
    return float(value)


def _check_sampler(file, field, spec):
    if not isinstance(spec, dict):
        raise _bad(file, field, f"must be an object, got {type(spec).__name__}")
    if not isinstance(spec.get("name"), str):
        raise _bad(file, f"{field}.name", "must be a sampler class name (a string)")
    for part in ("args", "params"):
        if not isinstance(spec.get(part, {}), dict):
            raise _bad(file, f"{field}.{part}", "must be an object")
    sampler_args, params = spec.get("args", {}), spec.get("params", {})
    if "sigma_min" in sampler_args:
        _finite_number(file, f"{field}.args.sigma_min", sampler_args["sigma_min"], 0.0, 1.0)
    if "steps" in params:
        steps = params["steps"]
        if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= L.MAX_STEPS:
            raise _bad(file, f"{field}.params.steps", f"must be an integer in [1, {L.MAX_STEPS}], got {steps!r:.40}")
    if "cfg_strength" in params:
        _finite_number(file, f"{field}.params.cfg_strength", params["cfg_strength"], 0.0, L.MAX_CFG)
    if "rescale_t" in params:
        _finite_number(file, f"{field}.params.rescale_t", params["rescale_t"], 1e-6, 1e6)
    if "cfg_interval" in params:
        iv = params["cfg_interval"]
        if not isinstance(iv, list) or len(iv) != 2:
            raise _bad(file, f"{field}.params.cfg_interval", "must be a list of two numbers")
        for i, v in enumerate(iv):
            _finite_number(file, f"{field}.params.cfg_interval[{i}]", v, 0.0, 1.0)


def _ref_leaves(ref: str) -> bool:
    """True for references that are absolute or climb out with '..' (either path flavour)."""
    for flavour in (PurePosixPath, PureWindowsPath):
        p = flavour(ref)
        if p.is_absolute() or p.anchor or ".." in p.parts:
            return True
    return False


def check_reference(file, field, folder: Path, ref: str, models_root: Optional[PathLike]) -> None:
    """A model reference must stay inside the folder, or inside a models root the user passed explicitly."""
    if not _ref_leaves(ref):
        return
    if models_root is None:
        raise _bad(file, field, f"= {ref!r} points outside the model folder; refused",
                   hint="A model folder may only reference files inside itself, or <org>/<repo>/ckpts/<name> under "
                        "the models root. If this reference is intended, pass the folder that contains it as the "
                        "models root (--models-root, or the add-on's models folder).")
    root = os.path.normpath(os.path.abspath(os.path.expanduser(str(models_root))))
    target = os.path.normpath(os.path.join(str(folder), ref))
    if os.path.commonpath([root, target]) != root:
        raise _bad(file, field, f"= {ref!r} points outside both the model folder and the models root {root}; refused",
                   hint="Keep every model the pipeline uses under the models root you pass.")


def check_model_folder(folder: PathLike, models_root: Optional[PathLike] = None) -> Optional[dict]:
    """Validate `folder`/pipeline.json (types, finiteness, references); returns the config, or None when the
    folder or file is missing (the loader reports those with its own hints)."""
    folder = Path(folder)
    file = folder / "pipeline.json"
    if not file.is_file():
        return None
    config = read_json_file(file)
    if not isinstance(config, dict):
        raise _bad(file, "", "must hold a JSON object")
    args = config.get("args")
    if not isinstance(args, dict):
        raise _bad(file, "args", "must be an object", hint="Use the pipeline.json that came with the model.")
    models = args.get("models")
    if not isinstance(models, dict):
        raise _bad(file, "args.models", "must be an object naming the model checkpoints")
    for key, ref in models.items():
        if not isinstance(ref, str) or not ref.strip() or "\0" in ref:
            raise _bad(file, f"args.models.{key}", f"must be a checkpoint path (a string), got {ref!r:.60}")
        check_reference(file, f"args.models.{key}", folder, ref, models_root)
    # TRELLIS: sparse structure + SLAT samplers; TRELLIS.2: sparse structure, shape and texture samplers
    for key in ("sparse_structure_sampler", "slat_sampler", "shape_slat_sampler", "tex_slat_sampler"):
        if key in args:
            _check_sampler(file, f"args.{key}", args[key])
    for key in ("slat_normalization", "shape_slat_normalization", "tex_slat_normalization"):
        norm = args.get(key)
        if norm is None:
            continue
        if not isinstance(norm, dict):
            raise _bad(file, f"args.{key}", "must be an object with 'mean' and 'std'")
        for part in ("mean", "std"):
            values = norm.get(part)
            if not isinstance(values, list) or not values:
                raise _bad(file, f"args.{key}.{part}", "must be a non-empty list of numbers")
            for i, v in enumerate(values):
                _finite_number(file, f"args.{key}.{part}[{i}]", v, lo=1e-12 if part == "std" else -math.inf)
    for key in ("image_cond_model", "text_cond_model"):
        value = args.get(key)
        if value is None or isinstance(value, str):  # TRELLIS: an encoder name
            continue
        # TRELLIS.2: {"name": ..., "args": {"model_name": ..., ...}}
        if not isinstance(value, dict) or not isinstance(value.get("args", {}), dict):
            raise _bad(file, f"args.{key}", f"must be an encoder name or object, got {type(value).__name__}")
        model_name = value.get("args", {}).get("model_name")
        if model_name is not None and (not isinstance(model_name, str) or "\0" in model_name):
            raise _bad(file, f"args.{key}.args.model_name", f"must be a string, got {model_name!r:.60}")
    return config


# --------------------------------------------------------------------- checkpoints
def _expected_type(annotation, default):
    """A checker for simple annotated/defaulted constructor parameters, or None where we cannot tell."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    text = str(text).replace("typing.", "")
    optional = text.startswith("Optional[") or default is None
    base = text[len("Optional["):-1] if text.startswith("Optional[") else text
    simple = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}
    if base in simple:
        return base, simple[base], optional
    if base in ("List[int]", "Sequence[int]", "Tuple[int, ...]"):
        return base, (list,), optional
    if annotation is inspect.Parameter.empty and default is not None and type(default) in (int, float, bool, str):
        name = type(default).__name__
        return name, simple[name], optional
    return None


def _check_config_args(file: Path, cls, args: dict) -> None:
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return
    takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in params.values())
    for key, value in args.items():
        field = f"args.{key}"
        if key not in params:
            if takes_kwargs:
                continue
            raise _bad(file, field, f"is not a parameter of {cls.__name__}",
                       hint="Use the json that came with the weights.")
        expected = _expected_type(params[key].annotation, params[key].default)
        if expected is not None:
            name, types, optional = expected
            if value is None and optional:
                continue
            bad_bool = isinstance(value, bool) and bool not in types
            if bad_bool or not isinstance(value, types):
                raise _bad(file, field, f"must be {'an integer list' if types == (list,) else name}, "
                                        f"got {type(value).__name__} {value!r:.40}")
            if types == (list,) and not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise _bad(file, field, "must be a list of integers")
        for v in (value if isinstance(value, list) else [value]):
            if isinstance(v, float) and not math.isfinite(v):
                raise _bad(file, field, f"must be finite, got {v}")
            if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_CONFIG_INT:
                raise OutOfMemoryError(f"{file}: {field} = {v} is absurdly large (over {MAX_CONFIG_INT}); a model "
                                       f"built from it would not fit in memory",
                                       hint="The checkpoint json is damaged or edited; use the json that came with "
                                            "the weights.")
    missing = [k for k, p in params.items() if k != "self" and p.default is p.empty
               and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and k not in args]
    if missing:
        raise _bad(file, "args", f"lacks {', '.join(missing)} (required by {cls.__name__})")


def _safetensors_shapes(weights: Path) -> Dict[str, tuple]:
    from safetensors import safe_open

    size = weights.stat().st_size
    if size == 0:
        raise _bad(weights, "", "is empty (0 bytes)")
    if size < 8:
        raise _bad(weights, "", f"is truncated ({size} bytes, not even a header)")
    try:
        shapes = {}
        with safe_open(str(weights), framework="pt") as fh:
            for key in fh.keys():
                shapes[key] = tuple(fh.get_slice(key).get_shape())
        return shapes
    except Exception as e:  # SafetensorError: header too large / incomplete buffer / invalid JSON ...
        raise _bad(weights, "", f"is not a valid safetensors file (truncated or damaged): {e}") from None


def available_memory_bytes() -> Optional[int]:
    """MemAvailable of /proc/meminfo (Linux), else None (no check)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_checkpoint(path: PathLike, family: str = "trellis", **overrides) -> None:
    """Validate `<path>.json` + `<path>.safetensors` of a model `family` without allocating it (module doc)."""
    from .registry import build_model, model_classes

    config_file, weights = Path(f"{path}.json"), Path(f"{path}.safetensors")
    if not config_file.is_file() or not weights.is_file():
        return  # the loader names the missing file
    config = read_json_file(config_file)
    if not isinstance(config, dict):
        raise _bad(config_file, "", "must hold a JSON object with 'name' and 'args'")
    name, args = config.get("name"), config.get("args")
    if not isinstance(name, str):
        raise _bad(config_file, "name", f"must be a model class name (a string), got {type(name).__name__}")
    if not isinstance(args, dict):
        raise _bad(config_file, "args", f"must be an object, got {type(args).__name__}")
    cls = model_classes(family).get(name)
    if cls is None:
        return  # build_model reports unknown classes with the list of known ones
    _check_config_args(config_file, cls, args)
    shapes = _safetensors_shapes(weights)
    try:
        meta = build_model(name, {**args, **overrides}, device="meta", family=family)
    except (TypeError, ValueError, AssertionError, ZeroDivisionError, RuntimeError) as e:
        raise _bad(config_file, "args", f"cannot build {name}: {type(e).__name__}: {e}",
                   hint="Use the json that came with the weights.") from None
    state = meta.state_dict()
    need = sum(t.numel() * 4 for t in state.values() if t.is_floating_point())
    free = available_memory_bytes()
    if free is not None and need * MEMORY_HEADROOM > free:
        raise OutOfMemoryError(f"{config_file}: {name} with these args needs {need / 2 ** 30:.1f} GiB of memory to "
                               f"load, {free / 2 ** 30:.1f} GiB are free",
                               hint="Close other programs or use a machine with more memory; if this model should be "
                                    "small, its json is damaged (use the json that came with the weights).")
    wrong = [f"{k}: file {shapes[k]} vs config {tuple(v.shape)}" for k, v in state.items()
             if k in shapes and tuple(v.shape) != shapes[k]]
    missing = sorted(set(state) - set(shapes))
    if wrong or missing:
        parts = ([f"{len(wrong)} shape mismatch(es): " + "; ".join(wrong[:5])] if wrong else []) + \
                ([f"{len(missing)} missing tensor(s): " + ", ".join(missing[:5])] if missing else [])
        raise _bad(weights, "", f"does not fit {config_file.name} ({name}): " + " | ".join(parts),
                   hint="The weights and the json belong to different models; re-download the folder.")


__all__ = ["check_model_folder", "check_checkpoint", "check_weight_values", "read_json_file", "check_reference",
           "available_memory_bytes"]
