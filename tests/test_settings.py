"""trellis_backend.settings: every runtime TRELLIS_* variable read in one place, once; the runtime reads it there."""
from __future__ import annotations

import pathlib
import re

import pytest

from golden_cases import REPO_ROOT
from trellis_backend import settings
from trellis_backend.errors import BadInputError
from trellis_backend.settings import Settings

ALL_SET = {
    "TRELLIS_ACCEL": "0", "TRELLIS_ACCEL_GRAPHS": "dense", "TRELLIS_ACCEL_UNIFORM_CONTEXT": "off",
    "TRELLIS_ACCEL_GELU_EPILOGUE": "false", "TRELLIS_CONV_BACKEND": "torch", "TRELLIS_KERNELS": "no",
    "TRELLIS_KERNELS_AUTOTUNE": "0", "TRELLIS_KERNELS_DETERMINISTIC": "1", "TRELLIS_KERNELS_TUNED": "/t/h200.json",
    "TRELLIS_MODELS_ROOT": "/models", "TRELLIS_DINOV2_CHECKPOINT": "/ckpt/dino.pth",
}


def test_defaults_when_unset_or_empty():
    assert Settings.from_environ({}) == Settings()
    assert Settings.from_environ({name: "" for name in ALL_SET}) == Settings()
    assert Settings().accel and Settings().accel_graphs == "all" and not Settings().kernels_deterministic


def test_every_variable_is_read():
    got = Settings.from_environ(ALL_SET)
    assert got == Settings(accel=False, accel_graphs="dense", accel_uniform_context=False, accel_gelu_epilogue=False,
                           conv_backend="torch", kernels=False, kernels_autotune=False, kernels_deterministic=True,
                           kernels_tuned="/t/h200.json", models_root="/models", dinov2_checkpoint="/ckpt/dino.pth")


def test_documented_variables_are_the_read_ones():
    """The docstring table names exactly the variables `from_environ` reads."""
    source = pathlib.Path(settings.__file__).read_text()
    read = set(re.findall(r'(?:text|flag)\("(TRELLIS_[A-Z0-9_]+)"', source))
    documented = set(re.findall(r"^``(TRELLIS_[A-Z0-9_]+)`` {2,}", settings.__doc__, flags=re.M))
    assert read == documented == set(ALL_SET)


@pytest.mark.parametrize("name, value", [("TRELLIS_ACCEL", "maybe"), ("TRELLIS_ACCEL_GRAPHS", "some"),
                                         ("TRELLIS_CONV_BACKEND", "cudnn")])
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(BadInputError) as e:
        Settings.from_environ({name: value})
    assert name in str(e.value) and e.value.hint


def test_read_once_override_and_reset(monkeypatch):
    monkeypatch.setenv("TRELLIS_ACCEL_GRAPHS", "none")
    settings.reset()
    try:
        first = settings.current()
        assert first.accel_graphs == "none"
        monkeypatch.setenv("TRELLIS_ACCEL_GRAPHS", "dense")
        assert settings.current() is first  # read once
        with settings.override(accel_graphs="all") as changed:
            assert settings.current() is changed and changed.accel_graphs == "all"
        assert settings.current() is first
    finally:
        monkeypatch.undo()
        settings.reset()


def test_runtime_reads_the_settings(tmp_path):
    import trellis_kernels
    from trellis_backend.pipeline.conditioning.dinov2 import checkpoint_search_paths
    from trellis_backend.pipeline.folder import resolve_model_ref
    from trellis_backend.sparse import get_conv_backend, set_conv_backend

    set_conv_backend(None)  # no explicit choice (other tests pick one): the settings decide
    with settings.override(conv_backend="spconv"):
        assert get_conv_backend() == "spconv"
    set_conv_backend("torch")
    with settings.override(conv_backend="spconv"):
        assert get_conv_backend() == "torch"
    set_conv_backend(None)
    with settings.override(kernels=False):
        assert not trellis_kernels.available()
    ckpt = tmp_path / "dino.pth"
    with settings.override(dinov2_checkpoint=str(ckpt)):
        assert checkpoint_search_paths("dinov2_vitl14_reg")[0] == ckpt
    root = tmp_path / "root"
    target = root / "org" / "repo" / "ckpts"
    target.mkdir(parents=True)
    (target / "m.json").write_text("{}")
    (target / "m.safetensors").write_bytes(b"")
    folder = tmp_path / "elsewhere" / "pipe"
    folder.mkdir(parents=True)
    with settings.override(models_root=str(root)):
        assert resolve_model_ref(folder, "org/repo/ckpts/m") == target / "m"


# the lab (benchmarks, training, data) keeps its own variables; everything else reads settings.py
LAB = ("kernels/trellis_kernels/bench.py", "kernels/trellis_kernels/bench_stages.py",
       "kernels/trellis_kernels/product_timing.py", "backend/trellis_backend/training/", "backend/trellis_backend/data/")
ENV_READ = re.compile(r"""(environ\s*(\.get\s*\(|\[)|getenv\s*\()\s*["']TRELLIS_""")


def test_no_runtime_module_reads_trellis_variables_itself():
    offenders = []
    for root in ("backend/trellis_backend", "kernels/trellis_kernels"):
        for path in sorted((REPO_ROOT / root).rglob("*.py")):
            rel = path.relative_to(REPO_ROOT).as_posix()
            if rel.startswith(LAB) or rel.endswith("trellis_backend/settings.py"):
                continue
            if ENV_READ.search(path.read_text()):
                offenders.append(rel)
    assert offenders == []


@pytest.mark.parametrize("module", ["backend/trellis_backend/settings.py", "backend/trellis_backend/fastpath.py"])
def test_leaf_modules_import_nothing_of_the_project_at_import_time(module):
    """Every layer (the kernels included) imports settings and the fast-path registry: they must not import back."""
    import ast

    tree = ast.parse((REPO_ROOT / module).read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top for a in n.names] + [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
    assert not any(isinstance(n, ast.ImportFrom) and n.level for n in top)
    assert not any(name.startswith(("trellis_backend", "trellis_kernels")) for name in names)
