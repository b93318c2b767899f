"""The real server subprocess, driven over stdin/stdout with a test-double pipeline.

These pin the protocol behaviour (ready, progress order, busy, cancel, error
mapping, stdout hygiene, shutdown, EOF); tests/test_server_pipeline.py runs
the same server on the real pipeline.
"""

import json
import os
import queue
import subprocess
import sys
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "backend"))

from trellis_backend.server import protocol as P  # noqa: E402

TESTS = os.path.dirname(os.path.abspath(__file__))


class ServerProc:
    """Minimal protocol client for tests: a reader thread feeds a queue."""

    def __init__(self, model, *extra, factory="test_server_double:load", editor="test_server_double:edit_region",
                 command=("trellis_backend.server",)):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "backend"), os.path.join(ROOT, "kernels"), TESTS])
        cmd = [sys.executable, "-m", *command, "--model", str(model), "--device", "cpu", *extra]
        if factory:
            cmd += ["--pipeline-factory", factory]
        if factory and editor:
            cmd += ["--region-editor", editor]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env)
        self.events = queue.Queue()
        self.raw = []
        threading.Thread(target=self._read, daemon=True).start()
        self.stderr = []
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.raw.append(line)
            self.events.put(P.decode_event(line))
        self.events.put(None)

    def send(self, msg):
        self.proc.stdin.write(msg if isinstance(msg, bytes) else P.encode(msg))
        self.proc.stdin.flush()

    def next(self, timeout=20):
        ev = self.events.get(timeout=timeout)
        assert ev is not None, "server exited: " + b"".join(self.stderr).decode(errors="replace")[-2000:]
        return ev

    def until(self, pred, timeout=30):
        """Collect events until pred(event) holds; return all of them."""
        seen, deadline = [], time.time() + timeout
        while True:
            ev = self.next(timeout=max(0.1, deadline - time.time()))
            seen.append(ev)
            if pred(ev):
                return seen

    def finish(self, rid, timeout=30):
        return self.until(lambda e: e["id"] == rid and e["type"] in (P.RESULT, P.ERROR), timeout)

    def close(self):
        if self.proc.poll() is None:
            try:
                self.send(P.request(P.SHUTDOWN))
                self.proc.wait(10)
            except Exception:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "pipeline.json").write_text(json.dumps({"name": "fake"}))
    return d


@pytest.fixture
def server(model_dir, tmp_path):
    s = ServerProc(model_dir, "--output-dir", str(tmp_path / "out"))
    ready = s.next()
    assert ready["type"] == P.READY
    yield s
    s.close()


def gen(prompt, **params):
    return P.request(P.GENERATE, dict(prompt=prompt, **params))


def test_ready_then_pong(server):
    rid = "ping-1"
    server.send({"id": rid, "type": "ping"})
    ev = server.next()
    assert ev["type"] == P.PONG and ev["id"] == rid
    assert ev["info"]["busy"] is False and ev["info"]["pipeline_loaded"] is False


def test_cli_serve_runs_the_same_server(model_dir, tmp_path):
    s = ServerProc(model_dir, "--output-dir", str(tmp_path / "out"), command=("trellis_backend", "serve"))
    try:
        assert s.next()["type"] == P.READY
        s.send(gen("a red chair", seed=1, formats=["mesh"], name="served"))
        events = s.until(lambda e: e["type"] in (P.RESULT, P.ERROR))
        assert events[-1]["type"] == P.RESULT and os.path.isfile(events[-1]["files"]["glb"])
    finally:
        s.close()


def test_ready_info(model_dir):
    s = ServerProc(model_dir)
    try:
        ready = s.next()
        assert ready["id"] is None
        assert ready["info"]["protocol"] == P.PROTOCOL_VERSION
        assert ready["info"]["pid"] == s.proc.pid
        assert ready["info"]["device"] == "cpu"
        assert os.path.samefile(ready["info"]["model"], model_dir)
    finally:
        s.close()


