"""TRELLIS.2 texturing of an existing mesh on the tiny random folder (CPU): the textured GLB keeps the input's
vertex array, faces and UVs bit for bit (GLB, OBJ and PLY in), carries base-colour and metallic-roughness
textures, a mesh without UVs gets them, the texture decoder rebuilds the encoder's voxels, outputs are never
overwritten, progress / cancel per step, bad inputs give clear errors; the CLI command and the server request."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from inputs import write_rgba_png
from trellis2_tiny import cond_png, folder, pipe  # noqa: F401 (shared fixtures)
from trellis_backend.errors import BadInputError, Cancelled, MissingFileError

transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "DINOv3ViTModel"):
    pytest.skip("transformers has no DINOv3 (needs >= 4.56)", allow_module_level=True)
trimesh = pytest.importorskip("trimesh")

# small runs: a coarse grid and few texels
FAST = dict(resolution=64, texture_size=32)


def _uv_mesh():
    """An off-centre, non-uniformly scaled sphere with planar UVs (so centring/scaling matter)."""
    m = trimesh.creation.icosphere(subdivisions=2)
    v = m.vertices * [0.7, 1.6, 0.4] + [3.0, -1.0, 0.5]
    uv = np.stack([m.vertices[:, 0] * 0.45 + 0.5, m.vertices[:, 2] * 0.45 + 0.5], axis=1)
    return trimesh.Trimesh(v, m.faces, process=False, visual=trimesh.visual.TextureVisuals(uv=uv))


def _read_single(path):
    loaded = trimesh.load(str(path), process=False)
    if isinstance(loaded, trimesh.Scene):
        (loaded,) = loaded.geometry.values()
    return loaded


def _as_stored_in_glb(uv):
    """trimesh's UVs (v up) as a GLB keeps them: float32 with v flipped (exact for UVs read from a GLB)."""
    uv = np.asarray(uv, np.float64)
    return np.stack([uv[:, 0].astype(np.float32), 1.0 - (1.0 - uv[:, 1]).astype(np.float32)], axis=1)


def _glb_json(path) -> dict:
    import struct

    data = path.read_bytes()
    length, kind = struct.unpack("<I4s", data[12:20])
    assert kind == b"JSON"
    return json.loads(data[20:20 + length])


# ------------------------------------------------------------------------------------ geometry kept
@pytest.mark.parametrize("suffix", [".glb", ".obj", ".ply"])
def test_textured_glb_keeps_vertices_faces_and_uvs_bit_for_bit(pipe, cond_png, tmp_path, suffix):
    from pathlib import Path

    src = tmp_path / f"in{suffix}"
    _uv_mesh().export(src)
    given = _read_single(src)
    res = pipe.texture(src, cond_png, seed=1, output_dir=tmp_path / "out", **FAST)
    glb = Path(res["files"]["glb"])
    assert glb.name == f"in_textured_seed1.glb" and Path(res["files"]["slat"]).is_file()
    back = _read_single(glb)
    # GLB stores float32: a GLB in comes back bit for bit, an OBJ/PLY's decimals as their float32 values
    assert np.array_equal(back.vertices, given.vertices.astype(np.float32))
    assert np.array_equal(back.faces, given.faces)
    if suffix != ".ply":  # trimesh writes no UVs into PLY: that input comes in without UVs (next test)
        assert np.array_equal(back.visual.uv, _as_stored_in_glb(given.visual.uv))
    doc = _glb_json(glb)
    (material,) = doc["materials"]
    pbr = material["pbrMetallicRoughness"]
    assert "baseColorTexture" in pbr and "metallicRoughnessTexture" in pbr
    assert len(doc["images"]) == 2
    mat = back.visual.material
    assert np.asarray(mat.baseColorTexture).shape[:2] == (32, 32)
    mr = np.asarray(mat.metallicRoughnessTexture)
    assert mr.shape[:2] == (32, 32) and np.all(mr[..., 0] == 0)  # R unused, G roughness, B metallic
    assert res["meta"]["task"] == "texture" and res["meta"]["faces"] == len(given.faces)


def test_mesh_without_uvs_gets_an_atlas_and_keeps_its_surface(pipe, cond_png, tmp_path):
    m = _uv_mesh()
    bare = trimesh.Trimesh(m.vertices, m.faces, process=False)
    res = pipe.texture(bare, cond_png, seed=0, output_dir=tmp_path, name="bare", **FAST)
    back = _read_single(res["files"]["glb"])
    uv = back.visual.uv
    assert uv is not None and uv.shape == (len(back.vertices), 2) and np.all((uv >= 0) & (uv <= 1))
    assert len(back.faces) == len(bare.faces) and res["meta"]["had_uvs"] is False
    # xatlas splits vertices along seams; every face keeps its corners' positions, in order
    assert np.allclose(back.vertices[back.faces], bare.vertices[bare.faces], atol=1e-6)


