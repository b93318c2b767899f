"""Render two GLB files side by side with Blender (Cycles, CPU) into one PNG.

    .venv-blender/bin/python scripts/render_pair.py BEFORE.glb AFTER.glb OUT.png [--resolution 640]

Used for the README's region-edit picture (scripts/region_edit_demo.sh): the same camera,
lights and colour handling as the batch script (blender_tests/batch_generate.py), so the two
halves differ only by the asset.
"""
import argparse
import os
import sys

import bpy

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "blender_tests"))
from batch_generate import setup_render  # noqa: E402


def import_glb(path):
    before = set(bpy.data.objects)
    bpy.ops.import_scene.gltf(filepath=path)
    return [o for o in bpy.data.objects if o not in before and o.type == "MESH"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("out")
    ap.add_argument("--resolution", type=int, default=640)
    ap.add_argument("--samples", type=int, default=24)
    args = ap.parse_args()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    left, right = import_glb(args.before), import_glb(args.after)
    for objs, dx in ((left, -0.55), (right, 0.55)):
        for o in objs:
            o.location.x += dx
    setup_render(scene, left + right, args.resolution, args.samples)
    scene.render.filepath = os.path.abspath(args.out)
    bpy.ops.render.render(write_still=True)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
