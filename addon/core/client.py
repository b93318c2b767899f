"""Backend subprocess client: spawn, send requests, queue events, notice death.

No bpy here (it is tested in plain Python too). Threads only do I/O: one
reads stdout into ``events`` (a queue.Queue the main thread drains), one
drains stderr into a tail buffer and a log file so the backend can never block
on a full pipe. When the process exits the reader queues a synthetic
``exited`` event, so the add-on learns of a crash the same way it learns of
progress.
"""

import atexit
import collections
import json
import os
import queue
import re
import subprocess
import threading
import time
import weakref

from . import protocol as P

EXITED = "exited"  # synthetic event type queued by the client when the process ends
ERR_OVERSIZE = "OversizeAnswer"  # synthetic error for an event line over the protocol's size limit
_ID_IN_HEAD = re.compile(rb'"id"\s*:\s*"((?:[^"\\]|\\.){1,200})"')

_CLIENTS = weakref.WeakSet()


class BackendUnavailable(RuntimeError):
    """The backend could not be started or is no longer running."""

    def __init__(self, message, hint=""):
        super().__init__(message)
        self.hint = hint


class BackendConfig:
    """Everything that decides which backend process we need; a change means a restart."""

    FIELDS = ("python", "model", "models_root", "device", "pythonpath", "output_dir", "extra_args")

    def __init__(self, python, model, models_root=None, device="auto", pythonpath=(), output_dir=None,
                 extra_args=()):
        self.python = python
        self.model = model
        self.models_root = models_root or None
        self.device = device or "auto"
        self.pythonpath = tuple(p for p in pythonpath if p)
        self.output_dir = output_dir or None
        self.extra_args = tuple(extra_args)

    def key(self):
        return tuple(getattr(self, f) for f in self.FIELDS)

    def __eq__(self, other):
        return isinstance(other, BackendConfig) and self.key() == other.key()

    def __hash__(self):
        return hash(self.key())

    def __repr__(self):
        return "BackendConfig(%s)" % ", ".join("%s=%r" % (f, getattr(self, f)) for f in self.FIELDS)

    def command(self):
        cmd = [self.python, "-u", "-m", "trellis_backend.server", "--model", self.model, "--device", self.device]
        if self.models_root:
            cmd += ["--models-root", self.models_root]
        if self.output_dir:
            cmd += ["--output-dir", self.output_dir]
        return cmd + list(self.extra_args)

    def environment(self, base=None):
        env = dict(os.environ if base is None else base)
        # Blender's own interpreter settings must not leak into the backend's Python.
        for var in ("PYTHONHOME", "PYTHONSTARTUP", "PYTHONNOUSERSITE", "PYTHONEXECUTABLE"):
            env.pop(var, None)
        paths = list(self.pythonpath)
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        if paths:
            env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONIOENCODING"] = "utf-8"
        return env