def test_texture_decoder_rebuilds_the_encoders_voxels(pipe, cond_png):
    from trellis_backend.representations.ovoxel import mesh_to_flexible_dual_grid, mesh_to_grid_transform

    m = _uv_mesh()
    res = pipe.texture(m, cond_png, seed=2, **FAST)
    t = mesh_to_grid_transform(m.vertices)
    coords, _, _ = mesh_to_flexible_dual_grid((m.vertices @ t[:3, :3].T + t[:3, 3]).astype(np.float32), m.faces, 64)
    decoded = res["outputs"]["voxels"].coords
    assert sorted(map(tuple, decoded.tolist())) == sorted(map(tuple, coords.numpy().tolist()))
    assert res["files"] == {}  # no output_dir: nothing written


def test_up_axis_orients_only_the_models_view(pipe, cond_png):
    m = _uv_mesh()
    y = pipe.texture(m, cond_png, seed=3, **FAST)
    z = pipe.texture(m, cond_png, seed=3, up_axis="z", **FAST)
    assert np.array_equal(y["outputs"]["mesh"].vertices, z["outputs"]["mesh"].vertices)
    assert not np.array_equal(y["outputs"]["voxels"].coords, z["outputs"]["voxels"].coords)


def test_seed_reproducible_and_outputs_never_overwritten(pipe, cond_png, tmp_path):
    m = _uv_mesh()
    a = pipe.texture(m, cond_png, seed=4, output_dir=tmp_path, name="same", **FAST)
    first = open(a["files"]["glb"], "rb").read()
    b = pipe.texture(m, cond_png, seed=4, output_dir=tmp_path, name="same", **FAST)
    assert b["files"]["glb"].endswith("same_2.glb") and b["files"]["slat"].endswith("same_2.trellis2.npz")
    assert open(a["files"]["glb"], "rb").read() == first == open(b["files"]["glb"], "rb").read()


def test_progress_per_step_and_cancel(pipe, cond_png, tmp_path):
    stages = []
    pipe.texture(_uv_mesh(), cond_png, seed=0, progress=lambda s, i, n, msg="": stages.append((s, i, n)), **FAST)
    order = [s for s, _, _ in stages]
    assert order.index("condition") < order.index("shape_slat") < order.index("tex_slat") < order.index("decode") \
        < order.index("export")
    assert any(s == "tex_slat" and n == pipe.sampler_defaults["tex_slat_sampler"]["steps"] for s, _, n in stages)
    cancel = threading.Event()

    def stop_after_encoding(stage, step, total, msg=""):
        if stage == "shape_slat" and step == total:
            cancel.set()

    with pytest.raises(Cancelled):
        pipe.texture(_uv_mesh(), cond_png, progress=stop_after_encoding, cancel=cancel, output_dir=tmp_path,
                     name="c", **FAST)
    assert not list(tmp_path.iterdir())


# -------------------------------------------------------------------------------------- bad inputs
def test_bad_inputs_give_clear_errors(pipe, cond_png, tmp_path):
    points = tmp_path / "points.ply"
    trimesh.PointCloud(np.random.default_rng(0).random((20, 3))).export(points)
    broken = tmp_path / "broken.glb"
    broken.write_bytes(b"glTF not really")
    empty_png = write_rgba_png(tmp_path / "empty.png", (32, 32), (0, 0, 0, 0), (0, 0, 0))
    cases = [
        (dict(mesh=tmp_path / "missing.glb", image=cond_png), "mesh file not found"),
        (dict(mesh=broken, image=cond_png), "cannot read mesh"),
        (dict(mesh=points, image=cond_png), "no faces"),
        (dict(mesh=trimesh.Trimesh(np.zeros((3, 3)), np.zeros((0, 3), int)), image=cond_png), "no faces"),
        (dict(mesh=_uv_mesh(), image=None), "no image"),
        (dict(mesh=_uv_mesh(), image=empty_png), "no foreground"),
        (dict(mesh=_uv_mesh(), image=cond_png, resolution=100), "multiple of 16"),
        (dict(mesh=_uv_mesh(), image=cond_png, up_axis="x"), "up axis"),
    ]
    for kwargs, words in cases:
        kwargs = {**FAST, **kwargs}
        with pytest.raises(BadInputError, match=words) as info:
            pipe.texture(kwargs.pop("mesh"), kwargs.pop("image"), output_dir=tmp_path / "o", **kwargs)
        assert info.value.hint or "multiple" in words or "up axis" in words
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_folder_without_shape_encoder_says_which_file(folder, tmp_path, cond_png):
    import shutil

    from trellis_backend.pipeline import load_pipeline

    copy = tmp_path / "t2"
    shutil.copytree(folder, copy)
    (copy / "texturing_pipeline.json").unlink()
    pipe = load_pipeline(copy, device="cpu")
    assert pipe.texture(_uv_mesh(), cond_png, **FAST)["meta"]["faces"] == 320  # the released file name is enough
    for name in ("shape_enc_next_dc_f16c32_fp16.json", "shape_enc_next_dc_f16c32_fp16.safetensors"):
        (copy / "ckpts" / name).unlink()
    with pytest.raises(MissingFileError, match="shape encoder") as info:
        load_pipeline(copy, device="cpu").texture(_uv_mesh(), cond_png, **FAST)
    assert "shape_enc_next_dc_f16c32_fp16" in info.value.hint


