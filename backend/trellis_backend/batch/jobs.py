"""Job lists -> job records with stable ids.

A batch is a list of `Job`s read from one of three sources:

* a prompts file: one prompt per line (blank lines and lines starting with ``#`` are skipped);
* an image folder: every image file directly inside it (sorted by name);
* a jobs file (``.jsonl``): one JSON object per line, e.g.
  ``{"prompt": "a red chair", "seed": 3, "steps": 25, "name": "chair_red"}`` or
  ``{"image": "shots/lamp.png", "background_threshold": 0.1}`` (relative image paths are
  relative to the jobs file's folder; ``image`` may be a list for multi-image conditioning).

A job's id is its output file stem. Without an explicit ``name`` it is derived from the job
itself (a readable slug of the prompt or image name, the seed, and a short hash of every input
and option), so the same job gets the same id on every run, whatever its position in the list:
that is what lets a re-run find the jobs it already finished.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from ..errors import BadInputError
from ..pipeline.options import check_name, normalize_formats

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")

# per-job generation options (the names of `TrellisPipeline.generate`'s arguments, in short form)
OPTION_TYPES: Dict[str, tuple] = {
    "steps": (int,), "ss_steps": (int,), "cfg": (int, float), "ss_cfg": (int, float),
    "formats": (str, list), "texture_size": (int,), "background_threshold": (int, float),
}
JOB_KEYS = {"prompt", "image", "seed", "name"} | set(OPTION_TYPES)
SLUG_LENGTH = 40


@dataclass(frozen=True)
class Job:
    """One asset to generate: its condition (prompt or image paths), seed, options and output stem."""

    id: str
    prompt: Optional[str] = None
    images: Tuple[str, ...] = ()
    seed: int = 0
    options: Dict[str, Any] = field(default_factory=dict)
    source: str = ""  # where the job came from ("prompts.txt:3"), for error messages

    @property
    def inputs(self) -> dict:
        return {"prompt": self.prompt} if self.prompt is not None else {"image": list(self.images)}

    def key(self, model: str = "") -> str:
        """Fingerprint of everything that determines the job's output (and the model folder)."""
        return _digest({"inputs": self.inputs, "seed": self.seed, "options": self.options, "model": model})

    def generate_kwargs(self) -> dict:
        """Keyword arguments of `TrellisPipeline.generate` for this job (output folder and name aside)."""
        o = self.options
        image = None
        if self.images:
            image = self.images[0] if len(self.images) == 1 else list(self.images)
        steps = o.get("steps")
        return dict(prompt=self.prompt, image=image, seed=self.seed,
                    ss_steps=o.get("ss_steps", steps), slat_steps=steps,
                    ss_cfg=o.get("ss_cfg"), slat_cfg=o.get("cfg"),
                    formats=normalize_formats(o.get("formats", "glb,ply,slat")),
                    background_threshold=o.get("background_threshold"),
                    texture_size=int(o.get("texture_size", 0)))

    def to_dict(self) -> dict:
        return {"id": self.id, **self.inputs, "seed": self.seed, **self.options}


def _digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, ensure_ascii=True).encode()).hexdigest()


def _slug(text: str) -> str:
    words = "_".join(text.strip().lower().split())
    clean = "".join(c if (c.isalnum() or c in "-_") else "_" for c in words)
    return clean[:SLUG_LENGTH].strip("_") or "asset"


def _check_options(options: dict, where: str) -> dict:
    out = {}
    for key, value in options.items():
        if value is None:
            continue
        types = OPTION_TYPES[key]
        if isinstance(value, bool) or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            raise BadInputError(f"{where}: '{key}' must be {names}, got {value!r}",
                                hint="Fix that value in the jobs file (see README, Batch generation).")
        if key in ("steps", "ss_steps") and value < 1:
            raise BadInputError(f"{where}: '{key}' must be at least 1, got {value}")
        if key == "texture_size" and not 0 <= value <= 8192:
            raise BadInputError(f"{where}: 'texture_size' must be between 0 and 8192, got {value}")
        if key == "background_threshold" and not 0 <= value <= 1:
            raise BadInputError(f"{where}: 'background_threshold' must be in [0, 1], got {value}")
        if key == "formats":
            value = ",".join(normalize_formats(value))
        out[key] = value
    return out


