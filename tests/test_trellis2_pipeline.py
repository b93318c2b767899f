"""Trellis2Pipeline on a tiny random TRELLIS.2 folder in the released layout (CPU): image -> PBR GLB in every
resolution mode, the GLB read back, the latent sidecar reloaded, seeds reproducible, progress / cancel per
sampler step, and the errors a user can meet."""
from __future__ import annotations

import json
import shutil
import struct
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from trellis2_tiny import cond_png, folder, pipe  # noqa: F401 (shared fixtures)
from trellis_backend.errors import BadInputError, Cancelled, MissingFileError
from trellis_backend.pipeline import TrellisPipeline, Trellis2Pipeline, detect_family, load_pipeline
from trellis_backend.pipeline.trellis2 import RESOLUTION_MODES, cascade_coords
from trellis_backend.pipeline.trellis2_latents import read_latents

transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "DINOv3ViTModel"):
    pytest.skip("transformers has no DINOv3 (needs >= 4.56)", allow_module_level=True)

# small runs: few faces and texels; the token cap is exercised by its own test
FAST = dict(texture_size=64, face_budget=3000)


def _glb_json(path) -> dict:
    data = path.read_bytes()
    assert data[:4] == b"glTF"
    length, kind = struct.unpack("<I4s", data[12:20])
    assert kind == b"JSON"
    return json.loads(data[20:20 + length])


# ------------------------------------------------------------------------------------------- layout
def test_folder_is_the_released_layout_and_loads_as_trellis2(folder, pipe):
    doc = json.loads((folder / "pipeline.json").read_text())
    assert doc["name"] == "Trellis2ImageTo3DPipeline" and detect_family(folder) == "trellis2"
    args = doc["args"]
    assert args["models"]["sparse_structure_decoder"] == "microsoft/TRELLIS-image-large/ckpts/ss_dec_conv3d_16l8_fp16"
    assert args["image_cond_model"]["name"] == "DinoV3FeatureExtractor"
    shape = args["shape_slat_sampler"]["params"]
    assert (shape["guidance_strength"], shape["guidance_rescale"], shape["guidance_interval"], shape["rescale_t"]) \
        == (7.5, 0.5, [0.6, 1.0], 3.0)
    flow_json = json.loads((folder / "ckpts" / "ss_flow_img_dit_1_3B_64_bf16.json").read_text())
    assert flow_json["args"]["dtype"] == "bfloat16"  # stored as released ...
    assert isinstance(pipe, Trellis2Pipeline)
    assert pipe.resolution_modes == list(RESOLUTION_MODES)
    flow = pipe.get_model("sparse_structure_flow_model")
    assert all(p.dtype == torch.float32 for p in flow.parameters())  # ... and run in float32 on the CPU


# --------------------------------------------------------------------------------- image -> GLB
@pytest.mark.parametrize("mode", list(RESOLUTION_MODES))
def test_image_to_pbr_glb_in_every_resolution_mode(pipe, cond_png, tmp_path, mode):
    import trimesh

    stages = []
    result = pipe.generate(cond_png, seed=3, resolution=mode, output_dir=tmp_path, name="asset",
                           max_num_tokens=400, progress=lambda s, i, n, m: stages.append(s), **FAST)
    meta = result["meta"]
    want = RESOLUTION_MODES[mode].resolution
    assert meta["resolution_mode"] == mode
    assert 1024 <= meta["resolution"] <= want if mode == "1536_cascade" else meta["resolution"] == want
    assert meta["faces"] > 0 and set(meta["timings"]) >= {"condition", "sparse_structure", "shape_slat",
                                                          "tex_slat", "decode", "export", "total"}
    expected = ["condition", "sparse_structure"] + (["shape_slat_512"] if "cascade" in mode else []) \
        + ["shape_slat", "tex_slat", "decode", "export"]
    assert [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s] == expected

    glb = tmp_path / "asset.glb"
    assert result["files"] == {"glb": str(glb.resolve()), "slat": str((tmp_path / "asset.trellis2.npz").resolve())}
    mesh = trimesh.load(str(glb), force="mesh")
    assert len(mesh.faces) > 0 and np.isfinite(mesh.vertices).all()
    assert np.abs(mesh.vertices).max() <= 0.5 + 1e-3  # inside the unit cube around the origin
    uv = np.asarray(mesh.visual.uv)
    assert uv.shape == (len(mesh.vertices), 2) and np.isfinite(uv).all() and uv.min() >= 0 and uv.max() <= 1
    material = mesh.visual.material
    base = np.asarray(material.baseColorTexture)
    mr = np.asarray(material.metallicRoughnessTexture)
    assert base.shape[:2] == mr.shape[:2] == (64, 64) and base.dtype == mr.dtype == np.uint8
    assert base.std() > 0 and mr[..., 1:].std() > 0  # baked from the voxels, not a constant

    js = _glb_json(glb)
    (mat,) = js["materials"]
    pbr = mat["pbrMetallicRoughness"]
    assert {"baseColorTexture", "metallicRoughnessTexture"} <= set(pbr)
    assert pbr["metallicFactor"] == 1.0 and pbr["roughnessFactor"] == 1.0
    assert len(js["images"]) == 2 and "TEXCOORD_0" in js["meshes"][0]["primitives"][0]["attributes"]


