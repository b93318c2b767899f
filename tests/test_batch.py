"""Batch generation without Ray: job lists, manifest, file placement, the in-process executor, the CLI."""
import json
import sys

import pytest
from batch_cases import (FAST, GOOD_IMAGES, check_interrupt_and_resume, check_six_jobs, glb_mtimes,
                         images, manifest_lines, model)  # noqa: F401 (fixtures)

from trellis_backend.batch import load_jobs, read_manifest, run_batch
from trellis_backend.batch.jobs import make_job
from trellis_backend.batch.manifest import Manifest
from trellis_backend.batch.ray_executor import plan_workers
from trellis_backend.batch.worker import move_into_place
from trellis_backend.errors import BadInputError


@pytest.fixture
def hide_ray(monkeypatch):
    """Make `import ray` fail as on a machine without the cluster extra."""
    monkeypatch.setitem(sys.modules, "ray", None)


# ----------------------------------------------------------------------------- job lists
def test_prompts_file_ids_are_stable_and_readable(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("# props\na red chair\n\n  a wooden barrel  \n")
    b = tmp_path / "b.txt"
    b.write_text("a wooden barrel\nsomething new\na red chair\n")
    ja, jb = load_jobs(a, {"seed": 3}), load_jobs(b, {"seed": 3})
    assert [j.prompt for j in ja] == ["a red chair", "a wooden barrel"]
    assert ja[0].id.startswith("a_red_chair_seed3_") and ja[0].source == "a.txt:2"
    # same job -> same id wherever it stands in the list; another seed or option -> another id
    assert {j.id for j in ja} <= {j.id for j in jb}
    assert load_jobs(a, {"seed": 4})[0].id != ja[0].id
    assert load_jobs(a, {"seed": 3, "steps": 5})[0].id != ja[0].id


def test_jobs_file_options_paths_and_errors(tmp_path):
    (tmp_path / "shots").mkdir()
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"image": "shots/lamp.png", "seed": 2, "steps": 7, "cfg": 3.5, "name": "lamp"}\n'
                    '{"prompt": "a stool", "formats": "glb,ply"}\n')
    lamp, stool = load_jobs(jobs, {"seed": 9, "steps": 4})
    assert lamp.id == "lamp" and lamp.images == (str((tmp_path / "shots" / "lamp.png").resolve()),)
    assert lamp.seed == 2 and lamp.options == {"steps": 7, "cfg": 3.5}
    kw = lamp.generate_kwargs()
    assert kw["image"] == lamp.images[0] and kw["ss_steps"] == 7 and kw["slat_cfg"] == 3.5
    assert stool.seed == 9 and stool.options == {"steps": 4, "formats": "mesh,gaussians"}

    cases = {'{"prompt": "x", "colour": 1}': "unknown key(s) colour",
             '{"prompt": "x", "image": "a.png"}': "exactly one of",
             '{"prompt": "x", "steps": "many"}': "'steps' must be int",
             '{"prompt": "x", "name": "a/b"}': "invalid output name",
             '{"prompt": "x"': "not valid JSON"}
    for line, message in cases.items():
        jobs.write_text('{"prompt": "fine"}\n' + line + "\n")
        with pytest.raises(BadInputError, match="jobs.jsonl:2") as e:
            load_jobs(jobs)
        assert message in str(e.value)