def test_generate_streams_progress_then_result(server, tmp_path):
    req = gen("a red chair", seed=3, formats=["mesh", "gaussians"], name="chair")
    server.send(req)
    events = server.finish(req["id"])
    assert all(e["id"] == req["id"] for e in events)
    progress = [e for e in events if e["type"] == P.PROGRESS]
    assert progress[0]["stage"] == "load"
    stages = [e["stage"] for e in progress]
    assert stages.index("sparse_structure") < stages.index("slat") < stages.index("decode")
    assert all(0 <= e["step"] <= e["total"] for e in progress)
    result = events[-1]
    assert result["type"] == P.RESULT
    assert set(result["files"]) == {"glb", "ply", "slat"}
    for path in result["files"].values():
        assert os.path.isfile(path) and os.path.dirname(path) == str(tmp_path / "out")
    assert result["meta"]["seed"] == 3 and result["meta"]["prompt"] == "a red chair"
    # the job state machine accepts the stream exactly as sent
    job = P.Job(req["id"], P.GENERATE)
    for e in events:
        job.apply(e)
    assert job.state == P.DONE


def test_pipeline_loaded_once(server):
    for i in range(2):
        req = gen("thing %d" % i)
        server.send(req)
        events = server.finish(req["id"])
        assert events[-1]["type"] == P.RESULT
    assert events[-1]["meta"]["calls"] == 2
    assert not any(e["type"] == P.PROGRESS and e["stage"] == "load" for e in events)


def test_second_job_while_busy_is_refused(server):
    first, second = gen("slow chair"), gen("another")
    server.send(first)
    server.until(lambda e: e["type"] == P.PROGRESS and e["stage"] == "sparse_structure")
    server.send(second)
    ev = server.until(lambda e: e["id"] == second["id"])[-1]
    assert ev["type"] == P.ERROR and ev["error_type"] == P.ERR_BUSY
    assert "busy" in ev["message"] and ev["hint"]
    assert server.finish(first["id"])[-1]["type"] == P.RESULT
    # the slot is free again immediately after the result
    third = gen("third")
    server.send(third)
    assert server.finish(third["id"])[-1]["type"] == P.RESULT


@pytest.mark.parametrize("prompt", ["slow chair", "slow nocheck chair"])
def test_cancel_stops_the_job_and_server_stays_usable(server, prompt, tmp_path):
    req = gen(prompt, name="cancelled")
    server.send(req)
    server.until(lambda e: e["type"] == P.PROGRESS and e["stage"] == "sparse_structure")
    t0 = time.time()
    server.send(P.request(P.CANCEL, {"job_id": req["id"]}))
    events = server.finish(req["id"])
    assert time.time() - t0 < 2.0
    end = events[-1]
    assert end["type"] == P.ERROR and end["error_type"] == P.ERR_CANCELLED
    assert not any(e["type"] == P.PROGRESS and e["stage"] == "decode" for e in events)
    assert not (tmp_path / "out" / "cancelled.glb").exists()
    again = gen("after cancel")
    server.send(again)
    assert server.finish(again["id"])[-1]["type"] == P.RESULT


def test_cancel_when_idle_or_for_other_job_is_a_noop(server):
    server.send(P.request(P.CANCEL))
    server.send(P.request(P.CANCEL, {"job_id": "nope"}))
    req = gen("chair")
    server.send(req)
    server.send(P.request(P.CANCEL, {"job_id": "not-this-one"}))
    assert server.finish(req["id"])[-1]["type"] == P.RESULT


