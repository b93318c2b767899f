"""One-job-at-a-time runner: lazy pipeline load, worker thread, cooperative cancel.

The request loop must never block on a job (it has to hear ``cancel``), so
each job runs in its own daemon thread; this class owns the only pipeline and
the only live job, and emits every event through ``send``.
"""

import json
import logging
import os
import threading

from ..errors import BadInputError, Cancelled, is_out_of_memory
from . import protocol as P
from .error_events import describe_exception, free_accelerator_memory
from .request_schema import RequestFieldError, validate_job_request

log = logging.getLogger("trellis.server")


def default_pipeline_factory(model, models_root=None, device="auto"):
    """Load the real pipeline of the folder's family, TRELLIS or TRELLIS.2 (imports torch; called in the worker
    thread). Each family's ``generate`` refuses the other family's parameters (e.g. ``resolution`` on TRELLIS)."""
    from ..pipeline import load_pipeline

    return load_pipeline(model, models_root=models_root, device=device)


def texture_mesh(pipe, params, progress, cancel):
    """A texture request on the loaded pipeline (TRELLIS.2 folders only)."""
    if not hasattr(pipe, "texture"):
        raise BadInputError("texturing a mesh needs a TRELLIS.2 model folder; the loaded model is TRELLIS",
                            hint="Select a TRELLIS.2 folder (e.g. microsoft/TRELLIS.2-4B) as the models folder.")
    params = dict(params)
    mesh, image = params.pop("mesh_path"), params.pop("image")
    if "steps" in params:
        params["tex_steps"] = params.pop("steps")
    return pipe.texture(mesh, image, progress=progress, cancel=cancel, **params)


def default_region_editor(pipe, sidecar_path, **params):
    """Region editing of the real pipeline (`trellis_backend.edit.edit_region`; imports torch)."""
    from ..edit import edit_region

    return edit_region(pipe, sidecar_path, **params)


def _jsonable(value):
    """Meta dicts may hold numpy/torch scalars or paths; make them JSON-safe (NaN/inf refused: ValueError)."""
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o),
                                 allow_nan=False))


def _stem_of(job_id):
    """A file stem from a job id (ids are any client string; a stem must be a plain file name)."""
    stem = "".join(c if (c.isalnum() or c in "-_.") else "_" for c in job_id).strip("._")[:80]
    return stem or "asset"


class UnsendableResultError(Exception):
    """A finished job's result that cannot travel as one protocol line (non-finite numbers, too large)."""


