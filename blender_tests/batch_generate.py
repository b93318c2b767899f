"""Headless batch generation: prompt/image -> .blend + .glb + rendered .png.

    blender -b -P blender_tests/batch_generate.py -- --prompt "a red chair" --out out/
    python blender_tests/batch_generate.py -- --prompt "a red chair" --out out/   (bpy wheel)

Uses the same operator an artist presses (``bpy.ops.trellis.generate``),
which runs synchronously in background mode. Works from Blender 3.4 (Debian's
package: needs python3-numpy for the glTF importer) to 4.x; renders with
Cycles on the CPU, the one engine that needs no GPU or display. The add-on is
taken from an installed copy when enabled, else from this checkout.
Exit code 0 on success, 1 when generation fails (the error and hint are printed).
"""

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time

import bpy

HERE = os.path.dirname(os.path.realpath(__file__))
ROOT = os.path.dirname(HERE)


def parse_args():
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    ap = argparse.ArgumentParser(prog="batch_generate.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompt", default="", help="text prompt")
    ap.add_argument("--image", default="", help="condition image (instead of / besides the prompt)")
    ap.add_argument("--model", default="", help="model folder (default: the embedded model)")
    ap.add_argument("--models-root", default="", help="folder with referenced model folders (text releases)")
    ap.add_argument("--python", default=os.environ.get("TRELLIS_BACKEND_PYTHON", ""),
                    help="backend interpreter (default: add-on preference / setup venv / checkout .venv)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=0, help="sampling steps for both stages (0: the model's)")
    ap.add_argument("--outputs", default="BOTH", choices=("BOTH", "MESH", "GAUSSIANS"))
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--name", default="", help="base name of the output files (default: from the prompt)")
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--samples", type=int, default=16, help="Cycles samples")
    ap.add_argument("--no-render", action="store_true")
    ap.add_argument("--timeout", type=float, default=0, help="cancel the job after this many seconds (0: never)")
    return ap.parse_args(argv)


def load_addon():
    """Return the add-on's module name, enabling an installed copy or this checkout's addon/."""
    import addon_utils

    for name in list(bpy.context.preferences.addons.keys()):
        if name == "trellis_blender" or name.endswith(".trellis_blender"):
            return name
    for mod in addon_utils.modules():
        if mod.__name__ == "trellis_blender" or mod.__name__.endswith(".trellis_blender"):
            addon_utils.enable(mod.__name__, default_set=True)
            return mod.__name__
    link_dir = tempfile.mkdtemp(prefix="trellis-addon-")
    os.symlink(os.path.join(ROOT, "addon"), os.path.join(link_dir, "trellis_blender"))  # keeps the checkout layout
    sys.path.insert(0, link_dir)
    if addon_utils.enable("trellis_blender", default_set=True, handle_error=None) is None:
        raise SystemExit("could not enable the TRELLIS add-on from %s" % os.path.join(ROOT, "addon"))
    return "trellis_blender"


def world_bbox(objects):
    from mathutils import Vector

    depsgraph = bpy.context.evaluated_depsgraph_get()
    lo, hi = [math.inf] * 3, [-math.inf] * 3
    for obj in objects:
        ev = obj.evaluated_get(depsgraph)
        for corner in ev.bound_box:
            p = ev.matrix_world @ Vector(corner)
            lo = [min(a, b) for a, b in zip(lo, p)]
            hi = [max(a, b) for a, b in zip(hi, p)]
    return lo, hi


def setup_render(scene, objects, resolution, samples):
    """Camera framing the objects, a key light and soft world light; Cycles on the CPU."""
    from mathutils import Vector

    bpy.context.view_layer.update()  # matrix_world of objects moved by this script
    lo, hi = world_bbox(objects)
    center = Vector([(a + b) / 2 for a, b in zip(lo, hi)])
    radius = max(0.3, (Vector(hi) - Vector(lo)).length / 2)
    cam_data = bpy.data.cameras.new("TRELLIS camera")
    cam_data.lens = 50
    cam = bpy.data.objects.new("TRELLIS camera", cam_data)
    scene.collection.objects.link(cam)
    direction = Vector((1.0, -1.4, 0.8)).normalized()
    fov = 2 * math.atan(cam_data.sensor_width / (2 * cam_data.lens))
    cam.location = center + direction * (radius / math.sin(fov / 2) * 1.05)
    cam.rotation_euler = (center - cam.location).to_track_quat("-Z", "Y").to_euler()
    scene.camera = cam
    sun_data = bpy.data.lights.new("TRELLIS key", "SUN")
    sun_data.energy = 3.0
    sun = bpy.data.objects.new("TRELLIS key", sun_data)
    sun.rotation_euler = (math.radians(50), math.radians(10), math.radians(30))
    scene.collection.objects.link(sun)
    world = scene.world or bpy.data.worlds.new("World")
    scene.world = world
    if bpy.app.version < (5, 0, 0):  # 5.0 always has the node tree and deprecates use_nodes
        world.use_nodes = True
    bg = world.node_tree.nodes.get("Background")
    if bg:
        bg.inputs["Color"].default_value = (0.55, 0.57, 0.6, 1.0)
        bg.inputs["Strength"].default_value = 0.8
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    for attr in ("use_denoising", "use_preview_denoising"):  # Debian's build has no OpenImageDenoise
        if hasattr(scene.cycles, attr):
            setattr(scene.cycles, attr, False)
    scene.render.resolution_x = scene.render.resolution_y = resolution
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    try:
        scene.view_settings.view_transform = "Standard"  # show the generated colours as they are
    except TypeError:
        pass


def main():
    args = parse_args()
    if not args.prompt and not args.image:
        raise SystemExit("give --prompt and/or --image")
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    bpy.ops.wm.read_factory_settings(use_empty=True)  # before enabling: it resets preferences
    module = load_addon()
    prefs = bpy.context.preferences.addons[module].preferences
    prefs.python_path = args.python
    prefs.model_dir = os.path.abspath(args.model) if args.model else ""
    prefs.models_root = os.path.abspath(args.models_root) if args.models_root else ""
    prefs.device = args.device
    prefs.output_dir = os.path.join(out, "backend_files")

    scene = bpy.context.scene
    s = scene.trellis
    s.prompt, s.seed, s.outputs = args.prompt, args.seed, args.outputs
    if args.image:
        s.image_source, s.image_path = "FILE", os.path.abspath(args.image)
    if args.steps:
        s.custom_sampling, s.ss_steps, s.slat_steps = True, args.steps, args.steps
    try:
        bpy.ops.trellis.generate(run_mode="SYNC", timeout=args.timeout)
    except RuntimeError:
        pass  # the status below says what went wrong
    st = bpy.context.window_manager.trellis_status
    if st.state != "DONE":
        print("TRELLIS generation failed: %s: %s\n  hint: %s" % (st.error_type, st.error_message, st.error_hint))
        print("BATCH_RESULT " + json.dumps({"ok": False, "error_type": st.error_type, "message": st.error_message}))
        return 1
    t_gen = time.time() - t0
    objects = [bpy.data.objects[n] for n in st.last_objects.split(";") if n]
    meshes = [o for o in objects if o.get("trellis_kind") == "mesh"]
    splats = [o for o in objects if o.get("trellis_kind") == "gaussians"]
    if meshes and splats:  # side by side in the render
        for o in splats:
            o.location.x += 1.1

    name = args.name or "".join(c if c.isalnum() else "_" for c in (args.prompt or os.path.basename(args.image)))[:40]
    name = name.strip("_") or "asset"
    result = {"ok": True, "objects": [o.name for o in objects], "generate_s": round(t_gen, 2)}
    files = json.loads(objects[0]["trellis_files"])
    if files.get("glb"):
        result["glb"] = os.path.join(out, name + ".glb")
        shutil.copyfile(files["glb"], result["glb"])
    if files.get("ply"):
        result["ply"] = os.path.join(out, name + ".ply")
        shutil.copyfile(files["ply"], result["ply"])
    if not args.no_render:
        t1 = time.time()
        setup_render(scene, objects, args.resolution, args.samples)
        scene.render.filepath = result["png"] = os.path.join(out, name + ".png")
        bpy.ops.render.render(write_still=True)
        result["render_s"] = round(time.time() - t1, 2)
    result["blend"] = os.path.join(out, name + ".blend")
    bpy.ops.wm.save_as_mainfile(filepath=result["blend"])
    print("BATCH_RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    code = main()
    from importlib import import_module

    try:  # stop the backend before Blender exits (atexit does it too; this is explicit)
        import_module(next(n for n in sys.modules if n.endswith("trellis_blender.jobs"))).shutdown_controller()
    except StopIteration:
        pass
    if code:
        sys.exit(code)
