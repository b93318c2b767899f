"""Where the golden vectors of the reference implementation live, and how to read one case.

The folder comes from ``TRELLIS_GOLDEN_DIR`` (so the parity tests can be pointed at
another golden set of the same format), else the project's ``../shared/golden`` beside the
checkout (where CI has it), else ``tests/golden``, which vendors only the small
``official_keys`` (the random-weight "official" models and the GPU benchmark read them). The
case folders are not vendored: they would make every checkout, and every copy sent to a GPU
machine, 20 MB heavier.
Each case folder holds ``config.json``, ``case.json``, ``model.safetensors``,
``inputs.safetensors`` and ``outputs.safetensors`` (see ``tests/golden/README.md``).
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Dict, List, Tuple

import torch
from safetensors.torch import load_file

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


# per model family: (environment variable, folder name beside the checkout, vendored fallback)
FAMILIES = {
    "trellis": ("TRELLIS_GOLDEN_DIR", "golden", "golden"),
    "trellis2": ("TRELLIS2_GOLDEN_DIR", "golden2", "golden2"),
}


def golden_dir(family: str = "trellis") -> pathlib.Path:
    """The golden root of a model family: its environment variable (``TRELLIS_GOLDEN_DIR`` /
    ``TRELLIS2_GOLDEN_DIR``), else ``<repo>/../shared/golden[2]``, else the vendored ``tests/golden[2]``."""
    env_name, shared_name, vendored = FAMILIES[family]
    env = os.environ.get(env_name)
    if env:
        path = pathlib.Path(env).expanduser()
        return path if path.is_absolute() else (REPO_ROOT / path)
    shared = REPO_ROOT.parent / "shared" / shared_name
    return shared if shared.is_dir() else REPO_ROOT / "tests" / vendored


def case_dir(name: str, family: str = "trellis") -> pathlib.Path:
    return golden_dir(family) / name


def has_case(name: str, family: str = "trellis") -> bool:
    return (case_dir(name, family) / "case.json").is_file()


def case_names(family: str = "trellis") -> List[str]:
    """Sorted names of the case folders (those with a ``case.json``) under the family's golden root."""
    root = golden_dir(family)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "case.json").is_file())


def _read_json(path: pathlib.Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _read_tensors(path: pathlib.Path) -> Dict[str, torch.Tensor]:
    return load_file(str(path)) if path.is_file() else {}


def load_case(name: str, family: str = "trellis") -> Tuple[dict, dict, Dict[str, torch.Tensor], Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """(config, case, state_dict, inputs, outputs) of one golden case.

    Files a case does not have come back empty; a missing case folder raises
    ``FileNotFoundError`` naming the directory that was searched.
    """
    folder = case_dir(name, family)
    if not folder.is_dir():
        env_name = FAMILIES[family][0]
        raise FileNotFoundError(
            f"golden case {name!r} not found under {golden_dir(family)} (set {env_name} to another golden set)")
    return (
        _read_json(folder / "config.json"),
        _read_json(folder / "case.json"),
        _read_tensors(folder / "model.safetensors"),
        _read_tensors(folder / "inputs.safetensors"),
        _read_tensors(folder / "outputs.safetensors"),
    )


def check_official_keys(path: pathlib.Path, family: str = "trellis") -> None:
    """Build the configuration of key file `path` on the meta device and assert that its state dict has exactly
    the released checkpoint's keys, shapes and dtypes. A TRELLIS.2 key file may add the extra args its dtypes
    were recorded with (``built_with_extra_args``) and name derived buffers checkpoints do not carry
    (``derived_buffers_not_in_checkpoint``), which are left out on both sides."""
    from trellis_backend.models import build_model

    spec = json.loads(path.read_text())
    args = {**spec["args"], **spec.get("built_with_extra_args", {})}
    model = build_model(spec["name"], args, device="meta", family=family)
    derived = set(spec.get("derived_buffers_not_in_checkpoint", {}))
    got = {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in model.state_dict().items()
           if k not in derived}
    want = {k: [list(shape), dtype] for k, (shape, dtype) in spec["state_dict"].items() if k not in derived}
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    assert not missing and not extra, f"missing {missing[:10]}, unexpected {extra[:10]}"
    wrong = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert not wrong, f"{len(wrong)} keys differ in shape/dtype, e.g. {list(wrong.items())[:5]}"
