"""Where things live: bundled backend, embedded model, user data, interpreter.

Everything is resolved relative to the add-on's own folder, so the same code
works from the installed zip (``<addon>/backend``, ``<addon>/models/...``) and
from a source checkout (``<repo>/addon`` next to ``<repo>/backend``).
No bpy import at module level: the client tests use this without Blender.
"""

import os
import shutil
import sys

ADDON_DIR = os.path.dirname(os.path.realpath(__file__))
EMBEDDED_MODEL_NAME = "trellis-embedded"
DATA_DIR_ENV = "TRELLIS_BLENDER_DATA_DIR"  # override for tests and portable installs


def _first_existing(*candidates):
    for path in candidates:
        if path and os.path.exists(path):
            return os.path.normpath(path)
    return None


def _repo_dir():
    return os.path.dirname(ADDON_DIR)


def backend_pythonpath():
    """Folders to put on the backend's PYTHONPATH (bundled first, then a checkout's)."""
    bundled = os.path.join(ADDON_DIR, "backend")
    if os.path.isdir(os.path.join(bundled, "trellis_backend")):
        return [bundled]
    repo = _repo_dir()
    if os.path.isdir(os.path.join(repo, "backend", "trellis_backend")):
        return [os.path.join(repo, "backend"), os.path.join(repo, "kernels")]
    return []


def requirements_file():
    return _first_existing(os.path.join(ADDON_DIR, "backend", "requirements.txt"))


def embedded_model_dir():
    """The default model folder shipped with the add-on (None if this build has none)."""
    return _first_existing(os.path.join(ADDON_DIR, "models", EMBEDDED_MODEL_NAME),
                           os.path.join(_repo_dir(), "models", EMBEDDED_MODEL_NAME))


def user_data_dir(package=None):
    """A writable folder for the backend venv, logs and unsaved-file outputs."""
    path = os.environ.get(DATA_DIR_ENV)
    if not path:
        import bpy  # only inside Blender

        path = None
        if package and package.startswith("bl_ext.") and hasattr(bpy.utils, "extension_path_user"):
            try:  # extensions must not write into their own folder
                path = bpy.utils.extension_path_user(package, create=True)
            except Exception:
                path = None
        if not path:
            path = bpy.utils.user_resource("CONFIG", path="trellis_blender", create=True)
    os.makedirs(path, exist_ok=True)
    return path


def venv_python(venv_dir):
    if os.name == "nt":
        return os.path.join(venv_dir, "Scripts", "python.exe")
    return os.path.join(venv_dir, "bin", "python")


def setup_venv_dir(data_dir):
    return os.path.join(data_dir, "backend-venv")


def find_backend_python(configured, data_dir):
    """Interpreter to run the backend with: preference > 'Set up backend' venv > checkout venv > python3."""
    if configured:
        return os.path.abspath(os.path.expanduser(configured))
    candidates = [venv_python(setup_venv_dir(data_dir)), venv_python(os.path.join(_repo_dir(), ".venv"))]
    found = _first_existing(*candidates)
    if found:
        return found
    return shutil.which("python3") or shutil.which("python") or ""


def find_base_python(configured=""):
    """Interpreter used to *create* the backend venv (needs venv + pip; Blender's own usually has them)."""
    if configured:
        return os.path.abspath(os.path.expanduser(configured))
    exe = sys.executable
    if exe and os.path.basename(exe).lower().startswith("python"):
        return exe
    return shutil.which("python3") or shutil.which("python") or exe
