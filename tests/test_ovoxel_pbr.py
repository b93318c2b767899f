"""O-Voxel on the CPU beyond the golden cases: PBR voxelisation, trilinear sampling, the mesh round
trip, and the PBR GLB export (read back with trimesh and as glTF JSON)."""
import json
import struct

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from trellis_backend.errors import BadInputError
from trellis_backend.pipeline.export_pbr import bake_pbr_textures, write_pbr_glb, write_textured_glb
from trellis_backend.representations.ovoxel import flexible_dual_grid_to_mesh, mesh_to_flexible_dual_grid
from trellis_backend.representations.ovoxel.pbr_voxelize import textured_mesh_to_pbr_voxels
from trellis_backend.representations.ovoxel.pbr_voxels import PbrVoxels, sample_trilinear

G = 32
RED, BLUE = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.2, 1.0])


def _glb_json(path):
    data = open(path, "rb").read()
    jlen = struct.unpack("<I", data[12:16])[0]
    return json.loads(data[20:20 + jlen])


def _sphere_voxels(radius=0.4, alpha=1.0):
    """A sphere's flexible dual grid at G and PBR voxels: red for x > 0, blue for x < 0."""
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=radius)
    coords, dual, inter = mesh_to_flexible_dual_grid(sphere.vertices, sphere.faces, G)
    centres = (coords.numpy() + 0.5) / G - 0.5
    attrs = np.zeros((len(coords), 6), np.float32)
    attrs[:, :3] = np.where(centres[:, :1] > 0, RED, BLUE)
    attrs[:, 3], attrs[:, 4], attrs[:, 5] = 0.25, 0.75, alpha
    return sphere, coords, dual, inter, PbrVoxels(coords.numpy(), attrs, G)


def _texel(image, uv):
    """Nearest texel of a PIL image at trimesh UVs (v up)."""
    a = np.asarray(image)
    h, w = a.shape[:2]
    col = np.clip((uv[:, 0] * w).astype(int), 0, w - 1)
    row = np.clip(((1 - uv[:, 1]) * h).astype(int), 0, h - 1)
    return a[row, col]


def test_round_trip_sphere_stays_close():
    sphere, coords, dual, inter, _ = _sphere_voxels()
    vertices, faces = flexible_dual_grid_to_mesh(coords, dual * G - coords.float(), inter, None, grid_size=G)
    out = trimesh.Trimesh(vertices.numpy(), faces.numpy(), process=False)
    from scipy.spatial import cKDTree

    np.random.seed(0)
    a, b = out.sample(100_000), sphere.sample(100_000)   # dense, so sample spacing stays far below a voxel
    chamfer = cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean()
    assert chamfer < 0.2 / G, f"Chamfer {chamfer:.4g} (voxel {1 / G:.4g})"
    radii = np.linalg.norm(vertices.numpy(), axis=1)
    assert np.abs(radii - 0.4).max() < 1.0 / G


def test_dual_offsets_inside_voxels():
    _, coords, dual, _, _ = _sphere_voxels()
    offsets = dual * G - coords.float()
    assert offsets.min() >= -1e-3 and offsets.max() <= 1 + 1e-3


def test_trilinear_matches_dense_grid_sample():
    """With every voxel present, the sparse rule equals torch's dense trilinear sampling (align_corners=False)."""
    rng = np.random.default_rng(0)
    n = 8
    coords = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3)
    attrs = rng.random((len(coords), 6)).astype(np.float32)
    pts = rng.uniform(-0.5 + 0.5 / n, 0.5 - 0.5 / n, (500, 3)).astype(np.float32)
    ours = sample_trilinear(coords, attrs, n, [[-0.5] * 3, [0.5] * 3], pts)
    dense = torch.from_numpy(attrs.reshape(n, n, n, 6)).permute(3, 2, 1, 0)[None]   # [1, C, z, y, x]
    grid = torch.from_numpy(pts * 2)[None, None, None]                              # (x, y, z) in [-1, 1]
    ref = torch.nn.functional.grid_sample(dense, grid, mode="bilinear", align_corners=False)[0, :, 0, 0].T
    np.testing.assert_allclose(ours, ref.numpy(), atol=1e-5)