def test_latent_sidecar_reloads_and_decodes_to_the_same_mesh(pipe, cond_png, tmp_path):
    result = pipe.generate(cond_png, seed=4, resolution="512", output_dir=tmp_path, name="a", **FAST)
    latents, settings = pipe.load_latents(result["files"]["slat"])
    made = result["outputs"]["latents"]
    assert latents.resolution == made.resolution == 512
    assert torch.equal(latents.coords, made.coords)
    assert torch.equal(latents.shape_slat.feats, made.shape_slat.feats)
    assert torch.equal(latents.tex_slat.feats, made.tex_slat.feats)
    assert settings["seed"] == 4 and settings["resolution_mode"] == "512" and settings["family"] == "trellis2"
    assert settings["shape_slat_sampler"]["params"]["guidance_strength"] == 7.5
    again = pipe.decode(latents)["mesh"][0]
    first = result["outputs"]["mesh"]
    assert np.array_equal(again.faces, first.faces) and np.array_equal(again.vertices, first.vertices)
    assert np.array_equal(again.voxels.attrs, first.voxels.attrs)


def test_one_seed_gives_identical_files_and_another_seed_does_not(pipe, cond_png, tmp_path):
    runs = [pipe.generate(cond_png, seed=seed, resolution="1024_cascade", output_dir=tmp_path / str(i),
                          name="x", **FAST)["files"] for i, seed in enumerate((7, 7, 8))]
    for kind in ("glb", "slat"):
        first, same, other = (open(files[kind], "rb").read() for files in runs)
        assert first == same
        assert first != other


def test_cascade_token_cap_lowers_the_resolution_in_steps_of_128():
    g = torch.Generator().manual_seed(0)
    xyz = torch.unique(torch.randint(0, 512, (3000, 3), generator=g), dim=0)
    hr = torch.cat([torch.zeros(len(xyz), 1, dtype=torch.int64), xyz], 1).int()
    coords, res = cascade_coords(hr, 512, 1536, max_num_tokens=10 ** 9)
    assert res == 1536 and coords[:, 1:].max() < 96 and len(coords) == len(torch.unique(coords, dim=0))
    counts = {r: len(cascade_coords(hr, 512, r, 10 ** 9)[0]) for r in (1536, 1408, 1280, 1152, 1024)}
    cap = counts[1280] + 1  # 1536 and 1408 are over the cap, 1280 is the first under it
    assert counts[1408] >= cap
    assert cascade_coords(hr, 512, 1536, cap)[1] == 1280
    assert cascade_coords(hr, 512, 1536, 1)[1] == 1024  # never below 1024
    assert cascade_coords(hr, 512, 1024, 1)[1] == 1024  # 1024_cascade never lowers


