"""How faithfully Blender shows the add-on's splats: Cycles renders vs the 3DGS reference rasteriser.

For each Gaussian PLY: the add-on imports it into Blender (the bpy module, run as a
subprocess with the Blender venv), Cycles renders it once per display (Gaussian splats,
ellipsoids) from one camera, scripts/gaussian_reference.py renders the same Gaussians with
the 3DGS equations from the same camera, and PSNR / SSIM (scikit-image) compare each Blender
render with the reference. Writes a side-by-side picture per object and a markdown table.

    .venv/bin/python scripts/splat_fidelity.py out/a.ply out/b.ply out/c.ply \
        --blender-python .venv-blender/bin/python --out docs/splats

Inside Blender (``--render-in-blender``) it only renders; that half needs no scikit-image.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import gaussian_reference as ref  # noqa: E402

EYE, TARGET = (1.15, -1.6, 0.9), (0.0, 0.0, 0.0)
DISPLAYS = ("GAUSSIANS", "ELLIPSOIDS")


def camera(resolution):
    return ref.Camera.look_at(EYE, TARGET, resolution)


# -- the Blender half ------------------------------------------------------------------
def render_in_blender(ply, out_dir, resolution, samples):
    """Import ``ply`` with the add-on and render each display with Cycles (Standard view, black world)."""
    import bpy  # first: it puts addon_utils and mathutils on the path
    import addon_utils
    from mathutils import Matrix

    link = tempfile.mkdtemp(prefix="trellis-addon-link-")
    os.symlink(os.path.join(ROOT, "addon"), os.path.join(link, "trellis_blender"))
    sys.path.insert(0, link)
    os.environ.setdefault("TRELLIS_BLENDER_DATA_DIR", tempfile.mkdtemp(prefix="trellis-data-"))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    addon_utils.enable("trellis_blender", default_set=True, handle_error=None)
    from trellis_blender.importers import gaussians, trellis_collection
    from trellis_blender.importers.gaussian_nodes import set_display

    scene = bpy.context.scene
    obj = gaussians.import_ply(bpy.context, ply, "splats", trellis_collection(scene), [])
    cam = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    cam.data.lens, cam.data.sensor_width, cam.data.sensor_fit = 50.0, 36.0, "HORIZONTAL"
    cam.matrix_world = Matrix(camera(resolution).matrix_world.tolist())
    scene.collection.objects.link(cam)
    scene.camera = cam
    world = bpy.data.worlds.new("black")
    if bpy.app.version < (5, 0, 0):  # 5.0 always has the node tree and deprecates use_nodes
        world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.0
    scene.world = world
    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples = "CPU", samples
    scene.cycles.use_denoising = False
    scene.cycles.pixel_filter_type, scene.cycles.filter_width = "BOX", 1.0
    scene.render.resolution_x = scene.render.resolution_y = resolution
    scene.render.resolution_percentage = 100
    scene.view_settings.view_transform, scene.view_settings.look = "Standard", "None"
    scene.render.image_settings.file_format = "PNG"
    timings = {}
    for display in DISPLAYS:
        set_display(obj, display)
        scene.render.filepath = os.path.join(out_dir, display.lower() + ".png")
        t0 = time.time()
        bpy.ops.render.render(write_still=True)
        timings[display] = time.time() - t0
    with open(os.path.join(out_dir, "blender.json"), "w") as fh:
        json.dump({"render_s": timings, "splats": len(obj.data.vertices), "blender": bpy.app.version_string}, fh)


# -- the comparison half ---------------------------------------------------------------
def reference_gaussians(ply):
    """The PLY's Gaussians as the add-on reads them, colours back in the PLY's sRGB (3DGS composites those)."""
    sys.path.insert(0, ROOT)
    from addon.core.color import linear_to_srgb
    from addon.core.gaussian_ply import load_gaussians

    g = load_gaussians(ply)
    g["color"] = linear_to_srgb(g["color"][:, :3])
    return g


def read_png(path):
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0


def compare(ply, blender_python, out_dir, resolution, samples):
    from PIL import Image
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    name = os.path.splitext(os.path.basename(ply))[0]
    work = os.path.join(out_dir, name)
    os.makedirs(work, exist_ok=True)
    cmd = [blender_python, os.path.abspath(__file__), "--render-in-blender", ply, "--work", work,
           "--resolution", str(resolution), "--samples", str(samples)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit("Blender render failed:\n" + proc.stdout[-2000:] + proc.stderr[-2000:])
    t0 = time.time()
    reference = np.clip(ref.render(reference_gaussians(ply), camera(resolution)), 0, 1)
    ref_s = time.time() - t0
    Image.fromarray(np.round(reference * 255).astype(np.uint8)).save(os.path.join(work, "reference.png"))
    reference = read_png(os.path.join(work, "reference.png"))  # both sides 8-bit, as saved
    row = {"object": name, "reference_s": round(ref_s, 1), **json.load(open(os.path.join(work, "blender.json")))}
    tiles = [reference]
    for display in DISPLAYS:
        img = read_png(os.path.join(work, display.lower() + ".png"))
        tiles.append(img)
        row[display] = {"psnr": round(float(peak_signal_noise_ratio(reference, img, data_range=1.0)), 2),
                        "ssim": round(float(structural_similarity(reference, img, channel_axis=2, data_range=1.0)), 4)}
    strip = np.concatenate(tiles, axis=1)
    Image.fromarray(np.round(strip * 255).astype(np.uint8)).save(os.path.join(out_dir, name + "_side_by_side.png"))
    return row


def table(rows):
    lines = ["| object | splats | Gaussian splats PSNR / SSIM | ellipsoids PSNR / SSIM |", "| --- | ---: | ---: | ---: |"]
    for r in rows:
        g, e = r["GAUSSIANS"], r["ELLIPSOIDS"]
        lines.append("| %s | %d | **%.2f dB / %.4f** | %.2f dB / %.4f |" % (
            r["object"], r["splats"], g["psnr"], g["ssim"], e["psnr"], e["ssim"]))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("plys", nargs="+")
    ap.add_argument("--blender-python", default=os.path.join(ROOT, ".venv-blender", "bin", "python"))
    ap.add_argument("--out", default=os.path.join(ROOT, "out", "splat_fidelity"))
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--render-in-blender", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.render_in_blender:
        render_in_blender(os.path.abspath(args.plys[0]), args.work, args.resolution, args.samples)
        return
    os.makedirs(args.out, exist_ok=True)
    rows = [compare(os.path.abspath(p), args.blender_python, args.out, args.resolution, args.samples)
            for p in args.plys]
    with open(os.path.join(args.out, "results.json"), "w") as fh:
        json.dump(rows, fh, indent=2)
    print(table(rows))


if __name__ == "__main__":
    main()
