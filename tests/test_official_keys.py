"""Building each official TRELLIS configuration gives exactly the released checkpoints' keys, shapes, dtypes."""
from __future__ import annotations

import json

import pytest

from golden_cases import golden_dir
from trellis_backend.models import build_model

KEY_FILES = sorted((golden_dir() / "official_keys").glob("*.json"))


@pytest.mark.parametrize("path", KEY_FILES, ids=[p.stem for p in KEY_FILES])
def test_official_configuration_keys(path):
    spec = json.loads(path.read_text())
    model = build_model(spec["name"], spec["args"], device="meta")
    got = {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in model.state_dict().items()}
    want = {k: [list(shape), dtype] for k, (shape, dtype) in spec["state_dict"].items()}
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    assert not missing and not extra, f"missing {missing[:10]}, unexpected {extra[:10]}"
    wrong = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert not wrong, f"{len(wrong)} keys differ in shape/dtype, e.g. {list(wrong.items())[:5]}"


def test_there_are_official_key_files():
    assert len(KEY_FILES) >= 14
