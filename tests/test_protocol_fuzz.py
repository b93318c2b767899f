"""Property-based fuzzing of the server protocol: every line gets its answer and the server stays up.

The server runs as the add-on runs it (subprocess, pipes) on a tiny random-weight text model. Each
example is one line: random bytes, any JSON value (NaN, huge integers, deep nesting, any Unicode,
lone surrogates), or a request-shaped object whose fields are random or nearly valid. After each
line a ping must be answered; a line that is not a request must get a protocol error, a job request
must end with a result or an error. Jobs that run longer than a few seconds are cancelled (their
terminal event must still come).

CI runs FUZZ_EXAMPLES (default 120) examples; a long local run:
    FUZZ_EXAMPLES=10000 python -m pytest -q -s tests/test_protocol_fuzz.py   (the backend venv's python)
(prints the counts of what was sent and answered).
"""
import collections
import json
import os
import queue
import sys
import time

import pytest

from test_server import P, ServerProc

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from trellis_lab import random_model  # noqa: E402

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "120"))
JOB_PATIENCE_S = 5.0      # a job that runs longer than this is cancelled
ANSWER_TIMEOUT_S = 120.0  # no single line may go unanswered for longer
FIELDS = ["prompt", "image", "seed", "ss_steps", "slat_steps", "ss_cfg", "slat_cfg", "formats", "output_dir",
          "name", "overwrite", "sidecar_path", "region", "keep_structure", "margin", "resample"]
TYPES = ["generate", "edit", "ping", "cancel", "dance", "", "GENERATE"]

surrogates = st.integers(0xD800, 0xDFFF).map(chr)
texts = st.one_of(st.text(max_size=40), st.lists(st.one_of(st.characters(), surrogates), max_size=20).map("".join),
                  st.sampled_from(["", " ", "a chair", "../../etc/passwd", "/tmp", "\0", "x" * 5000, "\u202e"]))
numbers = st.one_of(st.integers(), st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, 1, 2, -1, 2 ** 63, 2 ** 64, 1e308, 1e-320]))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=6),
                                                        st.dictionaries(texts, c, max_size=6)), max_leaves=25)
near_valid = st.fixed_dictionaries({}, optional={
    "prompt": st.one_of(st.sampled_from(["a chair", "a red lamp"]), texts, json_values),
    "seed": st.one_of(st.integers(0, 10), numbers),
    "ss_steps": st.one_of(st.integers(1, 3), numbers),
    "slat_steps": st.one_of(st.integers(1, 3), numbers),
    "ss_cfg": st.one_of(st.floats(0, 10), numbers),
    "slat_cfg": st.one_of(st.floats(0, 10), numbers),
    "formats": st.one_of(st.lists(st.sampled_from(["mesh", "gaussians"]), min_size=1, max_size=2), json_values),
    "name": st.one_of(st.sampled_from(["fuzz", "a b", "x" * 300]), texts),
    "region": st.one_of(
        st.fixed_dictionaries({"box_min": st.lists(numbers, min_size=3, max_size=3),
                               "box_max": st.lists(numbers, min_size=3, max_size=3)}),
        st.fixed_dictionaries({"voxels": st.lists(st.lists(st.integers(-2, 70), min_size=2, max_size=4),
                                                  max_size=5)}),
        json_values),
    "keep_structure": st.one_of(st.booleans(), json_values),
    "margin": st.one_of(st.integers(0, 3), numbers),
    "resample": st.one_of(st.integers(0, 2), numbers),
    "sidecar_path": texts,
    "image": texts,
})
params = st.one_of(near_valid, st.dictionaries(st.one_of(st.sampled_from(FIELDS), texts), json_values, max_size=6),
                   json_values)
requests = st.fixed_dictionaries({"id": st.one_of(st.uuids().map(str), texts, json_values),
                                  "type": st.one_of(st.sampled_from(TYPES), texts, json_values),
                                  "params": params}).map(lambda r: json.dumps(r, ensure_ascii=False))


def _encodable(s):
    return s.encode("utf-8", "surrogatepass")


def _nested(depth, kind):
    return ("[" * depth + "]" * depth) if kind == "list" else ('{"a":' * depth + "1" + "}" * depth)


well_formed = st.fixed_dictionaries({"id": st.uuids().map(str),
                                     "type": st.sampled_from(["generate", "generate", "edit", "ping", "cancel"]),
                                     "params": st.one_of(near_valid, near_valid, params)}
                                    ).map(lambda r: json.dumps(r, ensure_ascii=False))

valid_jobs = st.fixed_dictionaries({"id": st.uuids().map(str), "type": st.just("generate"), "params":
                                    st.fixed_dictionaries({"prompt": st.text(min_size=1, max_size=30).filter(str.strip)},
                                                          optional={"seed": st.integers(0, 2 ** 63 - 1),
                                                                    "ss_steps": st.integers(1, 4),
                                                                    "slat_steps": st.integers(1, 4),
                                                                    "ss_cfg": st.floats(0, 100),
                                                                    "slat_cfg": st.floats(0, 100),
                                                                    "formats": st.sampled_from([["mesh"], ["gaussians"],
                                                                                                ["mesh", "gaussians"]]),
                                                                    "name": st.sampled_from(["fuzz", "f\u00fcz z"])})}
                                   ).map(lambda r: json.dumps(r, ensure_ascii=False))

