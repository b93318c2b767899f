"""Add-on preferences: backend interpreter, model folder, device, outputs.

Empty fields mean "automatic" and the resolved value is shown greyed out
beneath, so a fresh install works with the embedded models and the venv that
'Set up backend' creates, without the user typing any path. This module sits
below the job controller and the importers: it imports only ``core``.
"""

import os

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from .core import backend_setup, paths

ADDON_ID = __package__

DEVICES = [
    ("auto", "Auto", "CUDA GPU when the backend sees one, else CPU"),
    ("cuda", "GPU (CUDA)", "Always use the GPU"),
    ("cpu", "CPU", "Always use the CPU (slow, but no GPU memory limits)"),
]


def get_prefs(context=None):
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    return addon.preferences if addon else None


def data_dir():
    """A writable folder for the backend venv, logs and unsaved-file outputs."""
    path = paths.data_dir_override()
    if not path and ADDON_ID.startswith("bl_ext.") and hasattr(bpy.utils, "extension_path_user"):
        try:  # extensions must not write into their own folder
            path = bpy.utils.extension_path_user(ADDON_ID, create=True)
        except Exception:
            path = None
    if not path:
        path = bpy.utils.user_resource("CONFIG", path="trellis_blender", create=True)
    os.makedirs(path, exist_ok=True)
    return path


def resolved_python(prefs):
    return paths.find_backend_python(prefs.python_path if prefs else "", data_dir())


def configured_model(prefs):
    """The model folder the user chose ('' = the embedded models)."""
    configured = bpy.path.abspath(prefs.model_dir) if prefs and prefs.model_dir else ""
    return os.path.normpath(configured) if configured else ""


def resolved_models_root(prefs):
    return bpy.path.abspath(prefs.models_root) if prefs and prefs.models_root else None


def resolved_output_dir(prefs):
    """Preference, else '<blend dir>/trellis_outputs' for a saved file, else the user data folder."""
    if prefs and prefs.output_dir:
        return os.path.normpath(bpy.path.abspath(prefs.output_dir))
    if bpy.data.filepath:
        return os.path.join(os.path.dirname(bpy.data.filepath), "trellis_outputs")
    return os.path.join(data_dir(), "outputs")


def backend_log_path():
    return os.path.join(data_dir(), "backend.log")


def _model_hint(prefs):
    configured = configured_model(prefs)
    if configured:
        return "Using: " + configured
    text, image = paths.embedded_model_dir(), paths.embedded_model_dir(for_image=True)
    if not (text or image):
        return "Using: no embedded model in this build - choose a folder"
    return "Using the embedded models: prompts %s, images %s" % (text or "(none)", image or "(none)")


class TRELLIS_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    python_path: StringProperty(
        name="Backend Python", subtype="FILE_PATH", default="",
        description="Python interpreter with the backend requirements (torch ...). Empty: the environment made by "
                    "'Set up backend', else python3 on PATH")
    model_dir: StringProperty(
        name="Model folder", subtype="DIR_PATH", default="",
        description="TRELLIS pipeline folder (pipeline.json + ckpts/). Empty: the embedded default models "
                    "(the image model for images, the text model for prompts). Official TRELLIS folders "
                    "(e.g. TRELLIS-image-large) work too")
    models_root: StringProperty(
        name="Models root", subtype="DIR_PATH", default="",
        description="Folder holding other model folders that a text release references as <org>/<repo>/ckpts/...")
    device: EnumProperty(name="Device", items=DEVICES, default="auto")
    output_dir: StringProperty(
        name="Output folder", subtype="DIR_PATH", default="",
        description="Where generated GLB/PLY/SLAT files go. Empty: 'trellis_outputs' next to the .blend file, "
                    "or the add-on's data folder for unsaved files")
    setup_python: StringProperty(
        name="Python for setup", subtype="FILE_PATH", default="",
        description="Interpreter used to create the backend environment (needs Python 3.10+ with venv). "
                    "Empty: Blender's own Python")
    show_colors_in_solid: BoolProperty(
        name="Show colours in Solid view", default=True,
        description="After an import, switch Solid-mode viewports to show colour attributes")

    def draw(self, context):
        layout = self.layout
        col = layout.column()
        for name, hint in (("python_path", "Using: " + (resolved_python(self) or "none found")),
                           ("model_dir", _model_hint(self)), ("models_root", None), ("device", None),
                           ("output_dir", "Using: " + resolved_output_dir(self)), ("show_colors_in_solid", None)):
            col.prop(self, name)
            if hint:
                _hint(col, hint)

        box = layout.box()
        box.label(text="Backend environment", icon="CONSOLE")
        box.prop(self, "setup_python")
        box.row().operator("trellis.setup_backend", icon="IMPORT")
        setup = backend_setup.snapshot()
        for line in setup.get("lines", [])[-6:]:
            _hint(box, line)
        if setup.get("error"):
            box.label(text=setup["error"], icon="ERROR")
        _hint(box, "Backend log: " + backend_log_path())


def _hint(layout, text):
    row = layout.row()
    row.enabled = False
    row.label(text=text)


register, unregister = bpy.utils.register_classes_factory((TRELLIS_AddonPreferences,))
