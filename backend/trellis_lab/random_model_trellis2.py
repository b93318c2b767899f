"""Random-weight TRELLIS.2 folders in the released layout (microsoft/TRELLIS.2-4B), for tests and timing.

``make_random_trellis2(out, size='tiny'|'official')`` writes::

    out/pipeline.json                               {"name": "Trellis2ImageTo3DPipeline", "args": {...}}
    out/ckpts/<released name>.json / .safetensors   structure flow, shape/texture flows (512, 1024), SC-VAE decoders,
                                                    the shape encoder (texturing)
    out/texturing_pipeline.json                     the release's texturing pipeline (shape encoder, texture flows,
                                                    texture decoder)
    out/microsoft/TRELLIS-image-large/ckpts/ss_dec_conv3d_16l8_fp16.*   the structure decoder, referenced as the
                                                    release does (``microsoft/TRELLIS-image-large/ckpts/...``)
    out/<dinov3 id>/config.json + model.safetensors a DINOv3 ViT in the Hugging Face layout

Checkpoints are stored as released: bfloat16 flow torsos (``"dtype": "bfloat16"``), float16 SC-VAE and
structure-decoder torsos (``use_fp16``); the pipeline casts them to float32 on the CPU.

'tiny': small configurations of every class (DINOv3 with 64-pixel patches, 32 channels) whose random weights
are calibrated so that an image gives a few dozen structure voxels and each latent voxel a compact blob of
output voxels: image -> GLB takes seconds per mode on a 2-core CPU. 'official': the 4B configurations of
``tests/golden2/official_keys`` and DINOv3 ViT-L/16 (`official_configs` also builds them on the meta device
for shape checks; writing the weights needs about 16 GB of memory and disk).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image

from .random_model import _save_checkpoint, randomize_, read_official_spec

SIZES = ("tiny", "official")
DEFAULT_STEPS = {"tiny": 2, "official": 12}
SS_DECODER_REF = "microsoft/TRELLIS-image-large/ckpts/ss_dec_conv3d_16l8_fp16"
DEFAULT_STRUCTURE_VOXELS = {"tiny": 24.0, "official": 20000.0}
DINOV3_IDS = {"tiny": "random/dinov3-vit-tiny-p64", "official": "facebook/dinov3-vitl16-pretrain-lvd1689m"}

# pipeline key -> (released checkpoint reference, official_keys file)
RELEASED = {
    "sparse_structure_flow_model": ("ckpts/ss_flow_img_dit_1_3B_64_bf16", "ss_flow_img_dit_1_3B_64_bf16.denoiser"),
    "sparse_structure_decoder": (SS_DECODER_REF, "ss_vae_conv3d_16l8_fp16.decoder"),
    "shape_slat_flow_model_512": ("ckpts/slat_flow_img2shape_dit_1_3B_512_bf16",
                                  "slat_flow_img2shape_dit_1_3B_512_bf16.denoiser"),
    "shape_slat_flow_model_1024": ("ckpts/slat_flow_img2shape_dit_1_3B_1024_bf16",
                                   "slat_flow_img2shape_dit_1_3B_512_bf16_ft1024.denoiser"),
    "shape_slat_decoder": ("ckpts/shape_dec_next_dc_f16c32_fp16", "shape_vae_next_dc_f16c32_fp16_ft_512.decoder"),
    "tex_slat_flow_model_512": ("ckpts/slat_flow_imgshape2tex_dit_1_3B_512_bf16",
                                "slat_flow_imgshape2tex_dit_1_3B_512_bf16.denoiser"),
    "tex_slat_flow_model_1024": ("ckpts/slat_flow_imgshape2tex_dit_1_3B_1024_bf16",
                                 "slat_flow_imgshape2tex_dit_1_3B_512_bf16_ft1024.denoiser"),
    "tex_slat_decoder": ("ckpts/tex_dec_next_dc_f16c32_fp16", "tex_vae_next_dc_f16c32_fp16_ft_512.decoder"),
    # texturing an existing mesh (the release lists it in texturing_pipeline.json)
    "shape_slat_encoder": ("ckpts/shape_enc_next_dc_f16c32_fp16", "shape_vae_next_dc_f16c32_fp16_ft_512.encoder"),
}

TEXTURING_ONLY = ("shape_slat_encoder",)  # in texturing_pipeline.json, not pipeline.json

# TRELLIS.2-4B's sampler settings (pipeline.json): guidance strength / rescale / interval / rescale_t
SAMPLER_SETTINGS = {
    "sparse_structure_sampler": (7.5, 0.7, [0.6, 1.0], 5.0),
    "shape_slat_sampler": (7.5, 0.5, [0.6, 1.0], 3.0),
    "tex_slat_sampler": (1.0, 0.0, [0.6, 0.9], 3.0),
}

_TINY_FLOW = dict(model_channels=32, num_blocks=1, num_heads=2, mlp_ratio=5.3334, pe_mode="rope", share_mod=True,
                  initialization="scaled", qk_rms_norm=True, qk_rms_norm_cross=True, dtype="bfloat16")
_TINY_VAE = dict(model_channels=[16, 16, 8, 8, 8], latent_channels=8, num_blocks=[1, 1, 0, 0, 0],
                 block_type=["SparseConvNeXtBlock3d"] * 5, up_block_type=["SparseResBlockC2S3d"] * 4,
                 block_args=[{"use_checkpoint": False}] * 5, use_fp16=True)
_TINY_ENCODER = dict(model_channels=[8, 8, 8, 16, 16], latent_channels=8, num_blocks=[0, 0, 0, 1, 1],
                     block_type=["SparseConvNeXtBlock3d"] * 5, down_block_type=["SparseResBlockS2C3d"] * 4,
                     block_args=[{"use_checkpoint": False}] * 5, use_fp16=True)
TINY_DINOV3 = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, patch_size=64,
                   num_register_tokens=4, image_size=512)
OFFICIAL_DINOV3 = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                       patch_size=16, num_register_tokens=4, image_size=224)


def tiny_configs(cond_channels: int) -> Dict[str, Tuple[str, dict]]:
    """pipeline key -> (class, args) of the tiny folder."""
    flow = dict(_TINY_FLOW, cond_channels=cond_channels)
    return {
        "sparse_structure_flow_model": ("SparseStructureFlowModel", dict(flow, resolution=16, in_channels=8,
                                                                         out_channels=8)),
        "sparse_structure_decoder": ("SparseStructureDecoder", dict(out_channels=1, latent_channels=8,
                                                                    num_res_blocks=1, num_res_blocks_middle=1,
                                                                    channels=[16, 8, 8], use_fp16=True)),
        "shape_slat_flow_model_512": ("ElasticSLatFlowModel", dict(flow, resolution=32, in_channels=8, out_channels=8)),
        "shape_slat_flow_model_1024": ("ElasticSLatFlowModel", dict(flow, resolution=64, in_channels=8,
                                                                    out_channels=8)),
        "tex_slat_flow_model_512": ("ElasticSLatFlowModel", dict(flow, resolution=32, in_channels=16, out_channels=8)),
        "tex_slat_flow_model_1024": ("ElasticSLatFlowModel", dict(flow, resolution=64, in_channels=16,
                                                                  out_channels=8)),
        "shape_slat_decoder": ("FlexiDualGridVaeDecoder", dict(_TINY_VAE, resolution=512)),
        "tex_slat_decoder": ("SparseUnetVaeDecoder", dict(_TINY_VAE, out_channels=6, pred_subdiv=False)),
        "shape_slat_encoder": ("FlexiDualGridVaeEncoder", _TINY_ENCODER),
    }


def official_configs(keys_dir: Union[str, Path]) -> Dict[str, Tuple[str, dict]]:
    """pipeline key -> (class, args as released, torso dtype included) from the official key files."""
    out = {}
    for key, (_, keys_file) in RELEASED.items():
        spec = read_official_spec(keys_dir, keys_file, "golden2")
        out[key] = (spec["name"], {**spec["args"], **spec.get("built_with_extra_args", {})})
    return out


def float32_args(args: dict) -> dict:
    """`args` with a float32 torso (random weights are drawn and calibrated in float32)."""
    out = dict(args)
    if "dtype" in out:
        out["dtype"] = "float32"
    if "use_fp16" in out:
        out["use_fp16"] = False
    return out


def _pipeline_json(models: Dict[str, str], steps: int, channels: Tuple[int, int], dinov3_id: str) -> dict:
    shape_c, tex_c = channels

    def sampler(key):
        strength, rescale, interval, rescale_t = SAMPLER_SETTINGS[key]
        return {"name": "FlowEulerGuidanceIntervalSampler", "args": {"sigma_min": 1e-5},
                "params": {"steps": steps, "guidance_strength": strength, "guidance_rescale": rescale,
                           "guidance_interval": interval, "rescale_t": rescale_t}}

    return {
        "name": "Trellis2ImageTo3DPipeline",
        "args": {
            "models": models,
            **{key: sampler(key) for key in SAMPLER_SETTINGS},
            "shape_slat_normalization": {"mean": [round(0.05 * (i % 5 - 2), 3) for i in range(shape_c)],
                                         "std": [round(1.0 + 0.02 * (i % 7), 3) for i in range(shape_c)]},
            "tex_slat_normalization": {"mean": [round(0.04 * (i % 3 - 1), 3) for i in range(tex_c)],
                                       "std": [round(0.9 + 0.03 * (i % 5), 3) for i in range(tex_c)]},
            "image_cond_model": {"name": "DinoV3FeatureExtractor", "args": {"model_name": dinov3_id}},
            "default_pipeline_type": "1024_cascade",
        },
        "random_weights": True,
    }


def _texturing_json(doc: dict) -> dict:
    """texturing_pipeline.json as released beside pipeline.json: the models and settings texturing uses."""
    args = doc["args"]
    models = {k: RELEASED[k][0] for k in ("shape_slat_encoder", "tex_slat_decoder", "tex_slat_flow_model_512",
                                          "tex_slat_flow_model_1024")}
    keep = ("tex_slat_sampler", "shape_slat_normalization", "tex_slat_normalization", "image_cond_model")
    return {"name": "Trellis2TexturingPipeline", "args": {"models": models, **{k: args[k] for k in keep}},
            "random_weights": True}


def _write_dinov3(folder: Path, config: dict, seed: int):
    """A random DINOv3 ViT saved in the Hugging Face layout; returns the model."""
    import transformers

    torch.manual_seed(seed)
    model = transformers.DINOv3ViTModel(transformers.DINOv3ViTConfig(**config)).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    return model


def _calibration_images(count: int, generator: torch.Generator):
    """RGBA-free synthetic condition images (coloured boxes on black, as a preprocessed object looks)."""
    images = []
    for _ in range(count):
        a = np.zeros((256, 256, 3), np.uint8)
        top, left = (int(v) for v in torch.randint(10, 90, (2,), generator=generator))
        colour = torch.randint(40, 255, (3,), generator=generator).numpy().astype(np.uint8)
        a[top:top + 150, left:left + 150] = colour
        images.append(Image.fromarray(a))
    return images


@torch.no_grad()
def _calibrate_structure(flow, decoder, conds, params: dict, voxels: float, generator: torch.Generator) -> None:
    """Shift the structure decoder's last bias so a generation occupies about `voxels` of the 64^3 grid."""
    from trellis_backend.pipeline.samplers import build_sampler

    sampler = build_sampler({"name": "FlowEulerGuidanceIntervalSampler", "args": {"sigma_min": 1e-5}})
    logits = []
    for cond in conds:
        noise = torch.randn(1, flow.in_channels, flow.resolution, flow.resolution, flow.resolution,
                            generator=generator).to(cond.device)
        z = sampler.sample(flow, noise, cond, torch.zeros_like(cond), **params).samples
        logits.append(decoder(z).flatten())
    logits = torch.cat(logits)
    threshold = torch.quantile(logits.float(), 1.0 - voxels * len(conds) / logits.numel())
    decoder.out_layer[-1].bias -= threshold


