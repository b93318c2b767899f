"""Job flow through the real server subprocess with the scriptable test-double pipeline.

Deterministic failure injection (crash mid-job, busy, errors) that the real
model cannot provide on demand; test_generate_real.py covers the real model.
"""

import os
import time

import bpy
import pytest

from conftest import (add_user_objects, needs_backend, pump_until, scene_fingerprint, status)

pytestmark = needs_backend


def generate_fails(**kw):
    """A failed job makes the operator report an ERROR, which bpy.ops raises as RuntimeError in scripts."""
    with pytest.raises(RuntimeError, match="TRELLIS|prompt|image|Image"):
        bpy.ops.trellis.generate(**kw)


def _ctl():
    from trellis_blender import jobs

    return jobs.controller()


def test_generate_sync_imports_both(fake_model):
    bpy.context.scene.trellis.prompt = "a red chair"
    bpy.context.scene.trellis.seed = 7
    assert bpy.ops.trellis.generate() == {"FINISHED"}
    st = status()
    assert st.state == "DONE" and st.error_message == ""
    objs = [bpy.data.objects[n] for n in st.last_objects.split(";")]
    assert sorted(o["trellis_kind"] for o in objs) == ["gaussians", "mesh"]
    for o in objs:
        assert o["trellis_prompt"] == "a red chair" and o["trellis_seed"] == 7
        assert os.path.isfile(o["trellis_sidecar"])
        assert o["trellis_job"] == st.job_id


def test_generate_async_progress_then_result(fake_model):
    bpy.context.scene.trellis.prompt = "slow vase"
    bpy.context.scene.trellis.outputs = "MESH"
    seen = []
    assert bpy.ops.trellis.generate(run_mode="ASYNC") == {"FINISHED"}
    assert _ctl().busy and status().state == "STARTING"
    assert not bpy.ops.trellis.generate.poll()  # one job at a time
    pump_until(lambda: (seen.append((status().stage, status().step)) or status().state == "DONE"), timeout=60)
    assert ("slat", 2) in seen or any(s == "slat" for s, _ in seen)
    objs = status().last_objects.split(";")
    assert len(objs) == 1 and bpy.data.objects[objs[0]]["trellis_kind"] == "mesh"


def test_cancel_leaves_scene_unchanged(fake_model):
    add_user_objects()
    before = scene_fingerprint()
    bpy.context.scene.trellis.prompt = "slow table"
    bpy.ops.trellis.generate(run_mode="ASYNC")
    pump_until(lambda: status().state == "RUNNING" and status().stage == "sparse_structure")
    assert bpy.ops.trellis.cancel() == {"FINISHED"}
    assert status().state == "CANCELLING"
    pump_until(lambda: not _ctl().busy, timeout=20)
    assert status().state == "CANCELLED"
    assert scene_fingerprint() == before
    # the backend survives a cancel and takes the next job
    bpy.context.scene.trellis.prompt = "a lamp"
    assert bpy.ops.trellis.generate() == {"FINISHED"} and status().state == "DONE"


def test_backend_crash_mid_job_reports_and_restarts(fake_model):
    add_user_objects()
    before = scene_fingerprint()
    bpy.context.scene.trellis.prompt = "crash"
    generate_fails()
    st = status()
    assert st.state == "FAILED" and st.error_type == "BackendExited"
    assert "exit code 3" in st.error_message and "restarts on the next job" in st.error_hint
    assert scene_fingerprint() == before
    bpy.context.scene.trellis.prompt = "a mug"
    assert bpy.ops.trellis.generate() == {"FINISHED"} and status().state == "DONE"


def test_backend_killed_while_idle_is_noticed(fake_model):
    bpy.context.scene.trellis.prompt = "a mug"
    assert bpy.ops.trellis.generate() == {"FINISHED"}
    proc = _ctl().client.proc
    proc.kill()
    proc.wait()
    pump_until(lambda: status().error_type == "BackendExited", timeout=10)
    assert status().state == "DONE"  # the finished job stays finished
    assert bpy.ops.trellis.generate() == {"FINISHED"}
    assert _ctl().client.proc.pid != proc.pid


@pytest.mark.parametrize("prompt,etype,hint", [("raise:oom", "OutOfMemoryError", "GPU"),
                                               ("raise:bad", "BadInputError", "image or prompt")])
def test_backend_errors_show_type_message_and_hint(fake_model, prompt, etype, hint):
    add_user_objects()
    before = scene_fingerprint()
    bpy.context.scene.trellis.prompt = prompt
    generate_fails()
    st = status()
    assert st.state == "FAILED" and st.error_type == etype and hint in st.error_hint and st.error_message
    assert scene_fingerprint() == before


