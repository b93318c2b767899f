"""End to end inside Blender: panel settings -> real backend subprocess (real pipeline, CPU) -> imported objects.

Uses the embedded model when the checkout has one, else tiny random-weight
folders built by trellis_lab.random_model (same code path).
"""

import glob
import os
import signal

import bpy
import numpy as np
import pytest

from conftest import ADDON_NAME, add_user_objects, needs_backend, pump_until, scene_fingerprint, status

pytestmark = needs_backend


def _use(model):
    bpy.context.preferences.addons[ADDON_NAME].preferences.model_dir = model


def _imported():
    return [bpy.data.objects[n] for n in status().last_objects.split(";") if n]


def _bbox(obj, evaluated=False):
    if evaluated:
        obj = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    co = np.array([obj.matrix_world @ v.co for v in obj.data.vertices]) if len(obj.data.vertices) else np.zeros((1, 3))
    return co.min(0), co.max(0)


def _fraction_on_voxels(obj, coords, res=64):
    """Share of the object's points whose voxel (or a neighbour) is occupied in the sidecar."""
    occupied = {tuple(c) for c in coords.tolist()}
    pts = np.array([v.co for v in obj.data.vertices])
    idx = np.floor((pts + 0.5) * res).astype(int)
    offsets = [(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)]
    hits = sum(any((x + i, y + j, z + k) in occupied for i, j, k in offsets) for x, y, z in idx.tolist())
    return hits / max(1, len(idx))


