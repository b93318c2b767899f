"""Region edit: "Regenerate selection" (issue 7, Blender side).

The region comes from a selected box Empty (display type Cube) or from the
selected vertices of the generated object in Edit Mode. It is mapped into the
SLAT sidecar's object space: the importer keeps the generated object's local
coordinates equal to the sidecar's z-up unit cube [-0.5, 0.5]^3 (pinned by
blender_tests/test_generate_real.py), so world -> object local is all it takes.

The backend ``edit`` job runs through the teammate's job controller (async with
progress in the panel, blocking in background mode); the controller imports the
result, then ``_apply`` (an ``on_finish`` callback, main thread) swaps the new
object in place of the old one. A failed or cancelled job never reaches
``_apply``: the scene stays as it was.
"""

import json
import os
import re

import bpy
from bpy.props import EnumProperty, FloatProperty

from . import importers, jobs, preferences
from .core import protocol as P
from .core import region, requests
from .operator_support import RUN_MODES, reject, report_failure, should_wait
from .properties import set_status

UNDO_MESSAGE = "TRELLIS regenerate selection"


# -- region -----------------------------------------------------------------
def target_object(context):
    obj = context.active_object
    if obj is not None and obj.get("trellis_sidecar"):
        return obj
    return None


def box_empties(context, target):
    return [o for o in context.selected_objects
            if o is not target and o.type == "EMPTY" and o.empty_display_type == "CUBE"]


def box_region(empty, target):
    """A Cube Empty's world bounds -> AABB in the target's local (= sidecar) space."""
    to_local = target.matrix_world.inverted() @ empty.matrix_world
    return region.box_region([list(row) for row in to_local], empty.empty_display_size, empty.name, target.name)


def vertex_region(target):
    """Selected vertices of the target (Edit Mode selection written back to the mesh) -> voxel region."""
    if target.type != "MESH":
        raise ValueError("Vertex selection needs a mesh object.")
    if target.mode == "EDIT":
        target.update_from_editmode()
    pts = [v.co[:] for v in target.data.vertices if v.select]
    if not pts:
        raise ValueError("Select some vertices of '%s' in Edit Mode first." % target.name)
    return {"voxels": region.voxels_of_points(pts)}


def pick_region(context, target, source):
    """(region dict, description); raises ValueError with a user-facing message."""
    if source == "VERTICES" or (source == "AUTO" and target.mode == "EDIT"):
        region = vertex_region(target)
        return region, "%d voxels" % len(region["voxels"])
    boxes = box_empties(context, target)
    if not boxes:
        raise ValueError("Select a box Empty (display 'Cube') with the object, or select vertices in Edit Mode.")
    return box_region(boxes[0], target), "box '%s'" % boxes[0].name


# -- replacement --------------------------------------------------------------
def siblings(target):
    """The target and the other visible objects of the same generation (mesh + splats share a sidecar)."""
    sidecar = target["trellis_sidecar"]
    out = [target]
    for obj in bpy.data.objects:
        if obj is not target and obj.get("trellis_sidecar") == sidecar and not obj.hide_viewport:
            out.append(obj)
    return out


def version_name(name):
    base = re.sub(r"\.v\d+$", "", name)
    n = 1
    while bpy.data.objects.get("%s.v%d" % (base, n)) is not None:
        n += 1
    return "%s.v%d" % (base, n)


def _user_materials(obj):
    """Materials the user put on the old object (not the importer's own vertex-colour one), or None."""
    mats = [s.material for s in obj.material_slots]
    if not mats or all(m is None or m.name.startswith("TRELLIS ") for m in mats):
        return None
    return mats


def replace_object(old, new, info):
    """Put ``new`` where ``old`` is (matrix, parent, collections, name, materials); hide ``old``."""
    world = old.matrix_world.copy()
    new.parent = old.parent
    if old.parent is not None:
        new.matrix_parent_inverse = old.matrix_parent_inverse.copy()
    new.matrix_world = world
    for coll in list(new.users_collection):
        coll.objects.unlink(new)
    for coll in old.users_collection:
        coll.objects.link(new)
    mats = _user_materials(old)
    if mats is not None and new.type == "MESH":
        new.data.materials.clear()
        for m in mats:
            new.data.materials.append(m)
    name = old.name
    old.name = version_name(name)
    new.name = name
    if new.type == "MESH" and new.data.users == 1:
        new.data.name = name
    old.hide_viewport = old.hide_render = True
    old.select_set(False)
    new.select_set(True)
    new["trellis_edit_of"] = old.name
    new["trellis_edit_region"] = info["region_text"]
    new["trellis_version"] = int(old.get("trellis_version", 1)) + 1
    new["trellis_prompt"] = info["prompt"]
    new["trellis_image"] = info["image"]


