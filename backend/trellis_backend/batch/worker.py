"""The batch worker: one loaded `TrellisPipeline`, one job at a time, files moved into place whole.

The same class runs in the driver process (in-process executor) and inside a Ray actor. A job
generates into its own temporary folder inside the output folder (``DIR/.trellis-batch-tmp``),
then each file is renamed to its final name in DIR: on one file system a rename is atomic, so a
file under a final name is always complete. A file that already exists under a final name is only
replaced when the job itself made it in an earlier attempt (``replace_own``); otherwise the job
fails instead of overwriting another job's asset.
"""
from __future__ import annotations

import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Dict, Optional

from ..errors import BadInputError
from .jobs import Job

TMP_DIR_NAME = ".trellis-batch-tmp"


def error_fields(exc: BaseException) -> dict:
    """type / message / hint of an exception, as plain strings (they cross process boundaries)."""
    hint = getattr(exc, "hint", "") or ""
    if not hint:
        from ..errors import is_out_of_memory

        if is_out_of_memory(exc):
            hint = "Out of memory: use fewer workers per GPU, fewer output formats, or fewer steps."
        else:
            hint = "An unexpected error: re-run this job alone with `generate --debug` to see the traceback."
    message = str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__
    return {"error_type": type(exc).__name__, "error": message, "hint": hint}


def move_into_place(files: Dict[str, str], out_dir: Path, replace_own: bool) -> Dict[str, str]:
    """Rename finished files into `out_dir` under their own names; kind -> path relative to out_dir.

    Every target is checked before the first rename, so a refused job moves nothing. Without
    `replace_own` a file is placed with a hard link, which fails instead of replacing a file that
    appeared in between.
    """
    targets = {kind: out_dir / Path(path).name for kind, path in files.items()}
    if not replace_own:
        taken = [str(t) for t in targets.values() if t.exists()]
        if taken:
            raise BadInputError(f"output file already exists and belongs to no earlier attempt of this job: "
                                f"{', '.join(taken)}",
                                hint="Move that file away (or choose another --out folder); the batch never "
                                     "overwrites files it did not make for this job.")
    placed = {}
    for kind, path in files.items():
        target = targets[kind]
        if replace_own:
            os.replace(path, target)
        else:
            try:
                os.link(path, target)
            except FileExistsError:
                raise BadInputError(f"output file appeared while the job ran: {target}",
                                    hint="Another program writes into the output folder; use a folder of "
                                         "its own.") from None
            except OSError:  # no hard links on this file system: check, then rename
                if target.exists():
                    raise BadInputError(f"output file appeared while the job ran: {target}",
                                        hint="Another program writes into the output folder; use a folder of "
                                             "its own.") from None
                os.replace(path, target)
            else:
                os.unlink(path)
        placed[kind] = target.name
    return placed


class BatchWorker:
    """Holds a loaded pipeline; `run(job)` generates one asset and returns its result record."""

    def __init__(self, model: str, out_dir: str, device: str = "auto", dtype: Optional[str] = None,
                 models_root: Optional[str] = None, allow_network: bool = False, threads: Optional[int] = None,
                 name: str = "", warmup: bool = False):
        t0 = time.perf_counter()
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        from ..pipeline import TrellisPipeline

        self.out_dir = Path(out_dir)
        self.pipe = TrellisPipeline.from_pretrained(model, models_root=models_root, device=device, dtype=dtype,
                                                    allow_network=allow_network)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.info = {"worker": self.name, "host": socket.gethostname(), "pid": os.getpid(),
                     "device": str(self.pipe.device), "threads": torch.get_num_threads(),
                     "load_seconds": round(time.perf_counter() - t0, 3)}
        if self.pipe.device.type == "cuda":
            self.info["gpu"] = torch.cuda.get_device_name(self.pipe.device)
            self.info["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        if warmup:
            t1 = time.perf_counter()
            self.warm_up()
            self.info["warmup_seconds"] = round(time.perf_counter() - t1, 3)

    def warm_up(self) -> None:
        """One throwaway generation (nothing written): CUDA kernels compile and graphs are captured before
        the first job, so the first job's time (and a benchmark's rate) is the steady one."""
        if self.pipe.kind == "text":
            self.pipe.generate(prompt="a wooden chair", seed=0)
            return
        from PIL import Image

        rgba = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
        rgba.paste((180, 120, 60, 255), (64, 48, 192, 208))
        self.pipe.generate(image=rgba, seed=0)

    def ready(self) -> dict:
        return self.info

    def run(self, job: Job, replace_own: bool = False) -> dict:
        """Generate `job`; errors become a ``failed`` result (Ctrl-C and worker death are not caught)."""
        t0 = time.perf_counter()
        tmp = self.out_dir / TMP_DIR_NAME / f"{job.id}.{uuid.uuid4().hex[:8]}"
        result = {"id": job.id, "worker": self.name, "files": {}}
        try:
            tmp.mkdir(parents=True)
            made = self.pipe.generate(output_dir=tmp, name=job.id, **job.generate_kwargs())
            result["files"] = move_into_place(made["files"], self.out_dir, replace_own)
            result["status"] = "done"
            meta = made["meta"]
            result["meta"] = {k: meta[k] for k in ("voxels", "vertices", "faces", "gaussians") if k in meta}
        except Exception as e:
            result.update(status="failed", **error_fields(e))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        result["seconds"] = round(time.perf_counter() - t0, 3)
        return result
