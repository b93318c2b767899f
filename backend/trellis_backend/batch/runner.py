"""`run_batch`: a job list -> generated assets in one output folder, with a manifest; resumable."""
from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

from ..errors import BadInputError, MissingFileError
from .jobs import Job, load_jobs
from .ledger import JobLedger
from .local_executor import ENABLE_RAY_HINT, LocalExecutor
from .manifest import Manifest
from .progress import BatchProgress, BatchSummary
from .worker import TMP_DIR_NAME

EXECUTORS = ("auto", "ray", "local")
LOCK_NAME = ".trellis-batch.lock"


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def check_model(model: Union[str, Path], jobs: Iterable[Job]) -> Path:
    """The model folder exists and takes the jobs' kind of condition (checked before any worker starts)."""
    folder = Path(model).expanduser().resolve()
    if not (folder / "pipeline.json").is_file():
        raise MissingFileError(f"no pipeline.json in {folder}" if folder.is_dir() else f"model folder not found: {folder}",
                               hint="--model must be a TRELLIS pipeline folder (pipeline.json + ckpts/).")
    try:
        args = json.loads((folder / "pipeline.json").read_text()).get("args", {})
    except (json.JSONDecodeError, AttributeError):
        return folder  # the pipeline loader reports a damaged pipeline.json with details
    for job in jobs:
        if args.get("image_cond_model") and job.prompt is not None:
            raise BadInputError(f"{job.source}: {folder.name} is an image-conditioned model; it cannot take a prompt",
                                hint="Use --images / image jobs, or a text-conditioned model folder.")
        if args.get("text_cond_model") and job.images:
            raise BadInputError(f"{job.source}: {folder.name} is a text-conditioned model; it cannot take an image",
                                hint="Use --prompts / prompt jobs, or an image-conditioned model folder.")
    return folder


@contextlib.contextmanager
def exclusive(out_dir: Path):
    """One batch at a time per output folder (an advisory lock where the OS has one)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks through fcntl
        yield
        return
    with open(out_dir / LOCK_NAME, "a") as f:  # "a": taking the lock leaves the file untouched
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise BadInputError(f"another batch is writing into {out_dir}",
                                hint="Wait for it to finish, or use another --out folder.") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def choose_executor(executor: str, ray_address: Optional[str], log: Callable[[str], None]) -> str:
    if executor not in EXECUTORS:
        raise BadInputError(f"unknown executor {executor!r}", hint=f"Use one of: {', '.join(EXECUTORS)}.")
    if executor == "local":
        if ray_address:
            raise BadInputError("--ray-address needs the Ray executor", hint="Leave out --executor local.")
        return "local"
    if ray_available():
        return "ray"
    if executor == "ray" or ray_address:
        raise BadInputError("Ray is not installed", hint=ENABLE_RAY_HINT)
    log(f"Ray is not installed: running the jobs in this process, one at a time. {ENABLE_RAY_HINT}")
    return "local"


def run_batch(jobs: Union[str, Path, Iterable[Union[Job, dict]]], model: Union[str, Path], out: Union[str, Path], *,
              seed: Optional[int] = None, options: Optional[dict] = None, executor: str = "auto",
              ray_address: Optional[str] = None, workers: Optional[int] = None,
              gpus_per_worker: Optional[float] = None, cpus_per_worker: Optional[int] = None, retries: int = 2,
              device: str = "auto", dtype: Optional[str] = None, models_root: Optional[str] = None,
              allow_network: bool = False, warmup: bool = False, show_progress: bool = True,
              on_result: Optional[Callable[[dict], None]] = None,
              log: Optional[Callable[[str], None]] = None) -> BatchSummary:
    """Generate every job into `out` and record each in ``out/manifest.jsonl``; re-running resumes.

    Args:
        jobs: a prompts file, an image folder, a ``.jsonl`` jobs file, or an iterable of `Job`s /
            jobs-file dicts (see `trellis_backend.batch.jobs`).
        model: the pipeline folder.
        seed, options: defaults for jobs that do not set them (options: steps, ss_steps, cfg, ss_cfg,
            formats, texture_size, background_threshold).
        executor: "auto" (Ray when installed, else in-process), "ray" or "local" (in-process).
        ray_address: address of a running Ray cluster (default: start Ray on this machine).
        workers, gpus_per_worker, cpus_per_worker: actor layout (default: one actor per GPU; on CPU,
            one per 4 cores).
        retries: how often a failed job is tried again (by a re-run; a dead worker's job at once).
        warmup: each worker makes one throwaway asset before its first job (CUDA kernels compile).
        on_result: called with each job's final manifest record as it ends.
    Returns a `BatchSummary`; Ctrl-C stops the run cleanly and returns it with ``interrupted=True``.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    defaults = dict(options or {})
    if seed is not None:
        defaults["seed"] = int(seed)
    job_list = load_jobs(jobs, defaults)
    if not job_list:
        raise BadInputError("the job list is empty", hint="Give at least one prompt, image or jobs-file line.")
    folder = check_model(model, job_list)
    kind = choose_executor(executor, ray_address, log)
    out_dir = Path(out).expanduser().resolve()
    settings = dict(model=str(folder), out_dir=str(out_dir), device=device, dtype=dtype,
                    models_root=str(models_root) if models_root else None, allow_network=allow_network,
                    threads=cpus_per_worker, warmup=warmup)
    if kind == "ray":
        from .ray_executor import RayExecutor

        runner = RayExecutor(settings, workers, gpus_per_worker, cpus_per_worker, ray_address)
    else:
        runner = LocalExecutor(settings)

    t0 = time.perf_counter()
    interrupted = False
    with exclusive(out_dir):
        shutil.rmtree(out_dir / TMP_DIR_NAME, ignore_errors=True)  # left by a crashed run
        manifest = Manifest(out_dir).open()
        progress = None
        try:
            ledger = JobLedger(job_list, manifest, str(folder), retries)
            progress = BatchProgress(ledger.to_run, enabled=show_progress)
            ledger.listeners = [progress] + ([on_result] if on_result else [])
            if ledger.to_run:
                try:
                    runner.run(ledger, progress)
                except KeyboardInterrupt:
                    interrupted = True
        finally:
            if progress is not None:
                progress.close()
            manifest.close()
            shutil.rmtree(out_dir / TMP_DIR_NAME, ignore_errors=True)
    t_end = time.perf_counter()
    t_ready = ledger.t_ready if ledger.t_ready is not None else t_end
    return BatchSummary(out_dir=out_dir, executor=runner.name, jobs=len(job_list),
                        skipped_done=len(ledger.skipped_done), done=ledger.done, failed=ledger.failed,
                        given_up=ledger.given_up, not_run=ledger.interrupted, worker_deaths=ledger.worker_deaths,
                        seconds_total=t_end - t0, seconds_working=t_end - t_ready, interrupted=interrupted,
                        workers=runner.workers)
