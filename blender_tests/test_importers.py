"""Importers on real files: GLB (vertex colours + material) and INRIA Gaussian PLY (splat attributes + nodes)."""

import json
import math
import os

import bpy
import numpy as np
import pytest

from conftest import TESTS_DIR, needs_backend, run_backend

WRITE_FILES = r"""
import sys, json
import numpy as np
from plyfile import PlyData
from test_server_double import write_glb, write_ply
glb, ply = sys.argv[1], sys.argv[2]
write_glb(glb, seed=1)
write_ply(ply, seed=1, count=300)
v = PlyData.read(ply)["vertex"].data
print(json.dumps({k: np.asarray(v[k], dtype=float).tolist() for k in v.dtype.names}))
"""


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory):
    if not os.path.exists(os.path.join(TESTS_DIR, "test_server_double.py")):
        pytest.skip("tests/test_server_double.py missing")
    d = tmp_path_factory.mktemp("files")
    glb, ply = str(d / "box.glb"), str(d / "splats.ply")
    raw = json.loads(run_backend(WRITE_FILES, glb, ply).strip().splitlines()[-1])
    return glb, ply, raw


def _attr(mesh, name, field, width):
    attr = mesh.attributes[name]
    out = np.empty(len(attr.data) * width, dtype=np.float32)
    attr.data.foreach_get(field, out)
    return out.reshape(-1, width) if width > 1 else out


@needs_backend
def test_gaussian_ply_becomes_point_cloud_with_activated_attributes(addon, sample_files):
    from trellis_blender import importers

    _, ply, raw = sample_files
    objs = importers.import_result(bpy.context, {"ply": ply, "slat": "/x.npz"},
                                   {"outputs": "GAUSSIANS", "prompt": "splats", "seed": 4, "params": "{}"})
    assert len(objs) == 1
    obj = objs[0]
    mesh = obj.data
    assert obj.users_collection[0].name == "TRELLIS"
    assert len(mesh.vertices) == 300 and len(mesh.polygons) == 0
    kinds = {a.name: (a.data_type, a.domain) for a in mesh.attributes}
    assert kinds["opacity"] == ("FLOAT", "POINT")
    assert kinds["scale"] == ("FLOAT_VECTOR", "POINT")
    assert kinds["rotation"] == ("FLOAT_VECTOR", "POINT") and kinds["rotation_w"] == ("FLOAT", "POINT")
    assert kinds["color"] == ("FLOAT_COLOR", "POINT")

    opacity = _attr(mesh, "opacity", "value", 1)
    np.testing.assert_allclose(opacity, 1 / (1 + np.exp(-np.array(raw["opacity"]))), rtol=1e-5, atol=1e-6)
    scale = _attr(mesh, "scale", "vector", 3)
    np.testing.assert_allclose(scale[:, 0], np.exp(raw["scale_0"]), rtol=1e-5)
    color = _attr(mesh, "color", "color", 4)
    srgb = np.clip(0.28209479 * np.array(raw["f_dc_1"]) + 0.5, 0, 1)  # the DC term is an sRGB display colour
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)  # Blender's are linear
    np.testing.assert_allclose(color[:, 1], linear, atol=1e-5)
    # positions: the PLY stores (x, -z, y); Blender gets z-up back
    co = np.empty(300 * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3)
    np.testing.assert_allclose(co[:, 0], raw["x"], atol=1e-6)
    np.testing.assert_allclose(co[:, 1], raw["z"], atol=1e-6)
    np.testing.assert_allclose(co[:, 2], -np.array(raw["y"]), atol=1e-6)
    q = np.concatenate([_attr(mesh, "rotation_w", "value", 1)[:, None], _attr(mesh, "rotation", "vector", 3)], 1)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)

    # geometry nodes display every splat as an icosphere instance that keeps its own frame
    mod = obj.modifiers["TRELLIS Splats"]
    assert mod.type == "NODES" and mod.node_group is not None
    depsgraph = bpy.context.evaluated_depsgraph_get()
    shown = [inst.object.type for inst in depsgraph.object_instances
             if inst.is_instance and inst.parent and inst.parent.original == obj]
    assert shown == ["MESH"] * 300
    nodes = obj.material_slots[0].material.node_tree.nodes
    assert {(n.attribute_name, n.attribute_type) for n in nodes if n.type == "ATTRIBUTE"} == {
        ("splat_color", "INSTANCER"), ("opacity", "INSTANCER")}

    assert obj["trellis_kind"] == "gaussians" and obj["trellis_sidecar"] == "/x.npz"
    assert obj["trellis_prompt"] == "splats" and obj["trellis_seed"] == 4


