#!/usr/bin/env python
"""Batch throughput on Ray: assets per hour with 1, 2, ... workers, in one run, and the scaling ratio.

Every setting runs the same prompts (or images) through `trellis_backend.batch.run_batch` into a
fresh folder, on one Ray session started here. Reported per setting: wall time (actors starting,
model loading and warm-up included), the steady rate (assets per hour from the first worker ready
to the end; with --warmup the first asset's kernel compilation is outside it), seconds per asset
on a worker, how busy the actors were (job seconds / (actors x steady seconds): near 100 % means
the driver kept every actor fed), and with GPUs the mean utilisation of each GPU over the steady
part (nvidia-smi).

    # CPU: 1 and 2 actors of one thread each on the embedded model
    .venv/bin/python scripts/batch_bench.py --workers 1,2 --jobs 8
    # GPUs: one actor per GPU, 1 then 2 GPUs, then a fault run (one actor killed mid-run, then a re-run);
    # an image model without --images gets synthetic RGBA images
    .venv/bin/python scripts/batch_bench.py --gpus-per-worker 1 --workers 1,2 --jobs 40 --warmup --fault-run \\
        --model /tmp/image-large-random --json docs/eval/batch_h200x2.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROMPTS = [
    "a red wooden chair with four thin legs", "a white table with a round top", "a small wooden barrel",
    "a blue armchair with wide armrests", "a tall bookshelf with three shelves", "a simple floor lamp",
    "a green sofa with two cushions", "a square stool", "a wooden bench with a backrest",
    "a round side table", "a desk with two drawers", "an office chair on wheels",
]


def synthetic_images(folder: Path, n: int) -> Path:
    """`n` RGBA images of coloured boxes and discs on a transparent background (for image models)."""
    import numpy as np
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = Image.new("RGBA", (518, 518), (0, 0, 0, 0))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = (int(v) for v in rng.integers(60, 260, size=2))
            x1, y1 = x0 + int(rng.integers(120, 240)), y0 + int(rng.integers(120, 240))
            colour = tuple(int(c) for c in rng.integers(30, 250, size=3)) + (255,)
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
        img.save(folder / f"synthetic{i:03d}.png")
    return folder


def is_image_model(model: str) -> bool:
    args = json.loads((Path(model) / "pipeline.json").read_text()).get("args", {})
    return bool(args.get("image_cond_model"))


class KillOneWorker:
    """on_result callback of the fault run: after the first finished job, ray.kill another busy actor."""

    def __init__(self, ray):
        self.ray = ray
        self.killed = None

    def __call__(self, record: dict) -> None:
        from trellis_backend.batch.ray_executor import NAMESPACE

        if self.killed is None and record["status"] == "done":
            others = [a["name"] for a in self.ray.util.list_named_actors(all_namespaces=True)
                      if a["namespace"] == NAMESPACE and a["name"] != record["worker"]]
            if others:
                self.ray.kill(self.ray.get_actor(others[0], namespace=NAMESPACE))
                self.killed = others[0]


def fault_run(ray, run, out: Path, n_workers: int) -> dict:
    """One actor killed mid-run, then the same batch again: every job ends done or failed, nothing is
    generated twice, and the re-run regenerates nothing."""
    shutil.rmtree(out, ignore_errors=True)
    killer = KillOneWorker(ray)
    first = run(out, n_workers, killer)
    def assets():
        return {p.name: p.stat().st_mtime_ns for p in out.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.name != "manifest.jsonl"}

    mtimes = assets()
    second = run(out, n_workers, None)
    after = assets()
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    return {"workers": n_workers, "killed": killer.killed, "worker_deaths": first.worker_deaths,
            "jobs": first.jobs, "done": len(first.done), "failed": len(first.failed),
            "manifest_lines": len(lines), "manifest_ids_unique": len({r["id"] for r in lines}) == len(lines),
            "manifest_statuses": sorted({r["status"] for r in lines}),
            "retried_jobs": sum(1 for r in lines if r["attempts"] > 1),
            "rerun_skipped_done": second.skipped_done, "rerun_generated": len(second.done),
            "files_changed_by_rerun": sorted(k for k in mtimes if after.get(k) != mtimes[k])}


class GpuSampler:
    """Samples utilisation and memory of every GPU with nvidia-smi twice a second (in a thread)."""

    def __init__(self, period: float = 0.5):
        self.period = period
        self.samples = []  # (time, [(util %, memory MiB) per GPU])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        cmd = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
        while not self._stop.is_set():
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout
                gpus = [tuple(float(v) for v in line.split(",")) for line in out.strip().splitlines()]
                self.samples.append((time.perf_counter(), gpus))
            except (OSError, ValueError, subprocess.TimeoutExpired):
                return
            self._stop.wait(self.period)

    def __enter__(self):
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def mean(self, t0: float, t1: float):
        """Mean utilisation (%) and peak memory (MiB) per GPU over [t0, t1]."""
        window = [g for t, g in self.samples if t0 <= t <= t1]
        if not window:
            return None
        n = len(window[0])
        return [{"util_pct": round(sum(s[i][0] for s in window) / len(window), 1),
                 "mem_peak_mib": max(s[i][1] for s in window)} for i in range(n)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(REPO / "models" / "trellis-embedded"))
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--prompts", default=None, help="prompts file (default: 12 built-in furniture prompts)")
    src.add_argument("--images", default=None, help="image folder (image-conditioned models)")
    ap.add_argument("--jobs", type=int, default=8, help="assets per setting (the list is repeated with new seeds)")
    ap.add_argument("--workers", default="1,2", help="worker counts to compare, e.g. 1,2 (default)")
    ap.add_argument("--gpus-per-worker", type=float, default=0.0, help="0 = CPU actors (default); 1 = one per GPU")
    ap.add_argument("--cpus-per-worker", type=int, default=None,
                    help="threads per actor (default 1 on CPU so that the settings compare like for like)")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: pipeline.json)")
    ap.add_argument("--formats", default="glb,ply,slat")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--models-root", default=None)
    ap.add_argument("--warmup", action="store_true", help="one throwaway asset per worker before timing")
    ap.add_argument("--ray-address", default=None, help="a running Ray cluster (default: a local Ray)")
    ap.add_argument("--out", default=None, help="where the assets go (default: a temp folder, removed)")
    ap.add_argument("--fault-run", action="store_true",
                    help="then run the list once more with the most workers, killing one actor mid-run, and "
                         "re-run it: every job done or failed, nothing regenerated")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()

    import ray
    import torch

    from trellis_backend.batch import load_jobs, run_batch

    counts = [int(c) for c in args.workers.split(",")]
    cpw = args.cpus_per_worker or (1 if args.gpus_per_worker == 0 else None)
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="batch_bench_"))
    if not args.images and not args.prompts and is_image_model(args.model):
        args.images = str(synthetic_images(root / "inputs", min(args.jobs, 24)))
    if args.images:
        base = load_jobs(args.images)
    else:
        texts = Path(args.prompts).read_text().splitlines() if args.prompts else PROMPTS
        base = [{"prompt": t.strip()} for t in texts if t.strip() and not t.startswith("#")]
    specs = []
    for i in range(args.jobs):  # repeat the list with new seeds until there are --jobs of them
        b = base[i % len(base)]
        spec = b.to_dict() if hasattr(b, "to_dict") else dict(b)
        spec.pop("id", None)
        spec["seed"] = i // len(base)
        specs.append(spec)
    options = {"formats": args.formats, **({"steps": args.steps} if args.steps else {})}

    if args.ray_address:
        ray.init(address=args.ray_address, logging_level="warning")
    else:
        ray.init(include_dashboard=False, logging_level="warning", log_to_driver=False)
    def run(out: Path, n: int, on_result=None):
        return run_batch(specs, args.model, out, options=options, executor="ray", workers=n,
                         gpus_per_worker=args.gpus_per_worker, cpus_per_worker=cpw, device=args.device,
                         dtype=args.dtype, models_root=args.models_root, warmup=args.warmup,
                         show_progress=False, on_result=on_result)

    rows, fault = [], None
    try:
        for n in counts:
            out = root / f"workers{n}"
            shutil.rmtree(out, ignore_errors=True)
            with GpuSampler() as gpus:
                t0 = time.perf_counter()
                s = run(out, n)
                t1 = time.perf_counter()
            secs = [r["seconds"] for r in s.done]
            row = {"workers": n, "jobs": len(specs), "done": len(s.done), "failed": len(s.failed),
                   "wall_s": round(t1 - t0, 2), "startup_s": round(s.seconds_total - s.seconds_working, 2),
                   "steady_s": round(s.seconds_working, 2), "assets_per_hour": round(s.assets_per_hour, 1),
                   "s_per_asset": round(sum(secs) / len(secs), 3) if secs else None,
                   # how busy the actors were while the batch ran: job seconds / (actors x steady seconds)
                   "busy_pct": round(100 * sum(secs) / (len(s.workers) * s.seconds_working), 1)
                   if s.workers and s.seconds_working > 0 else None,
                   "devices": sorted({w.get("gpu") or w.get("device") for w in s.workers}),
                   "threads_per_worker": sorted({w.get("threads") for w in s.workers})}
            gpu = gpus.mean(t1 - s.seconds_working, t1)
            if gpu:
                row["gpus"] = gpu
            rows.append(row)
            print(f"[bench] {n} worker(s): {row['done']}/{row['jobs']} done, {row['assets_per_hour']} assets/h",
                  file=sys.stderr)
        if args.fault_run:
            fault = fault_run(ray, run, root / "fault", max(counts))
    finally:
        ray.shutdown()
        if not args.out:
            shutil.rmtree(root, ignore_errors=True)

    base_rate = rows[0]["assets_per_hour"] or float("nan")
    for row in rows:
        row["ratio"] = round(row["assets_per_hour"] / base_rate, 2) if base_rate == base_rate else None
    header = ["workers", "jobs", "done", "wall s", "start-up s", "steady s", "s/asset", "busy %", "assets/h", "ratio"]
    print("| " + " | ".join(header) + " |" + (" GPU util % |" if any("gpus" in r for r in rows) else ""))
    print("|" + " ---: |" * len(header) + (" --- |" if any("gpus" in r for r in rows) else ""))
    for r in rows:
        cells = [r["workers"], r["jobs"], r["done"], r["wall_s"], r["startup_s"], r["steady_s"], r["s_per_asset"],
                 r["busy_pct"], r["assets_per_hour"], r["ratio"]]
        util = " / ".join(f"{g['util_pct']:.0f}" for g in r.get("gpus", []))
        print("| " + " | ".join(str(c) for c in cells) + " |" + (f" {util} |" if "gpus" in r else ""))
    meta = {"model": str(args.model), "gpus_per_worker": args.gpus_per_worker, "cpus_per_worker": cpw,
            "steps": args.steps, "formats": args.formats, "warmup": args.warmup, "torch": torch.__version__,
            "ray": ray.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
            "host": platform.node(), "command": " ".join(sys.argv)}
    print(f"model {Path(args.model).name}; torch {torch.__version__}, ray {ray.__version__}, {os.cpu_count()} CPUs")
    ok = all(r["failed"] == 0 for r in rows)
    if fault is not None:
        print("fault run: " + json.dumps(fault))
        ok = ok and (fault["worker_deaths"] >= 1 and fault["done"] + fault["failed"] == fault["jobs"]
                     and fault["manifest_ids_unique"] and fault["rerun_generated"] == 0
                     and not fault["files_changed_by_rerun"])
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows, "fault_run": fault}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
