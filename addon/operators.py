"""Operators: Generate, Cancel, Set up backend.

Interactive Blender: Generate returns at once and a timer applies events.
Background mode (``blender -b``, the bpy module): it blocks until the job is
done, so scripts can simply call ``bpy.ops.trellis.generate()``.
"""

import os
import re
import time

import bpy
from bpy.props import EnumProperty, FloatProperty, StringProperty

from . import jobs, paths, preferences
from . import protocol as P

RUN_MODES = [
    ("AUTO", "Auto", "Block in background mode, run in the background otherwise"),
    ("SYNC", "Wait", "Block until the job is done"),
    ("ASYNC", "Don't wait", "Return at once; a timer imports the result"),
]


def _wait(mode):
    return bpy.app.background if mode == "AUTO" else mode == "SYNC"


def _slug(text):
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:32].lower() or "asset"


def build_request(context, settings, job_name):
    """Turn the panel settings into generate params; raises ValueError with a user-facing message."""
    prefs = preferences.get_prefs(context)
    out_dir = preferences.resolved_output_dir(prefs)
    params = {"seed": settings.seed, "output_dir": out_dir, "name": job_name,
              "formats": {"BOTH": ["mesh", "gaussians"], "MESH": ["mesh"], "GAUSSIANS": ["gaussians"]}[settings.outputs]}
    if settings.prompt.strip():
        params["prompt"] = settings.prompt.strip()
    if settings.image_source == "FILE":
        path = bpy.path.abspath(settings.image_path) if settings.image_path else ""
        if not path or not os.path.isfile(path):
            raise ValueError("Image file not found: %s" % (path or "(none chosen)"))
        params["image"] = os.path.normpath(path)
    elif settings.image_source == "DATABLOCK":
        if settings.image is None:
            raise ValueError("Choose a Blender image, or switch the condition to 'Prompt only'.")
        from .image_input import image_file_for_backend

        params["image"] = image_file_for_backend(settings.image, os.path.join(out_dir, "inputs"), job_name)
    if settings.custom_sampling:
        params.update(ss_steps=settings.ss_steps, slat_steps=settings.slat_steps,
                      ss_cfg=settings.ss_cfg, slat_cfg=settings.slat_cfg)
    problems = P.validate_job_params(P.GENERATE, params)
    if problems:
        raise ValueError("; ".join(problems).replace("give a prompt", "Type a prompt"))
    return params


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
        ctl = jobs.controller()
        job_name = "%s_s%d_%s" % (_slug(settings.prompt or os.path.basename(settings.image_path or "") or
                                        (settings.image.name if settings.image else "")),
                                  settings.seed, time.strftime("%Y%m%d-%H%M%S"))
        try:
            params = build_request(context, settings, job_name)
        except ValueError as exc:
            status.state, status.error_type, status.error_message = "FAILED", "BadInput", str(exc)
            status.error_hint = "Fix the input in the TRELLIS panel and press Generate again."
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        snapshot = jobs.settings_snapshot(settings, params)
        wait = _wait(self.run_mode)
        job = ctl.start(context, P.GENERATE, params, snapshot, wait=wait, timeout=self.timeout or None)
        if not wait and not job.finished:
            self.report({"INFO"}, "TRELLIS: generating...")
            return {"FINISHED"}
        if job.state == P.DONE:
            self.report({"INFO"}, "TRELLIS: imported %s" % status.last_objects.replace(";", ", "))
            return {"FINISHED"}
        self.report({"WARNING"} if job.state == P.CANCELLED else {"ERROR"},
                    "TRELLIS: %s: %s %s" % (job.error_type, job.error_message, job.error_hint))
        return {"CANCELLED"}


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
                                                  verify=verify, wait=_wait(self.run_mode))
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


CLASSES = (TRELLIS_OT_generate, TRELLIS_OT_cancel, TRELLIS_OT_setup_backend)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister():
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