class JobRunner:
    def __init__(self, send, model, models_root=None, device="auto", output_dir=None, factory=None, editor=None):
        self.send = send
        self.model = model
        self.models_root = models_root
        self.device = device
        self.output_dir = output_dir
        self.factory = factory or default_pipeline_factory
        self.editor = editor or default_region_editor
        self.pipeline = None
        self._lock = threading.Lock()
        self._job = None          # protocol.Job of the live job, or None
        self._cancel = None       # threading.Event of the live job
        self._thread = None

    # -- queries -------------------------------------------------------------
    @property
    def busy(self):
        with self._lock:
            return self._job is not None and not self._job.finished

    def status(self):
        with self._lock:
            job = self._job if self._job is not None and not self._job.finished else None
            return {"busy": job is not None, "job_id": job.id if job else None,
                    "pipeline_loaded": self.pipeline is not None, "model": self.model, "device": self.device}

    # -- commands ------------------------------------------------------------
    @staticmethod
    def default_output_dir():
        return os.path.join(os.getcwd(), "trellis_outputs")

    def submit(self, req):
        """Start a generate/edit request, or answer it with an error event."""
        try:
            params = validate_job_request(req["type"], req["params"])
        except RequestFieldError as exc:
            kind = "MissingFileError" if isinstance(exc, FileNotFoundError) else P.ERR_BAD_REQUEST
            self.send(P.error_event(req["id"], kind, str(exc), exc.hint))
            return False
        req = dict(req, params=params)
        with self._lock:
            if self._job is not None and not self._job.finished:
                busy_id = self._job.id
                refused = True
            else:
                refused = False
                self._job = P.Job(req["id"], req["type"], req["params"])
                self._cancel = threading.Event()
                job, cancel = self._job, self._cancel
        if refused:
            self.send(P.error_event(req["id"], P.ERR_BUSY, "busy: job %s is still running" % busy_id,
                                    "Wait for the current job to finish, or cancel it."))
            return False
        self._thread = threading.Thread(target=self._run, args=(job, cancel), name="trellis-job-" + job.id,
                                        daemon=True)
        self._thread.start()
        return True

    def cancel(self, job_id=None):
        """Ask the live job to stop at its next step; no-op if none (or another) is live."""
        with self._lock:
            job, cancel = self._job, self._cancel
            if job is None or job.finished or (job_id and job_id != job.id):
                return False
            job.request_cancel()
        cancel.set()
        log.info("cancel requested for %s", job.id)
        return True

    def shutdown(self, timeout=30.0):
        """Cancel the live job, wait for it, drop the pipeline and free GPU memory."""
        self.cancel()
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("job thread did not stop within %.0f s; exiting anyway", timeout)
        self.pipeline = None
        free_accelerator_memory()

    # -- worker --------------------------------------------------------------
    def _finish(self, job, event):
        """Mark the job final *before* sending, so a client reacting to the event is never refused as busy."""
        with self._lock:
            try:
                job.apply(event)
            except P.ProtocolError:  # cancelled flag raced with a result: the event wins
                job.state = P.DONE if event["type"] == P.RESULT else P.FAILED
        self.send(event)

    def _progress_callback(self, job, cancel):
        def progress(stage, step, total, message=""):
            if cancel.is_set():  # cooperative cancel even where the pipeline forgets to check
                raise Cancelled("cancelled during %s" % stage)
            event = P.progress_event(job.id, stage, step, total, message)
            with self._lock:
                job.apply(event)
            self.send(event)
        return progress

    def _ensure_pipeline(self, progress):
        if self.pipeline is None:
            progress("load", 0, 1, "Loading model from %s" % self.model)
            self.pipeline = self.factory(self.model, models_root=self.models_root, device=self.device)
            progress("load", 1, 1, "Model loaded")
        return self.pipeline

    def _call(self, pipe, job, progress, cancel):
        params = {k: v for k, v in job.params.items() if v is not None}
        if "formats" in params:
            params["formats"] = tuple(params["formats"])
        params.setdefault("output_dir", self.output_dir or self.default_output_dir())
        params.setdefault("name", _stem_of(job.id))
        os.makedirs(params["output_dir"], exist_ok=True)
        if job.type == P.EDIT:
            sidecar = params.pop("sidecar_path")
            return self.editor(pipe, sidecar, progress=progress, cancel=cancel, **params)
        if job.type == P.TEXTURE:
            return texture_mesh(pipe, params, progress, cancel)
        return pipe.generate(progress=progress, cancel=cancel, **params)

    def _run(self, job, cancel):
        progress = self._progress_callback(job, cancel)
        try:
            pipe = self._ensure_pipeline(progress)
            if cancel.is_set():
                raise Cancelled("cancelled before start")
            out = self._call(pipe, job, progress, cancel) or {}
            files = {k: str(v) for k, v in (out.get("files") or {}).items() if v}
            try:
                event = P.result_event(job.id, files, _jsonable(out.get("meta") or {}))
            except (ValueError, TypeError, RecursionError) as exc:
                raise UnsendableResultError("the job finished but its result cannot be sent: %s "
                                            "(files written: %s)" % (exc, ", ".join(files.values()) or "none"))
            if len(P.encode(event)) > P.MAX_LINE_BYTES:
                raise UnsendableResultError("the job finished but its result is over the %d-byte line limit "
                                            "(files written: %s)" % (P.MAX_LINE_BYTES,
                                                                     ", ".join(files.values()) or "none"))
        except BaseException as exc:  # every failure must reach the client as an event
            info = describe_exception(exc)
            if info["detail"]:
                log.error("job %s failed:\n%s", job.id, info["detail"])
            else:
                log.info("job %s ended: %s: %s", job.id, info["error_type"], info["message"])
            if is_out_of_memory(exc):
                free_accelerator_memory()
            event = P.error_event(job.id, info["error_type"], info["message"], info["hint"], info["detail"])
        self._finish(job, event)
