"""Request loop of ``python -m trellis_backend.server``.

stdout belongs to the protocol alone: at start-up the real stdout file
descriptor is duplicated for events and fd 1 is pointed at stderr, so a stray
``print`` in a library (or a C extension writing to fd 1) lands in the log
instead of corrupting the event stream. Closing stdin (the add-on died) is
treated like ``shutdown``.

No line ends the process: over-long lines are read in bounded pieces and answered with the
request's id when it can be recovered (`line_reader`), any failure to parse or handle a line
becomes an error event, and every event that cannot be encoded is replaced by an error event
for the same id (`EventWriter`).
"""

import argparse
import importlib
import logging
import os
import sys
import threading

from . import protocol as P
from .jobs import JobRunner
from .line_reader import read_request_lines, recover_id

log = logging.getLogger("trellis.server")


class EventWriter:
    """Thread-safe writer of protocol events to a private binary stream."""

    def __init__(self, stream):
        self._stream = stream
        self._lock = threading.Lock()
        self.closed = False

    def __call__(self, event):
        data = encode_or_error(event)
        with self._lock:
            if self.closed:
                return
            try:
                self._stream.write(data)
                self._stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                self.closed = True  # the client is gone; the loop will see EOF and exit


def encode_or_error(event):
    """The event's line, or an error event for its id when it cannot be sent (NaN, unencodable, too long)."""
    try:
        data = P.encode(event)
        problem = None if len(data) <= P.MAX_LINE_BYTES else "is %d bytes, over the %d-byte line limit" % (
            len(data), P.MAX_LINE_BYTES)
    except (ValueError, TypeError, RecursionError) as exc:
        data, problem = None, "cannot be encoded as JSON (%s)" % exc
    if problem is None:
        return data
    log.error("%s event for %s %s; sending an error instead", event.get("type"), event.get("id"), problem)
    rid = event.get("id") if isinstance(event.get("id"), str) else None
    return P.encode(P.error_event(rid, P.ERR_INTERNAL, "the backend's %s event %s" % (event.get("type"), problem),
                                  "This is a bug in the backend; the backend log (stderr) has details."))


def take_over_stdout():
    """Return a binary stream on the original stdout and send fd 1 to stderr."""
    sys.stdout.flush()
    proto_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(proto_fd, "wb", buffering=0)


def load_callable(spec):
    """'package.module:attr.attr' -> callable (lets tests inject a test-double pipeline and its editor)."""
    module_name, _, attr = spec.partition(":")
    obj = importlib.import_module(module_name)
    for part in (attr or "load").split("."):
        obj = getattr(obj, part)
    return obj


def add_server_arguments(ap):
    """The server's options (also those of ``python -m trellis_backend serve``)."""
    ap.add_argument("--model", required=True, help="pipeline folder (pipeline.json + ckpts/)")
    ap.add_argument("--models-root", default=None,
                    help="folder that holds other model folders referenced as <org>/<repo>/ckpts/<name>")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--output-dir", default=None, help="default folder for outputs when a request names none")
    ap.add_argument("--log-level", default="INFO")
    ap.add_argument("--pipeline-factory", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--region-editor", default=None, help=argparse.SUPPRESS)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m trellis_backend.server",
                                 description="TRELLIS backend server (line-delimited JSON over stdin/stdout).")
    add_server_arguments(ap)
    return ap.parse_args(argv)


PROTOCOL_HINT = "The add-on and backend disagree about the protocol; update both together."


def decode_line(raw):
    """(request, None) or (None, (id or None, message)); never raises."""
    try:
        return P.decode_request(raw), None
    except P.ProtocolError as exc:
        return None, (recover_id(raw), str(exc))
    except RecursionError:
        return None, (recover_id(raw), "not JSON: nested too deeply")
    except Exception as exc:  # anything else the parser may throw on hostile input
        return None, (recover_id(raw), "not a valid request: %s: %s" % (type(exc).__name__, exc))


def handle(req, send, runner):
    """Act on one decoded request; returns True for shutdown."""
    rtype, rid = req["type"], req["id"]
    if rtype == P.PING:
        send(P.pong_event(rid, **runner.status()))
    elif rtype in P.JOB_REQUEST_TYPES:
        runner.submit(req)
    elif rtype == P.CANCEL:
        job_id = req["params"].get("job_id")
        runner.cancel(job_id if isinstance(job_id, str) else None)
    elif rtype == P.SHUTDOWN:
        log.info("shutdown requested")
        runner.shutdown()
        return True
    return False


def serve(stdin, send, runner):
    """Read requests until shutdown or EOF; returns the process exit code."""
    for raw, oversize in read_request_lines(stdin, P.MAX_LINE_BYTES):
        if oversize is not None:
            rid = recover_id(raw)
            send(P.error_event(rid, P.ERR_PROTOCOL, "request line of %d bytes is over the %d-byte limit%s" % (
                oversize, P.MAX_LINE_BYTES, "" if rid else " (and its id could not be read)"),
                "Send smaller requests (e.g. fewer region voxels, or a box region instead)."))
            continue
        if not raw.strip():
            continue
        req, problem = decode_line(raw)
        if problem is not None:
            send(P.error_event(problem[0], P.ERR_PROTOCOL, problem[1], PROTOCOL_HINT))
            continue
        try:
            if handle(req, send, runner):
                return 0
        except Exception as exc:  # a request must never end the loop
            log.exception("request %s failed", req["id"])
            send(P.error_event(req["id"], P.ERR_INTERNAL, "%s: %s" % (type(exc).__name__, exc),
                               "This is a bug in the backend; the backend log (stderr) has the traceback."))
    log.info("stdin closed; shutting down")
    runner.shutdown(timeout=5.0)
    return 0


def main(argv=None):
    return run_server(parse_args(argv))


def run_server(args):
    """Serve requests on stdin/stdout until shutdown or EOF; returns the process exit code."""
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO), stream=sys.stderr,
                        format="[trellis-server %(levelname)s] %(message)s")
    send = EventWriter(take_over_stdout())
    factory = load_callable(args.pipeline_factory) if args.pipeline_factory else None
    editor = load_callable(args.region_editor) if args.region_editor else None
    from ..pipeline.output_files import clean_stale

    clean_stale(args.output_dir or JobRunner.default_output_dir())  # leftovers of a backend that was killed
    runner = JobRunner(send, os.path.abspath(args.model) if args.model else args.model,
                       models_root=args.models_root, device=args.device, output_dir=args.output_dir,
                       factory=factory, editor=editor)
    send(P.ready_event(pid=os.getpid(), model=runner.model, device=args.device, python=sys.executable,
                       backend_package=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    log.info("ready (model %s, device %s)", runner.model, args.device)
    try:
        code = serve(sys.stdin.buffer, send, runner)
    except KeyboardInterrupt:  # Ctrl-C in a terminal: cancel the job like a shutdown request
        log.info("interrupted; cancelling the job and exiting")
        runner.shutdown(timeout=10.0)
        code = 130
    send.closed = True
    thread = runner._thread
    if thread is not None and thread.is_alive():
        # a job that has not stopped yet must not run under interpreter finalisation (torch aborts or hangs
        # there); its files are temporaries until committed, and the next start removes them
        sys.stderr.flush()
        os._exit(code)
    return code
