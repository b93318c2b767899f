"""One schema for every field of a generate/edit request, checked at the protocol boundary.

Whatever arrives on the wire (wrong types, NaN, 2^64 seeds, lone surrogates, ragged voxel lists,
a folder that is a file) is refused here with a `RequestFieldError` that names the field, before a
job thread starts; the pipeline then only ever sees values of the right type and range. The bounds
come from `pipeline.limits` so the CLI and the server agree. No torch import.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Dict, Optional

from ..errors import BadInputError, MissingFileError
from ..pipeline import limits as L
from . import protocol as P

FORMATS = ("mesh", "gaussians")
# the protocol's option sets (newer protocol copies define them; these are their values)
MULTI_IMAGE_MODES = P.MULTI_IMAGE_MODES
RESOLUTION_MODES = P.RESOLUTION_MODES
UP_AXES = P.UP_AXES
MAX_IMAGES = 16  # multi-image conditioning: views of one object
REQUEST_HINT = "Fix the named field of the request (the add-on and backend may be out of date with each other)."


class RequestFieldError(BadInputError):
    """A request field of the wrong type, out of range or otherwise unusable; `field` names it."""

    hint = REQUEST_HINT

    def __init__(self, field: str, problem: str, hint: Optional[str] = None):
        super().__init__(f"request field '{field}' {problem}", hint)
        self.field = field


class RequestFileMissing(RequestFieldError, MissingFileError):
    """A request field naming a file that does not exist (reported as MissingFileError)."""

    hint = "Check the path; the file may have been moved or deleted."


# ------------------------------------------------------------------ scalar checkers
def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def integer(lo: int, hi: int) -> Callable[[str, Any], int]:
    def check(field: str, value: Any) -> int:
        if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53:
            value = int(value)  # 3.0 from a JSON encoder that writes every number as a float
        if not isinstance(value, int) or isinstance(value, bool):
            raise RequestFieldError(field, f"must be an integer, got {_kind(value)}")
        if not lo <= value <= hi:
            shown = value if value.bit_length() <= 128 else f"an integer of {value.bit_length()} bits"
            raise RequestFieldError(field, f"must be between {lo} and {hi}, got {shown}")
        return value
    return check


def number(lo: float, hi: float) -> Callable[[str, Any], float]:
    def check(field: str, value: Any) -> float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise RequestFieldError(field, f"must be a number, got {_kind(value)}")
        try:
            value = float(value)
        except OverflowError:  # an integer beyond float range (JSON allows 1e400 written as digits)
            raise RequestFieldError(field, f"must be between {lo:g} and {hi:g}, got an integer of "
                                           f"{value.bit_length()} bits") from None
        if not math.isfinite(value):
            raise RequestFieldError(field, f"must be a finite number, got {value}")
        if not lo <= value <= hi:
            raise RequestFieldError(field, f"must be between {lo:g} and {hi:g}, got {value:g}")
        return value
    return check


def boolean(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise RequestFieldError(field, f"must be true or false, got {_kind(value)}")
    return value


def _sane_text(field: str, value: Any, max_chars: int) -> str:
    if not isinstance(value, str):
        raise RequestFieldError(field, f"must be a string, got {_kind(value)}")
    if len(value) > max_chars:
        raise RequestFieldError(field, f"is longer than {max_chars} characters ({len(value)})")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestFieldError(field, "contains an unpaired UTF-16 surrogate (not valid Unicode text)") from None
    if "\0" in value:
        raise RequestFieldError(field, "contains a NUL character")
    return value


def text(max_chars: int) -> Callable[[str, Any], str]:
    return lambda field, value: _sane_text(field, value, max_chars)


def _path_text(field: str, value: Any) -> str:
    value = _sane_text(field, value, L.MAX_PATH_CHARS)
    if not value.strip():
        raise RequestFieldError(field, "is an empty path")
    if any(ord(c) < 32 for c in value):
        raise RequestFieldError(field, "contains control characters")
    return value


def existing_file(field: str, value: Any) -> str:
    path = _path_text(field, value)
    full = os.path.expanduser(path)
    if not os.path.exists(full):
        raise RequestFileMissing(field, f"names a file that does not exist: {path}")
    if not os.path.isfile(full):
        raise RequestFieldError(field, f"is not a file: {path}", hint="Point at a file, not a folder.")
    return path


def output_folder(field: str, value: Any) -> str:
    path = _path_text(field, value)
    full = os.path.expanduser(path)
    probe = full
    while probe and not os.path.exists(probe):  # the nearest existing ancestor must be a folder
        parent = os.path.dirname(probe.rstrip(os.sep)) or os.curdir
        if parent == probe:
            break
        probe = parent
    if os.path.exists(probe) and not os.path.isdir(probe):
        raise RequestFieldError(field, f"is not a folder ({probe} is a file)",
                                hint="Choose an output folder, not a file, in the add-on preferences.")
    return path


def images(field: str, value: Any):
    """One condition image path, or a non-empty list of them (multi-image conditioning)."""
    if isinstance(value, list):
        if not value:
            raise RequestFieldError(field, "must be a file path or a non-empty list of file paths")
        if len(value) > MAX_IMAGES:
            raise RequestFieldError(field, f"lists more than {MAX_IMAGES} images ({len(value)})")
        return [existing_file(f"{field}[{i}]", v) for i, v in enumerate(value)]
    return existing_file(field, value)


def choice(options) -> Callable[[str, Any], str]:
    def check(field: str, value: Any) -> str:
        if value not in options or not isinstance(value, str):
            raise RequestFieldError(field, f"must be one of {', '.join(options)}, got {value!r:.60}")
        return value
    return check


def file_stem(field: str, value: Any) -> str:
    stem = _sane_text(field, value, L.MAX_NAME_CHARS)
    if not stem.strip() or stem in (".", "..") or any(c in stem for c in '/\\:*?"<>|') \
            or any(ord(c) < 32 for c in stem):
        raise RequestFieldError(field, f"is not a usable file name: {stem!r}",
                                hint="Use a plain file name without folders or the characters / \\ : * ? \" < > |.")
    return stem


def formats(field: str, value: Any) -> list:
    if not isinstance(value, list) or not value:
        raise RequestFieldError(field, f"must be a non-empty list of {', '.join(FORMATS)}, got {_kind(value)}")
    out = []
    for i, item in enumerate(value):
        if item not in FORMATS:
            raise RequestFieldError(f"{field}[{i}]", f"must be one of {', '.join(FORMATS)}, got {item!r:.60}")
        if item not in out:
            out.append(item)
    return out


def _box_corner(field: str, value: Any) -> list:
    if not isinstance(value, list) or len(value) != 3:
        raise RequestFieldError(field, f"must be a list of 3 numbers, got {_kind(value)}"
                                + (f" of length {len(value)}" if isinstance(value, list) else ""))
    return [number(-1e6, 1e6)(f"{field}[{i}]", v) for i, v in enumerate(value)]


def region(field: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise RequestFieldError(field, f"must be an object with box_min/box_max or voxels, got {_kind(value)}")
    keys = set(value)
    if keys == {"box_min", "box_max"}:
        return {"box_min": _box_corner(f"{field}.box_min", value["box_min"]),
                "box_max": _box_corner(f"{field}.box_max", value["box_max"])}
    if keys == {"voxels"}:
        voxels = value["voxels"]
        if not isinstance(voxels, list) or not voxels:
            raise RequestFieldError(f"{field}.voxels", f"must be a non-empty list of [i, j, k], got {_kind(voxels)}")
        if len(voxels) > L.MAX_REGION_VOXELS:
            raise RequestFieldError(f"{field}.voxels", f"has more than {L.MAX_REGION_VOXELS} entries")
        cell = integer(0, L.GRID_RESOLUTION - 1)
        out = []
        for n, v in enumerate(voxels):
            if not isinstance(v, list) or len(v) != 3:
                raise RequestFieldError(f"{field}.voxels[{n}]", f"must be a list of 3 integers, got {_kind(v)}"
                                        + (f" of length {len(v)}" if isinstance(v, list) else ""))
            out.append([cell(f"{field}.voxels[{n}][{i}]", x) for i, x in enumerate(v)])
        return {"voxels": out}
    raise RequestFieldError(field, "must have exactly the keys box_min and box_max, or exactly the key voxels; "
                                   f"got {sorted(keys)!r:.120}")


# ------------------------------------------------------------------------ schemas
GENERATE_FIELDS: Dict[str, Callable[[str, Any], Any]] = {
    "prompt": text(L.MAX_PROMPT_CHARS),
    "image": images,
    "seed": integer(0, L.MAX_SEED),
    "ss_steps": integer(1, L.MAX_STEPS),
    "slat_steps": integer(1, L.MAX_STEPS),
    "ss_cfg": number(0.0, L.MAX_CFG),
    "slat_cfg": number(0.0, L.MAX_CFG),
    "formats": formats,
    "output_dir": output_folder,
    "name": file_stem,
    "resolution": choice(RESOLUTION_MODES),  # TRELLIS.2 pipelines
    "texture_size": integer(0, L.MAX_TEXTURE_SIZE),
    "multi_image_mode": choice(MULTI_IMAGE_MODES),
    "overwrite": boolean,  # replace existing files of the same name; the add-on never sets it
}
EDIT_FIELDS: Dict[str, Callable[[str, Any], Any]] = {
    **{k: v for k, v in GENERATE_FIELDS.items() if k not in ("overwrite", "multi_image_mode")},
    "sidecar_path": existing_file,
    "region": region,
    "keep_structure": boolean,
    "margin": integer(0, L.MAX_MARGIN),
    "resample": integer(0, L.MAX_RESAMPLE),
}
def texturing_grid(field: str, value: Any) -> int:
    """The O-Voxel grid a mesh is encoded at for texturing: a multiple of 16 (the SC-VAE's 16x)."""
    grid = integer(16, L.MAX_TEXTURING_GRID)(field, value)
    if grid % 16:
        raise RequestFieldError(field, f"must be a multiple of 16, got {grid}")
    return grid


TEXTURE_FIELDS: Dict[str, Callable[[str, Any], Any]] = {
    "mesh_path": existing_file,
    "image": existing_file,
    "seed": integer(0, L.MAX_SEED),
    "resolution": texturing_grid,
    "texture_size": integer(0, L.MAX_TEXTURE_SIZE),
    "steps": integer(1, L.MAX_STEPS),
    "up_axis": choice(UP_AXES),
    "output_dir": output_folder,
    "name": file_stem,
}
FIELDS = {"generate": GENERATE_FIELDS, "edit": EDIT_FIELDS, "texture": TEXTURE_FIELDS}
REQUIRED = {"generate": (), "edit": ("sidecar_path", "region"), "texture": ("mesh_path", "image")}


def validate_job_request(rtype: str, params: Any) -> dict:
    """Checked, normalised copy of a generate/edit/texture request's params (null = not given); raises RequestFieldError."""
    if rtype not in REQUIRED:
        raise RequestFieldError("type", f"must be generate, edit or texture for a job, got {rtype!r:.60}")
    if not isinstance(params, dict):
        raise RequestFieldError("params", f"must be an object, got {_kind(params)}")
    fields = FIELDS[rtype]
    clean = {}
    for key in sorted(params, key=str):
        if key not in fields:
            raise RequestFieldError(_printable(key), "is not a parameter of a %s request (known: %s)"
                                    % (rtype, ", ".join(sorted(fields))))
        if params[key] is not None:
            clean[key] = fields[key](key, params[key])
    for key in REQUIRED[rtype]:
        if key not in clean:
            raise RequestFieldError(key, f"is required for {rtype}")
    if rtype == "generate":
        if "prompt" in clean and not clean["prompt"].strip():
            raise RequestFieldError("prompt", "is empty", hint="Describe the object, e.g. 'a red wooden chair'.")
        if "prompt" not in clean and "image" not in clean:
            raise RequestFieldError("prompt", "or 'image' is required: give a text prompt or a condition image")
    elif "prompt" in clean and not clean["prompt"].strip():
        raise RequestFieldError("prompt", "is empty; leave it out to reuse the asset's own prompt")
    return clean


def _printable(key: str) -> str:
    """A field name safe to echo back (keys may be any unicode, surrogates included)."""
    return key.encode("utf-8", "backslashreplace").decode("utf-8")[:80]
