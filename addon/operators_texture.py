""""Texture selected mesh" (issue 17): paint the active mesh object with TRELLIS.2 after the chosen image.

The evaluated mesh (modifiers applied) is written in object space (z up) with the UVs of its active UV map
as an OBJ and sent as a backend ``texture`` job (progress and cancel as for Generate). The backend bakes PBR
textures onto exactly those UVs; the result's material (base colour sRGB, metallic/roughness Non-Color,
alpha blend where translucent) is added to the SAME object as a new material slot used by every face, the
old materials staying in the slot list, as one undo step. The geometry is never replaced. A mesh without
UVs gets a Smart UV Project map first. A non-mesh, a mesh without faces or no image changes nothing.
"""

import os

import bpy
from bpy.props import EnumProperty, FloatProperty

from . import jobs, preferences
from .core import protocol as P
from .core import requests
from .operator_support import RUN_MODES, reject, report_failure, should_wait

UNDO_MESSAGE = "TRELLIS texture selected mesh"
UV_MAP_NAME = "TRELLIS UV"


def texture_target(context):
    """The active mesh object, or a ValueError with what to do."""
    obj = context.active_object
    if obj is None:
        raise ValueError("Select the mesh object to texture (make it active).")
    if obj.type != "MESH":
        raise ValueError("'%s' is not a mesh (%s object): select a mesh object to texture."
                         % (obj.name, obj.type.replace("_", " ").title()))
    return obj


def condition_image(context, settings, out_dir, job_name):
    if settings.image_source == "FILE" and settings.image_path:
        path = bpy.path.abspath(settings.image_path)
        if not os.path.isfile(path):
            raise ValueError("Image file not found: %s" % path)
        return os.path.normpath(path)
    if settings.image_source == "DATABLOCK" and settings.image is not None:
        from .image_input import image_file_for_backend

        return image_file_for_backend(settings.image, os.path.join(out_dir, "inputs"), job_name)
    raise ValueError("Choose the reference image (an image file or a Blender image) in the TRELLIS panel.")


def write_evaluated_mesh(context, obj, path):
    """The evaluated mesh in object space with its active UV map as OBJ; returns (triangles, uv map name)."""
    from .core.mesh_obj_file import write_triangle_obj

    depsgraph = context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        mesh.calc_loop_triangles()
        if len(mesh.loop_triangles) == 0:
            raise ValueError("'%s' has no faces: texturing needs a surface." % obj.name)
        positions = [tuple(v.co) for v in mesh.vertices]
        tris = [tuple(t.vertices) for t in mesh.loop_triangles]
        layer = mesh.uv_layers.active
        if layer is None:
            raise ValueError("'%s' has no UV map." % obj.name)
        uvs = [tuple(d.uv) for d in layer.data]
        tri_uvs = [tuple(t.loops) for t in mesh.loop_triangles]
        write_triangle_obj(path, positions, tris, uvs, tri_uvs)
        return len(tris), layer.name
    finally:
        evaluated.to_mesh_clear()


def ensure_uv_map(context, obj):
    """A mesh without UVs gets a Smart UV Project map (on the object's own mesh; part of the undo step)."""
    if obj.data.uv_layers:
        return None
    layer = obj.data.uv_layers.new(name=UV_MAP_NAME)
    obj.data.uv_layers.active = layer
    with context.temp_override(active_object=obj, object=obj, selected_objects=[obj],
                               selected_editable_objects=[obj]):
        bpy.ops.object.mode_set(mode="EDIT")
        try:
            bpy.ops.mesh.select_all(action="SELECT")
            bpy.ops.uv.smart_project()
        finally:
            bpy.ops.object.mode_set(mode="OBJECT")
    return layer.name


def _use_uv_map(material, uv_name):
    """Point every image node of the material at the UV map the textures were baked on."""
    nodes, links = material.node_tree.nodes, material.node_tree.links
    uv_node = None
    for node in list(nodes):
        if node.type != "TEX_IMAGE":
            continue
        vector = node.inputs["Vector"]
        source = vector.links[0].from_node if vector.links else None
        if source is not None and source.type == "UVMAP":
            source.uv_map = uv_name
            continue
        if source is None:
            if uv_node is None:
                uv_node = nodes.new("ShaderNodeUVMap")
                uv_node.uv_map = uv_name
                uv_node.location = (node.location.x - 250, node.location.y)
            links.new(uv_node.outputs["UV"], vector)


def apply_material(target, imported, uv_name, material_name):
    """Move the imported result's material onto `target` (new slot on every face), then delete the import."""
    from .importers import remove_objects

    source = next((o for o in imported if o.type == "MESH" and o.active_material is not None), None)
    if source is None:
        remove_objects(imported)
        raise RuntimeError("the textured result has no material")
    material = source.active_material
    remove_objects(imported)
    material.name = material_name
    _use_uv_map(material, uv_name)
    target.data.materials.append(material)
    index = len(target.data.materials) - 1
    for poly in target.data.polygons:
        poly.material_index = index
    target.active_material_index = index
    return material


