"""Ray executor: one actor per GPU (or N CPU actors), each holding a loaded pipeline.

Each actor runs one job at a time; the driver gives an idle actor the next job and collects
results with ``ray.wait`` as they finish, in any order. Actors are created with
``max_restarts=0`` and their calls with ``max_task_retries=0``: when an actor dies (``ray.kill``,
the out-of-memory killer, a crashed process) the driver sees ``RayActorError`` for the job it
was running, records the death in the manifest, starts a new actor in its slot and puts the job
back at the head of the queue while it has retries left. Letting Ray restart actors and re-run
their calls by itself would hide which job was lost and could loop on a job that kills every
worker. Ctrl-C kills the actors; finished jobs stay recorded and a re-run does the rest.

Ray is started locally (``ray.init()``) unless an address of a running cluster is given
(``ray.init(address=...)``); if Ray is already initialised in this process it is used as is.
On a cluster of several machines the model folder, the inputs and the output folder must be
on a file system that every node sees under the same path.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from ..errors import BadInputError, MissingFileError, OutOfMemoryError, TrellisError
from .jobs import Job
from .ledger import JobLedger
from .progress import BatchProgress
from .worker import BatchWorker, error_fields

NAMESPACE = "trellis-batch"
REFRESH_SECONDS = 1.0
DEFAULT_CPU_THREADS = 4  # torch threads per CPU worker when --workers is not given
MAX_GPU_WORKER_THREADS = 8


class RayWorker:
    """The actor: a `BatchWorker` whose load error is reported by `ready()` instead of killing the actor."""

    def __init__(self, **settings):
        try:
            self.worker: Optional[BatchWorker] = BatchWorker(**settings)
            self.error = None
        except Exception as e:
            self.worker = None
            self.error = error_fields(e)

    def ready(self) -> dict:
        return {"error": self.error} if self.error else self.worker.ready()

    def run(self, job: Job, replace_own: bool) -> dict:
        return self.worker.run(job, replace_own)


ERROR_TYPES = {"MissingFileError": MissingFileError, "OutOfMemoryError": OutOfMemoryError,
               "BadInputError": BadInputError}


def load_error(fields: dict) -> TrellisError:
    cls = ERROR_TYPES.get(fields.get("error_type"), TrellisError)
    return cls(f"the workers could not load the model: {fields.get('error')}", hint=fields.get("hint") or None)


@dataclass
class Slot:
    """One place for an actor; a dead actor is replaced in its slot (generation + 1), unless the slot's
    actors keep dying while they start (more than `retries` times)."""

    index: int
    actor: object = None
    name: str = ""
    generation: int = 0
    job: Optional[Job] = None
    start_failures: int = 0


def plan_workers(resources: Dict[str, float], device: str, workers: Optional[int],
                 gpus_per_worker: Optional[float], cpus_per_worker: Optional[int]) -> Tuple[int, float, int]:
    """(workers, GPUs per worker, CPUs per worker) that fit the cluster's resources."""
    cpus, gpus = int(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    gpw = gpus_per_worker
    if gpw is None:
        gpw = 1.0 if gpus >= 1 and device != "cpu" else 0.0
    if gpw < 0:
        raise BadInputError(f"--gpus-per-worker must be >= 0, got {gpw}")
    if gpw > 0 and device != "auto" and not device.startswith("cuda"):
        raise BadInputError(f"--device {device} with --gpus-per-worker {gpw:g}",
                            hint="Leave out --gpus-per-worker (or set it to 0) for CPU workers.")
    if gpw > 0:
        if gpus < gpw:
            raise BadInputError(f"--gpus-per-worker {gpw:g} but the Ray cluster has {gpus:g} GPU(s)",
                                hint="Use --gpus-per-worker 0 for CPU workers, or connect to a cluster with GPUs.")
        n = workers or int(gpus // gpw)
        cpw = cpus_per_worker or max(1, min(MAX_GPU_WORKER_THREADS, cpus // max(n, 1)))
    else:
        n = workers or max(1, cpus // DEFAULT_CPU_THREADS)
        cpw = cpus_per_worker or max(1, cpus // n)
    if n < 1 or cpw < 1:
        raise BadInputError("--workers and --cpus-per-worker must be at least 1")
    if n * cpw > cpus or n * gpw > gpus + 1e-9:
        raise BadInputError(
            f"{n} workers x ({cpw} CPUs, {gpw:g} GPUs) do not fit the Ray cluster ({cpus} CPUs, {gpus:g} GPUs)",
            hint="Lower --workers, --cpus-per-worker or --gpus-per-worker.")
    return n, gpw, cpw


class RayExecutor:
    name = "ray"

    def __init__(self, worker_settings: dict, workers: Optional[int] = None, gpus_per_worker: Optional[float] = None,
                 cpus_per_worker: Optional[int] = None, address: Optional[str] = None):
        self.worker_settings = dict(worker_settings)
        self.n_workers, self.gpus_per_worker, self.cpus_per_worker = workers, gpus_per_worker, cpus_per_worker
        self.address = address
        self.run_token = uuid.uuid4().hex[:6]
        self.workers: List[dict] = []
        self.slots: List[Slot] = []
        self._actor_cls = None

    # ------------------------------------------------------------------ ray session
    def _init_ray(self) -> bool:
        """Connect (or start a local Ray); True if this call started it (and must shut it down)."""
        import ray

        if ray.is_initialized():
            return False
        if self.address:
            ray.init(address=self.address, logging_level=logging.WARNING)
        else:
            ray.init(include_dashboard=False, logging_level=logging.WARNING)
        return True

    def run(self, ledger: JobLedger, progress: BatchProgress) -> None:
        import ray

        started = self._init_ray()
        try:
            self._run(ray, ledger, progress)
        finally:
            for slot in self.slots:
                self._kill(ray, slot)
            if started:
                ray.shutdown()

    # ------------------------------------------------------------------ actors
    def _start(self, ray, slot: Slot) -> object:
        """Create the slot's actor; returns the ref of its ready() call."""
        slot.generation += 1
        slot.name = f"trellis-batch-{self.run_token}-w{slot.index}.{slot.generation}"
        settings = {**self.worker_settings, "threads": self.cpus_per_worker, "name": slot.name}
        if self.gpus_per_worker > 0:
            settings["device"] = "cuda"  # Ray shows each actor only its own GPU(s), as cuda:0...
        elif settings.get("device", "auto") == "auto":
            settings["device"] = "cpu"  # a CPU actor on a GPU node leaves the GPUs to the GPU actors
        slot.actor = self._actor_cls.options(name=slot.name, namespace=NAMESPACE, num_cpus=self.cpus_per_worker,
                                       num_gpus=self.gpus_per_worker, max_restarts=0, max_task_retries=0,
                                       max_concurrency=1).remote(**settings)
        slot.job = None
        return slot.actor.ready.remote()

    @staticmethod
    def _kill(ray, slot: Slot) -> None:
        if slot.actor is not None:
            try:
                ray.kill(slot.actor, no_restart=True)
            except Exception:  # already gone
                pass
            slot.actor = None

    # ------------------------------------------------------------------ driver loop
    def _run(self, ray, ledger: JobLedger, progress: BatchProgress) -> None:
        from ray.exceptions import (NodeDiedError, OutOfMemoryError as RayOutOfMemoryError, RayActorError, RayError,
                                    WorkerCrashedError)

        worker_gone = (RayActorError, WorkerCrashedError, RayOutOfMemoryError, NodeDiedError)

        self.n_workers, self.gpus_per_worker, self.cpus_per_worker = plan_workers(
            ray.cluster_resources(), self.worker_settings.get("device", "auto"), self.n_workers,
            self.gpus_per_worker, self.cpus_per_worker)
        n = min(self.n_workers, max(1, ledger.to_run))
        self._actor_cls = ray.remote(RayWorker)
        self.slots = [Slot(i) for i in range(n)]
        pending: Dict[object, Tuple[Slot, str]] = {}  # object ref -> (slot, "ready" | "job")
        for slot in self.slots:
            pending[self._start(ray, slot)] = (slot, "ready")
        idle: List[Slot] = []
        try:
            while True:
                while idle and ledger.queue:
                    slot = idle.pop(0)
                    slot.job = ledger.next_job()
                    replace_own = ledger.start(slot.job, slot.name)
                    pending[slot.actor.run.remote(slot.job, replace_own)] = (slot, "job")
                if not pending:
                    if ledger.queue:  # every slot has given up starting
                        raise TrellisError("no Ray worker could be started",
                                           hint="See the Ray logs (/tmp/ray/session_latest/logs) for why.")
                    break
                if not ledger.queue and not any(kind == "job" for _, kind in pending.values()):
                    break  # nothing left to do; actors still starting are not needed
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=REFRESH_SECONDS)
                progress.refresh()
                for ref in ready:
                    slot, kind = pending.pop(ref)
                    try:
                        value = ray.get(ref)
                    except worker_gone as e:  # killed, out of memory, crashed, its machine gone
                        self._on_death(ray, slot, kind, e, ledger, progress, pending)
                        continue
                    except RayError as e:  # the call failed inside Ray (not in our code): the job failed
                        if kind == "ready":
                            raise
                        job, slot.job = slot.job, None
                        idle.append(slot)
                        ledger.finish({"id": job.id, "status": "failed", "worker": slot.name, **error_fields(e)})
                        continue
                    idle.append(slot)
                    if kind == "ready":
                        if value.get("error"):
                            raise load_error(value["error"])
                        self.workers.append(value)
                        ledger.workers_ready()
                    else:
                        slot.job = None  # finished: from here on a Ctrl-C must not mark it interrupted
                        ledger.finish(value)
        except KeyboardInterrupt:
            ledger.interrupt([s.job for s in self.slots if s.job is not None])
            raise

    def _on_death(self, ray, slot: Slot, kind: str, exc: Exception, ledger: JobLedger, progress: BatchProgress,
                  pending: dict) -> None:
        """An actor died: record its job (retried while it may be), start a replacement."""
        message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        if kind == "job" and slot.job is not None:
            retried = ledger.worker_died(slot.job, slot.name, message)
            progress.note(f"worker {slot.name} died running {slot.job.id}; "
                          + ("retrying the job on a new worker" if retried else "out of retries, job failed"))
        else:
            slot.start_failures += 1
            progress.note(f"worker {slot.name} died while starting: {message}")
        self._kill(ray, slot)
        if slot.start_failures > ledger.retries:
            return  # this slot stays empty; the others carry on
        pending[self._start(ray, slot)] = (slot, "ready")
