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
if mode.startswith("extension"):
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
paths = sys.modules[module + ".core.paths"]
report["pythonpath"] = paths.backend_pythonpath()
report["embedded_model"] = paths.embedded_model_dir()
if backend_python and mode == "extension-image":
    # as a user would: only the backend interpreter is set; model folder, outputs, sampling are the defaults
    prefs.python_path, prefs.device = backend_python, "cpu"
    img = bpy.data.images.new("cond", 128, 128, alpha=True)
    px = [0.0] * (128 * 128 * 4)
    for y in range(32, 96):
        for x in range(40, 88):
            px[(y * 128 + x) * 4: (y * 128 + x) * 4 + 4] = (0.85, 0.15, 0.1, 1.0)
    img.pixels.foreach_set(px)
    img.filepath_raw, img.file_format = os.path.join(out_dir, "red_block.png"), "PNG"
    os.makedirs(out_dir, exist_ok=True)
    img.save()
    settings = bpy.context.scene.trellis
    settings.image_source, settings.image_path = "FILE", img.filepath_raw
    report["generate"] = sorted(bpy.ops.trellis.generate())
    status = bpy.context.window_manager.trellis_status
    report["state"], report["error"] = status.state, status.error_type + ": " + status.error_message
    report["ready"] = jobs.controller().client.ready_info or {}
    report["objects"] = {o.name: o.type for o in bpy.data.collections["TRELLIS"].objects}
elif backend_python:
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
if mode.startswith("extension"):
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
    """The runtime and both embedded models, no lab (training, data, random-model maker, benchmarks)."""
    names = zipfile.ZipFile(built_zip).namelist()
    assert "trellis_blender/__init__.py" in names and "trellis_blender/blender_manifest.toml" in names
    assert "trellis_blender/backend/trellis_backend/server/app.py" in names
    assert "trellis_blender/backend/trellis_kernels/__init__.py" in names
    assert "trellis_blender/backend/requirements.txt" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert not any(n.startswith("trellis_blender/tests") or "test_server_double" in n for n in names)
    lab = ("/trellis_lab/", "/trellis_bench/", "trellis_backend/training/", "trellis_backend/data/",
           "random_model.py", "trellis_kernels/bench", "product_timing.py")
    assert not [n for n in names if any(part in n for part in lab)]
    for model in ("trellis-embedded", "trellis-embedded-image"):
        if os.path.exists(os.path.join(ROOT, "models", model, "pipeline.json")):
            assert "trellis_blender/models/%s/pipeline.json" % model in names
            shipped = {n.rsplit("/", 1)[1] for n in names if n.startswith("trellis_blender/models/%s/ckpts/" % model)}
            assert shipped == set(os.listdir(os.path.join(ROOT, "models", model, "ckpts")))
    src = zipfile.ZipFile(built_zip)
    assert src.read("trellis_blender/core/protocol.py") == src.read("trellis_blender/backend/trellis_backend/server/protocol.py")


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
                           str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=900)
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


@pytest.mark.slow
@pytest.mark.skipif(bpy.app.version < (4, 2, 0), reason="extensions need Blender 4.2+")
@pytest.mark.skipif(not backend_python_available(), reason="no backend interpreter")
@pytest.mark.skipif(not os.path.exists(os.path.join(ROOT, "models", "trellis-embedded-image", "pipeline.json")),
                    reason="this checkout has no embedded image model")
def test_installed_zip_generates_from_an_image_with_default_settings(built_zip, tmp_path):
    """A fresh install answers an image with the bundled image model (not 'a text model cannot take an image')."""
    report, profile = _install("extension-image", built_zip, tmp_path)
    install_dir = os.path.dirname(report["file"])
    assert report["generate"] == ["FINISHED"] and report["state"] == "DONE", report
    assert report["ready"]["model"] == os.path.join(install_dir, "models", "trellis-embedded-image")
    assert report["ready"]["backend_package"] == os.path.join(install_dir, "backend", "trellis_backend")
    assert sorted(report["objects"].values()) == ["MESH", "MESH"], report["objects"]  # mesh + splats
