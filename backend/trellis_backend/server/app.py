"""Request loop of ``python -m trellis_backend.server``.

stdout belongs to the protocol alone: at start-up the real stdout file
descriptor is duplicated for events and fd 1 is pointed at stderr, so a stray
``print`` in a library (or a C extension writing to fd 1) lands in the log
instead of corrupting the event stream. Closing stdin (the add-on died) is
treated like ``shutdown``.
"""

import argparse
import importlib
import logging
import os
import sys
import threading

from . import protocol as P
from .jobs import JobRunner

log = logging.getLogger("trellis.server")


class EventWriter:
    """Thread-safe writer of protocol events to a private binary stream."""

    def __init__(self, stream):
        self._stream = stream
        self._lock = threading.Lock()
        self.closed = False

    def __call__(self, event):
        data = P.encode(event)
        with self._lock:
            if self.closed:
                return
            try:
                self._stream.write(data)
                self._stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                self.closed = True  # the client is gone; the loop will see EOF and exit


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


def serve(stdin, send, runner):
    """Read requests until shutdown or EOF; returns the process exit code."""
    for raw in iter(stdin.readline, b""):
        if not raw.strip():
            continue
        try:
            req = P.decode_request(raw)
        except P.ProtocolError as exc:
            send(P.error_event(None, P.ERR_PROTOCOL, str(exc),
                               "The add-on and backend disagree about the protocol; update both together."))
            continue
        rtype, rid = req["type"], req["id"]
        if rtype == P.PING:
            send(P.pong_event(rid, **runner.status()))
        elif rtype in P.JOB_REQUEST_TYPES:
            runner.submit(req)
        elif rtype == P.CANCEL:
            runner.cancel(req["params"].get("job_id"))
        elif rtype == P.SHUTDOWN:
            log.info("shutdown requested")
            runner.shutdown()
            return 0
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
    runner = JobRunner(send, os.path.abspath(args.model) if args.model else args.model,
                       models_root=args.models_root, device=args.device, output_dir=args.output_dir,
                       factory=factory, editor=editor)
    send(P.ready_event(pid=os.getpid(), model=runner.model, device=args.device, python=sys.executable,
                       backend_package=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    log.info("ready (model %s, device %s)", runner.model, args.device)
    code = serve(sys.stdin.buffer, send, runner)
    send.closed = True
    return code
