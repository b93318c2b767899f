"""``generate``: a 3D asset (GLB mesh, PLY Gaussians, SLAT sidecar) from an image or a prompt; with a TRELLIS.2
folder, a PBR-textured GLB and the latent sidecar from an image in a resolution mode (``--resolution``)."""
from __future__ import annotations

from ..pipeline.options import RESOLUTION_MODE_NAMES
from .common import (add_generation_options, condition_image, default_name, run_with_pipeline,
                     validate_generation_inputs)


def add_parser(subparsers):
    p = subparsers.add_parser("generate", help="generate a 3D asset from an image or a prompt",
                              description="Generate a 3D asset (GLB mesh, PLY Gaussians, SLAT sidecar).")
    add_generation_options(p)
    p.add_argument("--ss-steps", type=int, default=None, help="sampling steps of stage 1 (overrides --steps)")
    p.add_argument("--ss-cfg", type=float, default=None, help="guidance strength of stage 1 (sparse structure)")
    t2 = p.add_argument_group("TRELLIS.2 folders")
    t2.add_argument("--resolution", choices=RESOLUTION_MODE_NAMES, default=None,
                    help="resolution mode (default: the folder's, 1024_cascade for TRELLIS.2-4B); --steps sets the "
                         "shape and texture steps, --ss-steps the structure's")
    t2.add_argument("--max-tokens", type=int, default=None, metavar="N",
                    help="the cascade's token cap (default 49152): above it the 1536 cascade lowers its resolution")
    t2.add_argument("--face-budget", type=int, default=None, metavar="N",
                    help="simplify the GLB mesh to about N faces (default 500000)")
    return p


def run(args) -> int:
    validate_generation_inputs(args)
    ss_steps = args.ss_steps if args.ss_steps is not None else args.steps
    if getattr(args, "family", "trellis") == "trellis2":
        options = {k: v for k, v in (("max_num_tokens", args.max_tokens), ("face_budget", args.face_budget))
                   if v is not None}
        return run_with_pipeline(args, lambda pipe, progress: pipe.generate(
            image=condition_image(args), seed=args.seed, resolution=args.resolution, ss_steps=ss_steps,
            shape_steps=args.steps, tex_steps=args.steps, formats=args.formats_norm, output_dir=args.out,
            name=default_name(args), progress=progress, background_threshold=args.background_threshold,
            texture_size=args.texture_size, overwrite=args.overwrite, **options))
    return run_with_pipeline(args, lambda pipe, progress: pipe.generate(
        prompt=args.prompt, image=condition_image(args), seed=args.seed, ss_steps=ss_steps, slat_steps=args.steps,
        ss_cfg=args.ss_cfg, slat_cfg=args.cfg, formats=args.formats_norm, output_dir=args.out,
        name=default_name(args), progress=progress, background_threshold=args.background_threshold,
        texture_size=args.texture_size, overwrite=args.overwrite))
