"""Reading a pipeline folder, shared by every model family: device and dtype choice, pipeline.json, and
where a model reference (``ckpts/<name>`` or ``<org>/<repo>/ckpts/<name>``) lives on disk."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Union

import torch

from .. import settings
from ..errors import BadInputError, CheckpointMismatchError, MissingFileError


# ------------------------------------------------------------------ device / dtype
def choose_device(device: Union[str, torch.device, None] = "auto") -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError("CUDA was requested but no CUDA GPU is available to PyTorch",
                            hint="Use --device cpu (slower), or install a CUDA build of PyTorch.")
    return dev


def choose_dtype(device: torch.device, dtype: Union[str, torch.dtype, None] = None) -> torch.dtype:
    if isinstance(dtype, str):
        names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                 "float16": torch.float16, "fp16": torch.float16, "auto": None}
        if dtype not in names:
            raise BadInputError(f"unknown dtype {dtype!r}", hint="Use float32, bfloat16 or float16.")
        dtype = names[dtype]
    if dtype is not None:
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


# ------------------------------------------------------------------ folder reading
def read_pipeline_document(folder: Path) -> dict:
    """pipeline.json of a model folder, parsed, with an ``args`` object (no family-specific checks)."""
    if not folder.exists():
        raise MissingFileError(f"model folder not found: {folder}",
                               hint="Pass the folder that contains pipeline.json (e.g. the embedded model's folder "
                                    "or a downloaded TRELLIS release).")
    if not folder.is_dir():
        raise MissingFileError(f"model path is not a folder: {folder}",
                               hint="Pass the folder that contains pipeline.json, not a file inside it.")
    cfg_file = folder / "pipeline.json"
    if not cfg_file.is_file():
        raise MissingFileError(f"no pipeline.json in model folder {folder}",
                               hint="A TRELLIS model folder holds pipeline.json and ckpts/; check the path.")
    try:
        config = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointMismatchError(f"{cfg_file} is not valid JSON: {e}",
                                      hint="Re-download the model folder; pipeline.json is damaged.") from e
    args = config.get("args") if isinstance(config, dict) else None
    if not isinstance(args, dict):
        raise CheckpointMismatchError(f"{cfg_file} has no 'args' object")
    return config


def _is_repo_ref(ref: str) -> bool:
    parts = ref.replace("\\", "/").split("/")
    return len(parts) >= 4 and parts[2] == "ckpts"


def resolve_model_ref(folder: Path, ref: str, models_root: Optional[Path] = None,
                      allow_network: bool = False) -> Path:
    """Path (without extension) of a model named in pipeline.json.

    ``ckpts/<name>`` is relative to the folder. ``<org>/<repo>/ckpts/<name>`` (text releases
    pointing at image-large decoders) is looked for under ``models_root`` (default: env
    ``TRELLIS_MODELS_ROOT``, else the folder two levels up, as in ``<root>/<org>/<repo>``),
    also as ``<root>/<repo>/ckpts/<name>``; from the Hugging Face hub only with
    ``allow_network`` and huggingface_hub installed.
    """
    def complete(p: Path) -> bool:
        return Path(f"{p}.json").is_file() and Path(f"{p}.safetensors").is_file()

    tried: List[Path] = []
    local = folder / ref
    if complete(local):
        return local
    tried.append(local)
    if _is_repo_ref(ref):
        org, repo, rest = ref.split("/", 2)
        roots = []
        if models_root is not None:
            roots.append(Path(models_root))
        if settings.current().models_root:
            roots.append(Path(settings.current().models_root))
        roots += [folder.parent.parent, folder.parent]
        for root in dict.fromkeys(roots):
            for cand in (root / ref, root / repo / rest):
                if cand not in tried:
                    if complete(cand):
                        return cand
                    tried.append(cand)
        if allow_network:
            try:
                from huggingface_hub import hf_hub_download
            except Exception:
                hf_hub_download = None
            if hf_hub_download is not None:
                try:
                    js = hf_hub_download(f"{org}/{repo}", f"{rest}.json")
                    hf_hub_download(f"{org}/{repo}", f"{rest}.safetensors")
                    return Path(js[: -len(".json")])
                except Exception as e:
                    raise MissingFileError(f"could not download {org}/{repo}/{rest} from the hub: {e}",
                                           hint=f"Download {org}/{repo} by hand into <models root>/{org}/{repo}.") from e
    missing = []
    for p in tried:
        for ext in (".json", ".safetensors"):
            if not Path(f"{p}{ext}").is_file():
                missing.append(f"{p}{ext}")
    hint = "Check that the model folder is complete (pipeline.json and every ckpts/<name>.json + .safetensors)."
    if _is_repo_ref(ref):
        org, repo = ref.split("/")[:2]
        hint = (f"This pipeline uses models of {org}/{repo}: download that folder into <models root>/{org}/{repo} "
                f"and pass --models-root <models root> (or set TRELLIS_MODELS_ROOT).")
    raise MissingFileError(f"model '{ref}' not found; missing: " + ", ".join(missing[:6])
                           + (" ..." if len(missing) > 6 else ""), hint=hint)
