"""Batch generation: many prompts or images -> assets in one folder, on Ray actors or in-process.

``run_batch(jobs, model, out, ...)`` reads the jobs (`jobs`), decides what still has to run from
``out/manifest.jsonl`` (`manifest`, `ledger`), runs it on a pool of Ray actors that each keep a
loaded pipeline (`ray_executor`) or one job at a time in this process (`local_executor`), with
one `worker.BatchWorker` doing each job and placing its files atomically, and reports progress
and a summary (`progress`). ``python -m trellis_backend batch`` is its command line (`cli`).
"""
from .jobs import Job, load_jobs
from .manifest import MANIFEST_NAME, read_manifest
from .progress import BatchSummary
from .runner import run_batch

__all__ = ["run_batch", "Job", "load_jobs", "read_manifest", "BatchSummary", "MANIFEST_NAME"]
