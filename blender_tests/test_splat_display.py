"""Splats that render as Gaussians: the falloff of one known Gaussian in a Cycles render, the Display
switch (points / ellipsoids / Gaussian splats) and the viewport splat limit (renders keep every splat)."""

import math

import bpy
import numpy as np
import pytest

from render_helpers import ortho_camera, render_srgb, uniform_world

SH_C0 = 0.28209479177387814
PLY_FIELDS = ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
              "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")


def write_ply(path, xyz, sigma, opacity, srgb, quat=(1.0, 0.0, 0.0, 0.0)):
    """INRIA 3DGS PLY of Gaussians given in Blender's z-up frame (the file stores (x, -z, y)), with
    activated values in (sigmas, opacity, sRGB colour) and the file's raw ones out."""
    xyz = np.atleast_2d(np.asarray(xyz, dtype=np.float64))
    n = len(xyz)
    rows = np.zeros((n, len(PLY_FIELDS)), dtype=np.float32)
    rows[:, 0], rows[:, 1], rows[:, 2] = xyz[:, 0], -xyz[:, 2], xyz[:, 1]
    rows[:, 6:9] = (np.broadcast_to(np.asarray(srgb, dtype=np.float64), (n, 3)) - 0.5) / SH_C0
    rows[:, 9] = np.log(opacity / (1.0 - opacity))
    rows[:, 10:13] = np.log(np.broadcast_to(np.asarray(sigma, dtype=np.float64), (n, 3)))
    # the file's rotation is in its own (y-up) frame: q_file = q(z-up -> y-up) * q_blender
    w, x, y, z = np.broadcast_to(np.asarray(quat, dtype=np.float64), (n, 4)).T
    s = math.sqrt(0.5)
    rows[:, 13:17] = np.stack([s * (w - x), s * (x + w), s * (y - z), s * (z + y)], axis=1)
    header = "ply\nformat binary_little_endian 1.0\nelement vertex %d\n" % n
    header += "".join("property float %s\n" % f for f in PLY_FIELDS) + "end_header\n"
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(rows.astype("<f4").tobytes())
    return path


def _import(path, display="GAUSSIANS", limit=50000):
    from trellis_blender.importers import gaussians, trellis_collection

    created = []
    return gaussians.import_ply(bpy.context, path, "splats", trellis_collection(bpy.context.scene), created,
                                display=display, viewport_limit=limit)