def test_repeated_or_clashing_jobs_are_refused(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a chair\na table\na chair\n")
    with pytest.raises(BadInputError, match="p.txt:3 and p.txt:1 are the same job"):
        load_jobs(prompts)
    with pytest.raises(BadInputError, match="both named 'x'"):
        load_jobs([{"prompt": "a", "name": "x"}, {"prompt": "b", "name": "x"}])


def test_image_folder_lists_images_only(images):
    jobs = load_jobs(images)
    assert len(jobs) == GOOD_IMAGES + 1
    assert all(j.images and j.prompt is None for j in jobs)


# ----------------------------------------------------------------------------- manifest, files, layout
def test_manifest_one_line_per_job_and_torn_line(tmp_path):
    with Manifest(tmp_path) as m:
        for status in ("running", "failed", "running", "done"):
            m.write({"id": "a", "status": status})
        m.write({"id": "b", "status": "running"})
        assert len((tmp_path / "manifest.jsonl").read_text().splitlines()) == 5  # appended while running
    lines = manifest_lines(tmp_path)
    assert [(r["id"], r["status"]) for r in lines] == [("a", "done"), ("b", "running")]  # compacted on close
    with open(tmp_path / "manifest.jsonl", "a") as f:
        f.write('{"id": "b", "status": "do')  # a crash in the middle of a write
    assert read_manifest(tmp_path / "manifest.jsonl")["b"]["status"] == "running"
    with Manifest(tmp_path) as m:
        with pytest.raises(ValueError):
            m.write({"id": "c", "status": "finished"})


def test_move_into_place_never_overwrites_another_jobs_file(tmp_path):
    out, tmp = tmp_path / "out", tmp_path / "out" / "tmp"
    tmp.mkdir(parents=True)
    (tmp / "a.glb").write_bytes(b"new")
    (tmp / "a.slat.npz").write_bytes(b"new")
    (out / "a.slat.npz").write_bytes(b"someone else's")
    files = {"glb": str(tmp / "a.glb"), "slat": str(tmp / "a.slat.npz")}
    with pytest.raises(BadInputError, match="already exists"):
        move_into_place(files, out, replace_own=False)
    assert not (out / "a.glb").exists() and (out / "a.slat.npz").read_bytes() == b"someone else's"
    assert move_into_place(files, out, replace_own=True) == {"glb": "a.glb", "slat": "a.slat.npz"}
    assert (out / "a.slat.npz").read_bytes() == b"new" and not list(tmp.iterdir())


def test_plan_workers_fits_the_cluster():
    assert plan_workers({"CPU": 16, "GPU": 2}, "auto", None, None, None) == (2, 1.0, 8)
    assert plan_workers({"CPU": 32, "GPU": 2}, "auto", 1, 1, None) == (1, 1.0, 8)
    assert plan_workers({"CPU": 8, "GPU": 2}, "cpu", 2, None, None) == (2, 0.0, 4)
    assert plan_workers({"CPU": 2}, "auto", 2, None, None) == (2, 0.0, 1)
    assert plan_workers({"CPU": 16}, "auto", None, None, None) == (4, 0.0, 4)
    with pytest.raises(BadInputError, match="do not fit"):
        plan_workers({"CPU": 2}, "auto", 3, None, None)
    with pytest.raises(BadInputError, match="has 0 GPU"):
        plan_workers({"CPU": 8}, "auto", None, 1, None)


# ----------------------------------------------------------------------------- the in-process executor
@pytest.mark.parametrize("how", ["forced", "ray_absent"])
def test_six_jobs_in_process(model, images, tmp_path, monkeypatch, how):
    messages = []
    if how == "ray_absent":
        monkeypatch.setitem(sys.modules, "ray", None)
    out = tmp_path / "out"
    summary = run_batch(images, model, out, options=FAST, executor="local" if how == "forced" else "auto",
                        device="cpu", show_progress=False, log=messages.append)
    assert summary.executor == "in-process" and len(summary.done) == GOOD_IMAGES and len(summary.failed) == 1
    if how == "ray_absent":
        assert any("pip install .[cluster]" in m for m in messages)
    else:
        assert messages == []
    lines = check_six_jobs(out)
    mtimes = glb_mtimes(out)

    # a re-run skips the finished jobs and retries the failed one (up to --retries times in all)
    again = run_batch(images, model, out, options=FAST, executor="local", device="cpu", retries=1,
                      show_progress=False)
    assert again.skipped_done == GOOD_IMAGES and not again.done and len(again.failed) == 1
    assert glb_mtimes(out) == mtimes
    bad = [r for r in manifest_lines(out) if r["status"] == "failed"][0]
    assert bad["attempts"] == 2 and len(manifest_lines(out)) == len(lines)
    third = run_batch(images, model, out, options=FAST, executor="local", device="cpu", retries=1,
                      show_progress=False)
    assert third.given_up == [bad["id"]] and not third.failed and not third.done


def test_interrupt_and_resume_in_process(model, images, tmp_path, hide_ray):
    def run(out, on_result):
        return run_batch(images, model, out, options=FAST, device="cpu", show_progress=False, on_result=on_result,
                         log=lambda m: None)

    check_interrupt_and_resume(run, tmp_path / "out")


def test_foreign_file_and_other_job_list_are_not_overwritten(model, images, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    job = next(j for j in load_jobs(images) if j.id.startswith("shape0"))
    (out / f"{job.id}.glb").write_bytes(b"not ours")
    summary = run_batch([job], model, out, executor="local", options=FAST, device="cpu", show_progress=False)
    assert summary.failed and "already exists" in summary.failed[0]["error"]
    assert (out / f"{job.id}.glb").read_bytes() == b"not ours"
    # the same name from another job (other seed) in the same folder is refused before anything runs
    run_batch([make_job({"image": job.images[0], "name": "keep"})], model, out, executor="local", options=FAST,
              device="cpu", show_progress=False)
    with pytest.raises(BadInputError, match="different job"):
        run_batch([make_job({"image": job.images[0], "name": "keep", "seed": 5})], model, out,
                  executor="local", options=FAST, device="cpu", show_progress=False)


def test_missing_ray_when_asked_for(tmp_path, model, hide_ray):
    with pytest.raises(BadInputError, match="Ray is not installed") as e:
        run_batch([{"image": "x.png"}], model, tmp_path, executor="ray")
    assert "pip install .[cluster]" in e.value.hint


# ----------------------------------------------------------------------------- command line
def test_cli_batch_in_process(model, images, tmp_path, capsys):
    from trellis_backend.cli import main

    out = tmp_path / "out"
    rc = main(["batch", "--model", str(model), "--images", str(images), "--out", str(out), "--executor", "local",
               "--device", "cpu", "--steps", "2", "--formats", "glb", "--quiet", "--json"])
    assert rc == 1  # one job failed
    report = json.loads(capsys.readouterr().out)
    assert len(report["done"]) == GOOD_IMAGES and report["failed"][0]["error"].startswith("cannot read image")
    check_six_jobs(out)

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a chair\n")
    rc = main(["batch", "--model", str(model), "--prompts", str(prompts), "--out", str(out), "--executor", "local"])
    err = capsys.readouterr().err
    assert rc == 2 and "image-conditioned model" in err and "hint:" in err
