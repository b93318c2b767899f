"""Shared helpers of the TRELLIS.2 parity runners: one golden case, its model, tensors and comparisons.

A runner module `tests/trellis2_runners_<area>.py` exposes ``RUNNERS = {case_name: fn}``; each
``fn(case: Case) -> Dict[str, float]`` runs the call the case describes, asserts every output with
`compare` (or its own exact comparison, e.g. for meshes) and returns the relative error per output.
`test_trellis2_parity.py` collects every runner module and runs one test per golden2 case.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch

from golden_cases import load_case
from trellis_backend.models import build_model, load_state_dict_strict
from trellis_backend.sparse import SparseTensor

FAMILY = "trellis2"
TOL = 1e-4  # relative: max |got - want| / max |want|


@dataclass
class Case:
    name: str
    config: dict
    case: dict
    state_dict: Dict[str, torch.Tensor]
    inputs: Dict[str, torch.Tensor]
    outputs: Dict[str, torch.Tensor]

    @classmethod
    def load(cls, name: str) -> "Case":
        return cls(name, *load_case(name, family=FAMILY))


def load_model(case: Case) -> torch.nn.Module:
    """The case's config built as TRELLIS.2 and its weights loaded strictly (derived buffers excepted)."""
    model = build_model(case.config["name"], case.config["args"], family=FAMILY)
    load_state_dict_strict(model, case.state_dict, source=case.name)
    return model.eval()


def sparse(tensors: Dict[str, torch.Tensor], key: str) -> SparseTensor:
    """The sparse tensor stored as `<key>.feats` + `<key>.coords`."""
    return SparseTensor(tensors[f"{key}.feats"], tensors[f"{key}.coords"])


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    if want.numel() == 0:
        return 0.0
    got, want = got.double(), want.double()
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-12)).item()


def compare(name: str, got: torch.Tensor, want: torch.Tensor, tol: float = TOL) -> float:
    """Assert equal shapes and relative error below `tol`; return the error."""
    assert tuple(got.shape) == tuple(want.shape), f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = rel_err(got, want)
    assert err < tol, f"{name}: relative error {err:.3e} (tolerance {tol:.0e})"
    return err


def compare_sparse(name: str, got: SparseTensor, outputs: Dict[str, torch.Tensor], tol: float = TOL) -> float:
    """A sparse output: the same coordinates in the same order, features within `tol`."""
    want_coords = outputs[f"{name}.coords"]
    assert torch.equal(got.coords.to(want_coords.dtype), want_coords), f"{name}: coordinates differ"
    return compare(f"{name}.feats", got.feats, outputs[f"{name}.feats"], tol)