# ----------------------------------------------------------------------------- progress / cancel
def test_progress_per_sampler_step_and_cancel_between_steps(pipe, cond_png, tmp_path):
    event = threading.Event()
    seen = []

    def progress(stage, step, total, message=""):
        seen.append((stage, step, total))
        if stage == "shape_slat" and step == 1:
            event.set()

    with pytest.raises(Cancelled):
        pipe.generate(cond_png, seed=0, resolution="1024", output_dir=tmp_path, name="c", progress=progress,
                      cancel=event, **FAST)
    steps = pipe.sampler_params("sparse_structure_sampler")["steps"]
    assert [s for s in seen if s[0] == "sparse_structure"] == [("sparse_structure", i, steps)
                                                                 for i in range(1, steps + 1)]
    assert not any(s[0] == "tex_slat" for s in seen)
    assert not list(tmp_path.iterdir())  # nothing written


# ------------------------------------------------------------------------------------ bad input
def test_trellis_only_options_and_outputs_are_refused(pipe, cond_png):
    with pytest.raises(BadInputError, match="prompt is a TRELLIS option"):
        pipe.generate(cond_png, prompt="a chair")
    with pytest.raises(BadInputError, match="slat_cfg, ss_cfg are TRELLIS options"):
        pipe.generate(cond_png, ss_cfg=7.5, slat_cfg=3.0)
    with pytest.raises(BadInputError, match="TRELLIS.2 cannot make gaussians"):
        pipe.generate(cond_png, formats=("mesh", "gaussians"))
    with pytest.raises(BadInputError, match="unknown resolution mode '2048'"):
        pipe.generate(cond_png, resolution="2048")
    with pytest.raises(BadInputError, match="one condition image"):
        pipe.generate([cond_png, cond_png])


def test_trellis2_options_on_a_trellis_folder_are_refused(tmp_path, cond_png):
    from trellis_lab.random_model import make_random_model

    folder = make_random_model(tmp_path / "trellis-tiny", "image")
    trellis = load_pipeline(folder, device="cpu")
    assert isinstance(trellis, TrellisPipeline) and detect_family(folder) == "trellis"
    with pytest.raises(BadInputError, match="resolution is a TRELLIS.2 option, but this model folder is TRELLIS"):
        trellis.generate(image=cond_png, resolution="1024_cascade")


def test_an_image_without_an_object_gets_the_trellis_error(pipe, tmp_path):
    from trellis_backend.pipeline.conditioning import preprocess_image

    empty = tmp_path / "empty.png"
    a = np.zeros((64, 64, 4), np.uint8)
    a[..., 3] = 40  # transparent everywhere (below the 0.8 alpha of an object), but not all opaque
    Image.fromarray(a, "RGBA").save(empty)
    with pytest.raises(BadInputError) as trellis2_error:
        pipe.generate(empty)
    with pytest.raises(BadInputError) as trellis_error:
        preprocess_image(empty)
    assert str(trellis2_error.value) == str(trellis_error.value)
    assert "no foreground" in str(trellis2_error.value) and trellis2_error.value.hint == trellis_error.value.hint


def test_a_missing_checkpoint_or_mode_model_is_named(folder, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "ckpts" / "tex_dec_next_dc_f16c32_fp16.safetensors").unlink()
    with pytest.raises(MissingFileError, match="tex_dec_next_dc_f16c32_fp16.safetensors"):
        load_pipeline(broken, device="cpu")

    no512 = tmp_path / "no512"
    shutil.copytree(folder, no512)
    doc = json.loads((no512 / "pipeline.json").read_text())
    for key in ("shape_slat_flow_model_512", "tex_slat_flow_model_512"):
        del doc["args"]["models"][key]
    (no512 / "pipeline.json").write_text(json.dumps(doc))
    pipe = load_pipeline(no512, device="cpu")
    assert pipe.resolution_modes == ["1024"]
    with pytest.raises(MissingFileError, match="resolution mode 1024_cascade needs shape_slat_flow_model_512") as e:
        pipe.resolution_mode("1024_cascade")
    assert "1024" in e.value.hint

    no_dino = tmp_path / "no_dino"
    shutil.copytree(folder, no_dino)
    shutil.rmtree(no_dino / "random")
    with pytest.raises(MissingFileError, match="DINOv3 model folder"):
        load_pipeline(no_dino, device="cpu")