lines = st.one_of(
    valid_jobs.map(_encodable),
    well_formed.map(_encodable),
    well_formed.map(_encodable),
    well_formed.map(_encodable),
    requests.map(_encodable),
    json_values.map(lambda v: _encodable(json.dumps(v, ensure_ascii=False))),
    json_values.map(lambda v: _encodable(json.dumps(v))),
    st.binary(max_size=300),
    st.builds(_nested, st.integers(1, 60000), st.sampled_from(["list", "dict"])).map(str.encode),
    st.builds(lambda v, d: _encodable(json.dumps({"id": "deep", "type": "generate", "params": {"prompt": v}})[:-2]
                                      + "[" * d + "]" * d + "}}"), st.none(), st.integers(1, 5000)),
)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    model = random_model.make_random_model(tmp_path_factory.mktemp("fuzz_model") / "text", kind="text")
    out = tmp_path_factory.mktemp("fuzz_out")
    s = ServerProc(model, "--output-dir", str(out), factory=None)
    assert s.next(timeout=120)["type"] == P.READY
    warm = P.request(P.GENERATE, {"prompt": "a chair", "formats": ["mesh"]})  # load the pipeline once, up front
    s.send(warm)
    assert s.finish(warm["id"], timeout=300)[-1]["type"] == P.RESULT
    s.stats = collections.Counter()
    yield s
    s.close()
    print("\nfuzz statistics:", dict(sorted(s.stats.items())))


def expectation(line):
    """What the server must answer to `line`: ('protocol', None) | ('pong', id) | ('job', id) | ('none', None)."""
    try:
        req = P.decode_request(line)
    except Exception:
        return "protocol", None
    if req["type"] == P.PING:
        return "pong", req["id"]
    if req["type"] in P.JOB_REQUEST_TYPES:
        return "job", req["id"]
    return "none", None


def exchange(server, line):
    line = line.replace(b"\n", b" ")  # one example = one line
    kind, rid = expectation(line) if line.strip() else ("none", None)  # blank lines are skipped silently
    if kind == "none" and b"shutdown" in line.lower():
        return  # a well-formed shutdown ends the server by design
    ping = P.new_id("fuzzping")
    server.send(line + b"\n")
    server.send({"id": ping, "type": "ping"})
    need_pong, need_answer = True, kind in ("protocol", "pong", "job")
    start, cancelled = time.time(), False
    while need_pong or need_answer:
        left = ANSWER_TIMEOUT_S - (time.time() - start)
        assert left > 0, f"no answer within {ANSWER_TIMEOUT_S} s to {line[:200]!r}"
        try:
            ev = server.next(timeout=min(left, JOB_PATIENCE_S))
        except queue.Empty:  # a job still running -> cancel it once, keep waiting (up to the timeout)
            assert server.proc.poll() is None, f"server died on {line[:200]!r}"
            if kind == "job" and not cancelled:
                server.send({"id": P.new_id("cancel"), "type": "cancel", "params": {"job_id": rid}})
                cancelled = True
                server.stats["jobs cancelled"] += 1
            continue
        if ev["type"] == P.PONG and ev["id"] == ping:
            need_pong = False
        elif kind == "protocol" and ev["type"] == P.ERROR and ev["error_type"] == P.ERR_PROTOCOL:
            need_answer = False
            server.stats["protocol errors"] += 1
        elif kind == "pong" and ev["type"] == P.PONG and ev["id"] == rid:
            need_answer = False
            server.stats["pongs"] += 1
        elif kind == "job" and ev["id"] == rid and ev["type"] in (P.RESULT, P.ERROR):
            need_answer = False
            server.stats["job results" if ev["type"] == P.RESULT else "job errors: " + ev["error_type"]] += 1
            assert ev["type"] == P.RESULT or ev["error_type"] != P.ERR_INTERNAL, ev
        elif kind == "job" and ev["id"] == rid and ev["type"] == P.PROGRESS:
            if time.time() - start > JOB_PATIENCE_S and not cancelled:
                server.send({"id": P.new_id("cancel"), "type": "cancel", "params": {"job_id": rid}})
                cancelled = True
                server.stats["jobs cancelled"] += 1
    assert server.proc.poll() is None, f"server died on {line[:200]!r}"
    server.stats["lines"] += 1
    if server.stats["lines"] % 500 == 0:  # long runs report as they go
        print(f"[fuzz] after {server.stats['lines']} lines: {dict(sorted(server.stats.items()))}", file=sys.stderr,
              flush=True)


@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=EXAMPLES <= 200,
          suppress_health_check=list(HealthCheck))
@given(line=lines)
def test_every_line_is_answered_and_the_server_stays_up(fuzz_server, line):
    exchange(fuzz_server, line)