@torch.no_grad()
def _calibrate_subdivision(decoder, latent_channels: int, keep: float, generator: torch.Generator) -> None:
    """Shift each doubling's subdivision bias so that about `keep` of the 8 children of a voxel survive."""
    from trellis_backend.sparse import SparseTensor

    xyz = torch.unique(torch.randint(0, 32, (24, 3), generator=generator), dim=0).int()
    coords = torch.cat([torch.zeros(len(xyz), 1, dtype=torch.int32), xyz], 1)
    device = decoder.device
    x = SparseTensor(torch.randn(len(xyz), latent_channels, generator=generator).to(device), coords.to(device),
                     shape=(1, latent_channels))
    for level in range(len(decoder.blocks) - 1):
        block = decoder.blocks[level][-1]
        seen = {}

        def record(module, inputs, output):
            seen["logits"] = output.feats

        hook = block.to_subdiv.register_forward_hook(record)
        decoder.upsample(x, upsample_times=level + 1)
        hook.remove()
        block.to_subdiv.bias -= torch.quantile(seen["logits"].float().flatten(), 1.0 - keep)


def _save_released(out: Path, key: str, cls: str, args: dict, model: torch.nn.Module) -> None:
    """Save `model` (float32) where and as the release has it: its half-precision torso in its dtype."""
    from trellis_backend.models import build_model

    if float32_args(args) != args:
        released = build_model(cls, args, family="trellis2")
        own = released.state_dict()
        released.load_state_dict({k: v.to(own[k].dtype) for k, v in model.state_dict().items() if k in own},
                                 strict=False)
        model = released
    owner, ckpt = RELEASED[key][0].rsplit("ckpts/", 1)  # "" or "<org>/<repo>/", then the checkpoint name
    _save_checkpoint(out / owner, ckpt, cls, args, model)


