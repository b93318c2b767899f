"""Import a finished job's files into the "TRELLIS" collection.

Called only on the main thread after a ``result`` event. All-or-nothing: if
any part fails, every object this call created is removed again and the error
propagates -- objects the user made are never touched.
"""

import json
import re

import bpy

from ..preferences import get_prefs
from . import gaussians, mesh

COLLECTION_NAME = "TRELLIS"


def trellis_collection(scene):
    coll = bpy.data.collections.get(COLLECTION_NAME)
    if coll is None:
        coll = bpy.data.collections.new(COLLECTION_NAME)
    nested = getattr(scene.collection, "children_recursive", scene.collection.children)
    if coll not in list(nested):
        scene.collection.children.link(coll)
    return coll


def object_base_name(settings):
    text = (settings.get("prompt") or "").strip()
    if not text and settings.get("image"):
        first = settings["image"].split(";")[0]  # several images: named after the first
        text = re.sub(r"\.[A-Za-z0-9]+$", "", first.replace("\\", "/").rsplit("/", 1)[-1])
    text = re.sub(r"\s+", " ", text)[:40].strip() or "asset"
    return "TRELLIS %s" % text


def tag_object(obj, kind, files, settings):
    """Custom properties a region edit or re-generation needs later."""
    obj["trellis_kind"] = kind
    obj["trellis_sidecar"] = files.get("slat", "")
    obj["trellis_prompt"] = settings.get("prompt", "")
    obj["trellis_image"] = settings.get("image", "")
    obj["trellis_seed"] = int(settings.get("seed", 0) or 0)
    obj["trellis_settings"] = settings.get("params", "{}")
    obj["trellis_files"] = json.dumps(files, sort_keys=True)
    obj["trellis_job"] = settings.get("job_id", "")


def show_colors_in_solid(context):
    """Solid mode shows a mesh's colour attribute only with colour type 'Attribute' (VERTEX): switch it on.

    Done for Workbench renders (scene display) always, and for open viewports unless the
    'Show colours in Solid view' preference is off.
    """
    try:
        context.scene.display.shading.color_type = "VERTEX"
    except (AttributeError, TypeError):
        pass
    prefs = get_prefs(context)
    if prefs is not None and not prefs.show_colors_in_solid:
        return
    wm = context.window_manager
    for window in (wm.windows if wm else ()):
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                for space in area.spaces:
                    if space.type == "VIEW_3D":
                        space.shading.color_type = "VERTEX"


def remove_objects(objects):
    """Delete objects (and meshes nothing else uses) that an import or edit created."""
    for obj in objects:
        try:
            data = obj.data
            bpy.data.objects.remove(obj, do_unlink=True)
            if data is not None and data.users == 0 and isinstance(data, bpy.types.Mesh):
                bpy.data.meshes.remove(data)
        except ReferenceError:
            pass


def import_result(context, files, settings):
    """Import the files a job produced; returns the new objects (mesh first, then splats)."""
    outputs = settings.get("outputs", "BOTH")
    base = object_base_name(settings)
    created = []
    try:
        collection = trellis_collection(context.scene)
        imported = []
        if outputs in ("BOTH", "MESH") and files.get("glb"):
            for obj in mesh.import_glb(context, files["glb"], base, collection, created):
                tag_object(obj, "mesh", files, settings)
                imported.append(obj)
        if outputs in ("BOTH", "GAUSSIANS") and files.get("ply"):
            scene_settings = getattr(context.scene, "trellis", None)
            display = dict(display=scene_settings.splat_display,
                           viewport_limit=scene_settings.splat_viewport_limit) if scene_settings else {}
            obj = gaussians.import_ply(context, files["ply"], base + " splats", collection, created, **display)
            tag_object(obj, "gaussians", files, settings)
            imported.append(obj)
        if not imported:
            raise RuntimeError("the backend returned no file for the requested outputs (%s): %s" % (outputs, files))
        cursor = context.scene.cursor.location.copy()
        for obj in imported:
            if obj.parent is None:
                obj.location = obj.location + cursor
        show_colors_in_solid(context)
        return imported
    except BaseException:
        remove_objects(created)
        raise
