"""Building each released TRELLIS.2 SC-VAE configuration gives exactly its checkpoint's keys, shapes and dtypes
(`use_fp16`: the blocks' conv and linear weights float16, the rest float32)."""
from __future__ import annotations

import json

import pytest

from golden_cases import golden_dir
from trellis_backend.models import build_model

KEY_FILES = sorted(p for p in (golden_dir("trellis2") / "official_keys").glob("*.json")
                   if p.name.startswith(("shape_vae_next_dc_", "tex_vae_next_dc_")))


def test_all_sc_vae_key_sets_are_there():
    # shape/tex x encoder/decoder x (base, ft_512)
    assert len(KEY_FILES) == 8, [p.name for p in KEY_FILES]


@pytest.mark.parametrize("path", KEY_FILES, ids=[p.stem for p in KEY_FILES])
def test_official_sc_vae_keys(path):
    spec = json.loads(path.read_text())
    model = build_model(spec["name"], spec["args"], device="meta")
    got = {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in model.state_dict().items()}
    want = {k: [list(shape), dtype] for k, (shape, dtype) in spec["state_dict"].items()}
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    assert not missing and not extra, f"missing {missing[:10]}, unexpected {extra[:10]}"
    wrong = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert not wrong, f"{len(wrong)} keys differ in shape/dtype, e.g. {list(wrong.items())[:5]}"
