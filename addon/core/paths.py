"""Where things live: bundled backend, embedded models, user data, interpreters.

Everything is resolved relative to the add-on's own folder, so the same code
works from the installed zip (``<addon>/backend``, ``<addon>/models/...``) and
from a source checkout (``<repo>/addon`` next to ``<repo>/backend``).
"""

import os
import shutil
import sys

ADDON_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
EMBEDDED_TEXT_MODEL = "trellis-embedded"
EMBEDDED_IMAGE_MODEL = "trellis-embedded-image"
DATA_DIR_ENV = "TRELLIS_BLENDER_DATA_DIR"  # override for tests and portable installs


def _first_existing(*candidates):
    for path in candidates:
        if path and os.path.exists(path):
            return os.path.normpath(path)
    return None


def repo_dir():
    """The folder holding the add-on: the checkout root, or the add-ons folder when installed."""
    return os.path.dirname(ADDON_DIR)


def backend_pythonpath():
    """Folders to put on the backend's PYTHONPATH (bundled first, then a checkout's)."""
    bundled = os.path.join(ADDON_DIR, "backend")
    if os.path.isdir(os.path.join(bundled, "trellis_backend")):
        return [bundled]
    repo = repo_dir()
    if os.path.isdir(os.path.join(repo, "backend", "trellis_backend")):
        return [os.path.join(repo, "backend"), os.path.join(repo, "kernels")]
    return []


def requirements_file():
    return _first_existing(os.path.join(ADDON_DIR, "backend", "requirements.txt"))


def embedded_model_dir(for_image=False):
    """The shipped default model folder: the image-conditioned one for an image, else the text one.

    None when this build has no such folder (a zip built with ``--no-model``)."""
    name = EMBEDDED_IMAGE_MODEL if for_image else EMBEDDED_TEXT_MODEL
    for root in (os.path.join(ADDON_DIR, "models"), os.path.join(repo_dir(), "models")):
        if os.path.exists(os.path.join(root, name, "pipeline.json")):
            return os.path.normpath(os.path.join(root, name))
    return None


def data_dir_override():
    """The data folder named by TRELLIS_BLENDER_DATA_DIR, or None (then Blender's user folders apply)."""
    return os.environ.get(DATA_DIR_ENV) or None


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
    candidates = [venv_python(setup_venv_dir(data_dir)), venv_python(os.path.join(repo_dir(), ".venv"))]
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