def _drop_collection_made_for_import(existed_before):
    """The importer put the result into a new "TRELLIS" collection; nothing stays there, so remove it again."""
    from .importers import COLLECTION_NAME

    coll = bpy.data.collections.get(COLLECTION_NAME)
    if coll is not None and not existed_before and not coll.all_objects and not coll.children:
        bpy.data.collections.remove(coll)


class TRELLIS_OT_texture_selected(bpy.types.Operator):
    """Paint the active mesh with TRELLIS.2 PBR textures after the chosen image (adds a material; geometry is
    kept)"""

    bl_idname = "trellis.texture_selected"
    bl_label = "Texture selected mesh"
    bl_options = {"REGISTER", "UNDO"}

    run_mode: EnumProperty(items=RUN_MODES, default="AUTO", options={"SKIP_SAVE"})
    timeout: FloatProperty(default=0.0, min=0.0, options={"HIDDEN", "SKIP_SAVE"})

    @classmethod
    def poll(cls, context):
        return not jobs.controller().busy

    def _fail(self, context, message):
        return reject(self, context, message, "Select a mesh object with faces and choose an image, then press "
                                              "Texture selected mesh again.")

    def execute(self, context):
        settings = context.scene.trellis
        prefs = preferences.get_prefs(context)
        out_dir = preferences.resolved_output_dir(prefs)
        try:
            target = texture_target(context)
            job_name = requests.job_name(target.name, settings.seed, kind="textured")
            image = condition_image(context, settings, out_dir, job_name)
            os.makedirs(os.path.join(out_dir, "inputs"), exist_ok=True)
            mesh_path = os.path.join(out_dir, "inputs", job_name + ".obj")
            if not target.data.uv_layers:
                depsgraph = context.evaluated_depsgraph_get()
                probe = target.evaluated_get(depsgraph).to_mesh()
                try:
                    probe.calc_loop_triangles()
                    if len(probe.loop_triangles) == 0:
                        raise ValueError("'%s' has no faces: texturing needs a surface." % target.name)
                finally:
                    target.evaluated_get(depsgraph).to_mesh_clear()
            added_uv = ensure_uv_map(context, target)
            _, uv_name = write_evaluated_mesh(context, target, mesh_path)
        except ValueError as exc:
            return self._fail(context, str(exc))
        params = {"mesh_path": mesh_path, "image": image, "seed": settings.seed, "up_axis": "z",
                  "resolution": settings.texture_resolution, "texture_size": settings.texture_size,
                  "output_dir": out_dir, "name": job_name}
        try:
            requests.check(P.TEXTURE, params)
        except ValueError as exc:
            return self._fail(context, str(exc))
        wait = should_wait(self.run_mode)
        # the controller imports the result GLB; on_finish takes its material and deletes the import
        snapshot = requests.settings_snapshot("MESH", params, defer_undo=True)
        from .importers import COLLECTION_NAME

        info = {"target": target.name, "uv": uv_name, "added_uv": added_uv, "push_undo": not wait,
                "had_collection": bpy.data.collections.get(COLLECTION_NAME) is not None}
        ctl = jobs.controller()

        def on_finish(job, objects):
            if job.params.get("name") != job_name:
                return
            ctl.on_finish.remove(on_finish)
            if job.state != P.DONE:
                return
            target_obj = bpy.data.objects.get(info["target"])
            if target_obj is None:  # deleted while the job ran: nothing to texture
                from .importers import remove_objects

                remove_objects(objects)
                return
            apply_material(target_obj, objects, info["uv"], "TRELLIS textured %s" % target_obj.name)
            _drop_collection_made_for_import(info["had_collection"])
            target_obj["trellis_texture_files"] = ";".join(sorted(job.files.values()))
            context.window_manager.trellis_status.last_objects = target_obj.name
            if info["push_undo"] or bpy.app.background:
                try:
                    bpy.ops.ed.undo_push(message=UNDO_MESSAGE)
                except RuntimeError:
                    pass

        ctl.on_finish.append(on_finish)
        job = ctl.start(context, P.TEXTURE, params, snapshot, wait=wait, timeout=self.timeout or None)
        if not wait and not job.finished:
            self.report({"INFO"}, "TRELLIS: texturing %s..." % target.name)
            return {"FINISHED"}
        if on_finish in ctl.on_finish:
            ctl.on_finish.remove(on_finish)
        if job.state == P.DONE:
            self.report({"INFO"}, "TRELLIS: textured %s" % target.name)
            return {"FINISHED"}
        return report_failure(self, job, context.window_manager.trellis_status)


register, unregister = bpy.utils.register_classes_factory((TRELLIS_OT_texture_selected,))
