"""The shared wire protocol and job state machine (no Blender, no torch)."""

import ast
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADDON_COPY = os.path.join(ROOT, "addon", "core", "protocol.py")
SERVER_COPY = os.path.join(ROOT, "backend", "trellis_backend", "server", "protocol.py")
sys.path.insert(0, os.path.join(ROOT, "backend"))

from trellis_backend.server import protocol as P  # noqa: E402


def test_addon_and_server_copies_are_byte_identical():
    with open(ADDON_COPY, "rb") as a, open(SERVER_COPY, "rb") as b:
        assert a.read() == b.read(), "run: cp addon/core/protocol.py backend/trellis_backend/server/protocol.py"


def test_protocol_imports_only_stdlib():
    tree = ast.parse(open(ADDON_COPY).read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "protocol.py must not import relatives"
            names.add(node.module.split(".")[0])
    assert names <= set(sys.stdlib_module_names), names - set(sys.stdlib_module_names)


def test_round_trip_request_and_events():
    req = P.request(P.GENERATE, {"prompt": "a chair", "seed": 1})
    line = P.encode(req)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert P.decode_request(line) == req
    for ev in (P.ready_event(pid=1), P.pong_event("p"), P.progress_event("j", "slat", 3, 25, "x"),
               P.result_event("j", {"glb": "/a.glb"}, {"seed": 1}), P.error_event("j", "Busy", "busy", "wait")):
        assert P.decode_event(P.encode(ev)) == ev


def test_multiline_text_stays_on_one_line():
    ev = P.error_event("j", "InternalError", "line1\nline2", "h", detail="Traceback\n  x\n")
    line = P.encode(ev)
    assert line.count(b"\n") == 1
    assert P.decode_event(line)["detail"] == "Traceback\n  x\n"


def test_non_ascii_survives():
    ev = P.progress_event("j", "slat", 1, 2, "ein Stuhl – 椅子")
    assert P.decode_event(P.encode(ev))["message"] == "ein Stuhl – 椅子"


@pytest.mark.parametrize("line", [b"", b"   \n", b"nope\n", b"[1,2]\n", b'{"type":"generate"}\n',
                                  b'{"id":"x","type":"explode"}\n', b'{"id":"x","type":"ping","params":[1]}\n',
                                  b"\xff\xfe\n"])
def test_bad_requests_raise_protocol_error(line):
    with pytest.raises(P.ProtocolError):
        P.decode_request(line)


@pytest.mark.parametrize("line", [b'{"type":"progress","id":"j"}\n', b'{"type":"result","id":"j"}\n',
                                  b'{"type":"error","id":"j","message":"m"}\n', b'{"type":"weird"}\n'])
def test_bad_events_raise_protocol_error(line):
    with pytest.raises(P.ProtocolError):
        P.decode_event(line)


def test_nan_is_refused_at_encode():
    with pytest.raises(ValueError):
        P.encode(P.result_event("j", {}, {"loss": float("nan")}))


@pytest.mark.parametrize("rtype,params,problem", [
    (P.GENERATE, {}, "prompt or an image"),
    (P.GENERATE, {"prompt": "x", "bogus": 1}, "bogus"),
    (P.GENERATE, {"prompt": 3}, "'prompt' must be a string"),
    (P.GENERATE, {"prompt": "x", "formats": ["obj"]}, "formats"),
    (P.GENERATE, {"prompt": "x", "formats": []}, "formats"),
    (P.GENERATE, {"prompt": "x", "seed": -1}, "seed"),
    (P.GENERATE, {"prompt": "x", "seed": True}, "seed"),
    (P.GENERATE, {"prompt": "x", "ss_cfg": "high"}, "ss_cfg"),
    (P.GENERATE, {"image": []}, "non-empty list of file paths"),
    (P.GENERATE, {"image": ["/a.png", 3]}, "non-empty list of file paths"),
    (P.GENERATE, {"image": ["/a.png", "/b.png"], "multi_image_mode": "average"}, "multi_image_mode"),
    (P.EDIT, {"prompt": "x", "sidecar_path": "/s", "region": {}, "multi_image_mode": "stochastic"},
     "unknown parameter 'multi_image_mode'"),
    (P.EDIT, {"prompt": "x"}, "sidecar_path"),
    (P.EDIT, {"prompt": "x", "sidecar_path": "/s"}, "region"),
])
def test_validate_job_params_names_the_problem(rtype, params, problem):
    problems = P.validate_job_params(rtype, params)
    assert any(problem in p for p in problems), problems


def test_valid_params_have_no_problems():
    assert P.validate_job_params(P.GENERATE, {"image": "/x.png", "seed": 0, "ss_steps": 12, "slat_cfg": 3,
                                              "formats": ["mesh"], "output_dir": "/o", "name": "n"}) == []
    assert P.validate_job_params(P.EDIT, {"sidecar_path": "/s", "region": {"voxels": [[1, 2, 3]]}}) == []
    for mode in P.MULTI_IMAGE_MODES:
        assert P.validate_job_params(P.GENERATE, {"image": ["/a.png", "/b.png"], "multi_image_mode": mode}) == []


def test_job_happy_path():
    job = P.Job("j", P.GENERATE)
    assert job.state == P.PENDING and job.fraction == 0.0
    job.apply(P.progress_event("j", "slat", 5, 20, "m"))
    assert job.state == P.RUNNING and job.stage == "slat" and job.fraction == 0.25
    job.apply(P.result_event("j", {"glb": "/a"}, {"k": 1}))
    assert job.state == P.DONE and job.finished and job.fraction == 1.0 and job.files == {"glb": "/a"}


def test_job_cancel_path():
    job = P.Job("j", P.GENERATE)
    job.apply(P.progress_event("j", "slat", 1, 2))
    assert job.request_cancel()
    job.apply(P.progress_event("j", "slat", 2, 2))  # late progress keeps it cancelling
    assert job.state == P.CANCELLING
    job.apply(P.error_event("j", P.ERR_CANCELLED, "cancelled", "h"))
    assert job.state == P.CANCELLED and job.finished
    assert not job.request_cancel()


def test_job_error_path_and_final_state_is_final():
    job = P.Job("j", P.GENERATE)
    job.apply(P.error_event("j", "OutOfMemoryError", "oom", "close programs"))
    assert job.state == P.FAILED and job.error_hint == "close programs"
    for late in (P.progress_event("j", "s", 1, 2), P.result_event("j", {}), P.error_event("j", "X", "y")):
        with pytest.raises(P.ProtocolError):
            job.apply(late)


def test_job_refuses_foreign_and_non_job_events():
    job = P.Job("j", P.GENERATE)
    with pytest.raises(P.ProtocolError):
        job.apply(P.progress_event("other", "s", 1, 2))
    with pytest.raises(P.ProtocolError):
        job.apply(P.pong_event("j"))


def test_new_ids_are_unique():
    assert len({P.new_id() for _ in range(1000)}) == 1000
