"""The batch manifest: ``DIR/manifest.jsonl``, one JSON line per job, the record of what is done.

A line holds the job's ``id``, ``inputs`` (prompt or image paths), ``seed``, ``options``,
``status`` (``running`` / ``done`` / ``failed`` / ``interrupted``), ``files`` (kind -> path
relative to DIR), ``seconds``, ``error`` and ``hint`` (failed jobs), ``attempts`` (how many
times the job was started), ``worker``, ``finished`` (UTC time) and ``key`` (fingerprint of the
job's inputs, options and model folder).

Writing is crash-safe and cheap at thousands of jobs: while a batch runs, each change of a job
is appended as one complete line with a single write and flushed to disk, and when the manifest
is opened and closed it is compacted to exactly one line per job (written to a temporary file
and renamed over the old one). Reading keeps the last line of each id and skips a torn last
line left by a crash, so the manifest never claims more than what happened.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Dict, Iterator, Optional, Union

from ..errors import BadInputError

MANIFEST_NAME = "manifest.jsonl"
STATUSES = ("running", "done", "failed", "interrupted")


def read_manifest(path: Union[str, Path]) -> Dict[str, dict]:
    """id -> latest record (in first-seen order); unreadable lines (a torn write) are skipped."""
    records: Dict[str, dict] = {}
    path = Path(path)
    if not path.is_file():
        return records
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("id"), str):
                records[rec["id"]] = rec
    return records


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Manifest:
    """The manifest of one output folder, open for one batch run (`open` ... `close`)."""

    def __init__(self, out_dir: Union[str, Path]):
        self.dir = Path(out_dir)
        self.path = self.dir / MANIFEST_NAME
        self.records: Dict[str, dict] = {}
        self._file = None

    def open(self) -> "Manifest":
        self.dir.mkdir(parents=True, exist_ok=True)
        self.records = read_manifest(self.path)
        self.compact()
        self._file = open(self.path, "a", encoding="utf-8")
        return self

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self.compact()

    def __enter__(self) -> "Manifest":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def get(self, job_id: str) -> Optional[dict]:
        return self.records.get(job_id)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.records.values())

    def write(self, record: dict) -> None:
        """Record a job's new state: one appended line, on disk before this returns."""
        if record.get("status") not in STATUSES:
            raise ValueError(f"unknown job status {record.get('status')!r}")
        if self._file is None:
            raise RuntimeError("the manifest is not open")
        self.records[record["id"]] = record
        self._file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def compact(self) -> None:
        """Rewrite the file with one line per job, atomically."""
        tmp = self.path.with_name(f".{MANIFEST_NAME}.partial-{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            for rec in self.records.values():
                f.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def check_owner(manifest: Manifest, job_id: str, key: str, source: str) -> None:
    """A job may only take over records (and files) of the same id made by the same job."""
    rec = manifest.get(job_id)
    if rec is not None and rec.get("key") != key:
        raise BadInputError(
            f"{source}: {manifest.dir} already holds an asset named '{job_id}' from a different job "
            f"(other inputs, options or model folder)",
            hint="Use a new --out folder for a different job list or model, or give the job another name.")