def _check_mesh(obj):
    mesh = obj.data
    assert obj.type == "MESH" and len(mesh.vertices) > 0 and len(mesh.polygons) > 0
    assert mesh.color_attributes.active_color is not None
    mat = obj.active_material
    assert mat is not None
    nodes = {n.bl_idname for n in mat.node_tree.nodes}
    assert "ShaderNodeVertexColor" in nodes or "ShaderNodeTexImage" in nodes
    bsdf = next(n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    assert bsdf.inputs["Metallic"].default_value == 0.0
    lo, hi = _bbox(obj)
    assert np.all(lo >= -0.6) and np.all(hi <= 0.6)  # object space [-0.5, 0.5]^3 (+ deform)


def _check_gaussians(obj):
    mesh = obj.data
    n = len(mesh.vertices)
    assert n > 0 and n % 32 == 0  # 32 Gaussians per voxel
    names = {a.name: a.data_type for a in mesh.attributes}
    assert names["opacity"] == "FLOAT" and names["scale"] == "FLOAT_VECTOR"
    assert names["rotation"] == "FLOAT_VECTOR" and names["rotation_w"] == "FLOAT" and names["color"] == "FLOAT_COLOR"
    opacity = np.empty(n, np.float32)
    mesh.attributes["opacity"].data.foreach_get("value", opacity)
    assert np.all((opacity >= 0) & (opacity <= 1)) and np.isfinite(opacity).all()
    color = np.empty(n * 4, np.float32)
    mesh.attributes["color"].data.foreach_get("color", color)
    assert np.all((color >= 0) & (color <= 1))
    scale = np.empty(n * 3, np.float32)
    mesh.attributes["scale"].data.foreach_get("vector", scale)
    assert np.all(scale > 0) and np.all(scale < 0.5)
    assert obj.modifiers["TRELLIS Splats"].node_group is not None
    bpy.context.scene.trellis.splat_viewport_limit = 10 ** 7  # every splat in the viewport too, as renders get them
    depsgraph = bpy.context.evaluated_depsgraph_get()
    shown = sum(1 for inst in depsgraph.object_instances
                if inst.is_instance and inst.parent and inst.parent.original == obj and inst.object.type == "MESH")
    assert shown == n  # one Gaussian-splat instance per point


def test_generate_from_text(addon, real_models):
    _use(real_models["text"])
    add_user_objects()
    s = bpy.context.scene.trellis
    s.prompt, s.seed = "a red wooden chair", 3
    assert bpy.ops.trellis.generate() == {"FINISHED"}, status().error_message
    objs = _imported()
    kinds = {o["trellis_kind"]: o for o in objs}
    assert set(kinds) == {"mesh", "gaussians"}
    _check_mesh(kinds["mesh"])
    _check_gaussians(kinds["gaussians"])
    for o in objs:
        assert [c.name for c in o.users_collection] == ["TRELLIS"]
        assert o["trellis_prompt"] == "a red wooden chair" and o["trellis_seed"] == 3
        assert o["trellis_sidecar"].endswith(".npz") and os.path.isfile(o["trellis_sidecar"])
    # Both imports must sit on the SLAT's occupied voxels in Blender's z-up object space: this pins
    # the PLY axis convention (our reader) and the GLB one (Blender's glTF importer) to the sidecar.
    coords = np.load(kinds["mesh"]["trellis_sidecar"])["coords"][:, -3:]
    for obj in objs:
        assert _fraction_on_voxels(obj, coords) > 0.98, obj["trellis_kind"]
    assert bpy.data.objects.get("UserCube") and bpy.data.objects.get("UserSphere")


def test_generate_from_image_file_and_datablock(addon, real_models, tmp_path):
    _use(real_models["image"])
    img = bpy.data.images.new("cond", 64, 64, alpha=True)
    px = np.zeros((64, 64, 4), np.float32)
    px[16:48, 20:44] = (0.9, 0.2, 0.1, 1.0)  # an opaque red block on a transparent background
    img.pixels.foreach_set(px.ravel())
    path = str(tmp_path / "cond.png")
    img.filepath_raw, img.file_format = path, "PNG"
    img.save()
    s = bpy.context.scene.trellis
    s.prompt, s.outputs = "", "MESH"
    s.image_source, s.image_path = "FILE", path
    assert bpy.ops.trellis.generate() == {"FINISHED"}, status().error_message
    (mesh_obj,) = _imported()
    _check_mesh(mesh_obj)
    assert mesh_obj["trellis_image"] == path
    img.pixels.foreach_set(px[::-1].ravel())  # modified in memory -> must be written out again
    s.image_source, s.image, s.outputs = "DATABLOCK", img, "GAUSSIANS"
    assert bpy.ops.trellis.generate() == {"FINISHED"}, status().error_message
    (splats,) = _imported()
    _check_gaussians(splats)
    assert splats["trellis_image"] != path and os.path.isfile(splats["trellis_image"])


def _start_long_text_job(real_models, prompt):
    """Start a text job long enough (400 steps a stage) to be interrupted in its first stage, beside some user
    objects; returns the scene's fingerprint from before the job."""
    _use(real_models["text"])
    add_user_objects()
    before = scene_fingerprint()
    s = bpy.context.scene.trellis
    s.prompt, s.custom_sampling, s.ss_steps, s.slat_steps = prompt, True, 400, 400
    bpy.ops.trellis.generate(run_mode="ASYNC")
    pump_until(lambda: status().stage == "sparse_structure", timeout=120)
    return before


def test_cancel_stops_real_job_and_scene_is_unchanged(addon, real_models):
    before = _start_long_text_job(real_models, "a tall lamp")
    bpy.ops.trellis.cancel()
    pump_until(lambda: status().state in ("CANCELLED", "FAILED", "DONE"), timeout=60)
    assert status().state == "CANCELLED"
    assert scene_fingerprint() == before
    out = bpy.context.preferences.addons[ADDON_NAME].preferences.output_dir
    assert not glob.glob(os.path.join(out, "*.glb")) and not glob.glob(os.path.join(out, "*.ply"))


def test_backend_killed_mid_job_loses_nothing_and_recovers(addon, real_models):
    from trellis_blender import jobs

    before = _start_long_text_job(real_models, "a round table")
    s = bpy.context.scene.trellis
    os.kill(jobs.controller().client.proc.pid, signal.SIGKILL)
    pump_until(lambda: status().state == "FAILED", timeout=30)
    assert status().error_type == "BackendExited" and "exited unexpectedly" in status().error_message
    assert scene_fingerprint() == before
    s.custom_sampling = False
    s.outputs = "MESH"
    assert bpy.ops.trellis.generate() == {"FINISHED"}  # restarted on the next job


def test_bad_model_folder_with_real_loader(addon, real_models, tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "pipeline.json").write_text('{"name": "TrellisTextTo3DPipeline", "args": {"models": '
                                          '{"slat_flow_model": "ckpts/missing"}}}')
    _use(str(broken))
    add_user_objects()
    before = scene_fingerprint()
    bpy.context.scene.trellis.prompt = "a chair"
    with pytest.raises(RuntimeError):
        bpy.ops.trellis.generate()
    st = status()
    assert st.state == "FAILED" and st.error_message and st.error_hint
    assert st.error_type != "InternalError", st.error_message
    assert scene_fingerprint() == before
