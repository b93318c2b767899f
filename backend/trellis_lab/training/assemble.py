"""Assemble trained checkpoints into pipeline folders in the official TRELLIS layout.

``assemble(out_text, out_image, ss_vae=..., slat_vae=..., ss_flow=..., slat_flow=...)``
copies ``<stage dir>/ckpts/*`` and writes ``pipeline.json``::

    {"name": "TrellisTextTo3DPipeline", "args": {
        "models": {"sparse_structure_decoder": "ckpts/<name>", ...},
        "sparse_structure_sampler": {"name", "args": {"sigma_min"}, "params": {...}},
        "slat_sampler": {...},
        "slat_normalization": {"mean": [8], "std": [8]},
        "text_cond_model": "embedded:minilm"}}

The image folder is the same with ``TrellisImageTo3DPipeline`` and
``"image_cond_model": "embedded:image_cnn:ckpts/image_encoder"``. The flows serve both
conditionings, so the image folder can point at the text folder's checkpoints
(``shared_prefix``, e.g. ``"../trellis-embedded/"``) instead of holding copies.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

from .configs import model_configs

DEFAULT_SS_SAMPLER = {"steps": 12, "cfg_strength": 5.0, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0}
DEFAULT_SLAT_SAMPLER = {"steps": 12, "cfg_strength": 3.0, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0}
# image condition: weaker stage-1 guidance, chosen on validation records (training/recipes/sweep.sh; solid IoU
# 0.298 / 0.278 / 0.258 at cfg 5 / 7.5 / 10, then 0.419 / 0.400 at cfg 2 / 3.5 after more training; docs/MODEL_CARD.md)
DEFAULT_IMAGE_SS_SAMPLER = {**DEFAULT_SS_SAMPLER, "cfg_strength": 2.0}

PIPELINE_MODEL_KEYS = ("sparse_structure_encoder", "sparse_structure_decoder", "sparse_structure_flow_model",
                       "slat_encoder", "slat_decoder_gs", "slat_decoder_rf", "slat_decoder_mesh", "slat_flow_model")


def sampler(params: dict) -> dict:
    return {"name": "FlowEulerGuidanceIntervalSampler", "args": {"sigma_min": 1e-5}, "params": dict(params)}


def pipeline_json(kind: str, normalization: dict, preset: str = "embedded", prefix: str = "",
                  ss_params: Optional[dict] = None, slat_params: Optional[dict] = None) -> dict:
    cfg = model_configs(preset)
    models = {k: f"{prefix}ckpts/{cfg[k][0]}" for k in PIPELINE_MODEL_KEYS}
    args = {"models": models,
            "sparse_structure_sampler": sampler(ss_params or DEFAULT_SS_SAMPLER),
            "slat_sampler": sampler(slat_params or DEFAULT_SLAT_SAMPLER),
            "slat_normalization": {"mean": list(normalization["mean"]), "std": list(normalization["std"])}}
    if kind == "text":
        return {"name": "TrellisTextTo3DPipeline", "args": {**args, "text_cond_model": "embedded:minilm"}}
    return {"name": "TrellisImageTo3DPipeline",
            "args": {**args, "image_cond_model": "embedded:image_cnn:ckpts/image_encoder"}}


def _copy_ckpts(src: Path, dst: Path, names) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        for ext in (".json", ".safetensors"):
            f = src / "ckpts" / f"{name}{ext}"
            if f.is_file() and not (dst / f"{name}{ext}").resolve() == f.resolve():  # re-assembling in place
                shutil.copy(f, dst / f"{name}{ext}")


def assemble(out_text: str | Path, out_image: Optional[str | Path], *, ss_vae: str | Path, slat_vae: str | Path,
             ss_flow: str | Path, slat_flow: str | Path, image_encoder: Optional[str | Path] = None,
             preset: str = "embedded", shared_prefix: Optional[str] = None, ss_params: Optional[dict] = None,
             slat_params: Optional[dict] = None, image_ss_params: Optional[dict] = None,
             extra: Optional[dict] = None) -> None:
    cfg = model_configs(preset)
    out_text = Path(out_text)
    norm = json.loads(Path(slat_vae, "latent_stats.json").read_text())
    sources = {"sparse_structure_encoder": ss_vae, "sparse_structure_decoder": ss_vae,
               "sparse_structure_flow_model": ss_flow, "slat_encoder": slat_vae, "slat_decoder_gs": slat_vae,
               "slat_decoder_rf": slat_vae, "slat_decoder_mesh": slat_vae, "slat_flow_model": slat_flow}
    for key, src in sources.items():
        _copy_ckpts(Path(src), out_text / "ckpts", [cfg[key][0]])
    doc = pipeline_json("text", norm, preset, "", ss_params, slat_params)
    doc.update(extra or {})
    (out_text / "pipeline.json").write_text(json.dumps(doc, indent=2) + "\n")
    if out_image is None:
        return
    out_image = Path(out_image)
    (out_image / "ckpts").mkdir(parents=True, exist_ok=True)
    enc = Path(image_encoder) if image_encoder else Path(ss_flow, "ckpts", "image_encoder")
    for ext in (".json", ".safetensors"):
        shutil.copy(f"{enc}{ext}", out_image / "ckpts" / f"image_encoder{ext}")
    if shared_prefix is None:
        for key, src in sources.items():
            _copy_ckpts(Path(src), out_image / "ckpts", [cfg[key][0]])
        prefix = ""
    else:
        prefix = shared_prefix
    doc = pipeline_json("image", norm, preset, prefix, image_ss_params or ss_params or DEFAULT_IMAGE_SS_SAMPLER,
                        slat_params)
    doc.update(extra or {})
    (out_image / "pipeline.json").write_text(json.dumps(doc, indent=2) + "\n")
