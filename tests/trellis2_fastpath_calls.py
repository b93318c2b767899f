"""The golden2 model cases as repeatable calls on any device, for the fast-path tests of TRELLIS.2.

`model_cases()` lists the golden2 cases that run a model (the O-Voxel cases run no network);
`golden_call(case, model, device)` returns a function that runs the case's call on `device` and
returns its outputs as ``{name: tensor}``: float tensors for values, and for sparse outputs
``<name>.coords`` beside ``<name>.feats``. Inputs are built once per function, so repeated calls
reuse one voxel set as a sampling loop does (spatial caches, CUDA graphs of that voxel set).
`compare_outputs` compares two such results with decoder voxel choices taken into account.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import torch

from golden_cases import case_names
from trellis2_golden import FAMILY, Case
from trellis_backend.pipeline.samplers import build_sampler
from trellis_backend.sparse import SparseTensor

Outputs = Dict[str, torch.Tensor]


def model_cases() -> List[str]:
    """golden2 cases whose call runs a model (every case but the O-Voxel conversions)."""
    return [name for name in case_names(FAMILY) if not name.startswith("ovoxel_")]


def _to(value: torch.Tensor, device) -> torch.Tensor:
    return value.to(device)


def _sparse(inputs: Dict[str, torch.Tensor], key: str, device) -> SparseTensor:
    return SparseTensor(inputs[f"{key}.feats"].to(device), inputs[f"{key}.coords"].to(device))


def _put_sparse(out: Outputs, name: str, x: SparseTensor) -> None:
    out[f"{name}.coords"] = x.coords.int().cpu()
    out[f"{name}.feats"] = x.feats.float().cpu()


def golden_call(case: Case, model: torch.nn.Module, device) -> Callable[[], Outputs]:
    """A function running `case`'s call of `model` on `device` (inputs moved there once)."""
    name, inputs = case.name, case.inputs
    sparse_keys = sorted({k.rsplit(".", 1)[0] for k in inputs if k.endswith(".feats")})
    parts = {f"{k}.{p}" for k in sparse_keys for p in ("feats", "coords")}
    dense = {k: _to(v, device) for k, v in inputs.items() if k not in parts}
    sp = {k: _sparse(inputs, k, device) for k in sparse_keys}

    def fresh(key: str) -> SparseTensor:  # same coords and spatial cache, a new feature tensor (a sampler step)
        return sp[key].replace(sp[key].feats.clone())

    def call() -> Outputs:
        out: Outputs = {}
        with torch.no_grad():
            if name.startswith("sampler_"):
                spec = case.config["sampler"]
                noise = fresh("noise") if "noise" in sp else dense["noise"]
                extra = {"concat_cond": fresh("concat_cond")} if "concat_cond" in sp else {}
                res = build_sampler(spec).sample(model, noise, dense["cond"], dense["neg_cond"], **spec["params"],
                                                 **extra)
                if isinstance(res.samples, SparseTensor):
                    _put_sparse(out, "samples", res.samples)
                else:
                    out["samples"] = res.samples.float().cpu()
            elif name.startswith("ss_flow"):
                out["v"] = model(dense["x"], dense["t"], dense["cond"]).float().cpu()
            elif name.startswith("slat_flow"):
                cond = [dense[f"cond.{i}"] for i in range(2)] if "cond.0" in dense else dense["cond"]
                extra = {"concat_cond": fresh("concat_cond")} if "concat_cond" in sp else {}
                _put_sparse(out, "v", model(fresh("x"), dense["t"], cond, **extra))
            elif name == "ss_encoder":
                out["mean"] = model(dense["x"], sample_posterior=False, return_raw=True)[1].float().cpu()
            elif name == "ss_decoder":
                out["logits"] = model(dense["z"]).float().cpu()
            elif name == "shape_vae_encoder":
                z, mean, _ = model(fresh("vertices"), fresh("intersected"), sample_posterior=False, return_raw=True)
                _put_sparse(out, "z", z.replace(mean))
            elif name == "tex_vae_encoder":
                z, mean, _ = model(fresh("x"), sample_posterior=False, return_raw=True)
                _put_sparse(out, "z", z.replace(mean))
            elif name == "shape_vae_decoder":
                h, subs = model.decode(fresh("z"), return_subs=True)
                for i, s in enumerate(subs):
                    _put_sparse(out, f"subs.{i}", s)
                _put_sparse(out, "h", h)
            elif name == "tex_vae_decoder":
                guide = [fresh(f"guide_subs.{i}") for i in range(len([k for k in sp if k.startswith("guide_subs.")]))]
                _put_sparse(out, "y", model(fresh("z"), guide_subs=guide))
            else:
                raise KeyError(f"no fast-path call for golden2 case {name!r}")
        return out

    return call


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """‖got − want‖ / ‖want‖ (the norm-wise error bf16 tolerances are stated in)."""
    got, want = got.double(), want.double()
    return ((got - want).norm() / want.norm().clamp_min(1e-12)).item() if want.numel() else 0.0


def compare_outputs(got: Outputs, want: Outputs, tol: float, decision_band: float = 0.0) -> Dict[str, float]:
    """Relative error per output; asserts equal coordinates and errors below `tol`.

    A decoder that predicts its subdivisions (`subs.<i>` outputs) keeps child k iff its logit > 0: when
    the two runs keep different children at level i, every disagreeing logit must lie within
    `decision_band` · max|logit| of zero in `want` (a decision inside the rounding band of the faster
    dtype), and the outputs after that level are not compared (they live on other voxels).
    """
    errors: Dict[str, float] = {}
    diverged: Optional[int] = None
    levels = sorted(int(k.split(".")[1]) for k in want if k.startswith("subs.") and k.endswith(".feats"))
    for i in levels:
        g, w = got[f"subs.{i}.feats"], want[f"subs.{i}.feats"]
        assert torch.equal(got[f"subs.{i}.coords"], want[f"subs.{i}.coords"]), f"subs.{i}: voxels differ"
        errors[f"subs.{i}"] = err = rel_err(g, w)
        assert err < tol, f"subs.{i}: relative error {err:.2e} >= {tol:.0e}"
        flips = (g > 0) != (w > 0)
        if flips.any():
            worst = (w[flips].abs().max() / w.abs().max()).item()
            assert worst <= decision_band, (f"subs.{i}: {int(flips.sum())} child decisions differ, one at "
                                            f"{worst:.1e}·max|logit| from 0 (band {decision_band:.0e})")
            diverged = i
            break
    for key in sorted(k for k in want if not k.startswith("subs.") and not k.endswith(".coords")):
        if diverged is not None:
            errors[f"{key} (not compared: voxels diverged at subs.{diverged})"] = 0.0
            continue
        base = key[:-len(".feats")] if key.endswith(".feats") else None
        if base is not None:
            assert torch.equal(got[f"{base}.coords"], want[f"{base}.coords"]), f"{base}: voxels differ"
        assert got[key].shape == want[key].shape, f"{key}: shape {tuple(got[key].shape)} != {tuple(want[key].shape)}"
        errors[key] = err = rel_err(got[key], want[key])
        assert err < tol, f"{key}: relative error {err:.2e} >= {tol:.0e}"
    return errors
