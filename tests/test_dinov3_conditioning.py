"""TRELLIS.2's DINOv3 conditioning on a tiny random DINOv3 ViT saved locally (CPU)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from trellis_backend.errors import BadInputError, MissingFileError
from trellis_backend.pipeline.conditioning.dinov3 import DinoV3Conditioner, find_dinov3_folder

transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "DINOv3ViTModel"):
    pytest.skip("transformers has no DINOv3 (needs >= 4.56)", allow_module_level=True)

PATCH, REGISTERS, HIDDEN = 16, 4, 32


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A random 2-layer DINOv3 ViT/16 with registers, its final norm randomised (so using it would show)."""
    config = transformers.DINOv3ViTConfig(hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                                          intermediate_size=64, patch_size=PATCH, num_register_tokens=REGISTERS,
                                          image_size=64)
    torch.manual_seed(0)
    model = transformers.DINOv3ViTModel(config)
    with torch.no_grad():
        model.norm.weight.normal_()
        model.norm.bias.normal_()
    folder = tmp_path_factory.mktemp("dinov3") / "facebook" / "dinov3-tiny"
    model.save_pretrained(folder)
    return folder


def _picture(width=70, height=50, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_tokens_shape_and_determinism(tiny_folder):
    enc = DinoV3Conditioner.from_folder(tiny_folder, image_size=64)
    assert enc.cond_channels == HIDDEN and enc.kind == "image"
    images = [_picture(seed=0), _picture(seed=1)]
    out = enc.get_cond(images)
    assert out["cond"].shape == (2, 1 + REGISTERS + (64 // PATCH) ** 2, HIDDEN)
    assert out["cond"].dtype == torch.float32 and torch.isfinite(out["cond"]).all()
    assert torch.equal(out["neg_cond"], torch.zeros_like(out["cond"]))
    assert torch.equal(enc.encode(images), out["cond"])
    assert not torch.allclose(out["cond"][0], out["cond"][1])
    # the pipeline sets the resolution per call (512 / 1024 in TRELLIS.2): more patches, same channels
    assert enc.encode(images[:1], image_size=96).shape == (1, 1 + REGISTERS + 36, HIDDEN)


def test_features_are_prenorm_tokens_through_a_plain_layer_norm(tiny_folder):
    """The reference skips the model's (affine) final norm: all tokens after the last layer, non-affine LN."""
    enc = DinoV3Conditioner.from_folder(tiny_folder, image_size=64)
    image = _picture()
    resized = np.asarray(image.resize((64, 64), Image.Resampling.LANCZOS), dtype=np.float32) / 255
    pixels = torch.from_numpy(resized).permute(2, 0, 1)[None]
    normalised = (pixels - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    seen = {}
    hook = enc.model.norm.register_forward_hook(lambda mod, inp, out: seen.update(prenorm=inp[0]))
    with torch.no_grad():
        final = enc.model(pixel_values=normalised).last_hidden_state
    hook.remove()
    want = F.layer_norm(seen["prenorm"], seen["prenorm"].shape[-1:])
    got = enc.encode([image])
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, final, atol=1e-2)  # not the model's own normed output
    assert torch.allclose(enc.encode(pixels), got, atol=1e-6)  # a [0, 1] tensor is taken as it is


def test_wrong_images_get_clear_errors(tiny_folder):
    enc = DinoV3Conditioner.from_folder(tiny_folder, image_size=64)
    with pytest.raises(BadInputError, match="PIL images"):
        enc.encode(["photo.png"])
    with pytest.raises(BadInputError, match=r"\[batch, 3, height, width\]"):
        enc.encode(torch.rand(3, 64, 64))
    with pytest.raises(BadInputError, match="multiple of DINOv3's patch size"):
        enc.encode(torch.rand(1, 3, 60, 64))
    with pytest.raises(BadInputError, match="list of PIL images"):
        enc.encode([])


def test_weights_come_from_a_local_folder_only(tiny_folder, tmp_path):
    with pytest.raises(MissingFileError, match="not-there"):
        DinoV3Conditioner.from_folder(tmp_path / "not-there")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text((tiny_folder / "config.json").read_text())
    with pytest.raises(MissingFileError, match="weights not found"):
        DinoV3Conditioner.from_folder(tmp_path / "empty")
    root = tiny_folder.parent.parent
    assert find_dinov3_folder("facebook/dinov3-tiny", models_root=root) == tiny_folder
    with pytest.raises(MissingFileError, match="facebook/dinov3-vitl16-pretrain-lvd1689m"):
        find_dinov3_folder("facebook/dinov3-vitl16-pretrain-lvd1689m", models_root=root)
