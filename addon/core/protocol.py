"""Wire protocol between the Blender add-on and the TRELLIS backend server.

Pure standard library on purpose: Blender's Python and the backend's venv both
load this exact file. The canonical copy is ``addon/core/protocol.py``; the server
keeps a byte-identical copy at ``backend/trellis_backend/server/protocol.py``
(so neither side imports the other's package; ``tests/test_protocol.py`` and
``build_addon.py`` check that the two are identical).

Transport: one JSON object per line (UTF-8) over the server's stdin (requests)
and stdout (events).

Requests  ``{"id": str, "type": generate|edit|cancel|shutdown|ping, "params": {}}``
          (generate's ``image`` may be a list of paths: several views of one object,
          combined as ``multi_image_mode`` says)
Events    ``{"id": str|None, "type": ready|pong|progress|result|error, ...}``

- ``ready``    (id None) the server is up: ``info`` {protocol, pid, model, device}
- ``pong``     answer to ``ping``
- ``progress`` ``stage, step, total, message`` for a running job
- ``result``   ``files`` {"glb"|"ply"|"slat": path} and ``meta`` -- job done
- ``error``    ``error_type, message, hint`` -- job failed, was cancelled
               (error_type "Cancelled") or a request was refused ("Busy")

One job at a time; ``cancel`` (params ``{"job_id": id}``, optional) is
cooperative and answered by the job's own terminal ``error``/``result``
event; cancelling when nothing runs is a no-op.
"""

import json
import uuid

PROTOCOL_VERSION = 1

# Request types.
GENERATE = "generate"
EDIT = "edit"
CANCEL = "cancel"
SHUTDOWN = "shutdown"
PING = "ping"
REQUEST_TYPES = (GENERATE, EDIT, CANCEL, SHUTDOWN, PING)
JOB_REQUEST_TYPES = (GENERATE, EDIT)

# Event types.
READY = "ready"
PONG = "pong"
PROGRESS = "progress"
RESULT = "result"
ERROR = "error"
EVENT_TYPES = (READY, PONG, PROGRESS, RESULT, ERROR)

# Error types the protocol itself produces (the backend adds its own
# TrellisError subclass names: MissingFileError, OutOfMemoryError, ...).
ERR_BUSY = "Busy"
ERR_CANCELLED = "Cancelled"
ERR_PROTOCOL = "ProtocolError"
ERR_BAD_REQUEST = "BadRequest"
ERR_INTERNAL = "InternalError"
ERR_BACKEND_EXITED = "BackendExited"  # synthesised by the client, never sent

# Parameters a job request may carry; anything else is refused so a typo in
# the add-on fails loudly instead of being silently ignored.
COMMON_PARAMS = frozenset({
    "prompt", "image", "seed", "ss_steps", "slat_steps", "ss_cfg", "slat_cfg",
    "formats", "output_dir", "name", "resolution", "texture_size",
})
# TRELLIS.2's resolution modes (``resolution``; a TRELLIS model folder refuses the parameter).
RESOLUTION_MODES = ("512", "1024", "1024_cascade", "1536_cascade")
GENERATE_PARAMS = COMMON_PARAMS | frozenset({"multi_image_mode"})
EDIT_PARAMS = COMMON_PARAMS | frozenset({"sidecar_path", "region", "keep_structure", "margin", "resample"})
FORMATS = ("mesh", "gaussians")
# Several images of one object ("image": [paths]): 'stochastic' conditions each sampling step on
# one of them in turn, 'multidiffusion' averages the predictions of all (the reference's modes).
MULTI_IMAGE_MODES = ("stochastic", "multidiffusion")

MAX_LINE_BYTES = 16 * 1024 * 1024


class ProtocolError(ValueError):
    """A line that is not a valid message of this protocol."""