@needs_backend
def test_splat_rotation_matches_mathutils(addon, sample_files):
    from mathutils import Euler, Quaternion

    from trellis_blender import importers

    _, ply, _ = sample_files
    obj = importers.import_result(bpy.context, {"ply": ply}, {"outputs": "GAUSSIANS", "prompt": "r"})[0]
    mesh = obj.data
    quat = np.concatenate([_attr(mesh, "rotation_w", "value", 1)[:, None], _attr(mesh, "rotation", "vector", 3)], 1)
    euler = _attr(mesh, "rotation_euler", "vector", 3)
    for i in range(0, 300, 37):
        expected = Quaternion(quat[i].tolist()).to_matrix()
        got = Euler(euler[i].tolist(), "XYZ").to_matrix()
        for a, b in zip(expected, got):
            assert all(math.isclose(x, y, abs_tol=1e-4) for x, y in zip(a, b))


@needs_backend
def test_glb_becomes_mesh_with_vertex_colour_material(addon, sample_files):
    from trellis_blender import importers

    glb, _, _ = sample_files
    objs = importers.import_result(bpy.context, {"glb": glb, "slat": "/s.npz"},
                                   {"outputs": "MESH", "prompt": "a box", "seed": 1, "params": "{\"seed\": 1}"})
    assert len(objs) == 1
    obj = objs[0]
    assert obj.type == "MESH" and obj.name == "TRELLIS a box"
    assert [c.name for c in obj.users_collection] == ["TRELLIS"]
    assert len(obj.data.vertices) > 0 and len(obj.data.polygons) > 0
    colors = obj.data.color_attributes
    assert len(colors) >= 1 and colors.active_color is not None
    mat = obj.active_material
    assert mat is not None and mat.node_tree is not None
    vc = [n for n in mat.node_tree.nodes if n.bl_idname == "ShaderNodeVertexColor"]
    assert vc and vc[0].layer_name == colors.active_color.name
    bsdf = next(n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    assert bsdf.inputs["Base Color"].is_linked and bsdf.inputs["Metallic"].default_value == 0.0
    assert mat.diffuse_color[:3] != (0.8, 0.8, 0.8)  # viewport colour follows the vertex colours
    assert obj["trellis_kind"] == "mesh" and json.loads(obj["trellis_settings"]) == {"seed": 1}


@needs_backend
def test_both_outputs_and_cursor_placement(addon, sample_files):
    from trellis_blender import importers

    glb, ply, _ = sample_files
    bpy.context.scene.cursor.location = (1.0, 2.0, 3.0)
    objs = importers.import_result(bpy.context, {"glb": glb, "ply": ply}, {"outputs": "BOTH", "prompt": "p"})
    assert [o["trellis_kind"] for o in objs] == ["mesh", "gaussians"]
    for o in objs:
        assert tuple(o.location) == pytest.approx((1.0, 2.0, 3.0))


@needs_backend
def test_failed_import_removes_only_what_it_created(addon, sample_files, tmp_path):
    from conftest import add_user_objects, scene_fingerprint
    from trellis_blender import importers

    glb, _, _ = sample_files
    add_user_objects()
    before = scene_fingerprint()[0]
    bad = tmp_path / "broken.ply"
    bad.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nend_header\n1\n2\n3\n")
    with pytest.raises(ValueError, match="not a 3D Gaussian"):
        importers.import_result(bpy.context, {"glb": glb, "ply": str(bad)}, {"outputs": "BOTH", "prompt": "p"})
    assert scene_fingerprint()[0] == before


def test_ply_reader_formats(tmp_path):
    from trellis_blender.core.ply_reader import PLYError, read_ply

    vals = np.array([[1.5, -2.0], [3.25, 4.0]], dtype=np.float32)
    header = "ply\nformat {}\nelement vertex 2\nproperty float a\nproperty float b\nend_header\n"
    (tmp_path / "le.ply").write_bytes(header.format("binary_little_endian 1.0").encode() + vals.astype("<f4").tobytes())
    (tmp_path / "be.ply").write_bytes(header.format("binary_big_endian 1.0").encode() + vals.astype(">f4").tobytes())
    (tmp_path / "as.ply").write_bytes(header.format("ascii 1.0").encode() + b"1.5 -2\n3.25 4\n")
    for name in ("le", "be", "as"):
        _, props = read_ply(str(tmp_path / (name + ".ply")))
        np.testing.assert_allclose(props["a"], vals[:, 0])
        np.testing.assert_allclose(props["b"], vals[:, 1])
    (tmp_path / "trunc.ply").write_bytes(header.format("binary_little_endian 1.0").encode() + b"\0" * 5)
    with pytest.raises(PLYError, match="truncated"):
        read_ply(str(tmp_path / "trunc.ply"))
    (tmp_path / "no.ply").write_bytes(b"solid stl\n")
    with pytest.raises(PLYError):
        read_ply(str(tmp_path / "no.ply"))
