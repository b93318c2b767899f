"""Building each released TRELLIS.2-4B configuration gives exactly its checkpoint's keys, shapes and dtypes.

The key files (``official_keys/`` of golden2, vendored in ``tests/golden2``) name the class, the
config args, the extra args the dtypes were recorded with (``built_with_extra_args``, e.g. the
bfloat16 torso) and the derived buffers checkpoints do not carry (``rope_phases``), which may be
absent from or extra in the built model.
"""
from __future__ import annotations

import json

import pytest

from golden_cases import golden_dir
from trellis_backend.models import build_model

KEY_FILES = sorted((golden_dir("trellis2") / "official_keys").glob("*.json"))



@pytest.mark.parametrize("path", KEY_FILES, ids=[p.stem for p in KEY_FILES])
def test_trellis2_official_configuration_keys(path):
    spec = json.loads(path.read_text())
    args = {**spec["args"], **spec.get("built_with_extra_args", {})}
    model = build_model(spec["name"], args, device="meta", family="trellis2")
    derived = set(spec.get("derived_buffers_not_in_checkpoint", {}))
    got = {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in model.state_dict().items()
           if k not in derived}
    want = {k: [list(shape), dtype] for k, (shape, dtype) in spec["state_dict"].items() if k not in derived}
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    assert not missing and not extra, f"missing {missing[:10]}, unexpected {extra[:10]}"
    wrong = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert not wrong, f"{len(wrong)} keys differ in shape/dtype, e.g. {list(wrong.items())[:5]}"


def test_there_are_fourteen_trellis2_key_files():
    assert len(KEY_FILES) == 14, [p.name for p in KEY_FILES]
