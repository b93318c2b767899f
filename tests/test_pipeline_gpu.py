"""The pipeline on a CUDA device (skipped without one): bf16 default, fast path hook, same-seed determinism."""
import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from trellis_backend.pipeline import TrellisPipeline
    from trellis_lab.random_model import make_random_model

    root = tmp_path_factory.mktemp("gpu")
    folder = make_random_model(root / "model", "image")
    a = np.zeros((96, 128, 4), np.uint8)
    a[20:80, 40:90] = (30, 160, 60, 255)
    Image.fromarray(a, "RGBA").save(root / "cond.png")
    return TrellisPipeline.from_pretrained(folder, device="cuda"), root


def test_cuda_defaults_and_determinism(setup, tmp_path):
    pipe, root = setup
    assert pipe.device.type == "cuda" and pipe.dtype in (torch.bfloat16, torch.float16)
    r1 = pipe.generate(image=root / "cond.png", seed=3, output_dir=tmp_path, name="a")
    r2 = pipe.generate(image=root / "cond.png", seed=3)
    s1, s2 = r1["outputs"]["slat"], r2["outputs"]["slat"]
    assert s1.feats.is_cuda and s1.feats.dtype == torch.float32
    assert torch.equal(s1.coords, s2.coords) and torch.equal(s1.feats, s2.feats)
    assert torch.isfinite(s1.feats).all()
    assert set(r1["files"]) == {"glb", "ply", "slat"}
    assert r1["meta"]["faces"] > 0 and r1["meta"]["gaussians"] == 32 * r1["meta"]["voxels"]


def test_cuda_float32_close_to_cpu(setup, tmp_path):
    """Same seed, float32 on both devices: the same noise, so the same voxels (up to rare sign flips)."""
    from trellis_backend.pipeline import TrellisPipeline

    pipe, root = setup
    gpu = TrellisPipeline.from_pretrained(pipe.folder, device="cuda", dtype="float32")
    cpu = TrellisPipeline.from_pretrained(pipe.folder, device="cpu")
    a = gpu.generate(image=root / "cond.png", seed=1, formats=("gaussians",))["outputs"]["slat"]
    b = cpu.generate(image=root / "cond.png", seed=1, formats=("gaussians",))["outputs"]["slat"]
    ca = {tuple(c) for c in a.coords.cpu().tolist()}
    cb = {tuple(c) for c in b.coords.tolist()}
    assert len(ca ^ cb) <= 0.02 * len(cb)
    gpu.release()