def test_official_sizes_build_on_the_meta_device():
    from pathlib import Path

    from trellis_backend.models import build_model
    from trellis_lab.random_model_trellis2 import OFFICIAL_DINOV3, official_configs

    configs = official_configs(Path(__file__).parent / "golden2" / "official_keys")
    params = {}
    for key, (cls, args) in configs.items():
        model = build_model(cls, args, device="meta", family="trellis2")
        params[key] = sum(p.numel() for p in model.parameters())
    flows = [k for k in configs if "flow" in k]
    assert all(configs[k][1]["cond_channels"] == OFFICIAL_DINOV3["hidden_size"] for k in flows)
    assert configs["tex_slat_flow_model_1024"][1]["in_channels"] == 2 * configs["tex_slat_decoder"][1]["latent_channels"]
    assert 1.2e9 < params["sparse_structure_flow_model"] < 1.5e9  # the "1_3B" flows
    assert 6e9 < sum(params.values()) < 8e9  # five 1.3B flows (shape and texture at 512 and 1024) + decoders
    with torch.device("meta"):
        dino = transformers.DINOv3ViTModel(transformers.DINOv3ViTConfig(**OFFICIAL_DINOV3))
    assert 2.9e8 < sum(p.numel() for p in dino.parameters()) < 3.1e8  # ViT-L


# ------------------------------------------------------------------------------------ command line
def test_cli_generates_from_a_trellis2_folder(folder, cond_png, tmp_path, capsys):
    from trellis_backend.cli import main

    code = main(["generate", "--model", str(folder), "--image", str(cond_png), "--resolution", "512", "--steps", "1",
                 "--texture-size", "32", "--face-budget", "2000", "--out", str(tmp_path), "--name", "cli", "--quiet",
                 "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["files"]) == {"glb", "slat"} and report["meta"]["resolution_mode"] == "512"
    assert report["meta"]["resolution"] == 512
    _, settings = read_latents(report["files"]["slat"])
    assert settings["shape_slat_sampler"]["params"]["steps"] == 1 and settings["texture_size"] == 32


@pytest.mark.parametrize("extra, message", [
    (["--prompt", "a chair"], "cannot take a text prompt"),
    (["--image", "IMG", "--cfg", "3"], "--cfg: TRELLIS option"),
    (["--image", "IMG", "--ss-cfg", "3", "--cfg", "3"], "--ss-cfg, --cfg: TRELLIS options"),
    (["--image", "IMG", "--formats", "glb,ply"], "TRELLIS.2 cannot make gaussians"),
])
def test_cli_refuses_trellis_options_on_a_trellis2_folder(folder, cond_png, capsys, extra, message):
    from trellis_backend.cli import main

    args = [str(cond_png) if a == "IMG" else a for a in extra]
    assert main(["generate", "--model", str(folder), *args, "--quiet"]) == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_trellis2_options_and_commands_across_families(folder, cond_png, tmp_path, capsys):
    from trellis_backend.cli import main

    trellis = tmp_path / "trellis"
    trellis.mkdir()
    (trellis / "pipeline.json").write_text(json.dumps({"name": "TrellisImageTo3DPipeline",
                                                       "args": {"image_cond_model": "dinov2_vitl14_reg"}}))
    for extra in (["--resolution", "1024"], ["--max-tokens", "100"], ["--face-budget", "10"]):
        assert main(["generate", "--model", str(trellis), "--image", str(cond_png), *extra, "--quiet"]) == 2
        assert f"{extra[0]}: TRELLIS.2 option, but {trellis} is a TRELLIS model folder" in capsys.readouterr().err
    assert main(["variants", "--model", str(folder), "--from", str(cond_png), "--image", str(cond_png)]) == 2
    assert "'variants' works on TRELLIS assets" in capsys.readouterr().err


def test_trellis_readers_name_a_trellis2_sidecar(pipe, cond_png, tmp_path):
    from trellis_backend.edit import edit_region
    from trellis_backend.pipeline.export import read_sidecar

    files = pipe.generate(cond_png, seed=0, resolution="512", output_dir=tmp_path, name="s", **FAST)["files"]
    with pytest.raises(BadInputError, match="is a TRELLIS.2 latent sidecar, not a TRELLIS SLAT sidecar"):
        read_sidecar(files["slat"])
    with pytest.raises(BadInputError, match="region editing works on TRELLIS assets"):
        edit_region(pipe, files["slat"], {"box_min": [-0.5] * 3, "box_max": [0.5] * 3})