def make_random_trellis2(out: Union[str, Path], size: str = "tiny", seed: int = 0, steps: Optional[int] = None,
                         keys_dir: Union[str, Path, None] = None, structure_voxels: Optional[float] = None,
                         keep_children: float = 0.45, device: Union[str, torch.device] = "cpu") -> Path:
    """Write a random-weight TRELLIS.2 folder in the released layout; returns its path.

    `structure_voxels`: about how many of the 64^3 structure voxels a generation occupies (default: a few dozen
    for tiny, about 20k -- a usual asset -- for official); `keep_children`: the fraction of children each shape
    decoder doubling keeps; `device`: where the calibration runs (cuda for 'official').
    """
    from trellis_backend.models import build_model
    from trellis_backend.pipeline.conditioning.dinov3 import DinoV3Conditioner

    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    steps = DEFAULT_STEPS[size] if steps is None else int(steps)
    dinov3 = _write_dinov3(out / DINOV3_IDS[size], TINY_DINOV3 if size == "tiny" else OFFICIAL_DINOV3, seed)
    cond_channels = dinov3.config.hidden_size
    if size == "tiny":
        configs = tiny_configs(cond_channels)
    else:
        keys_dir = Path(keys_dir) if keys_dir else Path(__file__).resolve().parents[2] / "tests" / "golden2" / "official_keys"
        configs = official_configs(keys_dir)
    doc = _pipeline_json({k: RELEASED[k][0] for k in configs if k not in TEXTURING_ONLY}, steps,
                         (configs["shape_slat_decoder"][1]["latent_channels"],
                          configs["tex_slat_decoder"][1]["latent_channels"]), DINOV3_IDS[size])
    calibrated = ("sparse_structure_flow_model", "sparse_structure_decoder", "shape_slat_decoder", "tex_slat_decoder")
    built = {}
    for key, (cls, args) in configs.items():
        model = build_model(cls, float32_args(args), family="trellis2").eval()
        randomize_(model, gen)
        if key in calibrated:
            built[key] = model
        else:  # the 1.3B shape/texture flows go straight to disk: the 4B never sit in memory together
            _save_released(out, key, cls, args, model)
            del model
    with torch.no_grad():
        tex = built["tex_slat_decoder"].output_layer
        tex.weight *= 0.5  # PBR values mostly inside [0, 1] after * 0.5 + 0.5
        tex.bias[5] += 2.0  # mostly opaque
    encoder = DinoV3Conditioner(dinov3, device=device)
    conds = [encoder.encode([im], image_size=512) for im in _calibration_images(3, gen)]
    flow, decoder = built["sparse_structure_flow_model"].to(device), built["sparse_structure_decoder"].to(device)
    voxels = structure_voxels if structure_voxels is not None else DEFAULT_STRUCTURE_VOXELS[size]
    _calibrate_structure(flow, decoder, conds, doc["args"]["sparse_structure_sampler"]["params"], voxels, gen)
    _calibrate_subdivision(built["shape_slat_decoder"].to(device), configs["shape_slat_decoder"][1]["latent_channels"],
                           keep_children, gen)
    for key in calibrated:
        _save_released(out, key, configs[key][0], configs[key][1], built[key].cpu())
    (out / "pipeline.json").write_text(json.dumps(doc, indent=2))
    (out / "texturing_pipeline.json").write_text(json.dumps(_texturing_json(doc), indent=2))
    return out