def make_job(spec: dict, defaults: Optional[dict] = None, base_dir: Optional[Path] = None,
             where: str = "job") -> Job:
    """A `Job` from a jobs-file line (dict); `defaults` fill in seed and options the line leaves out."""
    if not isinstance(spec, dict):
        raise BadInputError(f"{where}: a job must be a JSON object, got {type(spec).__name__}",
                            hint='Write one object per line, e.g. {"prompt": "a red chair", "seed": 1}.')
    unknown = sorted(set(spec) - JOB_KEYS)
    if unknown:
        raise BadInputError(f"{where}: unknown key(s) {', '.join(unknown)}",
                            hint=f"A job takes: {', '.join(sorted(JOB_KEYS))}.")
    has_prompt, has_image = spec.get("prompt") is not None, spec.get("image") is not None
    if has_prompt == has_image:
        raise BadInputError(f"{where}: a job needs exactly one of 'prompt' and 'image'",
                            hint='e.g. {"prompt": "a red chair"} or {"image": "chair.png"}.')
    merged = {**(defaults or {}), **{k: v for k, v in spec.items() if v is not None}}
    seed = merged.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise BadInputError(f"{where}: 'seed' must be an integer, got {seed!r}")
    options = _check_options({k: merged[k] for k in OPTION_TYPES if k in merged}, where)

    prompt, images = None, ()
    if has_prompt:
        prompt = spec["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise BadInputError(f"{where}: the prompt is empty", hint="Describe the object, e.g. 'a red chair'.")
        prompt = prompt.strip()
        stem = _slug(prompt)
    else:
        raw = spec["image"] if isinstance(spec["image"], list) else [spec["image"]]
        if not raw or not all(isinstance(p, str) and p for p in raw):
            raise BadInputError(f"{where}: 'image' must be a path or a list of paths")
        base = base_dir or Path.cwd()
        images = tuple(str((base / Path(p).expanduser()).resolve()) for p in raw)
        stem = _slug(Path(images[0]).stem)

    name = spec.get("name")
    if name is not None:
        if not isinstance(name, str):
            raise BadInputError(f"{where}: 'name' must be a string")
        try:
            check_name(name)
        except BadInputError as e:
            raise BadInputError(f"{where}: {e}", hint=e.hint) from None
        job_id = name
    else:
        partial = Job("", prompt, images, seed, options)
        job_id = f"{stem}_seed{seed}_{partial.key()[:8]}"
    return Job(job_id, prompt, images, seed, options, where)


def read_prompts(path: Union[str, Path], defaults: Optional[dict] = None) -> List[Job]:
    path = _existing_file(path, "prompts file")
    jobs = []
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        text = line.strip()
        if text and not text.startswith("#"):
            jobs.append(make_job({"prompt": text}, defaults, where=f"{path.name}:{n}"))
    return jobs


def read_image_folder(folder: Union[str, Path], defaults: Optional[dict] = None) -> List[Job]:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise BadInputError(f"image folder not found: {folder}", hint="--images takes a folder of image files.")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return [make_job({"image": str(p)}, defaults, where=str(p.name)) for p in files]


def read_jobs_file(path: Union[str, Path], defaults: Optional[dict] = None) -> List[Job]:
    path = _existing_file(path, "jobs file")
    jobs = []
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path.name}:{n}"
        try:
            spec = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadInputError(f"{where}: not valid JSON ({e.msg} at column {e.colno})",
                                hint="A jobs file has one JSON object per line.") from None
        jobs.append(make_job(spec, defaults, base_dir=path.parent.resolve(), where=where))
    return jobs


def _existing_file(path: Union[str, Path], what: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise BadInputError(f"{what} not found: {path}")
    return path


def load_jobs(source: Union[str, Path, Iterable[Union[Job, dict]]], defaults: Optional[dict] = None) -> List[Job]:
    """Jobs from a path (``.jsonl`` file -> jobs file, folder -> images, other file -> prompts) or
    from an iterable of `Job`s / jobs-file dicts. Ids must be unique."""
    unknown = sorted(set(defaults or {}) - set(OPTION_TYPES) - {"seed"})
    if unknown:
        raise BadInputError(f"unknown option(s) {', '.join(unknown)}",
                            hint=f"Options are: {', '.join(sorted(OPTION_TYPES))} (and seed).")
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if not path.exists():
            raise BadInputError(f"job list not found: {path}",
                                hint="Give a prompts file, an image folder or a .jsonl jobs file.")
        if path.is_dir():
            jobs = read_image_folder(path, defaults)
        elif path.suffix.lower() == ".jsonl":
            jobs = read_jobs_file(path, defaults)
        else:
            jobs = read_prompts(path, defaults)
    else:
        jobs = [j if isinstance(j, Job) else make_job(j, defaults, where=f"job {i + 1}")
                for i, j in enumerate(source)]
    check_unique(jobs)
    return jobs


def check_unique(jobs: Sequence[Job]) -> None:
    """Two jobs with one id would write the same files: refuse the list, naming both."""
    seen: Dict[str, Job] = {}
    for job in jobs:
        first = seen.setdefault(job.id, job)
        if first is not job:
            same = first.key() == job.key()
            raise BadInputError(
                f"{job.source} and {first.source} are " + ("the same job" if same else f"both named '{job.id}'"),
                hint=("Remove the repeat, or give it another seed (a jobs file sets a seed per line)." if same
                      else "Give each job its own 'name'."))
