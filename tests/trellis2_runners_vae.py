"""Golden-case runners of TRELLIS.2's SC-VAEs: `RUNNERS[case_name](case_name)` loads the case, runs the
model as `case.json` describes and asserts the outputs (1e-4 relative on CPU float32; coordinates, and
mesh faces, exactly). Collected by the TRELLIS.2 parity test.

The shape decoder's faces come from `representations.ovoxel.flexible_dual_grid_to_mesh`; without that
module the mesh check skips, after the network output, the subdivision logits and the mesh vertices
(one per voxel, computed from the decoder's dual grid) have been compared.
"""
from __future__ import annotations

import importlib.util

import pytest
import torch

from golden_cases import load_case
from trellis_backend.models import build_model, load_state_dict_strict
from trellis_backend.sparse import SparseTensor

TOL = 1e-4
SUBDIVISIONS = 4  # doublings of the golden SC-VAE decoders (5 levels)


def max_rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want|."""
    got, want = got.double(), want.double()
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-12)).item() if want.numel() else 0.0


def assert_close(name: str, got: torch.Tensor, want: torch.Tensor, tol: float = TOL) -> float:
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = max_rel_err(got, want)
    assert err < tol, f"{name}: max relative error {err:.3e} >= {tol:.0e}"
    return err


def assert_sparse(name: str, got: SparseTensor, outputs: dict) -> float:
    """Coordinates (rows in the same order) exactly, features to `TOL`."""
    want_coords = outputs[f"{name}.coords"]
    assert got.coords.shape == want_coords.shape, f"{name}.coords: {tuple(got.coords.shape)} != {tuple(want_coords.shape)}"
    assert torch.equal(got.coords.int(), want_coords.int()), f"{name}.coords differ (voxels or their order)"
    return assert_close(f"{name}.feats", got.feats, outputs[f"{name}.feats"])


def sparse(tensors: dict, name: str) -> SparseTensor:
    return SparseTensor(tensors[f"{name}.feats"], tensors[f"{name}.coords"])


def load(name: str):
    config, case, state_dict, inputs, outputs = load_case(name, family="trellis2")
    model = build_model(config["name"], config["args"], family="trellis2")
    load_state_dict_strict(model, state_dict, source=name)
    return model.eval(), case, inputs, outputs


def _check_encoder(name: str, run) -> float:
    model, _, inputs, outputs = load(name)
    with torch.no_grad():
        z, mean, logvar = run(model, inputs)
    return max(assert_sparse("z", z, outputs), assert_close("mean", mean, outputs["mean"]),
               assert_close("logvar", logvar, outputs["logvar"]))


def run_shape_vae_encoder(name: str = "shape_vae_encoder") -> float:
    return _check_encoder(name, lambda m, i: m(sparse(i, "vertices"), sparse(i, "intersected"),
                                               sample_posterior=False, return_raw=True))


def run_tex_vae_encoder(name: str = "tex_vae_encoder") -> float:
    return _check_encoder(name, lambda m, i: m(sparse(i, "x"), sample_posterior=False, return_raw=True))


def run_shape_vae_decoder_network(name: str = "shape_vae_decoder") -> float:
    """h, the subdivision logits per level, and each item's mesh vertices from the decoder's dual grid."""
    model, _, inputs, outputs = load(name)
    with torch.no_grad():
        h, subs = model.decode(sparse(inputs, "z"), return_subs=True)
    errors = [assert_sparse("h", h, outputs)]
    assert len(subs) == SUBDIVISIONS
    errors += [assert_sparse(f"subs.{i}", s, outputs) for i, s in enumerate(subs)]
    grids = model.dual_grids(h)
    assert len(grids) == 2
    for b, g in enumerate(grids):
        # the mesh has one vertex per voxel, in voxel order, at (coords + dual vertex) / resolution - 0.5
        vertices = (g.coords.double() + g.dual_vertices.double()) / model.resolution - 0.5
        errors.append(assert_close(f"{b}.vertices", vertices, outputs[f"{b}.vertices"]))
    return max(errors)


def run_shape_vae_decoder_meshes(name: str = "shape_vae_decoder") -> float:
    """What the pipeline calls, `meshes, subs = model(z, return_subs=True)`: vertices to TOL, faces exactly."""
    if importlib.util.find_spec("trellis_backend.representations.ovoxel") is None:
        pytest.skip("needs representations.ovoxel (branch ovoxel)")
    model, _, inputs, outputs = load(name)
    with torch.no_grad():
        meshes, subs = model(sparse(inputs, "z"), return_subs=True)
    assert len(meshes) == 2 and len(subs) == SUBDIVISIONS
    errors = []
    for b, mesh in enumerate(meshes):
        errors.append(assert_close(f"{b}.vertices", mesh.vertices, outputs[f"{b}.vertices"]))
        want = outputs[f"{b}.faces"]
        assert tuple(mesh.faces.shape) == tuple(want.shape), f"{b}.faces: {tuple(mesh.faces.shape)} != {tuple(want.shape)}"
        assert torch.equal(mesh.faces.long(), want.long()), f"{b}.faces differ"
    return max(errors)


def run_shape_vae_decoder(name: str = "shape_vae_decoder") -> float:
    err = run_shape_vae_decoder_network(name)
    return max(err, run_shape_vae_decoder_meshes(name))


def run_tex_vae_decoder(name: str = "tex_vae_decoder") -> float:
    model, _, inputs, outputs = load(name)
    guide = [sparse(inputs, f"guide_subs.{i}") for i in range(SUBDIVISIONS)]
    with torch.no_grad():
        y = model(sparse(inputs, "z"), guide_subs=guide)
    return assert_sparse("y", y, outputs)


def _as_runner(run):
    """Adapt `run(case_name) -> max error` to the parity test's contract `fn(case) -> {output: error}`."""
    return lambda case: {"max over outputs": run(case.name)}


RUNNERS = {
    "shape_vae_encoder": _as_runner(run_shape_vae_encoder),
    "tex_vae_encoder": _as_runner(run_tex_vae_encoder),
    "shape_vae_decoder": _as_runner(run_shape_vae_decoder),
    "tex_vae_decoder": _as_runner(run_tex_vae_decoder),
}