def test_random_folder_has_the_released_texturing_layout(folder):
    doc = json.loads((folder / "texturing_pipeline.json").read_text())
    assert doc["name"] == "Trellis2TexturingPipeline"
    assert doc["args"]["models"]["shape_slat_encoder"] == "ckpts/shape_enc_next_dc_f16c32_fp16"
    enc = json.loads((folder / "ckpts" / "shape_enc_next_dc_f16c32_fp16.json").read_text())
    assert enc["name"] == "FlexiDualGridVaeEncoder" and enc["args"]["use_fp16"] is True


# ------------------------------------------------------------------------------------- CLI, server
def test_cli_texture_command(folder, cond_png, tmp_path):
    from trellis_backend.cli import main

    src = tmp_path / "in.glb"
    _uv_mesh().export(src)
    out = tmp_path / "out"
    args = ["texture", "--model", str(folder), "--mesh", str(src), "--image", str(cond_png), "--out", str(out),
            "--device", "cpu", "--resolution", "64", "--texture-size", "32", "--seed", "5", "--quiet"]
    assert main(args) == 0
    glb = out / "in_textured_seed5.glb"
    assert np.array_equal(_read_single(glb).vertices, _read_single(src).vertices)
    assert main(args) == 0 and (out / "in_textured_seed5_2.glb").is_file()
    assert main(["texture", "--model", str(folder), "--mesh", str(tmp_path / "nope.obj"), "--image", str(cond_png),
                 "--out", str(out)]) == 2
    assert main(["texture", "--model", str(folder), "--mesh", str(src), "--image", str(tmp_path / "no.png"),
                 "--out", str(out)]) == 2


def test_cli_texture_refuses_a_trellis_folder(tmp_path, cond_png):
    from trellis_backend.cli import main

    folder = tmp_path / "t1"
    (folder).mkdir()
    (folder / "pipeline.json").write_text(json.dumps({"name": "TrellisImageTo3DPipeline", "args": {"models": {}}}))
    src = tmp_path / "in.glb"
    _uv_mesh().export(src)
    assert main(["texture", "--model", str(folder), "--mesh", str(src), "--image", str(cond_png)]) == 2


def test_server_texture_request(folder, cond_png, tmp_path):
    from trellis_backend.server import protocol as P
    from trellis_backend.server.jobs import JobRunner

    src = tmp_path / "in.obj"
    _uv_mesh().export(src)
    assert P.validate_job_params(P.TEXTURE, {"image": "a.png"}) == [
        "'mesh_path' (the mesh file to texture) is required for texture"]
    assert P.validate_job_params(P.TEXTURE, {"mesh_path": "m.glb", "image": "a.png", "resolution": 100,
                                             "prompt": "x"}) == [
        "unknown parameter 'prompt'",
        "'resolution' must be a multiple of 16 of at least 32 (512 or 1024 for the released models)"]
    events, done = [], threading.Event()

    def send(event):
        events.append(event)
        if event["type"] in (P.RESULT, P.ERROR):
            done.set()

    runner = JobRunner(send, str(folder), device="cpu", output_dir=str(tmp_path / "o"))
    assert runner.submit(P.request(P.TEXTURE, {"mesh_path": str(src), "image": str(cond_png), "resolution": 64,
                                               "texture_size": 32, "steps": 1, "up_axis": "y"}))
    assert done.wait(300)
    end = events[-1]
    assert end["type"] == P.RESULT, end
    assert set(end["files"]) == {"glb", "slat"} and end["meta"]["task"] == "texture"
    tex = [(e["step"], e["total"]) for e in events if e["type"] == P.PROGRESS and e["stage"] == "tex_slat"]
    assert tex and {total for _, total in tex} == {1}  # steps=1 reached the sampler
    assert np.array_equal(_read_single(end["files"]["glb"]).vertices, _read_single(src).vertices.astype(np.float32))
