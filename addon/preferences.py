"""Add-on preferences: backend interpreter, model folder, device, outputs.

Empty fields mean "automatic" and the resolved value is shown greyed out
beneath, so a fresh install works with the embedded model and the venv that
'Set up backend' creates, without the user typing any path.
"""

import os

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from . import paths

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
    return paths.user_data_dir(ADDON_ID)


def resolved_python(prefs):
    return paths.find_backend_python(prefs.python_path if prefs else "", data_dir())


def resolved_model(prefs):
    configured = bpy.path.abspath(prefs.model_dir) if prefs and prefs.model_dir else ""
    return os.path.normpath(configured) if configured else (paths.embedded_model_dir() or "")


def resolved_output_dir(prefs):
    """Preference, else '<blend dir>/trellis_outputs' for a saved file, else the user data folder."""
    if prefs and prefs.output_dir:
        return os.path.normpath(bpy.path.abspath(prefs.output_dir))
    if bpy.data.filepath:
        return os.path.join(os.path.dirname(bpy.data.filepath), "trellis_outputs")
    return os.path.join(data_dir(), "outputs")


def backend_log_path():
    return os.path.join(data_dir(), "backend.log")


class TRELLIS_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    python_path: StringProperty(
        name="Backend Python", subtype="FILE_PATH", default="",
        description="Python interpreter with the backend requirements (torch ...). Empty: the environment made by "
                    "'Set up backend', else python3 on PATH")
    model_dir: StringProperty(
        name="Model folder", subtype="DIR_PATH", default="",
        description="TRELLIS pipeline folder (pipeline.json + ckpts/). Empty: the embedded default model. "
                    "Official TRELLIS folders (e.g. TRELLIS-image-large) work too")
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
    texture_storage: EnumProperty(
        name="PBR textures", default="PACK",
        items=[("PACK", "Pack into .blend", "Keep TRELLIS.2 texture images inside the .blend file"),
               ("BESIDE_BLEND", "Save beside .blend",
                "Write TRELLIS.2 texture images into trellis_textures/ next to the saved .blend (unsaved files: packed)")],
        description="Where the base colour / metallic / roughness images of TRELLIS.2 results are kept")

    def draw(self, context):
        from . import jobs

        layout = self.layout
        col = layout.column()
        col.prop(self, "python_path")
        _hint(col, "Using: " + (resolved_python(self) or "none found"))
        col.prop(self, "model_dir")
        _hint(col, "Using: " + (resolved_model(self) or "no embedded model in this build - choose a folder"))
        col.prop(self, "models_root")
        col.prop(self, "device")
        col.prop(self, "output_dir")
        _hint(col, "Using: " + resolved_output_dir(self))
        col.prop(self, "show_colors_in_solid")
        col.prop(self, "texture_storage")

        box = layout.box()
        box.label(text="Backend environment", icon="CONSOLE")
        box.prop(self, "setup_python")
        row = box.row()
        row.operator("trellis.setup_backend", icon="IMPORT")
        setup = jobs.setup_state()
        for line in setup.get("lines", [])[-6:]:
            _hint(box, line)
        if setup.get("error"):
            box.label(text=setup["error"], icon="ERROR")
        _hint(box, "Backend log: " + backend_log_path())


def _hint(layout, text):
    row = layout.row()
    row.enabled = False
    row.label(text=text)


def register():
    bpy.utils.register_class(TRELLIS_AddonPreferences)


def unregister():
    bpy.utils.unregister_class(TRELLIS_AddonPreferences)
