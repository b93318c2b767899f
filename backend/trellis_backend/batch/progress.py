"""Progress of a batch (a tqdm bar: done / failed / assets per hour / ETA) and its closing summary."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, TextIO


class BatchProgress:
    """Fed with each job's final record; failures are printed above the bar as they happen."""

    def __init__(self, total: int, enabled: bool = True, file: Optional[TextIO] = None):
        self.total = total
        self.done = 0
        self.failed = 0
        self.t0 = time.perf_counter()
        self.file = file or sys.stderr
        self.bar = None
        if enabled and total > 0:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="batch", unit="job", file=self.file, dynamic_ncols=True,
                            smoothing=0.1)
            self._postfix()

    def assets_per_hour(self) -> float:
        elapsed = time.perf_counter() - self.t0
        return self.done / elapsed * 3600.0 if elapsed > 0 else 0.0

    def _postfix(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"done {self.done}, failed {self.failed}, {self.assets_per_hour():.0f} assets/h",
                                     refresh=False)

    def __call__(self, record: dict) -> None:
        if record.get("status") == "done":
            self.done += 1
        else:
            self.failed += 1
            self.note(f"failed: {record['id']}: {record.get('error')}")
        if self.bar is not None:
            self._postfix()
            self.bar.update(1)

    def note(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=self.file)
        else:
            print(message, file=self.file)

    def refresh(self) -> None:
        if self.bar is not None:
            self._postfix()
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@dataclass
class BatchSummary:
    """What a batch run did; `table()` is the closing report."""

    out_dir: Path
    executor: str
    jobs: int
    skipped_done: int
    done: List[dict]
    failed: List[dict]
    given_up: List[str]
    not_run: List[str]
    worker_deaths: int
    seconds_total: float
    seconds_working: float  # from the first worker ready to the end (the steady rate, without start-up)
    interrupted: bool = False
    workers: List[dict] = field(default_factory=list)

    @property
    def manifest(self) -> Path:
        from .manifest import MANIFEST_NAME

        return self.out_dir / MANIFEST_NAME

    @property
    def assets_per_hour(self) -> float:
        return len(self.done) / self.seconds_working * 3600.0 if self.seconds_working > 0 else 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.given_up and not self.interrupted

    def table(self, max_errors: int = 20) -> str:
        secs = [r["seconds"] for r in self.done if r.get("seconds") is not None]
        devices = sorted({w.get("device", "?") for w in self.workers})
        rows = [
            ("jobs in the list", f"{self.jobs}"),
            ("already done (skipped)", f"{self.skipped_done}"),
            ("done now", f"{len(self.done)}"),
            ("failed now", f"{len(self.failed)}"),
            ("failed before, out of retries", f"{len(self.given_up)}"),
            ("not run (interrupted)", f"{len(self.not_run)}"),
            ("workers", f"{len(self.workers)} ({self.executor}; {', '.join(devices) or '-'})"),
            ("workers replaced after dying", f"{self.worker_deaths}"),
            ("wall time", f"{self.seconds_total:.1f} s"),
            ("seconds per asset (worker)", f"{sum(secs) / len(secs):.2f}" if secs else "-"),
            ("assets per hour", f"{self.assets_per_hour:.0f}"),
            ("manifest", str(self.manifest)),
        ]
        width = max(len(k) for k, _ in rows)
        lines = ["batch summary" + (" (interrupted: re-run the same command to finish)" if self.interrupted else "")]
        lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
        if self.failed:
            lines.append("failed jobs:")
            for rec in self.failed[:max_errors]:
                lines.append(f"  {rec['id']}: {rec.get('error')}")
                if rec.get("hint"):
                    lines.append(f"    hint: {rec['hint']}")
            if len(self.failed) > max_errors:
                lines.append(f"  ... and {len(self.failed) - max_errors} more (see the manifest)")
        return "\n".join(lines)
