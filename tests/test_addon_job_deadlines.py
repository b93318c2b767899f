"""Issue 18, class 2 on the add-on side, without Blender: the bpy-free client and `core.job_watch` end every
job in bounded time (silent or dead backend, ignored cancel, ``id: null`` errors, oversize answers).

The backend here is a real child process (a few lines of Python speaking the protocol), so the client's
reader threads, pipes and size limits are the ones the add-on uses."""

import os
import sys
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from addon.core import protocol as P  # noqa: E402
from addon.core.client import ERR_OVERSIZE, BackendClient, BackendConfig  # noqa: E402
from addon.core.job_watch import ERR_CANCEL_TIMEOUT, ERR_UNRESPONSIVE, JobWatch  # noqa: E402


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def fake_backend(tmp_path, body):
    """A backend interpreter stand-in: a script that gets the request lines on stdin (module args ignored)."""
    script = tmp_path / "fake_server.py"
    script.write_text("import json, sys, time\n" + textwrap.dedent(body))
    wrapper = tmp_path / "python"
    wrapper.write_text("#!/bin/sh\nexec %s %s\n" % (sys.executable, script))
    wrapper.chmod(0o755)
    return BackendConfig(python=str(wrapper), model="unused")


def events_until(client, predicate, timeout=20.0):
    seen, deadline = [], time.time() + timeout
    while time.time() < deadline:
        event = client.get_event(0.1)
        if event is not None:
            seen.append(event)
            if predicate(event):
                return seen
    raise AssertionError("no matching event; got %r" % seen)


# ---------------------------------------------------------------- JobWatch: deadlines
def test_silent_backend_is_pinged_then_declared_unresponsive():
    clock, job = Clock(), P.Job("g1", P.GENERATE)
    watch = JobWatch(job, ping_after_s=5, silent_limit_s=30, clock=clock)
    assert not watch.wants_ping() and watch.overdue() is None
    clock.t += 6
    assert watch.wants_ping() and not watch.wants_ping()  # one ping per interval
    clock.t += 20
    assert watch.overdue() is None
    clock.t += 5
    event = watch.overdue()
    assert event["id"] == "g1" and event["error_type"] == ERR_UNRESPONSIVE and event["hint"]
    job.apply(event)
    assert job.state == P.FAILED and watch.overdue() is None


def test_any_output_resets_the_silence_clock():
    clock, job = Clock(), P.Job("g1", P.GENERATE)
    watch = JobWatch(job, ping_after_s=5, silent_limit_s=30, clock=clock)
    clock.t += 29
    watch.heard({"id": "other", "type": P.PONG})
    clock.t += 29
    watch.output_seen(clock.t - 1)  # a stderr line a second ago
    clock.t += 29
    assert watch.overdue() is None


def test_ignored_cancel_ends_the_job():
    clock, job = Clock(), P.Job("g1", P.GENERATE)
    watch = JobWatch(job, cancel_grace_s=10, clock=clock)
    job.request_cancel()
    watch.cancel_sent()
    clock.t += 5
    watch.heard({"id": "g1", "type": P.PROGRESS})  # still busy: progress does not extend the grace
    clock.t += 6
    event = watch.overdue()
    assert event["error_type"] == ERR_CANCEL_TIMEOUT
    job.apply(event)
    assert job.finished


def test_id_null_error_ends_a_job_that_had_no_answer_yet():
    job = P.Job("g1", P.GENERATE)
    watch = JobWatch(job)
    null_error = P.error_event(None, P.ERR_PROTOCOL, "message longer than 16777216 bytes")
    assert watch.owns(null_error)
    job.apply(watch.adopt(null_error))
    assert job.state == P.FAILED and job.error_type == P.ERR_PROTOCOL and "16777216" in job.error_message


def test_id_null_error_after_progress_is_not_the_jobs():
    job = P.Job("g1", P.GENERATE)
    watch = JobWatch(job)
    watch.heard({"id": "g1", "type": P.PROGRESS})
    assert not watch.owns(P.error_event(None, P.ERR_PROTOCOL, "bad line"))


# ------------------------------------------------------- client: real pipes, real limits
@pytest.mark.skipif(sys.platform == "win32", reason="shell wrapper")
def test_oversize_result_line_becomes_an_error_for_its_job(tmp_path):
    client = BackendClient()
    client.start(fake_backend(tmp_path, """
        line = sys.stdin.readline()
        rid = json.loads(line)["id"]
        pad = "x" * (16 * 1024 * 1024 + 10)
        sys.stdout.write(json.dumps({"id": rid, "type": "result", "files": {}, "meta": {"pad": pad}}) + "\\n")
        sys.stdout.write(json.dumps({"id": "after", "type": "pong"}) + "\\n")
        sys.stdout.flush()
        time.sleep(30)
    """))
    try:
        client.send({"id": "g-big", "type": P.GENERATE, "params": {"prompt": "x"}})
        seen = events_until(client, lambda e: e.get("id") == "after")
        errors = [e for e in seen if e.get("type") == P.ERROR]
        assert len(errors) == 1 and errors[0]["id"] == "g-big" and errors[0]["error_type"] == ERR_OVERSIZE
        assert client.last_output is not None
    finally:
        client.stop(timeout=1)


@pytest.mark.skipif(sys.platform == "win32", reason="shell wrapper")
def test_backend_that_dies_mid_job_queues_an_exit_event(tmp_path):
    client = BackendClient()
    client.start(fake_backend(tmp_path, """
        rid = json.loads(sys.stdin.readline())["id"]
        print(json.dumps({"id": rid, "type": "progress", "stage": "slat", "step": 1, "total": 4}), flush=True)
        sys.exit(9)
    """))
    try:
        client.send({"id": "g-die", "type": P.GENERATE, "params": {"prompt": "x"}})
        seen = events_until(client, lambda e: e.get("type") == "exited")
        assert seen[-1]["returncode"] == 9 and not seen[-1]["expected"]
    finally:
        client.stop(timeout=1)


@pytest.mark.skipif(sys.platform == "win32", reason="shell wrapper")
def test_silent_backend_fails_the_job_through_the_watch(tmp_path):
    client = BackendClient()
    client.start(fake_backend(tmp_path, """
        sys.stdin.readline()
        time.sleep(60)  # hangs: answers nothing, not even pings
    """))
    try:
        job = P.Job("g-hang", P.GENERATE)
        watch = JobWatch(job, ping_after_s=0.2, silent_limit_s=1.0)
        client.send({"id": job.id, "type": P.GENERATE, "params": {"prompt": "x"}})
        deadline = time.time() + 10
        while not job.finished and time.time() < deadline:
            event = client.get_event(0.05)
            if event is not None:
                watch.heard(event)
            watch.output_seen(client.last_output)
            if watch.wants_ping():
                client.send(P.request(P.PING))
            overdue = watch.overdue()
            if overdue is not None:
                job.apply(overdue)
        assert job.state == P.FAILED and job.error_type == ERR_UNRESPONSIVE
    finally:
        client.stop(timeout=1)
