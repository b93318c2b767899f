"""README pictures for TRELLIS.2 in Blender (issue 17), rendered with Cycles on the CPU through the add-on's
own operators:

1. Suzanne before and after "Texture selected mesh" (same object, geometry unchanged, a new material);
2. a TRELLIS.2 generation (its PBR material) under two different lights.

    .venv-blender/bin/python scripts/texture_pictures.py --model TRELLIS2_FOLDER --image REF.png --out docs/images \\
        [--python .venv/bin/python] [--texture-resolution 1024] [--texture-size 1024]

With a tiny random-weight folder (``python -m trellis_lab make-random-model --family trellis2 --size tiny``)
the textures are noise (and its generated shapes are scattered fragments, so a textured mesh is the clearer
PBR example): the pictures then show the plumbing only.
"""
import argparse
import math
import os
import sys

import bpy
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "blender_tests"))
from batch_generate import load_addon, setup_render  # noqa: E402


def render(scene, path):
    scene.render.filepath = path
    bpy.ops.render.render(write_still=True)
    return path


def side_by_side(paths, out):
    """One PNG with the renders left to right."""
    images = [bpy.data.images.load(p) for p in paths]
    w, h = images[0].size
    pixels = [np.array(i.pixels[:], np.float32).reshape(h, w, 4) for i in images]
    joined = np.concatenate(pixels, axis=1)
    result = bpy.data.images.new("side_by_side", w * len(paths), h, alpha=True)
    result.pixels.foreach_set(joined.ravel())
    result.filepath_raw, result.file_format = out, "PNG"
    result.save()
    for p in paths:
        os.remove(p)
    return out


def set_lights(scene, warm):
    """Light setup 1 (warm key from the left, dim world) or 2 (cool key from the right, bright world)."""
    sun = bpy.data.objects["TRELLIS key"]
    sun.data.energy = 4.0 if warm else 2.0
    sun.data.color = (1.0, 0.78, 0.55) if warm else (0.65, 0.8, 1.0)
    sun.rotation_euler = (math.radians(55), 0.0, math.radians(-60 if warm else 120))
    bg = scene.world.node_tree.nodes.get("Background")
    bg.inputs["Color"].default_value = (0.25, 0.22, 0.2, 1.0) if warm else (0.7, 0.78, 0.9, 1.0)
    bg.inputs["Strength"].default_value = 0.4 if warm else 1.0


def main():
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--python", default=os.environ.get("TRELLIS_BACKEND_PYTHON", ""))
    ap.add_argument("--texture-resolution", type=int, default=1024)
    ap.add_argument("--texture-size", type=int, default=1024)
    ap.add_argument("--resolution", type=int, default=400)
    ap.add_argument("--samples", type=int, default=16)
    args = ap.parse_args(argv)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    module = load_addon()
    prefs = bpy.context.preferences.addons[module].preferences
    prefs.python_path, prefs.model_dir, prefs.device = args.python, os.path.abspath(args.model), "cpu"
    prefs.output_dir = os.path.join(out, "_backend_files")
    scene = bpy.context.scene
    s = scene.trellis
    s.image_source, s.image_path = "FILE", os.path.abspath(args.image)
    s.texture_resolution, s.texture_size = args.texture_resolution, args.texture_size

    # 1. Suzanne before / after texturing
    bpy.ops.mesh.primitive_monkey_add()
    suzanne = bpy.context.active_object
    suzanne.modifiers.new("subsurf", "SUBSURF").levels = 1
    bpy.ops.object.shade_smooth()
    grey = bpy.data.materials.new("clay")
    grey.diffuse_color = (0.6, 0.6, 0.6, 1.0)
    suzanne.data.materials.append(grey)
    setup_render(scene, [suzanne], args.resolution, args.samples)
    before = render(scene, os.path.join(out, "_before.png"))
    bpy.ops.trellis.texture_selected(run_mode="SYNC")
    status = bpy.context.window_manager.trellis_status
    if status.state != "DONE":
        raise SystemExit("texturing failed: %s: %s" % (status.error_message, status.error_hint))
    after = render(scene, os.path.join(out, "_after.png"))
    side_by_side([before, after], os.path.join(out, "texture_suzanne_before_after.png"))

    # 2. the TRELLIS.2 PBR result (base colour, metallic, roughness maps) under two lights
    shots = []
    for warm in (True, False):
        set_lights(scene, warm)
        shots.append(render(scene, os.path.join(out, "_light%d.png" % len(shots))))
    side_by_side(shots, os.path.join(out, "trellis2_pbr_two_lights.png"))
    print("written:", os.path.join(out, "texture_suzanne_before_after.png"),
          os.path.join(out, "trellis2_pbr_two_lights.png"))


if __name__ == "__main__":
    main()
    from importlib import import_module

    try:
        import_module(next(n for n in sys.modules if n.endswith("trellis_blender.jobs"))).shutdown_controller()
    except StopIteration:
        pass
