"""Region edit end to end inside Blender (issue 7): "Regenerate selection" with the real backend subprocess.

Generate an object (embedded model if present, else the tiny random-weight one of conftest), move/rotate
it, then regenerate (a) the voxels under a box Empty over its upper half (blocking operator call) and
(b) the voxels of selected Edit Mode vertices (async call pumped like Blender's timer). Each time: the
replacement sits at the same matrix_world in the same collections under the same name, the previous
version is hidden but still in bpy.data, the sidecar is new, the sidecar's voxels outside the region are
unchanged (which pins the world -> sidecar mapping), and ``bpy.ops.ed.undo()`` restores the previous
state. Undo does run headless in the bpy 4.5 wheel (it has one window); the test pushes a marker undo
step first so that it can tell "undid the regenerate step" from "there was no step to undo".
"""

import json
import math
import os
import shutil
import subprocess

import bpy
import numpy as np
import pytest
from mathutils import Matrix

from conftest import ADDON_NAME, needs_backend, pump_until, status

pytestmark = needs_backend

GRID = 64


def _generate(models):
    bpy.context.preferences.addons[ADDON_NAME].preferences.model_dir = models["text"]
    s = bpy.context.scene.trellis
    s.prompt, s.seed, s.outputs = "a wooden chair", 3, "MESH"
    assert bpy.ops.trellis.generate() == {"FINISHED"}, status().error_message
    (obj,) = [bpy.data.objects[n] for n in status().last_objects.split(";") if n]
    # Somewhere else than the origin, rotated, and in a second collection too.
    obj.matrix_world = Matrix.Translation((1.0, -2.0, 0.5)) @ Matrix.Rotation(math.radians(30), 4, "Z") @ \
        Matrix.Diagonal((1.5, 1.5, 1.5, 1.0))
    extra = bpy.data.collections.new("Props")
    bpy.context.scene.collection.children.link(extra)
    extra.objects.link(obj)
    bpy.context.view_layer.update()
    return obj


def _coords(sidecar):
    return {tuple(c) for c in np.load(sidecar)["coords"][:, -3:].tolist()}


def _make_active(obj, *others):
    for o in bpy.context.view_layer.objects:
        o.select_set(False)
    for o in (obj,) + others:
        o.select_set(True)
    bpy.context.view_layer.objects.active = obj


def _marker_undo_step():
    """State 'before' = marker object present; pushed as its own undo step."""
    bpy.ops.ed.undo_push(message="test: initial")
    marker = bpy.data.objects.new("UndoMarker", None)
    bpy.context.scene.collection.objects.link(marker)
    bpy.ops.ed.undo_push(message="test: before regenerate")


def _snapshot(obj):
    return {"name": obj.name, "matrix": np.array(obj.matrix_world), "sidecar": obj["trellis_sidecar"],
            "collections": sorted(c.name for c in obj.users_collection), "nverts": len(obj.data.vertices),
            "materials": [m.name for m in obj.data.materials]}


def _check_replaced(before):
    new = bpy.data.objects[before["name"]]
    old = bpy.data.objects[before["name"] + ".v1"] if "v1" not in new.get("trellis_edit_of", "") else \
        bpy.data.objects[new["trellis_edit_of"]]
    assert new.get("trellis_edit_of") == old.name
    assert np.allclose(np.array(new.matrix_world), before["matrix"], atol=1e-6)
    assert sorted(c.name for c in new.users_collection) == before["collections"]
    assert old.hide_viewport and old.hide_render and not new.hide_viewport and not new.hide_render
    assert old.name in bpy.data.objects and old["trellis_sidecar"] == before["sidecar"]
    assert old.data.name and len(old.data.vertices) == before["nverts"]
    assert new["trellis_sidecar"] != before["sidecar"] and os.path.isfile(new["trellis_sidecar"])
    assert new["trellis_kind"] == "mesh" and len(new.data.vertices) > 0 and new.active_material is not None
    return old, new


def _check_undo(before):
    assert bpy.ops.ed.undo() == {"FINISHED"}
    obj = bpy.data.objects[before["name"]]
    assert obj["trellis_sidecar"] == before["sidecar"]  # the previous version is back under its name...
    assert not obj.hide_viewport and not obj.hide_render  # ...visible
    assert before["name"] + ".v1" not in bpy.data.objects  # and the replacement is gone
    assert "UndoMarker" in bpy.data.objects  # undid exactly the regenerate step, not more
    assert np.allclose(np.array(obj.matrix_world), before["matrix"], atol=1e-6)
    assert bpy.ops.ed.redo() == {"FINISHED"}
    return _check_replaced(before)


