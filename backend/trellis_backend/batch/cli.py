"""``python -m trellis_backend batch``: generate a whole job list into one folder (Ray or in-process).

Exit status: 0 every job done, 1 some jobs failed (see the summary / manifest), 130 interrupted
(re-run the same command to finish), and the usual 2 / 3 for bad input and missing model files.
"""
from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "batch", help="generate many assets from a prompts file, an image folder or a jobs file (Ray or in-process)",
        description="Generate every job into --out with a manifest (manifest.jsonl); re-running the same command "
                    "skips finished jobs and retries failed ones. Uses Ray when installed (one actor per GPU, or "
                    "N CPU actors; a local Ray or --ray-address), else runs the jobs one by one in this process.")
    p.add_argument("--model", required=True, metavar="DIR", help="pipeline folder (pipeline.json + ckpts/)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts", metavar="FILE", help="text file, one prompt per line (# comments)")
    src.add_argument("--images", metavar="DIR", help="folder of images (PNG, JPEG, WebP, ...), one job each")
    src.add_argument("--jobs", metavar="FILE.jsonl",
                     help='one JSON job per line: {"prompt"|"image", "seed", "name", "steps", "cfg", ...}')
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (assets + manifest.jsonl)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="a running Ray cluster (e.g. auto, or HEAD_IP:6379); default: start Ray on this machine")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="number of actors (default: one per GPU; on CPU one per 4 cores)")
    p.add_argument("--gpus-per-worker", type=float, default=None, metavar="G",
                   help="GPUs per actor (default 1 when the cluster has GPUs, else 0 = CPU actors; 0.5 = two per GPU)")
    p.add_argument("--cpus-per-worker", type=int, default=None, metavar="C",
                   help="CPU cores (torch threads) per actor (default: the cores shared out)")
    p.add_argument("--retries", type=int, default=2, metavar="K",
                   help="tries after the first for a failed job (re-runs; a dead worker's job at once); default 2")
    p.add_argument("--executor", choices=("auto", "ray", "local"), default="auto",
                   help="auto: Ray when installed; local: one job at a time in this process")
    p.add_argument("--seed", type=int, default=0, help="seed of jobs that set none (default 0)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps of both stages (default: pipeline.json)")
    p.add_argument("--ss-steps", type=int, default=None, help="sampling steps of stage 1")
    p.add_argument("--cfg", type=float, default=None, help="guidance strength of stage 2")
    p.add_argument("--ss-cfg", type=float, default=None, help="guidance strength of stage 1")
    p.add_argument("--formats", default=None, help="glb,ply,slat (default all three; the sidecar is always written)")
    p.add_argument("--texture-size", type=int, default=None, metavar="N", help="bake colours into an NxN texture")
    p.add_argument("--background-threshold", type=float, default=None, metavar="T",
                   help="remove a plain background from images without alpha (T in [0, 1])")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto; Ray GPU actors use their own GPU)")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--models-root", default=None, metavar="DIR", help="folder of <org>/<repo> model folders")
    p.add_argument("--allow-network", action="store_true", help="allow Hugging Face downloads")
    p.add_argument("--warmup", action="store_true",
                   help="each worker makes one throwaway asset first (compiles CUDA kernels; for steady timings)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _options(args) -> dict:
    names = ("steps", "ss_steps", "cfg", "ss_cfg", "formats", "texture_size", "background_threshold")
    return {k: getattr(args, k) for k in names if getattr(args, k) is not None}


def run(args) -> int:
    from .jobs import read_image_folder, read_jobs_file, read_prompts
    from .runner import run_batch

    defaults = {"seed": args.seed, **_options(args)}
    if args.jobs:
        jobs = read_jobs_file(args.jobs, defaults)
    elif args.images:
        jobs = read_image_folder(args.images, defaults)
    else:
        jobs = read_prompts(args.prompts, defaults)
    summary = run_batch(jobs, args.model, args.out, executor=args.executor, ray_address=args.ray_address,
                        workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                        cpus_per_worker=args.cpus_per_worker, retries=args.retries, device=args.device,
                        dtype=args.dtype, models_root=args.models_root, allow_network=args.allow_network,
                        warmup=args.warmup, show_progress=not args.quiet)
    if args.json:
        print(json.dumps({"out": str(summary.out_dir), "manifest": str(summary.manifest),
                          "executor": summary.executor, "jobs": summary.jobs, "skipped_done": summary.skipped_done,
                          "done": [r["id"] for r in summary.done],
                          "failed": [{k: r.get(k) for k in ("id", "error", "hint")} for r in summary.failed],
                          "given_up": summary.given_up, "not_run": summary.not_run,
                          "worker_deaths": summary.worker_deaths, "seconds_total": round(summary.seconds_total, 3),
                          "assets_per_hour": round(summary.assets_per_hour, 1), "interrupted": summary.interrupted,
                          "workers": summary.workers}, indent=2))
    else:
        print(summary.table())
    if summary.interrupted:
        return 130
    return 0 if summary.ok else 1
