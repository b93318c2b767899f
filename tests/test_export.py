"""GLB / PLY / sidecar writers, checked with independent readers."""
import json
import struct

import numpy as np
import pytest
import torch

from trellis_backend.pipeline import export


class _Mesh:
    def __init__(self, v, f, attrs=None):
        self.vertices, self.faces, self.vertex_attrs = v, f, attrs


def _tetra(colors=True):
    v = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.0, 0.0], [0.0, 0.3, 0.0], [0.0, 0.0, 0.4], [0.2, 0.2, 0.2]])
    f = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3], [1, 1, 2]])  # last face degenerate
    attrs = torch.tensor([[1.5, 0.0, 0.2, 0, 0, 1]] * 5, dtype=torch.float32) if colors else None
    return _Mesh(v, f, attrs)


def vertex_colors(mesh):
    """COLOR_0 as trimesh exposes it (a material keeps the visual a TextureVisuals), as sRGB bytes.

    COLOR_0 is linear (float in our files): encode it with the sRGB transfer to compare with the
    display colours the pipeline computed."""
    attrs = getattr(mesh.visual, "vertex_attributes", None)
    col = np.asarray(attrs["color"] if attrs is not None and "color" in attrs else mesh.visual.vertex_colors)
    if col.dtype.kind != "f":
        col = col / 255.0
    rgb = np.clip(col[:, :3], 0, 1)
    srgb = np.where(rgb <= 0.0031308, rgb * 12.92, 1.055 * rgb ** (1 / 2.4) - 0.055)
    return np.concatenate([np.round(srgb * 255), np.round(np.clip(col[:, 3:], 0, 1) * 255)], axis=1).astype(int)


def glb_json(path):
    data = open(path, "rb").read()
    magic, version, length = struct.unpack("<4sII", data[:12])
    assert magic == b"glTF" and version == 2 and length == len(data)
    jlen, jtype = struct.unpack("<I4s", data[12:20])
    assert jtype == b"JSON"
    return json.loads(data[20:20 + jlen])


def test_glb_vertex_colours_material_and_axes(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    path = tmp_path / "m.glb"
    info = export.write_glb(path, _tetra())
    assert info == {"vertices": 4, "faces": 4, "textured": False}  # degenerate face and unused vertex dropped
    js = glb_json(path)
    pbr = js["materials"][0]["pbrMetallicRoughness"]
    assert pbr["metallicFactor"] == 0 and pbr["roughnessFactor"] == 1
    assert all(p["material"] == 0 for m in js["meshes"] for p in m["primitives"])
    color_accessor = js["accessors"][js["meshes"][0]["primitives"][0]["attributes"]["COLOR_0"]]
    assert color_accessor["componentType"] == 5126 and color_accessor["type"] == "VEC4"  # float, linear
    # glTF's COLOR_0 is linear: the display colour (1, 0, 0.2) is stored as (1, 0, 0.0331)
    assert np.allclose(color_accessor["max"], [1.0, 0.0, ((0.2 + 0.055) / 1.055) ** 2.4, 1.0], atol=1e-6)
    assert not any(k.startswith("_") for k in js["meshes"][0]["primitives"][0]["attributes"])
    scene = trimesh.load(str(path))
    mesh = list(scene.geometry.values())[0]
    assert len(mesh.vertices) == 4 and len(mesh.faces) == 4
    # z-up (0, 0, 0.4) became y-up (0, 0.4, 0)
    assert np.allclose(mesh.vertices.max(0), [0.3, 0.4, 0.0], atol=1e-6)
    assert np.allclose(mesh.vertices.min(0), [0.0, 0.0, -0.3], atol=1e-6)
    col = vertex_colors(mesh)
    assert col.shape == (4, 4) and np.all(col[:, 0] == 255) and np.all(col[:, 1] == 0) and np.all(col[:, 2] == 51)


def test_force_pbr_material_adds_missing_metallic():
    trimesh = pytest.importorskip("trimesh")
    m = trimesh.creation.box()
    raw = m.export(file_type="glb")
    fixed = export.force_pbr_material(raw)
    js, _ = export._glb_chunks(fixed)
    assert js["materials"][0]["pbrMetallicRoughness"]["metallicFactor"] == 0.0
    assert js["meshes"][0]["primitives"][0]["material"] == 0
    assert len(fixed) % 4 == 0
    assert len(trimesh.load(trimesh.util.wrap_as_stream(fixed), file_type="glb").geometry) == 1


def test_srgb_to_linear_matches_the_standard():
    assert np.allclose(export.srgb_to_linear([0.0, 0.04045, 0.5, 1.0]), [0.0, 0.04045 / 12.92, 0.21404, 1.0], atol=1e-5)


def test_glb_colour_fallbacks(tmp_path):
    pytest.importorskip("trimesh")
    export.write_glb(tmp_path / "grey.glb", _tetra(colors=False))  # no colour source: neutral grey
    verts = np.array([[0.0, 0.0, 0.0], [0.2, 0.2, 0.2]])

    class G:  # two Gaussians: red at the origin voxel, blue far away
        get_xyz = torch.tensor([[0.001, 0.001, 0.001], [0.3, 0.3, 0.3]])
        _features_dc = torch.tensor([[[1.0, -1.0, -1.0]], [[-1.0, -1.0, 1.0]]]) / 0.28209479177387814 * 0.5
        get_opacity = torch.tensor([[1.0], [1.0]])

    col = export.colors_from_gaussians(verts, G())
    assert np.allclose(col[0], [1, 0, 0], atol=1e-5)


def test_glb_takes_gaussian_colours_over_mesh_channels(tmp_path):
    """As the reference's to_glb: with Gaussians at hand the GLB is coloured from them, not from
    the mesh decoder's channels (red there); without them the channels are used."""
    trimesh = pytest.importorskip("trimesh")

    class Blue:  # one blue Gaussian in every voxel the tetrahedron's vertices touch
        get_xyz = torch.tensor([[x, y, z] for x in (0.0, 0.2, 0.3) for y in (0.0, 0.2, 0.3) for z in (0.0, 0.2, 0.4)])
        _features_dc = torch.tensor([[[-1.0, -1.0, 1.0]]] * 27) / 0.28209479177387814 * 0.5
        get_opacity = torch.ones(27, 1)

    mesh = _tetra(colors=True)
    assert np.allclose(export.mesh_vertex_colors(mesh, Blue())[:4], [0, 0, 1], atol=1e-5)
    assert np.allclose(export.mesh_vertex_colors(mesh)[:, :3], [1, 0, 0.2])
    for name, gs, want in (("gs.glb", Blue(), [0, 0, 255]), ("channels.glb", None, [255, 0, 51])):
        export.write_glb(tmp_path / name, mesh, gaussians=gs)
        loaded = list(trimesh.load(str(tmp_path / name)).geometry.values())[0]
        assert np.abs(vertex_colors(loaded)[:, :3].astype(int) - want).max() <= 1, name


def test_uv_rasteriser_covers_triangles():
    uvs = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    faces = np.array([[0, 1, 2], [1, 3, 2]])
    colors = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], np.float32)
    tex = export._rasterize_uv(uvs, faces, colors, 16)
    assert tex.shape == (16, 16, 3)
    # glTF rows run top-down: v = 0 (vertex 0, red) is the bottom-left texel
    assert tex[-1, 0, 0] > 200 and tex[-1, 0, 1] < 60
    assert tex[0, -1].min() > 200  # v = 1, u = 1: white


