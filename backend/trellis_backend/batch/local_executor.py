"""In-process executor: the jobs one after another in this process (no Ray needed).

Same ledger, manifest, resume and file rules as the Ray executor; what it cannot do is survive
the death of its own process or use more than one device at a time.
"""
from __future__ import annotations

from typing import List, Optional

from .jobs import Job
from .ledger import JobLedger
from .progress import BatchProgress
from .worker import BatchWorker

ENABLE_RAY_HINT = ("For parallel workers (every GPU of this machine, or a Ray cluster) install Ray: "
                   "pip install .[cluster]  (or: pip install 'ray>=2.9')")


class LocalExecutor:
    name = "in-process"

    def __init__(self, worker_settings: dict):
        self.worker_settings = dict(worker_settings)
        self.workers: List[dict] = []

    def run(self, ledger: JobLedger, progress: BatchProgress) -> None:
        worker = BatchWorker(**{**self.worker_settings, "name": self.worker_settings.get("name") or "local"})
        self.workers = [worker.ready()]
        ledger.workers_ready()
        job: Optional[Job] = None
        try:
            while True:
                job = ledger.next_job()
                if job is None:
                    break
                replace_own = ledger.start(job, worker.name)
                result = worker.run(job, replace_own)
                job = None  # finished: from here on a Ctrl-C must not mark it interrupted
                ledger.finish(result)
        except KeyboardInterrupt:
            ledger.interrupt([job] if job is not None else [])
            raise
        finally:
            worker.pipe.release()
