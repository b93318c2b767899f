"""``generate``: a 3D asset (GLB mesh, PLY Gaussians, SLAT sidecar) from an image or a prompt."""
from __future__ import annotations

from .common import (add_generation_options, condition_image, default_name, run_with_pipeline,
                     validate_generation_inputs)


def add_parser(subparsers):
    p = subparsers.add_parser("generate", help="generate a 3D asset from an image or a prompt",
                              description="Generate a 3D asset (GLB mesh, PLY Gaussians, SLAT sidecar).")
    add_generation_options(p)
    p.add_argument("--ss-steps", type=int, default=None, help="sampling steps of stage 1 (overrides --steps)")
    p.add_argument("--ss-cfg", type=float, default=None, help="guidance strength of stage 1 (sparse structure)")
    return p


def run(args) -> int:
    validate_generation_inputs(args)
    ss_steps = args.ss_steps if args.ss_steps is not None else args.steps
    return run_with_pipeline(args, lambda pipe, progress: pipe.generate(
        prompt=args.prompt, image=condition_image(args), seed=args.seed, ss_steps=ss_steps, slat_steps=args.steps,
        ss_cfg=args.ss_cfg, slat_cfg=args.cfg, formats=args.formats_norm, output_dir=args.out,
        name=default_name(args), progress=progress, background_threshold=args.background_threshold,
        texture_size=args.texture_size))
