"""Building each official TRELLIS configuration gives exactly the released checkpoints' keys, shapes, dtypes."""
from __future__ import annotations

import pytest

from golden_cases import check_official_keys, golden_dir

KEY_FILES = sorted((golden_dir() / "official_keys").glob("*.json"))


@pytest.mark.parametrize("path", KEY_FILES, ids=[p.stem for p in KEY_FILES])
def test_official_configuration_keys(path):
    check_official_keys(path)


def test_there_are_official_key_files():
    assert len(KEY_FILES) >= 14
