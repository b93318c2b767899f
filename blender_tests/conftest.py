"""Harness for tests that run inside Blender (the ``bpy`` wheel from PyPI).

Run with the Blender venv, not the backend one:
    .venv-blender/bin/python -m pytest blender_tests
The backend runs as a real subprocess with ``TRELLIS_BACKEND_PYTHON``
(default ``.venv/bin/python``), exactly as the add-on starts it for a user.

The add-on is enabled once per session through ``addon_utils`` from a symlink
called ``trellis_blender`` (its name when installed); every test starts from an
empty scene with preferences pointing at the test's own output folder.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TESTS_DIR = os.path.join(ROOT, "tests")
BACKEND_PYTHON = os.environ.get("TRELLIS_BACKEND_PYTHON", os.path.join(ROOT, ".venv", "bin", "python"))
ADDON_NAME = "trellis_blender"

# Must be set before the add-on resolves its data folder (venv, logs, outputs).
_DATA_DIR = tempfile.mkdtemp(prefix="trellis-blender-data-")
os.environ.setdefault("TRELLIS_BLENDER_DATA_DIR", _DATA_DIR)

try:
    import bpy  # noqa: E402
except ImportError:  # pragma: no cover - wrong interpreter
    pytest.exit("blender_tests need the bpy module: run them with .venv-blender/bin/python -m pytest blender_tests",
                returncode=4)


def backend_python_available():
    return os.path.exists(BACKEND_PYTHON)


needs_backend = pytest.mark.skipif(not backend_python_available(),
                                   reason="backend interpreter %s not found (set TRELLIS_BACKEND_PYTHON)" % BACKEND_PYTHON)


def run_backend(code, *args, timeout=600):
    """Run Python code in the backend interpreter (torch, trimesh, ...); returns stdout."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "backend"), os.path.join(ROOT, "kernels"),
                                                       TESTS_DIR]))
    proc = subprocess.run([BACKEND_PYTHON, "-c", code, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError("backend helper failed:\n%s\n%s" % (proc.stdout[-3000:], proc.stderr[-3000:]))
    return proc.stdout


def bsdf_input_image(socket):
    """The image whose texture node feeds a BSDF input, directly or through a Separate Color node (None if
    nothing or something else feeds it)."""
    if not socket.links:
        return None
    node = socket.links[0].from_node
    if node.type == "SEPARATE_COLOR":
        node = node.inputs[0].links[0].from_node
    return node.image if node.type == "TEX_IMAGE" else None


_WRITE_PBR_SPHERE_GLB = r"""
import sys
import numpy as np, trimesh
from trellis_backend.representations.ovoxel import flexible_dual_grid_to_mesh, mesh_to_flexible_dual_grid
from trellis_backend.representations.ovoxel.pbr_voxels import PbrVoxels
from trellis_backend.pipeline.export_pbr import write_pbr_glb
path, alpha, texture_size = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
G = 32
sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
c, d, i = mesh_to_flexible_dual_grid(sphere.vertices, sphere.faces, G)
attrs = np.zeros((len(c), 6), np.float32)
attrs[:, 0], attrs[:, 3], attrs[:, 4], attrs[:, 5] = 1.0, 0.25, 0.75, alpha
v, f = flexible_dual_grid_to_mesh(c, d * G - c.float(), i, None, grid_size=G)
write_pbr_glb(path, v, f, PbrVoxels(c.numpy(), attrs, G), face_budget=1000, texture_size=texture_size)
"""


def write_pbr_sphere_glb(path, alpha, texture_size=64):
    """A TRELLIS.2 PBR GLB written by the backend's own exporter: a sphere, red base colour, metallic 0.25,
    roughness 0.75 and the given alpha (below 1: a translucent material)."""
    run_backend(_WRITE_PBR_SPHERE_GLB, str(path), str(alpha), str(texture_size))


@pytest.fixture(scope="session")
def addon_module():
    import addon_utils

    link_dir = tempfile.mkdtemp(prefix="trellis-addon-link-")
    os.symlink(os.path.join(ROOT, "addon"), os.path.join(link_dir, ADDON_NAME))
    sys.path.insert(0, link_dir)
    module = addon_utils.enable(ADDON_NAME, default_set=True, handle_error=None)
    assert module is not None, "add-on failed to enable"
    yield module
    addon_utils.disable(ADDON_NAME, default_set=True)


@pytest.fixture
def addon(addon_module, tmp_path):
    """Enabled add-on, empty scene, preferences pointing at this test's folders."""
    bpy.ops.wm.read_homefile(use_empty=True)
    prefs = bpy.context.preferences.addons[ADDON_NAME].preferences
    prefs.python_path = BACKEND_PYTHON
    prefs.model_dir = ""
    prefs.models_root = ""
    prefs.device = "cpu"
    prefs.output_dir = str(tmp_path / "out")
    from trellis_blender import jobs

    ctl = jobs.controller()
    ctl.extra_backend_args, ctl.extra_pythonpath = (), ()
    ctl.on_finish.clear()
    yield addon_module
    ctl = jobs.controller()
    if ctl.busy:
        ctl.cancel()
        ctl.wait(timeout=30)
    bpy.context.window_manager.trellis_status.state = "IDLE"


@pytest.fixture
def fake_model(addon, tmp_path):
    """Point the add-on at the test-double pipeline (tests/test_server_double.py) -- fast and scriptable."""
    from trellis_blender import jobs

    folder = tmp_path / "fake-model"
    folder.mkdir()
    (folder / "pipeline.json").write_text(json.dumps({"name": "fake"}))
    ctl = jobs.controller()
    ctl.extra_backend_args = ("--pipeline-factory", "test_server_double:load")
    ctl.extra_pythonpath = (TESTS_DIR,)
    bpy.context.preferences.addons[ADDON_NAME].preferences.model_dir = str(folder)
    return folder


BUILD_TINY_MODEL = """
import sys
from trellis_lab.random_model import make_random_model
make_random_model(sys.argv[1], kind=sys.argv[2], steps=int(sys.argv[3]))
print("built", sys.argv[1])
"""


def build_tiny_model(folder, kind, steps=3):
    """A random-weight pipeline folder in the official layout (the pipeline package's own builder)."""
    run_backend(BUILD_TINY_MODEL, str(folder), kind, str(steps))
    return str(folder)


def fast_sampling_copy(folders, root, steps=4):
    """The embedded folders with their own weights (linked, not copied) and `steps` sampling steps per
    stage in pipeline.json, so that the many generations of this suite stay within CI time on a CPU.
    The folder names are kept: the image folder finds the text folder's checkpoints beside it."""
    out = {}
    for kind, src in folders.items():
        dst = os.path.join(str(root), os.path.basename(src))
        os.makedirs(dst, exist_ok=True)
        os.symlink(os.path.join(src, "ckpts"), os.path.join(dst, "ckpts"))
        with open(os.path.join(src, "pipeline.json")) as f:
            config = json.load(f)
        for sampler in ("sparse_structure_sampler", "slat_sampler"):
            config["args"][sampler]["params"]["steps"] = steps
        with open(os.path.join(dst, "pipeline.json"), "w") as f:
            json.dump(config, f, indent=2)
        out[kind] = dst
    return out


@pytest.fixture(scope="session")
def real_models(tmp_path_factory):
    """{'text': folder, 'image': folder}: the embedded model if this checkout has it, else tiny random ones.

    Set TRELLIS_TEST_TINY_MODEL=1 to force the tiny random-weight folders.
    """
    if not backend_python_available():
        pytest.skip("no backend interpreter")
    embedded = {"text": os.path.join(ROOT, "models", "trellis-embedded"),
                "image": os.path.join(ROOT, "models", "trellis-embedded-image")}
    if all(os.path.exists(os.path.join(f, "pipeline.json")) for f in embedded.values()) \
            and not os.environ.get("TRELLIS_TEST_TINY_MODEL"):
        return fast_sampling_copy(embedded, tmp_path_factory.mktemp("embedded"))
    root = tmp_path_factory.mktemp("tiny-models")
    return {kind: build_tiny_model(root / kind, kind) for kind in ("text", "image")}


BUILD_TRELLIS2 = r"""
import sys
from trellis_lab.random_model_trellis2 import make_random_trellis2
from inputs import write_rgba_png
make_random_trellis2(sys.argv[1])
write_rgba_png(sys.argv[2], (96, 128), (20, 80, 40, 90), (200, 60, 30))
"""


@pytest.fixture(scope="session")
def trellis2_folder(tmp_path_factory):
    """(folder, reference png): a tiny random TRELLIS.2 folder in the released layout and an RGBA image."""
    if not backend_python_available():
        pytest.skip("no backend interpreter")
    root = tmp_path_factory.mktemp("t2")
    folder, png = root / "org" / "trellis2-tiny", root / "ref.png"
    run_backend(BUILD_TRELLIS2, str(folder), str(png))
    return str(folder), str(png)


def pump_until(predicate, timeout=60.0):
    """Drive the controller like Blender's timer would (the bpy module has no event loop)."""
    from trellis_blender import jobs

    deadline = time.time() + timeout
    while time.time() < deadline:
        jobs.controller().pump(timeout=0.05)
        if predicate():
            return True
    raise AssertionError("condition not reached within %.0f s" % timeout)


def status():
    return bpy.context.window_manager.trellis_status


def scene_fingerprint():
    """Everything a failed job must leave untouched."""
    return sorted((o.name, o.type, tuple(round(v, 6) for v in o.location), len(o.data.vertices) if o.type == "MESH" else 0)
                  for o in bpy.data.objects), sorted(c.name for c in bpy.data.collections), \
        sorted(m.name for m in bpy.data.meshes), sorted(m.name for m in bpy.data.materials)


def add_user_objects():
    """Stand-in for the artist's own work that must survive any failure."""
    bpy.ops.mesh.primitive_cube_add(location=(3, 0, 0))
    bpy.context.active_object.name = "UserCube"
    bpy.ops.mesh.primitive_uv_sphere_add(location=(-3, 0, 0))
    bpy.context.active_object.name = "UserSphere"
