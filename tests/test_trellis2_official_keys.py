"""Building each released TRELLIS.2-4B configuration gives exactly its checkpoint's keys, shapes and dtypes.

The key files (``official_keys/`` of golden2, vendored in ``tests/golden2``) name the class, the
config args, the extra args the dtypes were recorded with (``built_with_extra_args``, e.g. the
bfloat16 torso) and the derived buffers checkpoints do not carry (``rope_phases``), which may be
absent from or extra in the built model.
"""
from __future__ import annotations

import pytest

from golden_cases import check_official_keys, golden_dir

KEY_FILES = sorted((golden_dir("trellis2") / "official_keys").glob("*.json"))


@pytest.mark.parametrize("path", KEY_FILES, ids=[p.stem for p in KEY_FILES])
def test_trellis2_official_configuration_keys(path):
    check_official_keys(path, "trellis2")


def test_there_are_fourteen_trellis2_key_files():
    assert len(KEY_FILES) == 14, [p.name for p in KEY_FILES]