def test_glb_texture_when_xatlas_present(tmp_path):
    pytest.importorskip("xatlas")
    trimesh = pytest.importorskip("trimesh")
    info = export.write_glb(tmp_path / "t.glb", _tetra(), texture_size=64)
    assert info["textured"]
    js = glb_json(tmp_path / "t.glb")
    assert js["materials"][0]["pbrMetallicRoughness"]["metallicFactor"] == 0
    assert "baseColorTexture" in js["materials"][0]["pbrMetallicRoughness"]


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.glb"
    with pytest.raises(RuntimeError):
        with export.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []

    class Broken:
        get_xyz = torch.zeros(3, 3)

        def save_ply(self, path):
            open(path, "wb").write(b"ply\npartial")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export.write_ply(tmp_path / "g.ply", Broken())
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(Exception):
        export.write_glb(tmp_path / "empty.glb", _Mesh(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long)))
    assert list(tmp_path.iterdir()) == []


def test_ply_inria_layout(tmp_path):
    plyfile = pytest.importorskip("plyfile")
    from trellis_backend.representations import Gaussians

    g = Gaussians(sh_degree=0, aabb=[-0.5, -0.5, -0.5, 1.0, 1.0, 1.0], mininum_kernel_size=9e-4, scaling_bias=4e-3,
                  opacity_bias=0.1, scaling_activation="softplus")
    n = 10
    g._xyz = torch.rand(n, 3)
    g._features_dc = torch.randn(n, 1, 3)
    g._scaling = torch.randn(n, 3)
    g._rotation = torch.randn(n, 4)
    g._opacity = torch.randn(n, 1)
    assert export.write_ply(tmp_path / "g.ply", g) == {"gaussians": n}
    ply = plyfile.PlyData.read(str(tmp_path / "g.ply"))
    names = [p.name for p in ply["vertex"].properties]
    assert names == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                     "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    for nm in names:
        assert np.all(np.isfinite(ply["vertex"][nm]))


def test_sidecar_roundtrip(tmp_path):
    coords = torch.tensor([[0, 1, 2, 3], [0, 4, 5, 6]], dtype=torch.int32)
    feats = torch.randn(2, 8)
    export.write_sidecar(tmp_path / "a.slat.npz", coords, feats, {"seed": 3, "prompt": "x"})
    c, f, s = export.read_sidecar(tmp_path / "a.slat.npz")
    assert c.dtype == np.int32 and c.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert f.dtype == np.float32 and np.array_equal(f, feats.numpy())
    assert s["seed"] == 3 and s["format"] == export.SIDECAR_FORMAT
    with pytest.raises(ValueError):
        export.write_sidecar(tmp_path / "b.npz", torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]), torch.zeros(2, 8), {})
    (tmp_path / "bad.npz").write_bytes(b"nope")
    from trellis_backend.errors import BadInputError, MissingFileError

    with pytest.raises(BadInputError):
        export.read_sidecar(tmp_path / "bad.npz")
    with pytest.raises(MissingFileError):
        export.read_sidecar(tmp_path / "missing.npz")
