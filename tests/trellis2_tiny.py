"""Module-scoped fixtures shared by the TRELLIS.2 pipeline tests: one tiny random folder in the released
layout, its loaded pipeline and a conditioning image, built once per test module (import them by name)."""
from __future__ import annotations

import pytest

from inputs import write_rgba_png


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from trellis_lab.__main__ import main

    out = tmp_path_factory.mktemp("models") / "org" / "trellis2-tiny"
    assert main(["make-random-model", "--family", "trellis2", "--size", "tiny", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def pipe(folder):
    from trellis_backend.pipeline import load_pipeline

    return load_pipeline(folder, device="cpu")


@pytest.fixture(scope="module")
def cond_png(tmp_path_factory):
    return write_rgba_png(tmp_path_factory.mktemp("img") / "cond.png", (96, 128), (20, 80, 40, 90), (30, 160, 60))
