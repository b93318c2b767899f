"""Job controller on Blender's main thread: start, pump events, import results.

The backend client's threads only fill a queue; ``pump`` (called by a
``bpy.app.timers`` function, or in a blocking loop in background mode) applies
events to the protocol Job, mirrors it into ``WindowManager.trellis_status``
and imports files only after a ``result`` -- so a failed, cancelled or crashed
job never touches the scene.
"""

import time

import bpy

from . import importers, preferences
from .core import backend_setup, paths, requests
from .core import protocol as P
from .core.client import EXITED, BackendClient, BackendConfig, BackendUnavailable, explain_exit
from .core.job_watch import JobWatch
from .properties import set_status

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
        self.watch = None             # core.job_watch.JobWatch of the live job: its deadlines
        self.watch_options = {}       # JobWatch keyword overrides (tests: short deadlines)
        self.on_finish = []           # callables(job, objects) for tests and scripts
        self.extra_backend_args = ()  # appended to the server command line (tests, power users)
        self.extra_pythonpath = ()    # appended to the backend's PYTHONPATH
        self._timer_on = False
        self._tick_fn = self._tick  # one bound method, so timers.is_registered/unregister can find it
        # Main-thread time of the last job: the longest event-pump tick and the import (tests check
        # that Blender's UI is never held for longer than the import itself).
        self.stats = {"max_pump_s": 0.0, "import_s": 0.0}

    # -- backend -------------------------------------------------------------
    def backend_config(self, context, params=None):
        """The backend process this request needs (another model folder means another process)."""
        prefs = preferences.get_prefs(context)
        return BackendConfig(
            python=preferences.resolved_python(prefs),
            model=requests.model_for(preferences.configured_model(prefs), params or {}),
            models_root=preferences.resolved_models_root(prefs),
            device=prefs.device if prefs else "auto",
            pythonpath=tuple(paths.backend_pythonpath()) + tuple(self.extra_pythonpath),
            extra_args=self.extra_backend_args,
        )

    def _get_client(self):
        if self.client is None:
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
        self.watch = JobWatch(job, **self.watch_options)
        self.stats = {"max_pump_s": 0.0, "import_s": 0.0}
        set_status(_status(context), "STARTING", error=(), job_id=job.id, stage="starting backend", step=0, total=0,
                   message="")
        config = self.backend_config(context, params)
        if not config.model:
            return self._fail("MissingModel", "No model folder is configured and this build has "
                              "no embedded model.", "Choose a TRELLIS model folder in the add-on preferences.")
        try:
            client = self._get_client()
            client.ensure(config)
            self.watch.heard()  # the deadlines start once the process runs
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
        if self.watch is not None:
            self.watch.cancel_sent()
        set_status(_status(), "CANCELLING")
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
        self._check_deadlines()
        return self.busy

    def _check_deadlines(self):
        """End a job whose backend went silent or ignores a cancel (core.job_watch); ping a quiet one."""
        watch, job = self.watch, self.job
        if watch is None or job is None or job.finished:
            return
        watch.output_seen(self.client.last_output)
        overdue = watch.overdue()
        if overdue is not None:
            self.client.stop(timeout=1)  # hung or deaf: replace the process on the next job
            self._finish_with(overdue)
        elif watch.wants_ping():
            try:
                self.client.send(P.request(P.PING))
            except BackendUnavailable:
                pass  # its exit event ends the job

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
                set_status(_status(), error=(P.ERR_BACKEND_EXITED, message, hint))
            print("TRELLIS backend exited (code %s):\n%s" % (event.get("returncode"), event.get("stderr", "")))
            return
        if self.watch is not None:
            self.watch.heard(event)
        if etype in (P.READY, P.PONG):
            return
        if job is not None and event.get("id") is None and self.watch is not None and self.watch.owns(event):
            self._finish_with(self.watch.adopt(event))  # the backend could not read the job's request line
            return
        if job is None or event.get("id") != job.id or job.finished:
            if etype == P.ERROR:
                print("TRELLIS backend: %s: %s" % (event.get("error_type"), event.get("message")))
            return
        if etype == P.PROGRESS:
            job.apply(event)
            set_status(_status(), "CANCELLING" if job.state == P.CANCELLING else "RUNNING", stage=job.stage,
                       step=job.step, total=job.total, message=job.message)
        else:
            self._finish_with(event)

    def _finish_with(self, event):
        """Terminal event: import on result, record the error otherwise; never touch the scene on failure."""
        job, status = self.job, _status()
        if job.finished:
            return
        objects = []
        if event.get("type") == P.RESULT:
            event, objects = self._import(event)
        job.apply(event)  # the job's state and error fields change only here, through the protocol's Job
        state = {P.DONE: "DONE", P.CANCELLED: "CANCELLED"}.get(job.state, "FAILED")
        set_status(status, state, error=(job.error_type, job.error_message, job.error_hint))
        if job.state == P.DONE:
            set_status(status, stage="done", message="Imported %d object(s)" % len(objects), step=1, total=1,
                       last_objects=";".join(o.name for o in objects))
            if objects and not bpy.app.background and not self.job_settings.get("defer_undo"):
                try:
                    bpy.ops.ed.undo_push(message="TRELLIS: import result")
                except RuntimeError:
                    pass
        for callback in list(self.on_finish):
            callback(job, objects)
        _redraw()

    def _import(self, event):
        """Import a result's files: (event, objects), or an ImportFailed error event when it cannot be imported."""
        t0 = time.perf_counter()
        files = dict(event.get("files") or {})
        try:
            return event, importers.import_result(bpy.context, files, self.job_settings)
        except Exception as exc:
            import traceback

            traceback.print_exc()
            return P.error_event(
                event.get("id"), "ImportFailed", "Importing the result failed: %s: %s" % (type(exc).__name__, exc),
                "The generated files are kept in %s; import them by hand or report a bug."
                % ", ".join(sorted(files.values()))), []
        finally:
            self.stats["import_s"] = time.perf_counter() - t0

    def _fail(self, error_type, message, hint):
        self._finish_with(P.error_event(self.job.id, error_type, message, hint))
        return self.job

    def reject(self, context, message, hint):
        """Show a request the operator refused before any job started (bad input) as a failure."""
        set_status(_status(context), "FAILED", error=("BadInput", message, hint))

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
        _redraw()
        if live or backend_setup.is_running():
            return TIMER_INTERVAL
        self._timer_on = False
        return None

    # -- backend environment setup ---------------------------------------------
    def start_setup(self, base_python, venv_dir, requirements=None, verify=None, wait=False):
        """Start 'Set up backend' (core.backend_setup); the timer keeps the preferences redrawing."""
        setup = backend_setup.start(base_python, venv_dir, requirements=requirements, verify=verify)
        if wait:
            setup.wait()
        else:
            self._ensure_timer()
        return setup

    # -- teardown ------------------------------------------------------------
    def shutdown(self):
        backend_setup.cancel()
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