def test_trilinear_renormalises_over_present_voxels():
    coords = np.array([[3, 3, 3]])
    attrs = np.array([[0.2, 0.4, 0.6, 0.1, 0.9, 1.0]], np.float32)
    near = (np.array([[3.3, 3.6, 3.8]]) / 8 - 0.5)
    far = (np.array([[6.5, 6.5, 6.5]]) / 8 - 0.5)
    np.testing.assert_allclose(sample_trilinear(coords, attrs, 8, [[-0.5] * 3, [0.5] * 3], near), attrs, atol=1e-6)
    assert np.all(sample_trilinear(coords, attrs, 8, [[-0.5] * 3, [0.5] * 3], far) == 0)


def _textured_sphere():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
    v = sphere.vertices
    uv = np.stack([np.arctan2(v[:, 1], v[:, 0]) / (2 * np.pi) + 0.5, 0.5 + 0.5 * v[:, 2] / 0.4], axis=1)
    tex = np.zeros((64, 64, 4), np.uint8)
    tex[:, :32] = [255, 0, 0, 255]
    tex[:, 32:] = [0, 0, 255, 255]
    mr = np.zeros((32, 32, 3), np.uint8)
    mr[..., 1], mr[..., 2] = 100, 200
    mat = trimesh.visual.material.PBRMaterial(baseColorTexture=Image.fromarray(tex),
                                              metallicRoughnessTexture=Image.fromarray(mr), metallicFactor=0.5)
    sphere.visual = trimesh.visual.TextureVisuals(uv=uv, material=mat)
    return sphere


def test_pbr_voxelisation_reads_textures_and_factors():
    sphere = _textured_sphere()
    vox = textured_mesh_to_pbr_voxels(sphere, G)
    coords, _, _ = mesh_to_flexible_dual_grid(sphere.vertices, sphere.faces, G)
    assert np.array_equal(vox.coords, coords.numpy())            # same voxels, same order as the dual grid
    centres = (vox.coords + 0.5) / G - 0.5
    u = np.arctan2(centres[:, 1], centres[:, 0]) / (2 * np.pi) + 0.5
    left, right = (u > 0.1) & (u < 0.4), (u > 0.6) & (u < 0.9)
    np.testing.assert_allclose(vox.attrs[left, :3].mean(0), [1, 0, 0], atol=0.02)
    np.testing.assert_allclose(vox.attrs[right, :3].mean(0), [0, 0, 1], atol=0.02)
    np.testing.assert_allclose(vox.attrs[:, 3], 200 / 255 * 0.5, atol=2e-3)   # B x metallicFactor
    np.testing.assert_allclose(vox.attrs[:, 4], 100 / 255, atol=2e-3)         # G x default factor 1
    np.testing.assert_allclose(vox.attrs[:, 5], 1.0)                          # OPAQUE


def test_pbr_voxelisation_vertex_colours():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
    colours = np.where(sphere.vertices[:, :1] > 0, [0, 255, 0, 255], [255, 255, 0, 255]).astype(np.uint8)
    sphere.visual = trimesh.visual.ColorVisuals(sphere, vertex_colors=colours)
    vox = textured_mesh_to_pbr_voxels(sphere, G)
    centres = (vox.coords + 0.5) / G - 0.5
    np.testing.assert_allclose(vox.attrs[centres[:, 0] > 0.1, :3].mean(0), [0, 1, 0], atol=0.02)
    np.testing.assert_allclose(vox.attrs[centres[:, 0] < -0.1, :3].mean(0), [1, 1, 0], atol=0.02)
    np.testing.assert_allclose(vox.attrs[:, 3:5], np.tile([0.0, 0.5], (len(vox.coords), 1)), atol=1e-6)