def test_regenerate_box_empty(addon, real_models):
    from trellis_blender import jobs

    obj = _generate(real_models)
    before = _snapshot(obj)
    # A Cube Empty over the object's upper half: local box [-0.6, 0.6]^2 x [0, 0.6] (clipped to the cube).
    box = bpy.data.objects.new("EditBox", None)
    box.empty_display_type, box.empty_display_size = "CUBE", 1.0
    bpy.context.scene.collection.objects.link(box)
    box.matrix_world = obj.matrix_world @ Matrix.Translation((0, 0, 0.3)) @ Matrix.Diagonal((0.6, 0.6, 0.3, 1))
    bpy.context.view_layer.update()
    _make_active(obj, box)
    s = bpy.context.scene.trellis
    s.edit_prompt, s.edit_seed = "a metal chair", 7
    _marker_undo_step()

    assert bpy.ops.trellis.regenerate_selection() == {"FINISHED"}, status().error_message
    region = jobs.controller().job.params["region"]
    assert np.allclose(region["box_min"], [-0.5, -0.5, 0.0], atol=1e-5)
    assert np.allclose(region["box_max"], [0.5, 0.5, 0.5], atol=1e-5)
    old, new = _check_replaced(before)
    assert new["trellis_prompt"] == "a metal chair"
    # Voxels with centre below z = 0 (k < 32) are outside the box: bit-identical occupancy.
    below = lambda cs: {c for c in cs if c[2] < GRID // 2}  # noqa: E731
    assert below(_coords(new["trellis_sidecar"])) == below(_coords(before["sidecar"]))
    _check_undo(before)


def test_regenerate_vertex_selection_async(addon, real_models):
    from trellis_blender import jobs

    obj = _generate(real_models)
    before = _snapshot(obj)
    zs = np.array([v.co.z for v in obj.data.vertices])
    cut = np.quantile(zs, 0.8)  # the top fifth of the vertices
    for v in obj.data.vertices:
        v.select = bool(v.co.z >= cut)
    _make_active(obj)
    bpy.ops.object.mode_set(mode="EDIT")
    assert obj.mode == "EDIT"
    bpy.context.scene.trellis.edit_seed = 11
    _marker_undo_step()

    assert bpy.ops.trellis.regenerate_selection(run_mode="ASYNC") == {"FINISHED"}, status().error_message
    pump_until(lambda: not jobs.controller().busy, timeout=900)  # a deadline only: a loaded 2-core CI is slow
    assert status().state == "DONE", (status().error_type, status().error_message)
    region = jobs.controller().job.params["region"]
    voxels = {tuple(v) for v in region["voxels"]}
    selected = {tuple(int((c + 0.5) * GRID) for c in v.co) for v in bpy.data.objects[before["name"] + ".v1"]
                .data.vertices if v.select}
    assert selected and selected <= voxels
    assert min(v[2] for v in voxels) == min(v[2] for v in selected) - 1  # dilated by one voxel
    old, new = _check_replaced(before)
    assert old.mode == "OBJECT"
    outside = lambda cs: {c for c in cs if c not in voxels}  # noqa: E731
    assert outside(_coords(new["trellis_sidecar"])) == outside(_coords(before["sidecar"]))
    _check_undo(before)


def test_keep_structure_and_margin_reach_the_backend(addon, real_models):
    """Panel options keep structure + blend margin: same voxels, features change only inside the region."""
    from trellis_blender import jobs

    obj = _generate(real_models)
    before = _snapshot(obj)
    box = bpy.data.objects.new("EditBox", None)
    box.empty_display_type = "CUBE"
    bpy.context.scene.collection.objects.link(box)
    box.matrix_world = obj.matrix_world @ Matrix.Translation((0, 0, 0.3)) @ Matrix.Diagonal((0.6, 0.6, 0.3, 1))
    bpy.context.view_layer.update()
    _make_active(obj, box)
    s = bpy.context.scene.trellis
    s.edit_seed, s.edit_keep_structure, s.edit_margin = 5, True, 1
    assert bpy.ops.trellis.regenerate_selection() == {"FINISHED"}, status().error_message
    params = jobs.controller().job.params
    assert params["keep_structure"] is True and params["margin"] == 1
    old, new = _check_replaced(before)
    a, b = np.load(before["sidecar"]), np.load(new["trellis_sidecar"])
    ka = {tuple(c): i for i, c in enumerate(a["coords"][:, -3:].tolist())}
    kb = {tuple(c): i for i, c in enumerate(b["coords"][:, -3:].tolist())}
    assert set(ka) == set(kb)  # structure kept
    far = [c for c in ka if c[2] < GRID // 2 - 1]  # outside the box and its 1-voxel margin
    inside = [c for c in ka if c[2] >= GRID // 2 + 1]
    assert far and inside
    assert all(np.array_equal(a["feats"][ka[c]], b["feats"][kb[c]]) for c in far)
    assert any(not np.array_equal(a["feats"][ka[c]], b["feats"][kb[c]]) for c in inside)


def test_failures_leave_the_scene_alone(addon, real_models, tmp_path):
    obj = _generate(real_models)
    _make_active(obj)
    names = sorted(o.name for o in bpy.data.objects)
    with pytest.raises(RuntimeError, match="box Empty"):  # an ERROR report raises when called from Python
        bpy.ops.trellis.regenerate_selection()
    assert status().state == "FAILED" and "box Empty" in status().error_message
    assert sorted(o.name for o in bpy.data.objects) == names and not obj.hide_viewport
    # A job the backend fails (corrupt sidecar): nothing imported, nothing renamed or hidden.
    bad = tmp_path / "corrupt.slat.npz"
    bad.write_bytes(b"not a sidecar")
    obj["trellis_sidecar"] = str(bad)
    box = bpy.data.objects.new("EditBox", None)
    box.empty_display_type = "CUBE"
    bpy.context.scene.collection.objects.link(box)
    box.matrix_world = obj.matrix_world
    _make_active(obj, box)
    names = sorted(o.name for o in bpy.data.objects)
    with pytest.raises(RuntimeError):
        bpy.ops.trellis.regenerate_selection()
    assert status().state == "FAILED" and "sidecar" in status().error_message, status().error_message
    assert sorted(o.name for o in bpy.data.objects) == names and not obj.hide_viewport and not obj.hide_render


def test_panel_draws_region_edit_box(addon):
    """The panel's region-edit box draws for a generated object (stub layout: the bpy module has no UI)."""
    from trellis_blender import panel

    drawn = []

    class Layout:
        def __getattr__(self, name):
            def call(*a, **k):
                drawn.append((name, a, k))
                return Layout()
            return call

        def __setattr__(self, name, value):
            pass

    obj = bpy.data.objects.new("TRELLIS x", bpy.data.meshes.new("m"))
    obj["trellis_sidecar"] = "/nowhere.slat.npz"

    class Ctx:
        scene = bpy.context.scene
        window_manager = bpy.context.window_manager
        active_object = obj

    panel.VIEW3D_PT_trellis.draw(type("P", (), {"layout": Layout()})(), Ctx())
    assert any(name == "operator" and a[:1] == ("trellis.regenerate_selection",) for name, a, k in drawn)
    assert {"edit_prompt", "edit_seed", "edit_keep_structure", "edit_margin"} <= \
        {a[1] for name, a, k in drawn if name == "prop" and len(a) > 1}


# Interactive Blender (Debian's blender under Xvfb): the async path as a user gets it, where the UI pushes
# undo steps itself. One Ctrl-Z after "Regenerate selection" must give back exactly the previous version.
GUI_SCRIPT = r'''
import json, os, sys, tempfile, time
import bpy
from mathutils import Matrix
ROOT = os.environ["TRELLIS_ROOT"]; OUT = os.environ["TRELLIS_GUI_OUT"]; os.makedirs(OUT, exist_ok=True)
R = {"log": []}
def view3d():
    for w in bpy.context.window_manager.windows:
        for a in w.screen.areas:
            if a.type == "VIEW_3D":
                return w, a
def objs():
    return {o.name: (o.hide_viewport, o.get("trellis_sidecar", "")[-30:]) for o in bpy.data.objects}
def st(): return bpy.context.window_manager.trellis_status
def done(): return st().state in ("DONE", "FAILED", "CANCELLED")
def finish():
    with open(OUT + "/r.json", "w") as fh: json.dump(R, fh, indent=1)
    bpy.ops.wm.quit_blender()
def step3():
    if not done(): return 0.2
    R["after_edit"] = objs(); R["edit_state"] = (st().state, st().error_message)
    w, a = view3d()
    with bpy.context.temp_override(window=w, area=a):
        R["undo1"] = sorted(bpy.ops.ed.undo()); R["after_undo1"] = objs()
        R["undo2"] = sorted(bpy.ops.ed.undo()); R["after_undo2"] = objs()
    finish(); return None
def step2():
    if not done(): return 0.2
    R["gen_state"] = st().state
    obj = bpy.data.objects[st().last_objects.split(";")[0]]
    box = bpy.data.objects.new("EditBox", None); box.empty_display_type = "CUBE"
    bpy.context.scene.collection.objects.link(box)
    box.matrix_world = obj.matrix_world @ Matrix.Translation((0, 0, 0.3)) @ Matrix.Diagonal((0.6, 0.6, 0.3, 1))
    for o in bpy.data.objects: o.select_set(o in (obj, box))
    bpy.context.view_layer.objects.active = obj
    w, a = view3d()
    with bpy.context.temp_override(window=w, area=a):
        bpy.ops.ed.undo_push(message="before regenerate")
        R["before_edit"] = objs()
        R["op"] = sorted(bpy.ops.trellis.regenerate_selection())
    bpy.app.timers.register(step3, first_interval=0.5); return None
def start():
    for o in list(bpy.data.objects): bpy.data.objects.remove(o)
    import addon_utils
    bpy.context.preferences.use_preferences_save = False
    d = tempfile.mkdtemp(); os.symlink(ROOT + "/addon", d + "/trellis_blender"); sys.path.insert(0, d)
    addon_utils.enable("trellis_blender", default_set=True, handle_error=None)
    p = bpy.context.preferences.addons["trellis_blender"].preferences
    p.python_path, p.model_dir, p.device, p.output_dir = os.environ["TRELLIS_BACKEND_PY"], os.environ["TRELLIS_MODEL"], "cpu", OUT + "/files"
    s = bpy.context.scene.trellis; s.prompt, s.outputs = "a chair", "MESH"
    w, a = view3d()
    with bpy.context.temp_override(window=w, area=a):
        R["gen_op"] = sorted(bpy.ops.trellis.generate())
    bpy.app.timers.register(step2, first_interval=0.5)
def guard():
    R["timeout"] = True; finish()
bpy.app.timers.register(start, first_interval=1.0)
bpy.app.timers.register(guard, first_interval=1200)  # a deadline only: steps wait on the job's own state
'''


@pytest.mark.blender_binary
@pytest.mark.skipif(not (shutil.which("blender") and shutil.which("xvfb-run")), reason="needs blender and xvfb-run")
def test_interactive_undo_is_one_step(real_models, tmp_path):
    from conftest import BACKEND_PYTHON, ROOT

    script, out = tmp_path / "gui_edit.py", tmp_path / "out"
    script.write_text(GUI_SCRIPT)
    env = dict(os.environ, BLENDER_USER_CONFIG=str(tmp_path / "config"), BLENDER_USER_SCRIPTS=str(tmp_path / "s"),
               TRELLIS_BLENDER_DATA_DIR=str(tmp_path / "data"), TRELLIS_ROOT=ROOT, TRELLIS_GUI_OUT=str(out),
               TRELLIS_BACKEND_PY=BACKEND_PYTHON, TRELLIS_MODEL=real_models["text"])
    empty = str(tmp_path / "empty.blend")  # opening a file skips the splash screen
    subprocess.run(["blender", "-b", "--factory-startup", "--python-expr",
                    "import bpy; bpy.ops.wm.read_factory_settings(use_empty=True); "
                    "bpy.ops.wm.save_as_mainfile(filepath=%r)" % empty], env=env, check=True, capture_output=True,
                   timeout=120)
    proc = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", "blender", "--factory-startup", empty,
                           "-P", str(script)], env=env, capture_output=True, text=True, timeout=1500)
    assert (out / "r.json").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads((out / "r.json").read_text())
    assert not r.get("timeout") and r["edit_state"][0] == "DONE", r
    name = next(n for n in r["before_edit"] if n.startswith("TRELLIS"))
    assert r["after_edit"][name][1] != r["before_edit"][name][1] and r["after_edit"][name + ".v1"][0] is True
    assert r["after_undo1"] == r["before_edit"]  # one undo: the previous version, visible, nothing else
