"""Gaussians: reference activations (golden), INRIA PLY writer/reader, quaternion helpers."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from golden_cases import has_case, load_case
from trellis_backend.representations import (
    SH_C0, Z_UP_TO_Y_UP, Gaussians, matrix_to_quaternion, quaternion_to_matrix)

INRIA_NAMES = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
               "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def make_gaussians(n=500, seed=0, scaling_activation="softplus", kernel=9e-4):
    g = torch.Generator().manual_seed(seed)
    gs = Gaussians(aabb=[-0.5, -0.5, -0.5, 1.0, 1.0, 1.0], sh_degree=0, mininum_kernel_size=kernel,
                   scaling_bias=0.004, opacity_bias=0.1, scaling_activation=scaling_activation)
    gs._xyz = torch.rand(n, 3, generator=g)
    gs._features_dc = torch.randn(n, 1, 3, generator=g)
    gs._scaling = torch.randn(n, 3, generator=g)
    gs._rotation = torch.randn(n, 4, generator=g) * 0.5
    gs._opacity = torch.randn(n, 1, generator=g) * 3
    return gs


# ---------------------------------------------------------------------------------------------
# activations

@pytest.mark.skipif(not has_case("slat_decoder_gs"), reason="golden case slat_decoder_gs absent")
def test_activations_match_reference_golden():
    config, _, _, _, outputs = load_case("slat_decoder_gs")
    cfg = config["args"]["representation_config"]
    items = sorted({k.split(".")[0] for k in outputs})
    assert items
    for i in items:
        gs = Gaussians(aabb=[-0.5, -0.5, -0.5, 1.0, 1.0, 1.0], sh_degree=0,
                       mininum_kernel_size=cfg["3d_filter_kernel_size"], scaling_bias=cfg["scaling_bias"],
                       opacity_bias=cfg["opacity_bias"], scaling_activation=cfg["scaling_activation"])
        for name in ("_xyz", "_features_dc", "_scaling", "_rotation", "_opacity"):
            setattr(gs, name, outputs[f"{i}.{name}"])
        for name in ("get_xyz", "get_scaling", "get_rotation", "get_opacity"):
            want = outputs[f"{i}.{name}"]
            got = getattr(gs, name)
            assert got.shape == want.shape
            err = ((got - want).abs() / want.abs().clamp_min(1e-6)).max().item()
            assert err < 1e-5, f"{i}.{name}: relative error {err:.2e}"


def test_activation_forms():
    for act in ("softplus", "exp"):
        gs = make_gaussians(scaling_activation=act, kernel=0.01)
        s = gs._scaling.double()
        if act == "softplus":
            bias = math.log(math.expm1(0.004))
            base = torch.nn.functional.softplus(s + bias)
        else:
            base = torch.exp(s + math.log(0.004))
        want = torch.sqrt(base ** 2 + 0.01 ** 2)
        assert torch.allclose(gs.get_scaling.double(), want, rtol=1e-5, atol=0)
    gs = make_gaussians()
    assert torch.allclose(gs.get_opacity.double(),
                          torch.sigmoid(gs._opacity.double() + math.log(0.1 / 0.9)), rtol=1e-6, atol=0)
    q = gs._rotation.double() + torch.tensor([1.0, 0, 0, 0], dtype=torch.float64)
    assert torch.allclose(gs.get_rotation.double(), q / q.norm(dim=1, keepdim=True), atol=1e-6)
    assert torch.allclose(gs.get_xyz, gs._xyz - 0.5)
    assert torch.allclose(gs.get_colors, SH_C0 * gs._features_dc[:, 0] + 0.5)
    # zero raw output: identity rotation, the configured opacity and scale
    gs._rotation.zero_(), gs._opacity.zero_(), gs._scaling.zero_()
    assert torch.allclose(gs.get_rotation, torch.tensor([[1.0, 0, 0, 0]]).expand(len(gs), 4))
    assert torch.allclose(gs.get_opacity, torch.full_like(gs._opacity, 0.1))
    assert torch.allclose(gs.get_scaling, torch.full_like(gs._scaling, math.sqrt(0.004 ** 2 + 9e-4 ** 2)))


def test_setters_invert_activations():
    gs = make_gaussians()
    xyz, scl, rot, opa = gs.get_xyz.clone(), gs.get_scaling.clone(), gs.get_rotation.clone(), gs.get_opacity.clone()
    other = make_gaussians(seed=1)
    other.from_xyz(xyz), other.from_scaling(scl), other.from_rotation(rot), other.from_opacity(opa)
    assert torch.allclose(other.get_xyz, xyz, atol=1e-6)
    assert torch.allclose(other.get_scaling, scl, rtol=1e-4)
    assert torch.allclose(other.get_rotation, rot, atol=1e-6)
    assert torch.allclose(other.get_opacity, opa, atol=1e-6)


def test_covariance_is_rotated_scale():
    gs = make_gaussians(n=20)
    cov6 = gs.get_covariance()
    r = torch.from_numpy(quaternion_to_matrix(gs.get_rotation.double().numpy()))
    s = gs.get_scaling.double()
    full = r @ torch.diag_embed(s ** 2) @ r.transpose(1, 2)
    i, j = torch.triu_indices(3, 3)
    assert torch.allclose(cov6.double(), full[:, i, j], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# quaternion helpers

def rodrigues(axis, angle):
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def test_quaternion_helpers():
    rng = np.random.default_rng(0)
    # against an independent axis-angle construction, q = (cos θ/2, sin θ/2 · axis)
    for _ in range(50):
        axis, angle = rng.normal(size=3), rng.uniform(-math.pi, math.pi)
        q = np.concatenate([[math.cos(angle / 2)], math.sin(angle / 2) * axis / np.linalg.norm(axis)])
        assert np.allclose(quaternion_to_matrix(q * 3.7), rodrigues(axis, angle), atol=1e-12)
    # round trip, including near-180° rotations (w ≈ 0) and each pivot
    qs = rng.normal(size=(2000, 4))
    qs[:4] = np.eye(4)
    qs[4:8] = np.eye(4) + 1e-9
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    m = quaternion_to_matrix(qs)
    assert np.allclose(m @ np.swapaxes(m, 1, 2), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(m), 1.0)
    back = matrix_to_quaternion(m)
    sign = np.sign(np.sum(back * qs, axis=1, keepdims=True))
    assert np.allclose(back * sign, qs, atol=1e-10)
    assert np.allclose(quaternion_to_matrix(back), m, atol=1e-12)
    # sign convention: the largest-magnitude component is positive
    big = np.take_along_axis(back, np.abs(back).argmax(1)[:, None], 1)
    assert (big > 0).all()
    # batched over several leading dims
    assert matrix_to_quaternion(m.reshape(20, 100, 3, 3)).shape == (20, 100, 4)


# ---------------------------------------------------------------------------------------------
# PLY

def read_ply(path):
    from plyfile import PlyData

    data = PlyData.read(str(path))
    v = data["vertex"]
    return data, v, {p.name: np.asarray(v[p.name], dtype=np.float64) for p in v.properties}


def test_save_ply_inria_layout_and_values(tmp_path):
    gs = make_gaussians(n=777)
    gs._opacity[0] = 80.0  # sigmoid saturates in float32; the stored logit must stay finite
    path = tmp_path / "splats.ply"
    gs.save_ply(path)
    data, v, cols = read_ply(path)
    assert data.byte_order == "<" and not data.text
    assert [p.name for p in v.properties] == INRIA_NAMES
    assert all(p.val_dtype in ("f4", "float32", "float") for p in v.properties)
    assert len(v) == 777
    assert all(np.isfinite(c).all() for c in cols.values())

    t = np.asarray(Z_UP_TO_Y_UP)
    xyz = np.stack([cols["x"], cols["y"], cols["z"]], 1)
    assert np.allclose(xyz, gs.get_xyz.double().numpy() @ t.T, atol=1e-6)
    # the reference's rotation: (x, y, z) -> (x, -z, y), object "up" (+z) along -y as in COLMAP/INRIA scenes
    assert np.allclose(xyz[:, 1], -gs.get_xyz[:, 2].numpy(), atol=1e-6)
    assert np.allclose(xyz[:, 2], gs.get_xyz[:, 1].numpy(), atol=1e-6)
    assert np.all(np.stack([cols["nx"], cols["ny"], cols["nz"]]) == 0)
    f_dc = np.stack([cols[f"f_dc_{i}"] for i in range(3)], 1)
    assert np.allclose(f_dc, gs._features_dc[:, 0].numpy(), atol=1e-7)
    # inverse activations: sigmoid(opacity) and exp(scale) give back the activated values
    assert np.allclose(1 / (1 + np.exp(-cols["opacity"][1:])), gs.get_opacity[1:, 0].numpy(), atol=1e-6)
    assert cols["opacity"][0] == pytest.approx(80.0 + math.log(0.1 / 0.9), abs=1e-4)
    scale = np.exp(np.stack([cols[f"scale_{i}"] for i in range(3)], 1))
    assert np.allclose(scale, gs.get_scaling.numpy(), rtol=1e-5)
    rot = np.stack([cols[f"rot_{i}"] for i in range(4)], 1)
    assert np.allclose(np.linalg.norm(rot, axis=1), 1, atol=1e-6)
    want = t @ quaternion_to_matrix(gs.get_rotation.double().numpy())
    assert np.allclose(quaternion_to_matrix(rot), want, atol=1e-6)


def test_save_then_load_round_trip(tmp_path):
    gs = make_gaussians(n=300, seed=3)
    path = tmp_path / "a.ply"
    gs.save_ply(path)
    back = Gaussians.from_ply(path, mininum_kernel_size=9e-4, scaling_bias=0.004, opacity_bias=0.1,
                              scaling_activation="softplus")
    assert len(back) == len(gs)
    assert torch.allclose(back.get_xyz, gs.get_xyz, atol=1e-6)
    assert torch.allclose(back.get_scaling, gs.get_scaling, rtol=1e-4)
    assert torch.allclose(back.get_opacity, gs.get_opacity, atol=1e-6)
    assert torch.allclose(back._features_dc, gs._features_dc)
    dots = (back.get_rotation * gs.get_rotation).sum(1).abs()
    assert torch.allclose(dots, torch.ones_like(dots), atol=1e-5)
    # without a transform, positions are written as they are
    gs.save_ply(tmp_path / "raw.ply", transform=None)
    _, _, cols = read_ply(tmp_path / "raw.ply")
    assert np.allclose(np.stack([cols["x"], cols["y"], cols["z"]], 1), gs.get_xyz.numpy(), atol=1e-7)


def test_save_ply_is_atomic(tmp_path, monkeypatch):
    gs = make_gaussians(n=50)
    path = tmp_path / "out.ply"
    gs.save_ply(path)
    good = path.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["out.ply"]  # no temporary left behind

    import plyfile

    def broken_write(self, stream):
        stream.write(b"ply\nformat binary_little_endian 1.0\n")  # a partial header, then failure
        raise OSError("disk full")

    monkeypatch.setattr(plyfile.PlyData, "write", broken_write)
    with pytest.raises(OSError):
        gs.save_ply(path)
    assert path.read_bytes() == good  # the previous file is untouched
    with pytest.raises(OSError):
        gs.save_ply(tmp_path / "new.ply")
    assert sorted(os.listdir(tmp_path)) == ["out.ply"]  # neither a partial file nor a temporary


def test_features_rest_layout(tmp_path):
    gs = make_gaussians(n=10)
    gs.sh_degree = 1
    gs._features_rest = torch.randn(10, 3, 3)
    gs.save_ply(tmp_path / "sh1.ply")
    _, v, cols = read_ply(tmp_path / "sh1.ply")
    names = [p.name for p in v.properties]
    assert names[9:18] == [f"f_rest_{i}" for i in range(9)] and names[18] == "opacity"
    # INRIA order: all coefficients of red, then green, then blue
    assert np.allclose(cols["f_rest_1"], gs._features_rest[:, 1, 0].numpy())
    assert np.allclose(cols["f_rest_3"], gs._features_rest[:, 0, 1].numpy())
    assert gs.get_features.shape == (10, 4, 3)