def test_pbr_glb_reads_back_with_textures(tmp_path):
    _, coords, dual, inter, vox = _sphere_voxels()
    vertices, faces = flexible_dual_grid_to_mesh(coords, dual * G - coords.float(), inter, None, grid_size=G)
    path = tmp_path / "asset.glb"
    info = write_pbr_glb(path, vertices, faces, vox, face_budget=1500, texture_size=256)
    assert info["faces"] <= 1500 and info["alpha_blend"] == 0

    js = _glb_json(path)
    mat = js["materials"][0]
    pbr = mat["pbrMetallicRoughness"]
    assert "baseColorTexture" in pbr and "metallicRoughnessTexture" in pbr
    assert pbr["metallicFactor"] == 1.0 and pbr["roughnessFactor"] == 1.0
    assert mat.get("alphaMode", "OPAQUE") == "OPAQUE"
    assert "TEXCOORD_0" in js["meshes"][0]["primitives"][0]["attributes"]
    assert len(js["images"]) == 2

    mesh = list(trimesh.load(path).geometry.values())[0]
    uv = mesh.visual.uv
    assert uv is not None and np.all(np.isfinite(uv)) and uv.min() >= 0 and uv.max() <= 1
    # sample the textures at face centroids (inside the charts; vertices sit on chart borders)
    m = mesh.visual.material
    centroid_uv = uv[mesh.faces].mean(axis=1)
    base = _texel(m.baseColorTexture, centroid_uv)[:, :3].astype(float)
    mr = _texel(m.metallicRoughnessTexture, centroid_uv).astype(float)
    # y-up file: x is unchanged, so the colour halves are still split by x
    x = mesh.triangles_center[:, 0]
    far = np.abs(x) > 2.0 / G
    err_red = np.abs(base[(x > 0) & far] - RED * 255).max(axis=1)
    err_blue = np.abs(base[(x < 0) & far] - BLUE * 255).max(axis=1)
    assert np.quantile(err_red, 0.98) <= 4 and np.quantile(err_blue, 0.98) <= 4, (err_red.max(), err_blue.max())
    assert np.quantile(np.abs(mr[:, 2] - 0.25 * 255), 0.98) <= 2 and np.quantile(np.abs(mr[:, 1] - 0.75 * 255), 0.98) <= 2
    assert np.all(mr[:, 0] == 0)
    # y up: the sphere's z-up extent is now along y; bounds stay those of the sphere
    assert np.all(np.abs(mesh.bounds) < 0.45)


def test_pbr_glb_alpha_goes_blend(tmp_path):
    _, coords, dual, inter, vox = _sphere_voxels(alpha=0.5)
    vertices, faces = flexible_dual_grid_to_mesh(coords, dual * G - coords.float(), inter, None, grid_size=G)
    write_pbr_glb(tmp_path / "a.glb", vertices, faces, vox, face_budget=800, texture_size=128)
    assert _glb_json(tmp_path / "a.glb")["materials"][0]["alphaMode"] == "BLEND"
    mesh = list(trimesh.load(tmp_path / "a.glb").geometry.values())[0]
    rgba = np.asarray(mesh.visual.material.baseColorTexture)
    assert rgba.shape[2] == 4 and abs(int(np.median(rgba[..., 3])) - 128) <= 1


def test_bake_keeps_users_uvs_vertices_faces(tmp_path):
    """A mesh with UVs (loaded from a GLB, as texturing does) keeps vertices, faces and UVs bit for bit."""
    src = trimesh.creation.icosphere(subdivisions=2, radius=0.3)
    rng = np.random.default_rng(1)
    src.visual = trimesh.visual.TextureVisuals(uv=rng.random((len(src.vertices), 2)))
    src.export(tmp_path / "user.glb")
    user = list(trimesh.load(tmp_path / "user.glb", process=False).geometry.values())[0]
    _, _, _, _, vox = _sphere_voxels()
    baked = bake_pbr_textures(user, vox, texture_size=64)
    assert np.array_equal(baked.vertices, user.vertices)
    assert np.array_equal(baked.faces, user.faces)
    assert np.array_equal(baked.visual.uv, user.visual.uv)
    write_textured_glb(tmp_path / "out.glb", baked)
    back = list(trimesh.load(tmp_path / "out.glb", process=False).geometry.values())[0]
    assert np.array_equal(back.vertices, user.vertices)
    assert np.array_equal(back.faces, user.faces)
    assert np.array_equal(back.visual.uv, user.visual.uv)
    assert back.visual.material.metallicRoughnessTexture is not None


def test_bake_unwraps_a_mesh_without_uvs():
    src = trimesh.creation.icosphere(subdivisions=2, radius=0.3)
    _, _, _, _, vox = _sphere_voxels()
    baked = bake_pbr_textures(src, vox, texture_size=64)
    assert baked.visual.uv is not None and len(baked.visual.uv) == len(baked.vertices)
    assert len(baked.faces) == len(src.faces)


def test_bad_inputs_are_named():
    with pytest.raises(BadInputError, match="attrs"):
        PbrVoxels(np.zeros((4, 3), np.int32), np.zeros((4, 5), np.float32), 8)
    with pytest.raises(BadInputError, match="dual_vertices"):
        flexible_dual_grid_to_mesh(torch.zeros(3, 3, dtype=torch.int32), torch.zeros(2, 3), torch.zeros(3, 3, dtype=torch.bool),
                                   grid_size=8)
    with pytest.raises(BadInputError, match="faces"):
        mesh_to_flexible_dual_grid(np.zeros((3, 3)), np.array([[0, 1, 5]]), 8)
