"""Image -> GLB through the product path (`TrellisPipeline.generate`) at the TRELLIS-image-large sizes.

    PYTHONPATH=backend:kernels python -m trellis_bench.product_timing [--repeats 3] [--out stages_product.json]

The stage bench (`bench_stages.py`) times the models directly; this times what a user runs: a
random-weight pipeline folder at the official sizes (`make_random_model(size="official")`:
DINOv2 ViT-L/14-reg4, 25-step samplers, SS decoder calibrated to ~20K voxels), loaded by
`TrellisPipeline.from_pretrained(device="cuda")` (bf16, the accel hook with its own settings:
deterministic conv, CUDA graphs of both stages), generating a GLB and a PLY from an RGBA image.
Reports the wall time of each generate call after a warm-up call, the pipeline's per-stage
timings, the voxel and token counts, the peak GPU memory, and whether two runs with one seed are
identical. Random weights make a speckled structure (few voxels share a 2x2x2 cell, so stage 2 sees
about as many tokens as voxels, unlike a real surface); so stage 2 + decoders + export are also
timed through `pipe.variants` on the stage bench's 20K-voxel sphere shell (4.4K tokens).
TRELLIS_PRODUCT_PROFILE=1 adds a torch-profiler summary of one such variants call.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def condition_image(path: Path) -> Path:
    """A plain RGBA test image (an object silhouette on transparency)."""
    from PIL import Image

    a = np.zeros((512, 512, 4), np.uint8)
    yy, xx = np.mgrid[:512, :512]
    a[((yy - 256) ** 2 + (xx - 256) ** 2) < 170 ** 2] = (200, 80, 40, 255)
    a[300:480, 220:292] = (90, 60, 30, 255)
    Image.fromarray(a, "RGBA").save(path)
    return path


def tokens(result: dict) -> int:
    """Tokens of the SLat flow's transformer: occupied 2x2x2 cells (its down-sampling packs each into one)."""
    from .harness import group_lengths

    return int(group_lengths(result["outputs"]["slat"].coords.cpu(), 2).numel())


def median_stage_ms(results) -> dict:
    """Median over runs of each of the pipeline's own stage timings, in ms."""
    return {k: round(statistics.median(r["meta"]["timings"][k] * 1e3 for r in results), 1)
            for k in results[0]["meta"]["timings"]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--folder", default=None, help="reuse / write the random official folder here")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", default="official", help="random-model size (tiny: a CPU smoke run)")
    args = ap.parse_args(argv)

    from trellis_backend.pipeline import TrellisPipeline
    from trellis_lab.random_model import make_random_model

    tmp = tempfile.TemporaryDirectory()
    root = Path(tmp.name)
    folder = Path(args.folder) if args.folder else root / "official"
    t = time.perf_counter()
    if not (folder / "pipeline.json").is_file():
        make_random_model(folder, "image", size=args.size, device=args.device)
    build_s = time.perf_counter() - t
    image = condition_image(root / "cond.png")
    t = time.perf_counter()
    pipe = TrellisPipeline.from_pretrained(folder, device=args.device)
    load_s = time.perf_counter() - t
    cuda = pipe.device.type == "cuda"

    def timed(call, **kw) -> dict:
        """One pipeline call (`generate` or `variants`) writing GLB + PLY, with its wall time in meta."""
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        res = call(image=image, formats=("mesh", "gaussians"), output_dir=root / "out", **kw)
        if cuda:
            torch.cuda.synchronize()
        res["meta"]["wall_ms"] = (time.perf_counter() - t0) * 1e3
        return res

    def run(seed: int, name: str) -> dict:
        return timed(pipe.generate, seed=seed, name=name)

    def run_variant(name: str) -> dict:
        """Stage 2 + decoders + export on the stage bench's 20K-voxel sphere shell (`pipe.variants`)."""
        return timed(pipe.variants, mesh_or_coords=shell, seed=0, name=name)

    first = run(0, "warm")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    runs = [run(0, f"r{i}") for i in range(args.repeats)]
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else 0.0
    a, b = runs[0]["outputs"]["slat"], runs[-1]["outputs"]["slat"]
    same = bool(torch.equal(a.coords, b.coords) and torch.equal(a.feats, b.feats))
    from .harness import shell_coords

    shell = shell_coords(64 if args.size == "official" else 32, 20000 if args.size == "official" else 600,
                         device="cpu")[:, 1:]
    run_variant("vwarm")
    variants = [run_variant(f"v{i}") for i in range(args.repeats)]
    if os.environ.get("TRELLIS_PRODUCT_PROFILE") == "1" and cuda:
        from .stage_cases import profile_run

        profile_run(lambda: run_variant("vprof"), "pipe.variants on the 20K shell (product path)")
    walls = [r["meta"]["wall_ms"] for r in runs]
    result = {"device": torch.cuda.get_device_name() if cuda else "cpu", "size": args.size,
              "build_folder_s": round(build_s, 1), "load_s": round(load_s, 1),
              "first_run_ms": round(first["meta"]["wall_ms"], 1), "wall_ms": [round(w, 1) for w in walls],
              "median_wall_ms": round(statistics.median(walls), 1),
              "median_stage_ms": median_stage_ms(runs),
              "voxels": runs[0]["meta"].get("voxels"), "faces": runs[0]["meta"].get("faces"),
              "files": sorted(runs[0]["files"]), "glb_bytes": Path(runs[0]["files"]["glb"]).stat().st_size,
              "tokens": tokens(runs[0]), "variant_voxels": int(shell.shape[0]), "variant_tokens": tokens(variants[0]),
              "variant_wall_ms": [round(r["meta"]["wall_ms"], 1) for r in variants],
              "variant_median_stage_ms": median_stage_ms(variants),
              "peak_gib": round(peak, 2), "same_seed_identical": same,
              "accel": type(getattr(pipe, "accel", None)).__name__}
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    pipe.release()
    tmp.cleanup()
    return result


if __name__ == "__main__":
    main()
