"""Batch generation on a local Ray (CPU, 2 actors, tiny random model): results, a killed actor, resume."""
import pytest
from batch_cases import (FAST, GOOD_IMAGES, check_interrupt_and_resume, check_six_jobs,
                         images, manifest_lines, model)  # noqa: F401 (fixtures)

from trellis_backend.batch import run_batch
from trellis_backend.batch.ray_executor import NAMESPACE

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the module (2 CPUs, no dashboard); run_batch uses it and leaves it running."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    yield
    ray.shutdown()


def batch(images, model, out, **kw):
    return run_batch(images, model, out, options=FAST, executor="ray", workers=2, device="cpu",
                     show_progress=False, **kw)


def test_six_jobs_on_two_actors(ray_session, model, images, tmp_path):
    out = tmp_path / "out"
    summary = batch(images, model, out)
    assert summary.executor == "ray" and len(summary.workers) == 2
    assert len({w["pid"] for w in summary.workers}) == 2 and all(w["threads"] == 1 for w in summary.workers)
    assert len(summary.done) == GOOD_IMAGES and len(summary.failed) == 1 and summary.worker_deaths == 0
    lines = check_six_jobs(out)
    assert {r["worker"] for r in lines} <= {w["worker"] for w in summary.workers}
    assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == NAMESPACE]


class KillOtherActor:
    """on_result callback: when the first job is done, ray.kill the other actor (busy with its own job)."""

    def __init__(self):
        self.killed = None

    def __call__(self, record):
        if self.killed is None and record["status"] == "done":
            names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                     if a["namespace"] == NAMESPACE and a["name"] != record["worker"]]
            assert len(names) == 1
            ray.kill(ray.get_actor(names[0], namespace=NAMESPACE))
            self.killed = names[0]


def test_killed_actor_is_replaced_and_its_job_retried(ray_session, model, images, tmp_path):
    out = tmp_path / "out"
    killer = KillOtherActor()
    summary = batch(images, model, out, on_result=killer)
    assert killer.killed
    assert len(summary.done) == GOOD_IMAGES and len(summary.failed) == 1  # every good job done, none lost
    lines = check_six_jobs(out)  # one manifest line per job: none duplicated
    retried = [r for r in lines if r["attempts"] == 2]
    # The dead actor is noticed through the job it held (or the next one it is given): that job is retried on
    # another actor. On a loaded machine it can also have been idle with no job left for it: then no death
    # is seen and nothing needs a retry.
    assert summary.worker_deaths == len(retried) <= 1
    assert all(r["worker"] != killer.killed for r in retried)
    # a replacement is started per death; it is listed once it came up, which it need not do when the retried
    # job already finished on the surviving actor (the run ends without waiting for an actor it no longer needs)
    assert len(summary.workers) in (2, 2 + summary.worker_deaths)


def test_interrupt_and_resume_on_ray(ray_session, model, images, tmp_path):
    check_interrupt_and_resume(lambda out, on_result: batch(images, model, out, on_result=on_result),
                               tmp_path / "out")
    assert all(r["status"] in ("done", "failed") for r in manifest_lines(tmp_path / "out"))