def _linear(srgb_bytes):
    c = np.asarray(srgb_bytes, dtype=np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _instances(obj):
    """(ico instances, point-cloud instances) the viewport depsgraph makes of the splat object."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    meshes = points = 0
    for inst in depsgraph.object_instances:
        if inst.is_instance and inst.parent and inst.parent.original == obj:
            if inst.object.type == "MESH":
                meshes += 1
            elif inst.object.type == "POINTCLOUD":
                points += len(inst.object.data.points)
    return meshes, points


def test_one_gaussian_renders_with_gaussian_falloff(addon, tmp_path):
    """Centre, 1 sigma and 2 sigma pixels of a white Gaussian on black follow opacity * exp(-r^2 / 2)."""
    sigma, opacity = 0.1, 0.95
    path = write_ply(str(tmp_path / "one.ply"), [0, 0, 0], sigma, opacity, (1.0, 1.0, 1.0))
    _import(path)
    scene = bpy.context.scene
    uniform_world(scene, strength=0.0)
    ortho_camera(scene, (0.0, -3.0, 0.0), (math.pi / 2, 0.0, 0.0), 0.81)  # 81 px of 0.01: sigma = 10 px
    px = render_srgb(scene, resolution=81, samples=16)
    row = _linear(px[40, :, 0])
    for pixels_out, r in ((0, 0.0), (10, 1.0), (20, 2.0)):
        want = opacity * math.exp(-0.5 * r * r)
        for got in (row[40 + pixels_out], row[40 - pixels_out], _linear(px[40 - pixels_out, 40, 0])):
            assert abs(got - want) <= 0.1 * want, (r, got, want)
    assert row[40 + 35] < 0.01  # 3.5 sigma out: nothing (the splat ends at 3 sigma)


def test_rotated_anisotropic_gaussian_keeps_its_axes(addon, tmp_path):
    """sigma (0.2, 0.05, 0.05) turned 90 degrees about the view axis (y): long along z on screen."""
    q = (math.cos(math.pi / 4), 0.0, math.sin(math.pi / 4), 0.0)
    path = write_ply(str(tmp_path / "aniso.ply"), [0, 0, 0], (0.2, 0.05, 0.05), 0.9, (1.0, 1.0, 1.0), q)
    _import(path)
    scene = bpy.context.scene
    uniform_world(scene, strength=0.0)
    ortho_camera(scene, (0.0, -3.0, 0.0), (math.pi / 2, 0.0, 0.0), 0.81)
    px = render_srgb(scene, resolution=81, samples=16)
    vertical, horizontal = _linear(px[40 - 20, 40, 0]), _linear(px[40, 40 + 20, 0])  # 0.2 out along z, along x
    assert abs(vertical - 0.9 * math.exp(-0.5)) <= 0.1 * 0.9 * math.exp(-0.5), vertical  # 1 sigma of 0.2
    assert horizontal < 0.01, horizontal  # 4 sigma of 0.05


def test_display_switch_and_viewport_limit(addon, tmp_path):
    from trellis_blender.importers.gaussian_nodes import set_display

    rng = np.random.default_rng(0)
    xyz = rng.uniform(-0.4, 0.4, (400, 3))
    obj = _import(write_ply(str(tmp_path / "many.ply"), xyz, 0.01, 0.9, (0.2, 0.6, 0.9)), limit=1000)
    assert _instances(obj) == (400, 0)
    assert set_display(obj, "POINTS")
    assert _instances(obj) == (0, 400)
    assert set_display(obj, "ELLIPSOIDS", viewport_limit=100)
    shown = _instances(obj)[0]
    assert 50 <= shown <= 150, shown  # a random ~100 of the 400 in the viewport
    mod = obj.modifiers["TRELLIS Splats"]
    materials = {s.name: mod[s.identifier].name for s in mod.node_group.interface.items_tree
                 if getattr(s, "socket_type", "") == "NodeSocketMaterial"} if hasattr(mod.node_group, "interface") else {}
    if materials:
        assert materials["Gaussian Material"].startswith("TRELLIS Splat Gaussians")


def test_viewport_limit_leaves_renders_whole(addon, tmp_path):
    """A limit of 1 thins the viewport, never the render: all 5 splats in a row show up in Cycles."""
    xs = np.linspace(-0.3, 0.3, 5)
    xyz = np.stack([xs, np.zeros(5), np.zeros(5)], axis=1)
    obj = _import(write_ply(str(tmp_path / "row.ply"), xyz, 0.03, 0.95, (1.0, 1.0, 1.0)), limit=1)
    assert _instances(obj)[0] <= 3
    scene = bpy.context.scene
    uniform_world(scene, strength=0.0)
    ortho_camera(scene, (0.0, -3.0, 0.0), (math.pi / 2, 0.0, 0.0), 0.81)
    px = render_srgb(scene, resolution=81, samples=8)
    centres = [int(round(40 + x / 0.01)) for x in xs]
    assert all(_linear(px[40, c, 0]) > 0.8 for c in centres), [px[40, c, 0] for c in centres]


def test_panel_display_choice_applies_to_existing_and_new_splats(addon, tmp_path):
    from trellis_blender import importers

    path = write_ply(str(tmp_path / "few.ply"), np.zeros((3, 3)) + [[0.1, 0, 0], [0, 0, 0], [-0.1, 0, 0]], 0.02,
                     0.9, (1.0, 0.5, 0.2))
    first = importers.import_result(bpy.context, {"ply": path}, {"outputs": "GAUSSIANS", "prompt": "a"})[0]
    assert _instances(first) == (3, 0)  # the default display: Gaussian splats
    bpy.context.scene.trellis.splat_display = "POINTS"
    assert _instances(first) == (0, 3)
    second = importers.import_result(bpy.context, {"ply": path}, {"outputs": "GAUSSIANS", "prompt": "b"})[0]
    assert _instances(second) == (0, 3)  # new imports follow the choice
    bpy.context.scene.trellis.splat_display = "GAUSSIANS"
    assert _instances(first) == _instances(second) == (3, 0)