def new_id(prefix="job"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


def encode(message):
    """Serialise one message as a single UTF-8 line (newline included)."""
    line = json.dumps(message, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return (line + "\n").encode("utf-8")


def _decode_object(line):
    if isinstance(line, bytes):
        if len(line) > MAX_LINE_BYTES:
            raise ProtocolError("message longer than %d bytes" % MAX_LINE_BYTES)
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("message is not UTF-8: %s" % exc) from None
    line = line.strip()
    if not line:
        raise ProtocolError("empty line")
    try:
        msg = json.loads(line)
    except ValueError as exc:
        raise ProtocolError("not JSON: %s" % exc) from None
    if not isinstance(msg, dict):
        raise ProtocolError("message must be a JSON object")
    return msg


def decode_request(line):
    """Parse and validate a request line; raises ProtocolError."""
    msg = _decode_object(line)
    rid, rtype = msg.get("id"), msg.get("type")
    if not isinstance(rid, str) or not rid:
        raise ProtocolError("request needs a non-empty string 'id'")
    if rtype not in REQUEST_TYPES:
        raise ProtocolError("unknown request type %r (expected one of %s)" % (rtype, ", ".join(REQUEST_TYPES)))
    params = msg.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ProtocolError("'params' must be an object")
    return {"id": rid, "type": rtype, "params": params}


def decode_event(line):
    """Parse and validate an event line; raises ProtocolError."""
    msg = _decode_object(line)
    etype = msg.get("type")
    if etype not in EVENT_TYPES:
        raise ProtocolError("unknown event type %r" % (etype,))
    required = {
        PROGRESS: ("stage", "step", "total"),
        RESULT: ("files",),
        ERROR: ("error_type", "message"),
    }.get(etype, ())
    missing = [k for k in required if k not in msg]
    if missing:
        raise ProtocolError("%s event lacks %s" % (etype, ", ".join(missing)))
    return msg


def validate_job_params(rtype, params):
    """Return a list of problems with a generate/edit request's params."""
    allowed = EDIT_PARAMS if rtype == EDIT else GENERATE_PARAMS
    problems = ["unknown parameter %r" % k for k in sorted(params) if k not in allowed]
    prompt, image = params.get("prompt"), params.get("image")
    if prompt is not None and not isinstance(prompt, str):
        problems.append("'prompt' must be a string")
    several = isinstance(image, list)
    if image is not None and not isinstance(image, str) and not (
            several and image and all(isinstance(p, str) and p for p in image)):
        problems.append("'image' must be a file path or a non-empty list of file paths")
    mode = params.get("multi_image_mode")
    if mode is not None and mode not in MULTI_IMAGE_MODES:
        problems.append("'multi_image_mode' must be one of %s" % ", ".join(MULTI_IMAGE_MODES))
    if rtype == GENERATE and not (prompt.strip() if isinstance(prompt, str) else prompt) and not image:
        problems.append("give a prompt or an image")
    if rtype == EDIT:
        if not isinstance(params.get("sidecar_path"), str):
            problems.append("'sidecar_path' is required for edit")
        if not isinstance(params.get("region"), dict):
            problems.append("'region' must be an object (box_min/box_max or voxels)")
    formats = params.get("formats")
    if formats is not None:
        if not isinstance(formats, (list, tuple)) or not formats or any(f not in FORMATS for f in formats):
            problems.append("'formats' must be a non-empty list of %s" % ", ".join(FORMATS))
    for key in ("seed", "ss_steps", "slat_steps", "texture_size"):
        val = params.get(key)
        if val is not None and (not isinstance(val, int) or isinstance(val, bool) or val < 0):
            problems.append("%r must be a non-negative integer" % key)
    resolution = params.get("resolution")
    if resolution is not None and resolution not in RESOLUTION_MODES:
        problems.append("'resolution' must be one of %s" % ", ".join(RESOLUTION_MODES))
    for key in ("ss_cfg", "slat_cfg"):
        val = params.get(key)
        if val is not None and (not isinstance(val, (int, float)) or isinstance(val, bool)):
            problems.append("%r must be a number" % key)
    return problems


# --- message builders -------------------------------------------------------

def request(rtype, params=None, rid=None):
    if rtype not in REQUEST_TYPES:
        raise ProtocolError("unknown request type %r" % (rtype,))
    return {"id": rid or new_id(rtype), "type": rtype, "params": dict(params or {})}


def ready_event(**info):
    info.setdefault("protocol", PROTOCOL_VERSION)
    return {"id": None, "type": READY, "info": info}


def pong_event(rid, **info):
    return {"id": rid, "type": PONG, "info": info}


def progress_event(rid, stage, step, total, message=""):
    return {"id": rid, "type": PROGRESS, "stage": str(stage), "step": int(step),
            "total": int(total), "message": str(message or "")}


def result_event(rid, files, meta=None):
    return {"id": rid, "type": RESULT, "files": dict(files), "meta": dict(meta or {})}


def error_event(rid, error_type, message, hint="", detail=None):
    event = {"id": rid, "type": ERROR, "error_type": str(error_type),
             "message": str(message), "hint": str(hint or "")}
    if detail:
        event["detail"] = str(detail)
    return event


# --- job state machine ------------------------------------------------------

PENDING = "pending"        # request sent / accepted, nothing heard yet
RUNNING = "running"        # progress events arriving
CANCELLING = "cancelling"  # cancel sent, waiting for the job to stop
DONE = "done"              # result received
FAILED = "failed"          # error received
CANCELLED = "cancelled"    # error of type Cancelled received
FINAL_STATES = (DONE, FAILED, CANCELLED)

_TRANSITIONS = {
    PENDING: (RUNNING, CANCELLING, DONE, FAILED, CANCELLED),
    RUNNING: (RUNNING, CANCELLING, DONE, FAILED, CANCELLED),
    CANCELLING: (CANCELLING, DONE, FAILED, CANCELLED),
}


class Job:
    """One generate/edit job as both sides see it.

    The server uses it to refuse a second job while one is live; the add-on
    feeds it every event for its id and draws the panel from it. Transitions
    out of a final state are refused, so a stray late event cannot resurrect a
    finished job.
    """

    def __init__(self, rid, rtype, params=None):
        self.id = rid
        self.type = rtype
        self.params = dict(params or {})
        self.state = PENDING
        self.stage = ""
        self.step = 0
        self.total = 0
        self.message = ""
        self.files = {}
        self.meta = {}
        self.error_type = ""
        self.error_message = ""
        self.error_hint = ""

    def __repr__(self):
        return "Job(%r, %r, state=%r, stage=%r %d/%d)" % (
            self.id, self.type, self.state, self.stage, self.step, self.total)

    @property
    def finished(self):
        return self.state in FINAL_STATES

    @property
    def fraction(self):
        """Progress of the current stage in [0, 1]."""
        if self.state == DONE:
            return 1.0
        return min(max(self.step / self.total, 0.0), 1.0) if self.total > 0 else 0.0

    def _move(self, state):
        if state not in _TRANSITIONS.get(self.state, ()):
            raise ProtocolError("job %s: illegal transition %s -> %s" % (self.id, self.state, state))
        self.state = state

    def request_cancel(self):
        """Mark that a cancel was sent; returns False if the job already ended."""
        if self.finished:
            return False
        self._move(CANCELLING)
        return True

    def apply(self, event):
        """Fold one event for this job into the state; raises ProtocolError."""
        if event.get("id") != self.id:
            raise ProtocolError("event for %r applied to job %r" % (event.get("id"), self.id))
        etype = event.get("type")
        if etype == PROGRESS:
            self._move(CANCELLING if self.state == CANCELLING else RUNNING)
            self.stage = event.get("stage", "")
            self.step = int(event.get("step", 0))
            self.total = int(event.get("total", 0))
            self.message = event.get("message", "")
        elif etype == RESULT:
            self._move(DONE)
            self.files = dict(event.get("files") or {})
            self.meta = dict(event.get("meta") or {})
        elif etype == ERROR:
            cancelled = event.get("error_type") == ERR_CANCELLED
            self._move(CANCELLED if cancelled else FAILED)
            self.error_type = event.get("error_type", "")
            self.error_message = event.get("message", "")
            self.error_hint = event.get("hint", "")
        else:
            raise ProtocolError("event type %r does not belong to a job" % (etype,))
        return self.state
