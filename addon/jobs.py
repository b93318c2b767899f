"""Job controller on Blender's main thread: start, pump events, import results.

The backend client's threads only fill a queue; ``pump`` (called by a
``bpy.app.timers`` function, or in a blocking loop in background mode) applies
events to the protocol Job, mirrors it into ``WindowManager.trellis_status``
and imports files only after a ``result`` -- so a failed, cancelled or crashed
job never touches the scene.
"""

import json
import time

import bpy

from . import protocol as P
from .backend_setup import BackendSetup
from .client import EXITED, BackendClient, BackendConfig, BackendUnavailable, explain_exit

TIMER_INTERVAL = 0.1


def _status(context=None):
    wm = (context or bpy.context).window_manager
    return wm.trellis_status if wm is not None else None


def _redraw():
    wm = bpy.context.window_manager
    for window in (wm.windows if wm else ()):
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "PREFERENCES"):
                area.tag_redraw()


class JobController:
    def __init__(self):
        self.client = None
        self.job = None               # protocol.Job of the current/last job
        self.job_settings = {}        # what the objects of this job will remember
        self.on_finish = []           # callables(job, objects) for tests and scripts
        self.setup = None             # BackendSetup of the last 'Set up backend'
        self.extra_backend_args = ()  # appended to the server command line (tests, power users)
        self.extra_pythonpath = ()    # appended to the backend's PYTHONPATH
        self._timer_on = False
        self._tick_fn = self._tick  # one bound method, so timers.is_registered/unregister can find it
        # Main-thread time of the last job: the longest event-pump tick and the import (tests check
        # that Blender's UI is never held for longer than the import itself).
        self.stats = {"max_pump_s": 0.0, "import_s": 0.0}

    # -- backend -------------------------------------------------------------
    def backend_config(self, context):
        from . import paths, preferences

        prefs = preferences.get_prefs(context)
        return BackendConfig(
            python=preferences.resolved_python(prefs),
            model=preferences.resolved_model(prefs),
            models_root=bpy.path.abspath(prefs.models_root) if prefs and prefs.models_root else None,
            device=prefs.device if prefs else "auto",
            pythonpath=tuple(paths.backend_pythonpath()) + tuple(self.extra_pythonpath),
            extra_args=self.extra_backend_args,
        )

    def _get_client(self):
        if self.client is None:
            from . import preferences

            self.client = BackendClient(log_path=preferences.backend_log_path())
        return self.client

    @property
    def busy(self):
        return self.job is not None and not self.job.finished

    # -- job lifecycle -------------------------------------------------------
    def start(self, context, rtype, params, settings, wait=False, timeout=None):
        """Send a job; returns the Job (already finished if it could not start)."""
        if self.busy:
            raise RuntimeError("A TRELLIS job is already running; cancel it first.")
        job = P.Job(P.new_id(rtype), rtype, params)
        self.job, self.job_settings = job, dict(settings, job_id=job.id)
        self.stats = {"max_pump_s": 0.0, "import_s": 0.0}
        status = _status(context)
        status.job_id, status.state = job.id, "STARTING"
        status.stage, status.step, status.total = "starting backend", 0, 0
        status.message = ""
        status.error_type = status.error_message = status.error_hint = ""
        config = self.backend_config(context)
        if not config.model:
            return self._fail("MissingModel", "No model folder is configured and this build has "
                              "no embedded model.", "Choose a TRELLIS model folder in the add-on preferences.")
        try:
            client = self._get_client()
            client.ensure(config)
            client.send({"id": job.id, "type": rtype, "params": params})
        except BackendUnavailable as exc:
            return self._fail(P.ERR_BACKEND_EXITED, str(exc), exc.hint)
        if wait:
            self.wait(timeout)
        else:
            self._ensure_timer()
        return job

    def cancel(self):
        """Cooperative cancel; if the backend is already gone the job just ends as cancelled."""
        job = self.job
        if job is None or job.finished:
            return False
        job.request_cancel()
        _status().state = "CANCELLING"
        try:
            self.client.send(P.request(P.CANCEL, {"job_id": job.id}))
        except (BackendUnavailable, AttributeError):
            self._finish_with(P.error_event(job.id, P.ERR_CANCELLED, "Cancelled.", ""))
        return True

    def wait(self, timeout=None):
        """Block until the job ends (background mode). Ctrl-C or the timeout cancels the job, never the scene."""
        deadline = time.time() + timeout if timeout else None
        cancelled_at = None
        while self.busy:
            try:
                self.pump(timeout=0.25)
            except KeyboardInterrupt:
                cancelled_at = cancelled_at or time.time()
                self.cancel()
            now = time.time()
            if deadline and now > deadline and cancelled_at is None and self.busy:
                cancelled_at = now
                self.cancel()
            if cancelled_at and now - cancelled_at > 30 and self.busy:
                self.client.stop(timeout=5)  # the backend ignores the cancel: replace it
                self._finish_with(P.error_event(self.job.id, "Timeout", "The job did not stop after a cancel.",
                                                "The backend was restarted; try again with fewer steps."))
        return self.job

    def pump(self, timeout=0.0):
        """Apply queued events on the main thread; returns True while a job is live."""
        client = self.client
        if client is None:
            return self.busy
        event = client.get_event(timeout)
        while event is not None:
            self._handle(event)
            event = client.get_event()
        return self.busy

    def _handle(self, event):
        client, job = self.client, self.job
        etype = event.get("type")
        if event.get("_gen") != client.generation:
            return  # left over from a backend we already replaced
        if etype == EXITED:
            if event.get("expected"):
                return
            message, hint = explain_exit(event.get("returncode"), event.get("stderr", ""))
            if job is not None and not job.finished:
                self._finish_with(P.error_event(job.id, P.ERR_BACKEND_EXITED, message, hint))
            else:
                status = _status()
                status.error_type, status.error_message, status.error_hint = P.ERR_BACKEND_EXITED, message, hint
            print("TRELLIS backend exited (code %s):\n%s" % (event.get("returncode"), event.get("stderr", "")))
            return
        if etype in (P.READY, P.PONG):
            return
        if job is None or event.get("id") != job.id or job.finished:
            if etype == P.ERROR:
                print("TRELLIS backend: %s: %s" % (event.get("error_type"), event.get("message")))
            return
        if etype == P.PROGRESS:
            job.apply(event)
            status = _status()
            if status.state != "CANCELLING":
                status.state = "RUNNING"
            status.stage, status.step, status.total = job.stage, job.step, job.total
            status.message = job.message
        else:
            self._finish_with(event)

    def _finish_with(self, event):
        """Terminal event: import on result, record the error otherwise; never touch the scene on failure."""
        from . import importers

        job, status = self.job, _status()
        try:
            job.apply(event)
        except P.ProtocolError:
            return
        objects = []
        if job.state == P.DONE:
            t0 = time.perf_counter()
            try:
                objects = importers.import_result(bpy.context, job.files, self.job_settings)
            except Exception as exc:
                import traceback

                traceback.print_exc()
                job.state, job.error_type = P.FAILED, "ImportFailed"
                job.error_message = "Importing the result failed: %s: %s" % (type(exc).__name__, exc)
                job.error_hint = "The generated files are kept in %s; import them by hand or report a bug." % (
                    ", ".join(sorted(job.files.values())))
            self.stats["import_s"] = time.perf_counter() - t0
        status.state = {P.DONE: "DONE", P.CANCELLED: "CANCELLED"}.get(job.state, "FAILED")
        status.error_type, status.error_message, status.error_hint = job.error_type, job.error_message, job.error_hint
        if job.state == P.DONE:
            status.stage, status.message = "done", "Imported %d object(s)" % len(objects)
            status.step = status.total = 1
            status.last_objects = ";".join(o.name for o in objects)
            if objects and not bpy.app.background and not self.job_settings.get("defer_undo"):
                try:
                    bpy.ops.ed.undo_push(message="TRELLIS: import result")
                except RuntimeError:
                    pass
        for callback in list(self.on_finish):
            callback(job, objects)
        _redraw()

    def _fail(self, error_type, message, hint):
        self._finish_with(P.error_event(self.job.id, error_type, message, hint))
        return self.job

    # -- timer ---------------------------------------------------------------
    def _ensure_timer(self):
        if not self._timer_on:
            self._timer_on = True
            bpy.app.timers.register(self._tick_fn, first_interval=TIMER_INTERVAL, persistent=True)

    def _tick(self):
        t0 = time.perf_counter()
        try:
            live = self.pump()
            if live:
                self.stats["max_pump_s"] = max(self.stats["max_pump_s"], time.perf_counter() - t0)
        except Exception:
            import traceback

            traceback.print_exc()
            live = self.busy
        setup_running = self.setup is not None and self.setup.state == "running"
        _redraw()
        if live or setup_running:
            return TIMER_INTERVAL
        self._timer_on = False
        return None

    # -- backend environment setup ---------------------------------------------
    def start_setup(self, base_python, venv_dir, requirements=None, verify=None, wait=False):
        if self.setup is not None and self.setup.state == "running":
            raise RuntimeError("Backend setup is already running.")
        kwargs = {} if verify is None else {"verify": verify}
        self.setup = BackendSetup(base_python, venv_dir, requirements=requirements, **kwargs)
        self.setup.start()
        if wait:
            self.setup.wait()
        else:
            self._ensure_timer()
        return self.setup

    # -- teardown ------------------------------------------------------------
    def shutdown(self):
        if self.setup is not None:
            self.setup.cancel()
        if self.client is not None:
            self.client.stop()
        if bpy.app.timers.is_registered(self._tick_fn):
            bpy.app.timers.unregister(self._tick_fn)
        self._timer_on = False


_controller = None


def controller():
    global _controller
    if _controller is None:
        _controller = JobController()
    return _controller


def shutdown_controller():
    global _controller
    if _controller is not None:
        _controller.shutdown()
    _controller = None


def setup_state():
    ctl = _controller
    return ctl.setup.snapshot() if ctl is not None and ctl.setup is not None else {}


def settings_snapshot(settings, params):
    """What each generated object remembers (for re-generation and region edits)."""
    return {"prompt": params.get("prompt") or "", "image": params.get("image") or "", "seed": params.get("seed", 0),
            "params": json.dumps(params, sort_keys=True), "outputs": settings.outputs}
