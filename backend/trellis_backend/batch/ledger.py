"""Which jobs run, how often, and what the manifest says about each: shared by both executors.

Rules (the same with and without Ray):
* a job recorded ``done`` whose files are all still there is skipped;
* a ``failed`` job runs again while it has been started at most `retries` times (so a job is
  tried ``1 + retries`` times in all across re-runs); ``running`` / ``interrupted`` jobs
  (a crash or Ctrl-C) run again;
* a job whose worker died (killed, out of memory) is retried at once in the same run, within
  the same budget; a job that fails with an error (bad image, ...) is retried by a re-run.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Callable, Deque, Dict, List, Optional, Sequence

from .jobs import Job
from .manifest import Manifest, check_owner, utc_now

Listener = Callable[[dict], None]


class JobLedger:
    """The jobs of one run: the queue still to do, each start and end written to the manifest, the tallies."""

    def __init__(self, jobs: Sequence[Job], manifest: Manifest, model_key: str, retries: int,
                 listeners: Sequence[Listener] = ()):
        self.manifest = manifest
        self.model_key = model_key
        self.retries = max(0, int(retries))
        self.listeners = list(listeners)
        self.jobs: Dict[str, Job] = {j.id: j for j in jobs}
        self.queue: Deque[Job] = deque()
        self.skipped_done: List[str] = []
        self.given_up: List[str] = []
        self.done: List[dict] = []
        self.failed: List[dict] = []
        self.interrupted: List[str] = []
        self.worker_deaths = 0
        self.t_ready: Optional[float] = None
        self._plan()

    # ------------------------------------------------------------------ planning
    def key(self, job: Job) -> str:
        return job.key(self.model_key)

    def _plan(self) -> None:
        for job in self.jobs.values():
            check_owner(self.manifest, job.id, self.key(job), job.source or job.id)
        for job in self.jobs.values():
            rec = self.manifest.get(job.id)
            if rec is None:
                self.queue.append(job)
            elif rec.get("status") == "done" and self._files_present(rec):
                self.skipped_done.append(job.id)
            elif rec.get("status") == "failed" and int(rec.get("attempts", 0)) > self.retries:
                self.given_up.append(job.id)
            else:
                self.queue.append(job)

    def _files_present(self, rec: dict) -> bool:
        files = rec.get("files") or {}
        return bool(files) and all((self.manifest.dir / name).is_file() for name in files.values())

    @property
    def to_run(self) -> int:
        return len(self.queue)

    # ------------------------------------------------------------------ job lifecycle
    def next_job(self) -> Optional[Job]:
        return self.queue.popleft() if self.queue else None

    def _record(self, job: Job, status: str, **fields) -> dict:
        prev = self.manifest.get(job.id) or {}
        rec = {"id": job.id, "status": status, **job.inputs, "seed": job.seed, "options": job.options,
               "files": {}, "seconds": None, "error": None, "hint": None,
               "attempts": int(prev.get("attempts", 0)), "worker": prev.get("worker"), "finished": None,
               "key": self.key(job)}
        rec.update(fields)
        return rec

    def start(self, job: Job, worker: str) -> bool:
        """Mark `job` running on `worker`; returns whether it may replace files of its earlier attempts."""
        prev = self.manifest.get(job.id) or {}
        attempts = int(prev.get("attempts", 0))
        self.manifest.write(self._record(job, "running", attempts=attempts + 1, worker=worker))
        return attempts > 0

    def finish(self, result: dict) -> dict:
        """Record a worker's result (``done`` or ``failed``)."""
        job = self.jobs[result["id"]]
        fields = {k: result.get(k) for k in ("files", "seconds", "error", "hint", "worker") if k in result}
        if result.get("meta"):
            fields["meta"] = result["meta"]
        rec = self._record(job, result["status"], finished=utc_now(), **fields)
        if result.get("error_type"):
            rec["error_type"] = result["error_type"]
        self.manifest.write(rec)
        (self.done if rec["status"] == "done" else self.failed).append(rec)
        self._notify(rec)
        return rec

    def worker_died(self, job: Job, worker: str, message: str) -> bool:
        """The worker running `job` died: record it; True if the job goes back into the queue."""
        self.worker_deaths += 1
        rec = self._record(job, "failed", finished=utc_now(), worker=worker, error_type="WorkerDied",
                           error=f"the worker died while running this job: {message}",
                           hint="Killed or out of memory; the job was retried on a new worker while "
                                "retries were left (--retries). Use fewer workers per GPU or a larger machine.")
        self.manifest.write(rec)
        if rec["attempts"] <= self.retries:
            self.queue.appendleft(job)
            return True
        self.failed.append(rec)
        self._notify(rec)
        return False

    def interrupt(self, jobs: Sequence[Job]) -> None:
        """Ctrl-C: jobs in flight are recorded ``interrupted`` (a re-run does them), the queue is dropped."""
        for job in jobs:
            if (self.manifest.get(job.id) or {}).get("status") == "running":
                self.manifest.write(self._record(job, "interrupted", finished=utc_now()))
                self.interrupted.append(job.id)
        self.interrupted.extend(j.id for j in self.queue)
        self.queue.clear()

    def workers_ready(self) -> None:
        if self.t_ready is None:
            self.t_ready = time.perf_counter()

    def _notify(self, rec: dict) -> None:
        for listener in self.listeners:
            listener(rec)
