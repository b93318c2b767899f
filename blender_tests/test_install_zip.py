"""The built zip installs into a fresh Blender profile, enables, and runs its bundled backend.

Each install runs in its own Blender process (BLENDER_USER_* point at a temp
profile, which Blender reads only at start-up): once as a 4.2+ extension and
once through the legacy add-on installer.
"""

import json
import os
import subprocess
import sys
import zipfile

import bpy
import pytest

from conftest import BACKEND_PYTHON, ROOT, TESTS_DIR, backend_python_available

INSTALL_AND_RUN = r"""
import json, os, sys
import bpy
mode, zip_path, backend_python, model, tests_dir, out_dir = sys.argv[-6:]
if mode == "extension":
    assert bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                                    enable_on_install=True) == {"FINISHED"}
    module = "bl_ext.user_default.trellis_blender"
else:
    assert bpy.ops.preferences.addon_install(filepath=zip_path) == {"FINISHED"}
    assert bpy.ops.preferences.addon_enable(module="trellis_blender") == {"FINISHED"}
    module = "trellis_blender"
assert module in bpy.context.preferences.addons, list(bpy.context.preferences.addons.keys())
pkg = sys.modules[module]
report = {"file": pkg.__file__, "has_op": bpy.ops.trellis.generate.poll()}
prefs = bpy.context.preferences.addons[module].preferences
jobs = sys.modules[module + ".jobs"]
paths = sys.modules[module + ".paths"]
report["pythonpath"] = paths.backend_pythonpath()
report["embedded_model"] = paths.embedded_model_dir()
if backend_python:
    prefs.python_path, prefs.model_dir, prefs.device, prefs.output_dir = backend_python, model, "cpu", out_dir
    ctl = jobs.controller()
    ctl.extra_backend_args = ("--pipeline-factory", "test_server_double:load")
    ctl.extra_pythonpath = (tests_dir,)
    bpy.context.scene.trellis.prompt = "installed"
    bpy.context.scene.trellis.outputs = "MESH"
    report["generate"] = sorted(bpy.ops.trellis.generate())
    report["state"] = bpy.context.window_manager.trellis_status.state
    report["error"] = bpy.context.window_manager.trellis_status.error_message
    report["backend_package"] = (ctl.client.ready_info or {}).get("backend_package")
    report["objects"] = [o.name for o in bpy.data.collections["TRELLIS"].objects]
if mode == "extension":
    bpy.ops.extensions.package_uninstall(repo_index=[r.module for r in
                                         bpy.context.preferences.extensions.repos].index("user_default"),
                                         pkg_id="trellis_blender")
else:
    bpy.ops.preferences.addon_disable(module="trellis_blender")
report["unregistered"] = not hasattr(bpy.types.Scene, "trellis")
print("REPORT " + json.dumps(report))
"""


@pytest.fixture(scope="module")
def built_zip(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "build_addon.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    zips = list(out.glob("trellis_blender-*.zip"))
    assert len(zips) == 1
    return str(zips[0])


def test_zip_layout(built_zip):
    names = zipfile.ZipFile(built_zip).namelist()
    assert "trellis_blender/__init__.py" in names and "trellis_blender/blender_manifest.toml" in names
    assert "trellis_blender/backend/trellis_backend/server/app.py" in names
    assert "trellis_blender/backend/trellis_kernels/__init__.py" in names
    assert "trellis_blender/backend/requirements.txt" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert not any(n.startswith("trellis_blender/tests") or "test_server_double" in n for n in names)
    src = zipfile.ZipFile(built_zip)
    assert src.read("trellis_blender/protocol.py") == src.read("trellis_blender/backend/trellis_backend/server/protocol.py")


def _install(mode, built_zip, tmp_path):
    profile = tmp_path / "profile"
    env = dict(os.environ)
    env.pop("TRELLIS_BLENDER_DATA_DIR", None)  # the installed add-on must find its own data folder
    for var, sub in (("BLENDER_USER_RESOURCES", "res"), ("BLENDER_USER_CONFIG", "config"),
                     ("BLENDER_USER_SCRIPTS", "scripts"), ("BLENDER_USER_EXTENSIONS", "extensions"),
                     ("BLENDER_USER_DATAFILES", "datafiles")):
        env[var] = str(profile / sub)
    model = tmp_path / "fake-model"
    model.mkdir()
    (model / "pipeline.json").write_text("{}")
    backend = BACKEND_PYTHON if backend_python_available() else ""
    proc = subprocess.run([sys.executable, "-c", INSTALL_AND_RUN, mode, built_zip, backend, str(model), TESTS_DIR,
                           str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")]
    assert lines, "install script failed:\n%s\n%s" % (proc.stdout[-3000:], proc.stderr[-3000:])
    return json.loads(lines[-1][len("REPORT "):]), profile


@pytest.mark.skipif(bpy.app.version < (4, 2, 0), reason="extensions need Blender 4.2+")
def test_installs_as_extension_and_runs_bundled_backend(built_zip, tmp_path):
    report, profile = _install("extension", built_zip, tmp_path)
    assert report["file"].startswith(str(profile / "extensions"))
    assert report["has_op"]
    install_dir = os.path.dirname(report["file"])
    assert report["pythonpath"] == [os.path.join(install_dir, "backend")]
    if backend_python_available():
        assert report["generate"] == ["FINISHED"] and report["state"] == "DONE", report
        assert report["backend_package"] == os.path.join(install_dir, "backend", "trellis_backend")  # bundled copy ran
        assert len(report["objects"]) == 1
    assert report["unregistered"]


def test_installs_as_legacy_addon(built_zip, tmp_path):
    report, profile = _install("legacy", built_zip, tmp_path)
    assert report["file"].startswith(str(profile / "scripts"))
    assert report["has_op"]
    if backend_python_available():
        assert report["state"] == "DONE", report
        assert report["backend_package"] == os.path.join(os.path.dirname(report["file"]), "backend", "trellis_backend")
    assert report["unregistered"]
