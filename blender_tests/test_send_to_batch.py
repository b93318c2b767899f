"""Send to batch: the panel settings become jobs-file lines that the backend's batch command reads."""

import json
import os

import bpy

from conftest import needs_backend, run_backend

READ_JOBS = """
import json, sys
from trellis_backend.batch import load_jobs
print(json.dumps([j.to_dict() for j in load_jobs(sys.argv[1])]))
"""


def _image(tmp_path):
    img = bpy.data.images.new("shot", 8, 8, alpha=True)
    img.pixels.foreach_set([0.5] * (8 * 8 * 4))
    return img


@needs_backend
def test_send_to_batch_appends_lines_the_batch_command_reads(addon, tmp_path):
    settings = bpy.context.scene.trellis
    jobs_file = str(tmp_path / "level3.jsonl")
    settings.prompt, settings.seed, settings.outputs = "a red chair", 4, "MESH"
    assert bpy.ops.trellis.send_to_batch(filepath=jobs_file) == {"FINISHED"}

    settings.image_source, settings.image = "DATABLOCK", _image(tmp_path)
    settings.custom_sampling, settings.ss_steps, settings.slat_steps, settings.slat_cfg = True, 9, 11, 2.5
    settings.outputs, settings.seed = "BOTH", 1
    assert bpy.ops.trellis.send_to_batch(filepath=jobs_file) == {"FINISHED"}

    lines = [json.loads(line) for line in open(jobs_file)]
    assert lines[0] == {"prompt": "a red chair", "seed": 4, "formats": "glb"}
    assert lines[1]["image"].startswith(str(tmp_path / "inputs")) and os.path.isfile(lines[1]["image"])
    assert (lines[1]["ss_steps"], lines[1]["steps"], lines[1]["cfg"], lines[1]["formats"]) == (9, 11, 2.5, "glb,ply")

    jobs = json.loads(run_backend(READ_JOBS, jobs_file).strip().splitlines()[-1])
    assert [j.get("prompt") for j in jobs] == ["a red chair", None]
    assert jobs[0]["seed"] == 4 and jobs[0]["formats"] == "mesh" and jobs[1]["steps"] == 11


def test_send_to_batch_refuses_empty_settings(addon, tmp_path):
    jobs_file = tmp_path / "jobs.jsonl"
    bpy.context.scene.trellis.prompt = "  "
    try:
        bpy.ops.trellis.send_to_batch(filepath=str(jobs_file))
    except RuntimeError as exc:  # operator errors surface as RuntimeError in background mode
        assert "Type a prompt" in str(exc)
    assert not jobs_file.exists()
