"""Several images per object: the panel's list (add / remove, files and Blender images, the mode) reaches
the backend's generate request, through the real server process (test-double pipeline)."""

import os

import bpy
import numpy as np
import pytest

from conftest import needs_backend, status

pytestmark = needs_backend


def _image(name, color, path=None):
    img = bpy.data.images.new(name, 32, 32, alpha=True)
    px = np.zeros((32, 32, 4), np.float32)
    px[8:24, 8:24] = color
    img.pixels.foreach_set(px.ravel())
    if path:
        img.filepath_raw, img.file_format = path, "PNG"
        img.save()
    return img


def test_image_list_round_trip_to_the_backend(fake_model, tmp_path):
    from trellis_blender import jobs

    s = bpy.context.scene.trellis
    s.image_source, s.outputs, s.multi_image_mode = "MULTI", "MESH", "multidiffusion"
    front = str(tmp_path / "front.png")
    _image("front", (0.9, 0.1, 0.1, 1.0), front)
    side = _image("side (in memory)", (0.1, 0.1, 0.9, 1.0))
    for _ in range(3):
        assert bpy.ops.trellis.image_add() == {"FINISHED"}
    assert len(s.images) == 3 and s.images_index == 2
    s.images[0].path = front
    s.images[1].source, s.images[1].image = "DATABLOCK", side
    s.images_index = 2
    assert bpy.ops.trellis.image_remove() == {"FINISHED"}  # the empty third row
    assert len(s.images) == 2

    assert bpy.ops.trellis.generate() == {"FINISHED"}, status().error_message
    job = jobs.controller().job
    sent = job.params["image"]
    assert isinstance(sent, list) and len(sent) == 2 and sent[0] == front
    assert sent[1] != front and os.path.isfile(sent[1])  # the datablock was written out for the backend
    assert job.params["multi_image_mode"] == "multidiffusion"
    assert job.meta["image"] == sent and job.meta["multi_image_mode"] == "multidiffusion"  # what the backend got
    (obj,) = [bpy.data.objects[n] for n in status().last_objects.split(";")]
    assert obj["trellis_image"] == ";".join(sent) and obj.name.startswith("TRELLIS front")


def test_one_image_in_the_list_is_a_plain_image_request(fake_model, tmp_path):
    from trellis_blender import jobs

    s = bpy.context.scene.trellis
    s.image_source, s.outputs = "MULTI", "MESH"
    bpy.ops.trellis.image_add()
    s.images[0].path = str(tmp_path / "only.png")
    _image("only", (0.5, 0.5, 0.5, 1.0), s.images[0].path)
    assert bpy.ops.trellis.generate() == {"FINISHED"}, status().error_message
    params = jobs.controller().job.params
    assert params["image"] == s.images[0].path and "multi_image_mode" not in params


def test_empty_or_broken_list_is_refused_before_any_job(fake_model, tmp_path):
    s = bpy.context.scene.trellis
    s.image_source = "MULTI"
    s.images.clear()
    with pytest.raises(RuntimeError, match="Add images"):  # an operator reporting an error raises in scripts
        bpy.ops.trellis.generate()
    assert status().error_type == "BadInput" and "Add images" in status().error_message
    bpy.ops.trellis.image_add()
    s.images[0].path = str(tmp_path / "missing.png")
    with pytest.raises(RuntimeError, match="Image file not found"):
        bpy.ops.trellis.generate()
    assert "Image file not found" in status().error_message
