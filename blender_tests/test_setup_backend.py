"""'Set up backend' creates a venv, pip-installs, verifies imports, and explains failures.

Uses tiny local requirements (no downloads); the real run installs the bundled
backend/requirements.txt the same way.
"""

import os
import sys

import bpy
import pytest

from conftest import ADDON_NAME


def _setup(tmp_path, requirements_text, verify="trellis_backend.server", base=""):
    req = tmp_path / "requirements.txt"
    req.write_text(requirements_text)
    bpy.context.preferences.addons[ADDON_NAME].preferences.setup_python = base
    return bpy.ops.trellis.setup_backend(run_mode="SYNC", requirements=str(req), verify=verify,
                                         venv_dir=str(tmp_path / "venv"))


def test_setup_creates_venv_and_verifies(addon, tmp_path):
    from trellis_blender.core import backend_setup, paths

    assert _setup(tmp_path, "pip\n") == {"FINISHED"}
    state = backend_setup.snapshot()
    assert state["state"] == "done", state
    python = paths.venv_python(str(tmp_path / "venv"))
    assert os.path.exists(python) and state["python"] == python
    assert any("verified: trellis_backend.server" in ln for ln in state["lines"])
    # a second run reuses the environment (no re-creation step)
    assert _setup(tmp_path, "pip\n") == {"FINISHED"}
    assert not any(ln.startswith("== Creating") for ln in backend_setup.snapshot()["lines"])


def test_pip_failure_is_explained(addon, tmp_path):
    from trellis_blender.core import backend_setup

    with pytest.raises(RuntimeError, match="Backend setup failed while installing requirements"):
        _setup(tmp_path, "./no-such-local-package-dir\n")
    state = backend_setup.snapshot()
    assert state["state"] == "failed" and "internet" in state["hint"]


def test_missing_module_after_install_is_explained(addon, tmp_path):
    from trellis_blender.core import backend_setup

    with pytest.raises(RuntimeError, match="checking the installation"):
        _setup(tmp_path, "pip\n", verify="no_such_module_xyz")
    assert "does not import" in backend_setup.snapshot()["hint"]


def test_bad_base_python_is_explained(addon, tmp_path):
    from trellis_blender.core import backend_setup

    with pytest.raises(RuntimeError, match="Backend setup failed"):
        _setup(tmp_path, "pip\n", base=str(tmp_path / "no-python"))
    assert "Python for setup" in backend_setup.snapshot()["hint"]


def test_setup_venv_is_the_default_interpreter(addon, tmp_path, monkeypatch):
    from trellis_blender import preferences
    from trellis_blender.core import paths

    monkeypatch.setenv(paths.DATA_DIR_ENV, str(tmp_path / "data"))
    venv = paths.setup_venv_dir(preferences.data_dir())
    fake = paths.venv_python(venv)
    os.makedirs(os.path.dirname(fake))
    open(fake, "w").close()
    prefs = bpy.context.preferences.addons[ADDON_NAME].preferences
    prefs.python_path = ""
    assert preferences.resolved_python(prefs) == fake
