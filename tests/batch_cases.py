"""Shared pieces of the batch tests (with and without Ray): a tiny model, an image folder, checks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

FAST = {"steps": 2, "formats": "glb"}  # 2 sampling steps per stage, GLB (+ the sidecar generate always writes)
GOOD_IMAGES = 5


def make_tiny_image_model(folder: Path) -> Path:
    """The one place that knows where the random-model builder lives."""
    from trellis_lab.random_model import make_random_model

    return make_random_model(folder, "image")


def make_image_folder(folder: Path) -> Path:
    """Five RGBA images of coloured boxes and one corrupt file with an image suffix."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(GOOD_IMAGES):
        a = np.zeros((96, 96, 4), np.uint8)
        x0, y0 = rng.integers(10, 30, size=2)
        a[y0:y0 + 50, x0:x0 + 45] = (*rng.integers(40, 250, size=3), 255)
        Image.fromarray(a, "RGBA").save(folder / f"shape{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a PNG file")
    return folder


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny random image model, built once per test module."""
    return make_tiny_image_model(tmp_path_factory.mktemp("batch_model") / "tiny-image")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """The image folder of `make_image_folder`, once per test module."""
    return make_image_folder(tmp_path_factory.mktemp("batch_images") / "images")


def manifest_lines(out: Path) -> list:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def glb_mtimes(out: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in sorted(out.glob("*.glb"))}


def check_six_jobs(out: Path) -> list:
    """5 done + 1 failed (the corrupt image), one manifest line each, 5 GLBs that trimesh reads."""
    lines = manifest_lines(out)
    assert len(lines) == GOOD_IMAGES + 1 == len({r["id"] for r in lines})
    done = [r for r in lines if r["status"] == "done"]
    failed = [r for r in lines if r["status"] == "failed"]
    assert len(done) == GOOD_IMAGES and len(failed) == 1
    bad = failed[0]
    assert bad["image"][0].endswith("broken.png")
    assert "cannot read image" in bad["error"] and bad["hint"] and bad["error_type"] == "BadInputError"
    assert bad["files"] == {}
    assert not list(out.glob(f"{bad['id']}*"))  # a failed job leaves no file under a final name
    for rec in done:
        assert set(rec["files"]) == {"glb", "slat"} and rec["seconds"] > 0 and rec["attempts"] >= 1
        mesh = trimesh.load(out / rec["files"]["glb"], force="mesh")
        assert len(mesh.vertices) > 0 and len(mesh.faces) > 0
    assert len(list(out.glob("*.glb"))) == GOOD_IMAGES
    assert not (out / ".trellis-batch-tmp").exists()  # no temporary files left
    return lines


class StopAfter:
    """on_result callback that presses Ctrl-C (raises KeyboardInterrupt) after `n` jobs are done."""

    def __init__(self, n: int):
        self.n = n
        self.done = 0

    def __call__(self, record: dict) -> None:
        if record["status"] == "done":
            self.done += 1
            if self.done == self.n:
                raise KeyboardInterrupt


def check_interrupt_and_resume(run, out: Path) -> None:
    """`run(out, on_result)` runs the six jobs; interrupted after 2 done, a re-run finishes the rest
    without touching what was finished."""
    first = run(out, StopAfter(2))
    assert first.interrupted and len(first.done) == 2
    lines = manifest_lines(out)
    finished = {r["id"] for r in lines if r["status"] == "done"}
    assert finished == {r["id"] for r in first.done}
    assert all(r["status"] in ("done", "failed", "interrupted") for r in lines)
    before = glb_mtimes(out)
    assert len(before) == 2

    second = run(out, None)
    assert not second.interrupted and second.skipped_done == 2
    assert not finished & {r["id"] for r in second.done}  # nothing finished was generated again
    after = glb_mtimes(out)
    assert {k: after[k] for k in before} == before
    assert len(second.done) == 3
    check_six_jobs(out)
