"""The "TRELLIS" tab in the 3D viewport's sidebar (N panel).

Draws only from scene settings and ``WindowManager.trellis_status``; the
progress bar uses ``layout.progress`` where Blender has it (4.0+) and a text
percentage otherwise.
"""

import textwrap

import bpy

from . import jobs
from .core import backend_setup

HAS_PROGRESS = "progress" in bpy.types.UILayout.bl_rna.functions


def draw_wrapped(layout, text, width=44, icon="NONE"):
    lines = textwrap.wrap(text, width) or [""]
    for i, line in enumerate(lines):
        layout.label(text=line, icon=icon if i == 0 else "BLANK1" if icon != "NONE" else "NONE")


STAGE_LABELS = {"load": "Loading model", "condition": "Encoding input", "sparse_structure": "Structure",
                "slat": "Details", "shape_slat_512": "Shape (512)", "shape_slat": "Shape", "tex_slat": "Materials",
                "decode": "Decoding", "export": "Writing files"}


def draw_progress(layout, status):
    stage = STAGE_LABELS.get(status.stage, status.stage.replace("_", " ").capitalize() or status.state.title())
    if status.state == "CANCELLING":
        stage = "Cancelling (%s)" % stage
    label = "%s %d/%d" % (stage, status.step, status.total) if status.total > 0 else stage
    factor = status.step / status.total if status.total > 0 else 0.0
    if HAS_PROGRESS:
        layout.progress(factor=factor, type="BAR", text=label)
    else:  # Blender < 4.0: no progress widget
        layout.label(text="%s  %d%%" % (label, round(100 * factor)), icon="TIME")
    if status.message and not status.message.startswith(status.stage):
        draw_wrapped(layout, status.message)


class VIEW3D_PT_trellis(bpy.types.Panel):
    bl_label = "TRELLIS"
    bl_idname = "VIEW3D_PT_trellis"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "TRELLIS"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.trellis
        status = context.window_manager.trellis_status
        busy = jobs.controller().busy

        col = layout.column()
        col.enabled = not busy
        col.prop(settings, "image_source", text="")
        if settings.image_source == "FILE":
            col.prop(settings, "image_path", text="")
        elif settings.image_source == "DATABLOCK":
            col.template_ID(settings, "image", open="image.open")
        elif settings.image_source == "MULTI":
            draw_image_list(col, settings)
        col.prop(settings, "prompt", text="", icon="SORTALPHA")
        col.prop(settings, "seed")
        col.row().prop(settings, "outputs", expand=True)
        col.prop(settings, "custom_sampling")
        if settings.custom_sampling:
            sub = col.column(align=True)
            sub.prop(settings, "ss_steps")
            sub.prop(settings, "ss_cfg")
            sub.prop(settings, "slat_steps")
            sub.prop(settings, "slat_cfg")

        row = layout.row(align=True)
        row.scale_y = 1.4
        if busy:
            row.operator("trellis.cancel", icon="CANCEL")
        else:
            row.operator("trellis.generate", icon="PLAY")
        col = layout.column()
        col.enabled = not busy
        col.operator("trellis.send_to_batch", icon="EXPORT")

        draw_splat_display(layout, settings)
        draw_region_edit(layout, context, settings, busy)

        if status.state in ("STARTING", "RUNNING", "CANCELLING"):
            draw_progress(layout.column(), status)
        elif status.state == "DONE" and status.message:
            layout.label(text=status.message, icon="CHECKMARK")
        elif status.state == "CANCELLED":
            layout.label(text="Cancelled; the scene is unchanged.", icon="INFO")

        if status.error_message and status.state != "CANCELLED":
            box = layout.box()
            draw_wrapped(box, "%s: %s" % (status.error_type, status.error_message), icon="ERROR")
            if status.error_hint:
                draw_wrapped(box, status.error_hint, icon="QUESTION")
            if "Set up backend" in status.error_hint:
                box.operator("trellis.setup_backend", icon="IMPORT")
        draw_setup(layout, backend_setup.snapshot())


class TRELLIS_UL_images(bpy.types.UIList):
    """One row per image of the object: its source and the file or datablock."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0):
        row = layout.row(align=True)
        row.prop(item, "source", text="", icon_only=True, icon="FILE_IMAGE" if item.source == "FILE" else "IMAGE_DATA")
        if item.source == "FILE":
            row.prop(item, "path", text="")
        else:
            row.prop(item, "image", text="")


def draw_image_list(layout, settings):
    row = layout.row()
    row.template_list("TRELLIS_UL_images", "", settings, "images", settings, "images_index", rows=3)
    buttons = row.column(align=True)
    buttons.operator("trellis.image_add", text="", icon="ADD")
    buttons.operator("trellis.image_remove", text="", icon="REMOVE")
    layout.prop(settings, "multi_image_mode")


def draw_splat_display(layout, settings):
    """Display of the Gaussian splat objects (all of them in the scene, and the next imports)."""
    if settings.outputs == "MESH":
        return
    col = layout.column(align=True)
    col.label(text="Splat display", icon="SHADING_RENDERED")
    col.row(align=True).prop(settings, "splat_display", expand=True)
    col.prop(settings, "splat_viewport_limit")


def draw_region_edit(layout, context, settings, busy):
    """Region edit of the active generated object (operators_edit.py)."""
    obj = getattr(context, "active_object", None)
    if obj is None or not obj.get("trellis_sidecar"):
        return
    box = layout.box()
    box.label(text="Edit region of %s" % obj.name, icon="MOD_BOOLEAN")
    col = box.column()
    col.enabled = not busy
    col.prop(settings, "edit_region_source", text="Region")
    col.prop(settings, "edit_prompt", text="", icon="SORTALPHA")
    col.prop(settings, "edit_image_path", text="")
    col.prop(settings, "edit_seed")
    col.prop(settings, "edit_keep_structure")
    col.prop(settings, "edit_margin")
    if not busy:
        box.operator("trellis.regenerate_selection", icon="FILE_REFRESH")


def draw_setup(layout, setup):
    """Live lines of a 'Set up backend' run (pip output), or why it failed."""
    if not setup or setup.get("state") == "done" and not setup.get("lines"):
        return
    box = layout.box()
    state = setup.get("state")
    if state == "running":
        box.label(text="Setting up backend: " + setup.get("step", ""), icon="TIME")
        for line in setup.get("lines", [])[-3:]:
            draw_wrapped(box, line)
    elif state == "failed":
        draw_wrapped(box, setup.get("error", ""), icon="ERROR")
        draw_wrapped(box, setup.get("hint", ""), icon="QUESTION")
    elif state == "done":
        box.label(text="Backend environment ready", icon="CHECKMARK")


register, unregister = bpy.utils.register_classes_factory((TRELLIS_UL_images, VIEW3D_PT_trellis))