@pytest.mark.parametrize("prompt,etype,hint_word", [
    ("raise:oom", "OutOfMemoryError", "GPU"),
    ("raise:bad", "BadInputError", "image or prompt"),
    ("raise:bug", "InternalError", "bug"),
])
def test_errors_map_to_error_events(server, prompt, etype, hint_word):
    req = gen(prompt)
    server.send(req)
    ev = server.finish(req["id"])[-1]
    assert ev["type"] == P.ERROR and ev["error_type"] == etype
    assert hint_word in ev["hint"]
    if etype == "InternalError":
        assert "ZeroDivisionError" in ev["message"] and "Traceback" in ev["detail"]
    after = gen("fine")
    server.send(after)
    assert server.finish(after["id"])[-1]["type"] == P.RESULT


def test_stray_stdout_output_does_not_corrupt_protocol(server):
    req = gen("print")
    server.send(req)
    assert server.finish(req["id"])[-1]["type"] == P.RESULT
    time.sleep(0.2)
    assert all(P.decode_event(line) for line in server.raw)  # every stdout line is an event
    assert b"stray fd-1 output" in b"".join(server.stderr)


def test_bad_model_folder_is_a_job_error_and_server_survives(tmp_path):
    s = ServerProc(tmp_path / "does-not-exist")
    try:
        assert s.next()["type"] == P.READY
        for _ in range(2):  # a failed load is retried on the next job, not cached
            req = gen("chair")
            s.send(req)
            ev = s.finish(req["id"])[-1]
            assert ev["type"] == P.ERROR and ev["error_type"] == "MissingFileError"
            assert "pipeline.json" in ev["message"] and ev["hint"]
    finally:
        s.close()


def test_malformed_and_invalid_requests(server):
    server.send(b"this is not json\n")
    ev = server.next()
    assert ev["type"] == P.ERROR and ev["error_type"] == P.ERR_PROTOCOL and ev["id"] is None
    server.send(b'{"id": "x", "type": "dance"}\n')
    assert server.next()["error_type"] == P.ERR_PROTOCOL
    req = P.request(P.GENERATE, {"prompt": "chair", "colour": "red"})
    server.send(req)
    ev = server.next()
    assert ev["id"] == req["id"] and ev["error_type"] == P.ERR_BAD_REQUEST and "colour" in ev["message"]
    req = P.request(P.GENERATE, {"prompt": "  "})
    server.send(req)
    assert server.next()["error_type"] == P.ERR_BAD_REQUEST


def test_edit_request(server, tmp_path):
    sidecar = tmp_path / "x.slat.npz"
    sidecar.write_bytes(b"x")
    req = P.request(P.EDIT, {"sidecar_path": str(sidecar), "region": {"box_min": [0, 0, 0], "box_max": [.1, .1, .1]},
                             "prompt": "a blue chair", "seed": 2})
    server.send(req)
    ev = server.finish(req["id"])[-1]
    assert ev["type"] == P.RESULT and ev["meta"]["kind"] == "edit"
    req = P.request(P.EDIT, {"sidecar_path": str(tmp_path / "missing.npz"), "region": {"voxels": [[1, 2, 3]]}})
    server.send(req)
    ev = server.finish(req["id"])[-1]
    assert ev["type"] == P.ERROR and ev["error_type"] == "MissingFileError"


def test_shutdown_during_job_exits_cleanly(server):
    req = gen("slow chair")
    server.send(req)
    server.until(lambda e: e["type"] == P.PROGRESS and e["stage"] == "sparse_structure")
    t0 = time.time()
    server.send(P.request(P.SHUTDOWN))
    assert server.proc.wait(10) == 0
    assert time.time() - t0 < 5


def test_stdin_eof_exits(server):
    server.proc.stdin.close()
    assert server.proc.wait(10) == 0


def test_backend_crash_is_visible_as_exit(server):
    req = gen("crash")
    server.send(req)
    assert server.proc.wait(10) == 3


def test_server_import_does_not_import_torch():
    code = ("import sys; import trellis_backend.server.app, trellis_backend.server.jobs; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "backend"))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_missing_model_argument_fails_with_usage():
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "backend"))
    r = subprocess.run([sys.executable, "-m", "trellis_backend.server"], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "--model" in r.stderr
