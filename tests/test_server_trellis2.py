"""The server's job runner on a tiny random TRELLIS.2 folder and a TRELLIS one (CPU): the family comes from the
folder, ``resolution`` is accepted for TRELLIS.2 and refused, with a clear error event, for TRELLIS."""
import threading

import pytest

from trellis_backend.server import protocol as P
from trellis_backend.server.jobs import JobRunner

pytest.importorskip("transformers")


def _run(folder, params, out):
    events = []
    done = threading.Event()

    def send(event):
        events.append(event)
        if event["type"] in (P.RESULT, P.ERROR):
            done.set()

    runner = JobRunner(send, str(folder), device="cpu", output_dir=str(out))
    assert runner.submit(P.request(P.GENERATE, params))
    assert done.wait(300)
    return events


def test_protocol_knows_the_resolution_modes():
    from trellis_backend.pipeline.trellis2 import RESOLUTION_MODES

    assert tuple(RESOLUTION_MODES) == P.RESOLUTION_MODES
    assert P.validate_job_params(P.GENERATE, {"image": "a.png", "resolution": "1024_cascade", "texture_size": 64}) == []
    assert P.validate_job_params(P.GENERATE, {"image": "a.png", "resolution": "2048"}) == [
        "'resolution' must be one of 512, 1024, 1024_cascade, 1536_cascade"]


def test_trellis2_folder_generates_a_pbr_glb_in_the_requested_mode(tmp_path):
    from inputs import write_rgba_png
    from trellis_lab.random_model_trellis2 import make_random_trellis2

    folder = make_random_trellis2(tmp_path / "t2")
    png = write_rgba_png(tmp_path / "c.png", (64, 64), (10, 50, 20, 40), (200, 40, 40))
    events = _run(folder, {"image": str(png), "resolution": "512", "texture_size": 32, "name": "a"}, tmp_path / "o")
    end = events[-1]
    assert end["type"] == P.RESULT, end
    assert set(end["files"]) == {"glb", "slat"} and end["meta"]["resolution_mode"] == "512"
    stages = [e["stage"] for e in events if e["type"] == P.PROGRESS]
    assert stages.index("load") < stages.index("sparse_structure") < stages.index("shape_slat") \
        < stages.index("tex_slat") < stages.index("export")


def test_resolution_on_a_trellis_folder_is_a_clear_error_event(tmp_path):
    from inputs import write_rgba_png
    from trellis_lab.random_model import make_random_model

    folder = make_random_model(tmp_path / "t1", "image")
    png = write_rgba_png(tmp_path / "c.png", (64, 64), (10, 50, 20, 40), (200, 40, 40))
    end = _run(folder, {"image": str(png), "resolution": "512"}, tmp_path / "o")[-1]
    assert end["type"] == P.ERROR and end["error_type"] == "BadInputError"
    assert "resolution is a TRELLIS.2 option" in end["message"] and end["hint"]