def test_bad_model_folder_reports_missing_file(fake_model, tmp_path):
    add_user_objects()
    before = scene_fingerprint()
    bpy.context.preferences.addons["trellis_blender"].preferences.model_dir = str(tmp_path / "nowhere")
    bpy.context.scene.trellis.prompt = "a chair"
    generate_fails()
    st = status()
    assert st.state == "FAILED" and st.error_type == "MissingFileError" and "pipeline.json" in st.error_message
    assert st.error_hint
    assert scene_fingerprint() == before


def test_bad_interpreter_is_a_clear_error(fake_model, tmp_path):
    bpy.context.preferences.addons["trellis_blender"].preferences.python_path = str(tmp_path / "no-python")
    bpy.context.scene.trellis.prompt = "a chair"
    generate_fails()
    st = status()
    assert st.error_type == "BackendExited" and "does not exist" in st.error_message
    assert "preferences" in st.error_hint


def test_interpreter_without_backend_packages_explains_setup(fake_model, tmp_path):
    import sys

    from trellis_blender import jobs

    ctl = jobs.controller()
    ctl.extra_pythonpath = ()
    # Blender's own Python has no trellis_backend on its path once PYTHONPATH is empty.
    bpy.context.preferences.addons["trellis_blender"].preferences.python_path = sys.executable
    import trellis_blender.core.paths as paths

    saved = paths.backend_pythonpath
    paths.backend_pythonpath = lambda: []
    try:
        bpy.context.scene.trellis.prompt = "a chair"
        generate_fails()
    finally:
        paths.backend_pythonpath = saved
    st = status()
    assert st.error_type == "BackendExited" and "trellis_backend" in st.error_message
    assert "Set up backend" in st.error_hint


def test_input_errors_never_start_a_job(fake_model):
    s = bpy.context.scene.trellis
    s.prompt = ""
    generate_fails()
    assert status().error_type == "BadInput" and "prompt" in status().error_message
    s.image_source, s.image_path = "FILE", "/does/not/exist.png"
    generate_fails()
    assert "not found" in status().error_message
    s.image_source = "DATABLOCK"
    generate_fails()
    assert "Blender image" in status().error_message


def test_image_datablock_is_written_to_png(fake_model):
    img = bpy.data.images.new("cond", 32, 24, alpha=True)
    px = [0.0] * (32 * 24 * 4)
    for i in range(0, len(px), 4):
        px[i:i + 4] = [1.0, 0.5, 0.0, 1.0]
    img.pixels = px
    s = bpy.context.scene.trellis
    s.image_source, s.image, s.prompt = "DATABLOCK", img, ""
    assert bpy.ops.trellis.generate() == {"FINISHED"}
    obj = bpy.data.objects[status().last_objects.split(";")[0]]
    path = obj["trellis_image"]
    assert path.endswith(".png") and os.path.isfile(path)
    reread = bpy.data.images.load(path)
    assert tuple(reread.size) == (32, 24)
    assert abs(reread.pixels[1] - 0.5) < 0.01


def test_generate_timeout_cancels(fake_model):
    bpy.context.scene.trellis.prompt = "slow thing"
    t0 = time.time()
    assert bpy.ops.trellis.generate(timeout=0.5) == {"CANCELLED"}
    assert status().state == "CANCELLED" and time.time() - t0 < 10


def test_unregister_stops_backend(fake_model, addon_module):
    bpy.context.scene.trellis.prompt = "a mug"
    bpy.ops.trellis.generate()
    proc = _ctl().client.proc
    assert proc.poll() is None
    addon_module.unregister()
    try:
        assert proc.wait(10) == 0  # clean shutdown, not a kill
    finally:
        addon_module.register()


def test_import_failure_fails_the_job_and_leaves_the_scene(fake_model, monkeypatch):
    """A result that cannot be imported ends the job as ImportFailed (through the Job's own apply)."""
    from trellis_blender import importers

    def broken(context, files, settings):
        raise ValueError("unreadable file")

    monkeypatch.setattr(importers, "import_result", broken)
    add_user_objects()
    before = scene_fingerprint()
    bpy.context.scene.trellis.prompt = "a chair"
    generate_fails()
    job = _ctl().job
    assert job.state == "failed" and job.error_type == "ImportFailed" and "unreadable file" in job.error_message
    st = status()
    assert st.state == "FAILED" and st.error_type == "ImportFailed" and ".glb" in st.error_hint
    assert scene_fingerprint() == before
