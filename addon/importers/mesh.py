"""GLB -> native Blender mesh with a vertex-colour material.

Uses Blender's own glTF importer (enabled on demand), then makes sure the
colours show in every viewport mode: a material whose Base Color comes from a
Color Attribute node (unless the GLB carries a baked texture, which the
importer already wires), metallic 0, the mesh's active colour attribute set,
and the material's viewport colour set to the mean colour for Solid/Material.
"""

import bpy
import numpy as np

from .node_trees import with_nodes


def _ensure_gltf_importer():
    if hasattr(bpy.ops.import_scene, "gltf"):
        try:
            bpy.ops.import_scene.gltf.get_rna_type()
            return
        except (KeyError, AttributeError):
            pass
    import addon_utils

    addon_utils.enable("io_scene_gltf2", default_set=True, persistent=True)


def _window_override():
    """Operators called from a timer may lack a window; give them one when Blender has any."""
    ctx = bpy.context
    if getattr(ctx, "window", None) is None and ctx.window_manager and ctx.window_manager.windows:
        window = ctx.window_manager.windows[0]
        if hasattr(ctx, "temp_override"):
            return ctx.temp_override(window=window, screen=window.screen)
    import contextlib

    return contextlib.nullcontext()


def _has_texture(material):
    tree = material.node_tree if material else None
    return bool(tree and any(n.type == "TEX_IMAGE" for n in tree.nodes))


def vertex_color_material(name, attribute_name):
    mat = bpy.data.materials.new(name)
    tree = with_nodes(mat)
    nodes, links = tree.nodes, tree.links
    bsdf = next((n for n in nodes if n.type == "BSDF_PRINCIPLED"), None) or nodes.new("ShaderNodeBsdfPrincipled")
    attr = nodes.new("ShaderNodeVertexColor")  # the "Color Attribute" node
    attr.layer_name = attribute_name
    attr.location = (bsdf.location.x - 300, bsdf.location.y)
    links.new(attr.outputs["Color"], bsdf.inputs["Base Color"])
    bsdf.inputs["Metallic"].default_value = 0.0
    bsdf.inputs["Roughness"].default_value = 0.8
    mat.metallic, mat.roughness = 0.0, 0.8
    return mat


def _mean_color(mesh, attr):
    n = len(attr.data)
    if n == 0:
        return (0.8, 0.8, 0.8, 1.0)
    values = np.empty(n * 4, dtype=np.float32)
    attr.data.foreach_get("color", values)
    return tuple(float(v) for v in values.reshape(-1, 4).mean(axis=0)[:3]) + (1.0,)


def setup_mesh_colors(obj, name):
    """Give a GLB-imported mesh a material that shows its colours in Solid/Material/Rendered view."""
    mesh = obj.data
    colors = getattr(mesh, "color_attributes", None)
    if not colors or len(colors) == 0:
        return None
    attr = colors.get("Color") or colors.get("Col") or colors[0]
    try:
        colors.active_color = attr
        colors.render_color_index = colors.find(attr.name)
    except (AttributeError, TypeError):
        pass
    if any(_has_texture(slot.material) for slot in obj.material_slots):
        return None  # a baked texture is better than vertex colours; the importer wired it already
    mat = vertex_color_material(name, attr.name)
    mat.diffuse_color = _mean_color(mesh, attr)
    mesh.materials.clear()
    mesh.materials.append(mat)
    return mat


class _legacy_numpy_aliases:
    """Blender <= 3.5's glTF importer uses ``np.bool``, which NumPy 1.24 removed (Debian's Blender 3.4 +
    python3-numpy hit this); provide the alias only while the importer runs."""

    def __enter__(self):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.added = not hasattr(np, "bool")
        if self.added:
            np.bool = bool

    def __exit__(self, *exc):
        if self.added:
            del np.bool


def import_glb(context, path, name, collection, created):
    """Import a GLB into ``collection``; appends every object it creates to ``created``."""
    _ensure_gltf_importer()
    before = set(bpy.data.objects)
    with _window_override(), _legacy_numpy_aliases():
        result = bpy.ops.import_scene.gltf(filepath=path)
    new = [o for o in bpy.data.objects if o not in before]
    created.extend(new)
    if "FINISHED" not in result or not new:
        raise RuntimeError("Blender's glTF importer could not read %s" % path)
    for obj in new:
        for coll in list(obj.users_collection):
            coll.objects.unlink(obj)
        collection.objects.link(obj)
    meshes = [o for o in new if o.type == "MESH"]
    for i, obj in enumerate(meshes):
        obj.name = name if i == 0 else "%s.%d" % (name, i)
        obj.data.name = obj.name
        setup_mesh_colors(obj, obj.name)
    return new
