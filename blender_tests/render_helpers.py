"""Small Cycles renders for tests that check what a user would see (colours, splat falloff).

Cycles on the CPU is the one engine that renders in the bpy module without a GPU or
display. Pixels come back as sRGB bytes (the Standard view transform, no look, exposure 0),
the way an artist reads a colour picker.
"""

import os
import tempfile

import bpy
import numpy as np


def uniform_world(scene, strength=1.0, color=(1.0, 1.0, 1.0)):
    """A constant environment: a convex Lambertian surface then renders exactly its albedo (strength 1)."""
    world = bpy.data.worlds.new("test world")
    scene.world = world
    if bpy.app.version < (5, 0, 0):  # 5.0 always has the node tree and deprecates use_nodes
        world.use_nodes = True
    bg = world.node_tree.nodes["Background"]
    bg.inputs["Color"].default_value = tuple(color) + (1.0,)
    bg.inputs["Strength"].default_value = strength
    return world


def ortho_camera(scene, location, rotation, ortho_scale):
    cam = bpy.data.objects.new("test camera", bpy.data.cameras.new("test camera"))
    cam.data.type = "ORTHO"
    cam.data.ortho_scale = ortho_scale
    cam.location, cam.rotation_euler = location, rotation
    scene.collection.objects.link(cam)
    scene.camera = cam
    return cam


def render_srgb(scene, resolution=32, samples=16, transparent=False):
    """Render with Cycles (CPU, no denoising, Standard view) -> uint8-valued float array [H, W, 4], top row first."""
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    for attr in ("use_denoising", "use_preview_denoising"):
        if hasattr(scene.cycles, attr):
            setattr(scene.cycles, attr, False)
    scene.cycles.pixel_filter_type = "BOX"
    scene.cycles.filter_width = 1.0
    scene.render.film_transparent = transparent
    scene.render.resolution_x = scene.render.resolution_y = resolution
    scene.render.resolution_percentage = 100
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.view_settings.exposure, scene.view_settings.gamma = 0.0, 1.0
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    path = os.path.join(tempfile.mkdtemp(prefix="trellis-render-"), "render.png")
    scene.render.filepath = path
    bpy.ops.render.render(write_still=True)
    img = bpy.data.images.load(path)
    try:
        width, height = img.size[:]
        px = np.empty(width * height * 4, dtype=np.float32)
        img.pixels.foreach_get(px)
    finally:
        bpy.data.images.remove(img)
    return np.round(px.reshape(height, width, 4)[::-1] * 255.0)
