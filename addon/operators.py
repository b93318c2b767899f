"""Operators: Generate, Cancel, Set up backend (see operator_support for how they run)."""

import os

import bpy
from bpy.props import EnumProperty, FloatProperty, StringProperty

from . import jobs, preferences
from .core import paths, requests
from .core import protocol as P
from .operator_support import RUN_MODES, reject, report_failure, should_wait


def condition_label(settings):
    """What names the job: the prompt, else the image's file or datablock name."""
    if settings.prompt.strip():
        return settings.prompt
    if settings.image_source == "FILE":
        return os.path.basename(settings.image_path or "")
    if settings.image_source == "DATABLOCK" and settings.image is not None:
        return settings.image.name
    if settings.image_source == "MULTI" and len(settings.images):
        first = settings.images[0]
        return first.image.name if first.source == "DATABLOCK" and first.image else os.path.basename(first.path)
    return ""


def image_file(source, path, image, out_dir, name):
    """A path the backend can read for one image choice; raises ValueError naming what is missing."""
    if source == "FILE":
        path = bpy.path.abspath(path) if path else ""
        if not path or not os.path.isfile(path):
            raise ValueError("Image file not found: %s" % (path or "(none chosen)"))
        return os.path.normpath(path)
    if image is None:
        raise ValueError("Choose a Blender image, or switch the condition to 'Prompt only'.")
    from .image_input import image_file_for_backend

    return image_file_for_backend(image, os.path.join(out_dir, "inputs"), name)


def several_images(settings, out_dir, job_name):
    """The 'Several images' list as backend paths (one string when the list holds one image)."""
    if not len(settings.images):
        raise ValueError("Add images to the list (the + button), or switch the condition to 'Prompt only'.")
    paths = [image_file(item.source, item.path, item.image, out_dir, "%s_%d" % (job_name, i))
             for i, item in enumerate(settings.images)]
    return paths if len(paths) > 1 else paths[0]


def build_request(context, settings, job_name):
    """Turn the panel settings into generate params; raises ValueError with a user-facing message."""
    prefs = preferences.get_prefs(context)
    out_dir = preferences.resolved_output_dir(prefs)
    params = {"seed": settings.seed, "output_dir": out_dir, "name": job_name,
              "formats": requests.FORMATS_BY_OUTPUT[settings.outputs]}
    if settings.prompt.strip():
        params["prompt"] = settings.prompt.strip()
    if settings.image_source in ("FILE", "DATABLOCK"):
        params["image"] = image_file(settings.image_source, settings.image_path, settings.image, out_dir, job_name)
    elif settings.image_source == "MULTI":
        params["image"] = several_images(settings, out_dir, job_name)
        if isinstance(params["image"], list):
            params["multi_image_mode"] = settings.multi_image_mode
    params.update(requests.sampling_overrides(settings))
    return requests.check(P.GENERATE, params)


class TRELLIS_OT_generate(bpy.types.Operator):
    """Generate a 3D asset from the image or prompt with the TRELLIS backend"""

    bl_idname = "trellis.generate"
    bl_label = "Generate"
    bl_options = {"REGISTER"}

    run_mode: EnumProperty(items=RUN_MODES, default="AUTO", options={"SKIP_SAVE"})
    timeout: FloatProperty(default=0.0, min=0.0, options={"HIDDEN", "SKIP_SAVE"},
                           description="Background mode: cancel the job after this many seconds (0: never)")

    @classmethod
    def poll(cls, context):
        return not jobs.controller().busy

    def execute(self, context):
        settings = context.scene.trellis
        status = context.window_manager.trellis_status
        job_name = requests.job_name(condition_label(settings), settings.seed)
        try:
            params = build_request(context, settings, job_name)
        except ValueError as exc:
            return reject(self, context, str(exc), "Fix the input in the TRELLIS panel and press Generate again.")
        wait = should_wait(self.run_mode)
        job = jobs.controller().start(context, P.GENERATE, params, requests.settings_snapshot(settings.outputs, params),
                                      wait=wait, timeout=self.timeout or None)
        if not wait and not job.finished:
            self.report({"INFO"}, "TRELLIS: generating...")
            return {"FINISHED"}
        if job.state == P.DONE:
            self.report({"INFO"}, "TRELLIS: imported %s" % status.last_objects.replace(";", ", "))
            return {"FINISHED"}
        return report_failure(self, job, status)


class TRELLIS_OT_image_add(bpy.types.Operator):
    """Add an image of the object to the list (a file; switch the row to 'Blender image' for a datablock)"""

    bl_idname = "trellis.image_add"
    bl_label = "Add image"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        settings = context.scene.trellis
        settings.images.add()
        settings.images_index = len(settings.images) - 1
        return {"FINISHED"}


class TRELLIS_OT_image_remove(bpy.types.Operator):
    """Remove the selected image from the list"""

    bl_idname = "trellis.image_remove"
    bl_label = "Remove image"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return len(context.scene.trellis.images) > 0

    def execute(self, context):
        settings = context.scene.trellis
        settings.images.remove(min(settings.images_index, len(settings.images) - 1))
        settings.images_index = max(0, min(settings.images_index, len(settings.images) - 1))
        return {"FINISHED"}


class TRELLIS_OT_cancel(bpy.types.Operator):
    """Stop the running TRELLIS job at its next step (nothing in the scene changes)"""

    bl_idname = "trellis.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        return jobs.controller().busy

    def execute(self, context):
        jobs.controller().cancel()
        return {"FINISHED"}


class TRELLIS_OT_setup_backend(bpy.types.Operator):
    """Create a Python environment for the backend and install its requirements with pip"""

    bl_idname = "trellis.setup_backend"
    bl_label = "Set up backend"

    run_mode: EnumProperty(items=RUN_MODES, default="AUTO", options={"SKIP_SAVE"})
    requirements: StringProperty(options={"HIDDEN", "SKIP_SAVE"},
                                 description="requirements.txt to install instead of the bundled one")
    verify: StringProperty(options={"HIDDEN", "SKIP_SAVE"}, default="*",
                           description="Comma-separated modules to import afterwards ('*': the defaults)")
    venv_dir: StringProperty(options={"HIDDEN", "SKIP_SAVE"}, description="Where to create the environment")

    def execute(self, context):
        prefs = preferences.get_prefs(context)
        base = paths.find_base_python(prefs.setup_python if prefs else "")
        venv_dir = self.venv_dir or paths.setup_venv_dir(preferences.data_dir())
        verify = None if self.verify == "*" else tuple(m.strip() for m in self.verify.split(",") if m.strip())
        try:
            setup = jobs.controller().start_setup(base, venv_dir, requirements=self.requirements or None,
                                                  verify=verify, wait=should_wait(self.run_mode))
        except RuntimeError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if setup.state == "failed":
            self.report({"ERROR"}, "%s %s" % (setup.error, setup.hint))
            return {"CANCELLED"}
        if setup.state == "done" and prefs and prefs.python_path and \
                os.path.normpath(prefs.python_path) != os.path.normpath(setup.python):
            self.report({"WARNING"}, "Backend set up in %s, but the preferences name another interpreter; clear "
                                     "'Backend Python' to use it." % setup.python)
        return {"FINISHED"}


register, unregister = bpy.utils.register_classes_factory((TRELLIS_OT_generate, TRELLIS_OT_cancel,
                                                            TRELLIS_OT_image_add, TRELLIS_OT_image_remove,
                                                            TRELLIS_OT_setup_backend))
