"""CLIP ViT-L/14 text features as TRELLIS-text takes them.

Reference (TrellisTextTo3DPipeline.encode_text): tokenizer with ``max_length=77,
padding='max_length', truncation=True``, ``CLIPTextModel(input_ids).last_hidden_state``
(no attention mask), negative condition = the encoding of ``""``.

The model is read from a local folder only (``transformers`` ``local_files_only``):
the name in pipeline.json (``openai/clip-vit-large-patch14``) is looked for as a folder,
under the models root, next to the pipeline folder, and in the Hugging Face cache; the
hub is asked only with ``allow_network=True``.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import torch

from ...errors import MissingFileError
from .text import TextConditioner

CLIP_MAX_LENGTH = 77


def clip_search_paths(name: str, model_folder: Optional[Path] = None, models_root: Optional[Path] = None) -> List[Path]:
    out = [Path(name).expanduser()]
    if models_root is not None:
        out.append(Path(models_root) / name)
    if model_folder is not None:
        out += [Path(model_folder) / name, Path(model_folder).parent / name, Path(model_folder) / "text_encoder"]
    return out


def _quiet_transformers():
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except Exception:
        pass


class CLIPTextEncoder(TextConditioner):
    """CLIP ViT-L/14 text model: 77 tokens padded, last hidden state (the official text releases)."""

    def __init__(self, name: str = "openai/clip-vit-large-patch14", model_folder: Optional[Path] = None,
                 models_root: Optional[Path] = None, allow_network: bool = False, device="cpu",
                 dtype: torch.dtype = torch.float32):
        try:
            from transformers import AutoTokenizer, CLIPTextModel
        except Exception as e:
            raise MissingFileError(
                f"the text encoder {name} needs the 'transformers' package, which cannot be imported ({e})",
                hint="pip install transformers") from e
        _quiet_transformers()
        tried = clip_search_paths(name, model_folder, models_root)
        source = next((p for p in tried if (p / "config.json").is_file()), None)
        kwargs = {}
        if source is None:
            # Hugging Face cache (offline), then the hub when allowed
            try:
                CLIPTextModel.from_pretrained(name, local_files_only=True)  # probe
                source, kwargs = name, {"local_files_only": True}
            except Exception:
                if allow_network:
                    source, kwargs = name, {}
                else:
                    raise MissingFileError(
                        f"CLIP text model '{name}' not found; looked for a folder with config.json at: "
                        + ", ".join(str(p) for p in tried) + " and in the Hugging Face cache",
                        hint=f"Download '{name}' (config.json, model weights, tokenizer files) into "
                             f"<models root>/{name}, or allow network access.")
        else:
            kwargs = {"local_files_only": True}
        self.name = name
        self.source = str(source)
        self.tokenizer = AutoTokenizer.from_pretrained(str(source), **kwargs)
        self.model = CLIPTextModel.from_pretrained(str(source), **kwargs).eval().to(device=device, dtype=dtype)
        self.device = torch.device(device)
        self._null = None

    @property
    def cond_channels(self) -> int:
        return self.model.config.hidden_size

    @torch.no_grad()
    def encode(self, texts: List[str]) -> torch.Tensor:
        enc = self.tokenizer(list(texts), max_length=CLIP_MAX_LENGTH, padding="max_length", truncation=True,
                             return_tensors="pt")
        return self.model(input_ids=enc["input_ids"].to(self.device)).last_hidden_state.float()