class BackendClient:
    def __init__(self, log_path=None, stderr_lines=200):
        self.events = queue.Queue()
        self.config = None
        self.proc = None
        self.ready_info = None
        self.log_path = log_path
        self.generation = 0           # bumps with every spawn; tags events so stale ones can be told apart
        self._stderr = collections.deque(maxlen=stderr_lines)
        self._send_lock = threading.Lock()
        self._expected_exit = False
        self.last_output = None       # time.monotonic() of the backend's last stdout/stderr line
        _CLIENTS.add(self)

    # -- lifecycle -----------------------------------------------------------
    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def ensure(self, config):
        """Return once a backend for ``config`` is running (restarting a dead or differently configured one)."""
        if self.alive and self.config == config:
            return False
        self.stop()
        self.start(config)
        return True

    def start(self, config):
        if not config.python:
            raise BackendUnavailable("No backend Python interpreter is configured.",
                                     "Set one in the TRELLIS add-on preferences or run 'Set up backend'.")
        if not os.path.exists(config.python):
            raise BackendUnavailable("The backend Python interpreter does not exist: %s" % config.python,
                                     "Fix the interpreter path in the TRELLIS add-on preferences or run "
                                     "'Set up backend'.")
        self.generation += 1
        self._stderr.clear()
        self._expected_exit = False
        self.ready_info = None
        kwargs = {}
        if os.name == "nt":
            kwargs["creationflags"] = 0x08000000  # CREATE_NO_WINDOW: no console popping up over Blender
        try:
            self.proc = subprocess.Popen(config.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, env=config.environment(), bufsize=0, **kwargs)
        except OSError as exc:
            self.proc = None
            raise BackendUnavailable("Could not start the backend (%s): %s" % (config.python, exc),
                                     "Check the backend interpreter in the TRELLIS add-on preferences.") from None
        self.config = config
        gen, proc = self.generation, self.proc
        threading.Thread(target=self._read_events, args=(proc, gen), name="trellis-backend-stdout",
                         daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(proc,), name="trellis-backend-stderr",
                         daemon=True).start()

    def stop(self, timeout=10.0):
        """Ask the backend to shut down (freeing GPU memory), then make sure it is gone."""
        proc = self.proc
        if proc is None:
            return
        self._expected_exit = True
        if proc.poll() is None:
            try:
                self.send(P.request(P.SHUTDOWN))
            except BackendUnavailable:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(3.0)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(3.0)
        for stream in (proc.stdin,):
            try:
                stream.close()
            except Exception:
                pass
        self.proc = None

    # -- messaging -----------------------------------------------------------
    def send(self, message):
        proc = self.proc
        if proc is None or proc.poll() is not None:
            raise BackendUnavailable("The backend is not running.", "It will be restarted on the next job.")
        data = P.encode(message)
        with self._send_lock:
            try:
                proc.stdin.write(data)
                proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError) as exc:
                raise BackendUnavailable("Lost the connection to the backend: %s" % exc,
                                         "It will be restarted on the next job.") from None

    def get_event(self, timeout=None):
        """Next event (dict) or None on timeout; events carry ``_gen`` (the spawn they came from)."""
        try:
            return self.events.get(timeout=timeout) if timeout else self.events.get_nowait()
        except queue.Empty:
            return None

    def stderr_tail(self, lines=20):
        return "\n".join(list(self._stderr)[-lines:])

    # -- reader threads ------------------------------------------------------
    def _read_events(self, proc, gen):
        limit = P.MAX_LINE_BYTES + 1
        while True:
            raw = proc.stdout.readline(limit)  # bounded: an endless line cannot exhaust Blender's memory
            if not raw:
                break
            self.last_output = time.monotonic()
            if len(raw) == limit and not raw.endswith(b"\n"):
                event = self._oversize_event(raw, self._skip_line(proc.stdout) + len(raw))
            else:
                try:
                    event = P.decode_event(raw)
                except P.ProtocolError as exc:
                    self._stderr.append("[non-protocol output] %s (%s)"
                                        % (raw[:200].decode("utf-8", "replace").rstrip(), exc))
                    continue
            if event["type"] == P.READY and gen == self.generation:
                self.ready_info = event.get("info") or {}
            event["_gen"] = gen
            self.events.put(event)
        returncode = proc.wait()
        time.sleep(0.05)  # let the stderr reader catch the last lines of a traceback
        self.events.put({"type": EXITED, "id": None, "returncode": returncode, "_gen": gen,
                         "expected": self._expected_exit and gen == self.generation,
                         "stderr": self.stderr_tail(25)})

    @staticmethod
    def _skip_line(stream):
        """Read and drop the rest of an oversize line; returns how many bytes were dropped."""
        dropped = 0
        while True:
            chunk = stream.readline(1 << 20)
            dropped += len(chunk)
            if not chunk or chunk.endswith(b"\n"):
                return dropped

    def _oversize_event(self, head, size):
        """An event line over the limit (e.g. a huge result): an error for the job named in its head, so
        the job ends with an explanation instead of waiting for an answer that was dropped."""
        match = _ID_IN_HEAD.search(head[:4096])
        rid = None
        if match:
            try:
                rid = json.loads(b'"' + match.group(1) + b'"')
            except ValueError:
                rid = None
        self._stderr.append("[oversize protocol line] %d bytes dropped" % size)
        return P.error_event(rid, ERR_OVERSIZE,
                             "The backend's answer was %d bytes, over the %d-byte limit of one message."
                             % (size, P.MAX_LINE_BYTES),
                             "Its files (if any) are in the backend's output folder; import them by hand. "
                             "Please report this with the backend log.")

    def _read_stderr(self, proc):
        log = None
        if self.log_path:
            try:
                os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
                log = open(self.log_path, "a", encoding="utf-8")
                log.write("\n=== backend started %s ===\n" % time.strftime("%Y-%m-%d %H:%M:%S"))
            except OSError:
                log = None
        try:
            for raw in iter(lambda: proc.stderr.readline(1 << 16), b""):
                self.last_output = time.monotonic()
                line = raw.decode("utf-8", "replace").rstrip()
                self._stderr.append(line)
                if log:
                    log.write(line + "\n")
                    log.flush()
        finally:
            if log:
                log.close()


def explain_exit(returncode, stderr):
    """A user-facing (message, hint) for a backend that exited on its own."""
    text = stderr or ""
    if "No module named" in text:
        missing = text.rsplit("No module named", 1)[1].strip().split()[0].strip("'\"")
        return ("The backend could not start: Python module %r is missing." % missing,
                "Run 'Set up backend' in the TRELLIS add-on preferences, or point the backend interpreter at a "
                "Python environment that has the backend requirements.")
    last = [ln for ln in text.splitlines() if ln.strip()][-1:] or [""]
    message = "The backend process exited unexpectedly (exit code %s)." % returncode
    if last[0]:
        message += " Last log line: %s" % last[0][:300]
    return (message, "Nothing in the scene was changed. The backend restarts on the next job; "
                     "the full log is in the backend log file (see add-on preferences).")


def stop_all_clients():
    """atexit hook: never leave a backend (and its GPU memory) behind when Blender quits."""
    for client in list(_CLIENTS):
        try:
            client.stop(timeout=5.0)
        except Exception:
            pass


atexit.register(stop_all_clients)