def _apply(job, objects, info):
    """on_finish callback: runs on the main thread after the controller imported the result."""
    status = bpy.context.window_manager.trellis_status
    if job.state != P.DONE or not objects:
        return []
    olds = [bpy.data.objects.get(n) for n in info["targets"]]
    by_kind = {}
    for obj in objects:
        by_kind.setdefault(obj.get("trellis_kind"), obj)
    pairs = [(o, by_kind.get(o.get("trellis_kind"))) for o in olds if o is not None]
    pairs = [(o, n) for o, n in pairs if n is not None]
    if not pairs:
        importers.remove_objects(objects)
        set_status(status, "FAILED", error=("EditTargetGone",
                                            "The object to replace is no longer in the scene; nothing was changed.",
                                            "Select the generated object and press Regenerate selection again."))
        return []
    replaced = []
    for old, new in pairs:
        replace_object(old, new, info)
        replaced.append(new)
    extra = [o for o in objects if o not in replaced]
    if extra:  # a kind the old version did not have: keep it next to the replacement, unhidden
        for obj in extra:
            obj.matrix_world = pairs[0][0].matrix_world.copy()
    view_layer = bpy.context.view_layer
    if view_layer is not None and replaced[0].name in view_layer.objects:
        view_layer.objects.active = replaced[0]
    set_status(status, last_objects=";".join(o.name for o in replaced + extra),
               message="Replaced %s" % ", ".join(o.name for o in replaced))
    if info["push_undo"]:  # async: the operator's own undo step was pushed when it returned
        try:
            bpy.ops.ed.undo_push(message=UNDO_MESSAGE)
        except RuntimeError:
            pass
    return replaced


def build_edit_request(context, settings, target, region, job_name):
    prefs = preferences.get_prefs(context)
    kinds = {o.get("trellis_kind") for o in siblings(target)}
    formats = [f for k, f in (("mesh", "mesh"), ("gaussians", "gaussians")) if k in kinds] or ["mesh"]
    params = {"sidecar_path": bpy.path.abspath(target["trellis_sidecar"]), "region": region,
              "seed": settings.edit_seed, "output_dir": preferences.resolved_output_dir(prefs), "name": job_name,
              "formats": formats}
    if not os.path.isfile(params["sidecar_path"]):
        raise ValueError("The object's SLAT sidecar is missing: %s" % params["sidecar_path"])
    if settings.edit_prompt.strip():
        params["prompt"] = settings.edit_prompt.strip()
    if settings.edit_image_path:
        path = bpy.path.abspath(settings.edit_image_path)
        if not os.path.isfile(path):
            raise ValueError("Image file not found: %s" % path)
        params["image"] = os.path.normpath(path)
    if settings.edit_keep_structure:
        params["keep_structure"] = True
    if settings.edit_margin:
        params["margin"] = settings.edit_margin
    params.update(requests.sampling_overrides(settings))
    return requests.check(P.EDIT, params)


class TRELLIS_OT_regenerate_selection(bpy.types.Operator):
    """Regenerate only the selected region (box Empty or Edit Mode vertices) of the active TRELLIS object;
the object is replaced in place and the previous version is kept hidden"""

    bl_idname = "trellis.regenerate_selection"
    bl_label = "Regenerate selection"
    bl_options = {"REGISTER", "UNDO"}

    run_mode: EnumProperty(items=RUN_MODES, default="AUTO", options={"SKIP_SAVE"})
    timeout: FloatProperty(default=0.0, min=0.0, options={"HIDDEN", "SKIP_SAVE"})

    @classmethod
    def poll(cls, context):
        return not jobs.controller().busy and target_object(context) is not None

    def _fail(self, context, message):
        return reject(self, context, message,
                      "Fix the selection or the edit settings and press Regenerate selection again.")

    def execute(self, context):
        settings = context.scene.trellis
        target = target_object(context)
        if target is None:
            return self._fail(context, "Make a generated TRELLIS object active.")
        try:
            region, described = pick_region(context, target, settings.edit_region_source)
        except ValueError as exc:
            return self._fail(context, str(exc))
        if target.mode == "EDIT":
            bpy.ops.object.mode_set(mode="OBJECT")  # the replacement happens in Object Mode
        job_name = requests.job_name(target.name.replace("TRELLIS ", ""), settings.edit_seed, kind="edit")
        try:
            params = build_edit_request(context, settings, target, region, job_name)
        except ValueError as exc:
            return self._fail(context, str(exc))
        targets = siblings(target)
        kinds = {o.get("trellis_kind") for o in targets}
        snapshot = requests.settings_snapshot(
            requests.outputs_for_kinds(kinds), params, prompt=params.get("prompt") or target.get("trellis_prompt", ""),
            image=params.get("image") or target.get("trellis_image", ""),
            defer_undo=True)  # the controller must not push its own "import result" step
        wait = should_wait(self.run_mode)
        info = {"targets": [o.name for o in targets], "region_text": json.dumps(region)[:60000],
                "prompt": snapshot["prompt"], "image": snapshot["image"], "push_undo": not wait,
                "replaced": []}
        ctl = jobs.controller()

        def on_finish(job, objects):
            if job.params.get("name") != job_name:
                return
            ctl.on_finish.remove(on_finish)
            info["replaced"] = _apply(job, objects, info)

        ctl.on_finish.append(on_finish)
        job = ctl.start(context, P.EDIT, params, snapshot, wait=wait, timeout=self.timeout or None)
        if not wait and not job.finished:
            self.report({"INFO"}, "TRELLIS: regenerating %s of %s..." % (described, target.name))
            return {"FINISHED"}
        if on_finish in ctl.on_finish:
            ctl.on_finish.remove(on_finish)
        if job.state == P.DONE and info["replaced"]:
            if bpy.app.background:
                # Blender does not push an operator's undo step in background mode (the bpy module,
                # blender -b); push it here so scripts get the same single step as the UI.
                try:
                    bpy.ops.ed.undo_push(message=UNDO_MESSAGE)
                except RuntimeError:
                    pass
            self.report({"INFO"}, "TRELLIS: replaced %s" % ", ".join(o.name for o in info["replaced"]))
            return {"FINISHED"}
        return report_failure(self, job, context.window_manager.trellis_status)


register, unregister = bpy.utils.register_classes_factory((TRELLIS_OT_regenerate_selection,))
