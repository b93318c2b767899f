"""Gaussians PLY -> a Blender point-cloud mesh with splat attributes.

Each Gaussian becomes a mesh vertex carrying activated attributes (so they
read as what they are, not as logits): ``opacity`` (FLOAT), ``scale``
(FLOAT_VECTOR, world units), ``rotation`` (FLOAT_VECTOR x,y,z) +
``rotation_w`` (FLOAT) -- the unit quaternion, the same layout on every Blender
version -- ``color`` (FLOAT_COLOR) and ``rotation_euler`` (FLOAT_VECTOR, only
for display: every Blender since 3.0 can instance with an Euler vector).
"""

import bpy
import numpy as np

from ..core.gaussian_ply import load_gaussians, quat_to_euler_xyz
from .gaussian_nodes import DEFAULT_VIEWPORT_LIMIT, add_splat_modifier, splat_materials


def _add_attr(mesh, name, kind, field, values):
    attr = mesh.attributes.new(name, kind, "POINT")
    attr.data.foreach_set(field, np.ascontiguousarray(values, dtype=np.float32).ravel())
    return attr


def build_point_mesh(name, g):
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(g["position"]))
    mesh.vertices.foreach_set("co", np.ascontiguousarray(g["position"], dtype=np.float32).ravel())
    _add_attr(mesh, "opacity", "FLOAT", "value", g["opacity"])
    _add_attr(mesh, "scale", "FLOAT_VECTOR", "vector", g["scale"])
    _add_attr(mesh, "rotation", "FLOAT_VECTOR", "vector", g["rotation"][:, 1:])
    _add_attr(mesh, "rotation_w", "FLOAT", "value", g["rotation"][:, 0])
    _add_attr(mesh, "rotation_euler", "FLOAT_VECTOR", "vector", quat_to_euler_xyz(g["rotation"]))
    color = mesh.attributes.new("color", "FLOAT_COLOR", "POINT")
    color.data.foreach_set("color", np.ascontiguousarray(g["color"], dtype=np.float32).ravel())
    try:  # makes Solid view's "Attribute" colour mode show the splat colours
        mesh.color_attributes.active_color = color
        mesh.color_attributes.render_color_index = mesh.color_attributes.find("color")
    except (AttributeError, TypeError):
        pass
    mesh.update()
    return mesh


TRANSPARENT_BOUNCES = 256  # Cycles stops at its transparent-bounce limit: splats behind that many go black


def allow_deep_transparency(scene):
    """Let Cycles rays pass through enough splats (it only ever raises the scene's limit)."""
    cycles = getattr(scene, "cycles", None)
    if cycles is not None and getattr(cycles, "transparent_max_bounces", TRANSPARENT_BOUNCES) < TRANSPARENT_BOUNCES:
        cycles.transparent_max_bounces = TRANSPARENT_BOUNCES


def import_ply(context, path, name, collection, created, display="GAUSSIANS",
               viewport_limit=DEFAULT_VIEWPORT_LIMIT):
    """Create the splat object; appends what it creates to ``created`` (for cleanup on failure)."""
    g = load_gaussians(path)
    mesh = build_point_mesh(name, g)
    obj = bpy.data.objects.new(name, mesh)
    created.append(obj)
    collection.objects.link(obj)
    mean = g["color"][:, :3].mean(axis=0) if len(g["color"]) else (1.0, 1.0, 1.0)
    materials = splat_materials(mean)
    mesh.materials.append(materials["GAUSSIANS"])
    add_splat_modifier(obj, materials, display, viewport_limit)
    allow_deep_transparency(context.scene)
    return obj
