"""Parity of every model class with the reference TRELLIS on the golden cases (CPU, float32)."""
from __future__ import annotations

import pytest
import torch

from golden_cases import case_names, golden_dir, load_case
from trellis_backend.models import build_model, load_state_dict_strict
from trellis_backend.sparse import SparseTensor

# One tolerance for every case, the sparse-conv models included: the golden set was produced by the
# reference run single-threaded (its multi-threaded spconv CPU path races; docs/PARITY.md).
TOL = 1e-4


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def assert_close(name, got, want):
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = rel_err(got, want)
    assert err < TOL, f"{name}: relative error {err:.3e}"
    max_abs = (got.double() - want.double()).abs().max().item() if got.numel() else 0.0
    scale = want.double().abs().max().item() if want.numel() else 1.0
    assert max_abs <= TOL * max(scale, 1.0), f"{name}: max abs error {max_abs:.3e} (scale {scale:.3e})"


def assert_items(items, fields, outputs):
    """Each decoded item's fields against the golden ``<item>.<field>`` tensors, and as many items."""
    for i, item in enumerate(items):
        for field in fields:
            assert_close(f"{i}.{field}", getattr(item, field), outputs[f"{i}.{field}"])
    assert len(items) == len({k.split(".")[0] for k in outputs})


def load(name):
    config, case, state_dict, inputs, outputs = load_case(name)
    model = build_model(config["name"], config["args"])
    load_state_dict_strict(model, state_dict, source=name)
    return model.eval(), config, case, inputs, outputs


def cases_with_prefix(prefix):
    return [n for n in case_names() if n.startswith(prefix)]


def sparse(inputs, key):
    return SparseTensor(inputs[f"{key}.feats"], inputs[f"{key}.coords"])


def test_golden_dir_has_cases():
    assert case_names(), f"no golden cases under {golden_dir()}"


@pytest.mark.parametrize("name", cases_with_prefix("ss_encoder"))
def test_ss_encoder(name):
    model, _, _, inputs, outputs = load(name)
    with torch.no_grad():
        z, mean, logvar = model(inputs["x"], sample_posterior=False, return_raw=True)
    for key, got in (("z", z), ("mean", mean), ("logvar", logvar)):
        assert_close(key, got, outputs[key])


@pytest.mark.parametrize("name", cases_with_prefix("ss_decoder"))
def test_ss_decoder(name):
    model, _, _, inputs, outputs = load(name)
    with torch.no_grad():
        assert_close("logits", model(inputs["z"]), outputs["logits"])


@pytest.mark.parametrize("name", cases_with_prefix("ss_flow"))
def test_ss_flow(name):
    model, _, _, inputs, outputs = load(name)
    with torch.no_grad():
        assert_close("v", model(inputs["x"], inputs["t"], inputs["cond"]), outputs["v"])


@pytest.mark.parametrize("name", cases_with_prefix("slat_flow"))
def test_slat_flow(name):
    model, _, _, inputs, outputs = load(name)
    with torch.no_grad():
        v = model(sparse(inputs, "x"), inputs["t"], inputs["cond"])
    assert torch.equal(v.coords, outputs["v.coords"]), "velocity must keep the input voxel order"
    assert_close("v.feats", v.feats, outputs["v.feats"])


@pytest.mark.parametrize("name", cases_with_prefix("slat_encoder"))
def test_slat_encoder(name):
    model, _, _, inputs, outputs = load(name)
    with torch.no_grad():
        z, mean, logvar = model(sparse(inputs, "x"), sample_posterior=False, return_raw=True)
    assert torch.equal(z.coords, outputs["z.coords"])
    for key, got in (("z.feats", z.feats), ("mean", mean), ("logvar", logvar)):
        assert_close(key, got, outputs[key])


@pytest.mark.parametrize("name", cases_with_prefix("slat_decoder_gs"))
def test_slat_decoder_gaussians(name):
    model, _, _, inputs, outputs = load(name)
    with torch.no_grad():
        gaussians = model(sparse(inputs, "z"))
    assert_items(gaussians, ("_xyz", "_features_dc", "_scaling", "_rotation", "_opacity", "get_xyz", "get_scaling",
                             "get_rotation", "get_opacity"), outputs)


@pytest.mark.parametrize("name", cases_with_prefix("slat_decoder_rf"))
def test_slat_decoder_radiance_field(name):
    model, _, _, inputs, outputs = load(name)
    with torch.no_grad():
        fields = model(sparse(inputs, "z"))
    assert_items(fields, ("position", "trivec", "density", "features_dc"), outputs)


@pytest.mark.parametrize("name", cases_with_prefix("slat_decoder_mesh"))
def test_slat_decoder_mesh_features(name):
    """The network output before extraction must match exactly; the mesh itself is compared as
    geometry in test_mesh_extraction.py."""
    model, _, _, inputs, outputs = load(name)
    with torch.no_grad():
        feats = model.decode_features(sparse(inputs, "z"))
    assert torch.equal(feats.coords, outputs["feats.coords"])
    assert_close("feats.feats", feats.feats, outputs["feats.feats"])
