"""Send to batch: the panel's settings as one job line of a jobs file for the backend's ``batch`` command.

A technical director collects the looks an artist settled on in Blender into ``jobs.jsonl`` and
runs them at scale (every GPU of a machine or a Ray cluster) with
``python -m trellis_backend batch --model MODEL --jobs jobs.jsonl --out DIR``.
"""

import json
import os

import bpy
from bpy.props import StringProperty
from bpy_extras.io_utils import ExportHelper

FORMATS = {"BOTH": "glb,ply", "MESH": "glb", "GAUSSIANS": "ply"}


def batch_job(settings, inputs_dir):
    """The jobs-file entry (a dict) for the panel settings; ValueError with a user-facing message.

    An image from a Blender datablock is saved as a PNG into `inputs_dir` (beside the jobs file),
    since the batch runs outside Blender.
    """
    job = {}
    if settings.image_source == "FILE":
        path = bpy.path.abspath(settings.image_path) if settings.image_path else ""
        if not path or not os.path.isfile(path):
            raise ValueError("Image file not found: %s" % (path or "(none chosen)"))
        job["image"] = os.path.normpath(path)
    elif settings.image_source == "DATABLOCK":
        if settings.image is None:
            raise ValueError("Choose a Blender image, or switch the condition to 'Prompt only'.")
        from .image_input import image_file_for_backend

        name = "%s_%s" % (bpy.path.clean_name(settings.image.name), os.urandom(3).hex())
        job["image"] = image_file_for_backend(settings.image, inputs_dir, name)
    elif settings.prompt.strip():
        job["prompt"] = settings.prompt.strip()
    else:
        raise ValueError("Type a prompt, or choose an image as the condition.")
    job["seed"] = settings.seed
    job["formats"] = FORMATS[settings.outputs]
    if settings.custom_sampling:
        job.update(ss_steps=settings.ss_steps, steps=settings.slat_steps, ss_cfg=round(settings.ss_cfg, 4),
                   cfg=round(settings.slat_cfg, 4))
    return job


class TRELLIS_OT_send_to_batch(bpy.types.Operator, ExportHelper):
    """Append the current settings (prompt or image, seed, sampling, outputs) as one job to a jobs file
    for batch generation outside Blender (python -m trellis_backend batch --jobs FILE)"""

    bl_idname = "trellis.send_to_batch"
    bl_label = "Send to batch"
    filename_ext = ".jsonl"
    filter_glob: StringProperty(default="*.jsonl", options={"HIDDEN"})

    def execute(self, context):
        path = bpy.path.abspath(self.filepath)
        try:
            job = batch_job(context.scene.trellis, os.path.join(os.path.dirname(path), "inputs"))
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(job) + "\n")
        with open(path, encoding="utf-8") as f:
            count = sum(1 for line in f if line.strip())
        self.report({"INFO"}, "TRELLIS: %d job(s) in %s; run: python -m trellis_backend batch --model MODEL "
                              "--jobs \"%s\" --out DIR" % (count, path, path))
        return {"FINISHED"}


register, unregister = bpy.utils.register_classes_factory((TRELLIS_OT_send_to_batch,))
