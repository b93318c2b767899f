"""``variants``: re-run stage 2 (appearance, detail) on the voxels of a SLAT sidecar or a mesh file."""
from __future__ import annotations

from pathlib import Path

from ..errors import BadInputError
from .common import (add_generation_options, condition_image, default_name, require_trellis_folder,
                     run_with_pipeline, validate_generation_inputs)


def add_parser(subparsers):
    p = subparsers.add_parser("variants", help="new SLAT (appearance/detail) on an existing voxelisation",
                              description="Re-run stage 2 on the voxels of a SLAT sidecar (.npz) or a mesh file.")
    p.add_argument("--from", dest="source", required=True, metavar="PATH", help="SLAT sidecar (.npz) or mesh file")
    add_generation_options(p)
    return p


def run(args) -> int:
    require_trellis_folder(args, "variants")
    validate_generation_inputs(args)
    if not Path(args.source).expanduser().is_file():
        raise BadInputError(f"--from file not found: {args.source}", hint="Give a SLAT sidecar (.npz) or a mesh file.")
    return run_with_pipeline(args, lambda pipe, progress: pipe.variants(
        args.source, prompt=args.prompt, image=condition_image(args), seed=args.seed, slat_steps=args.steps,
        slat_cfg=args.cfg, formats=args.formats_norm, output_dir=args.out, name=default_name(args) + "_variant",
        progress=progress, background_threshold=args.background_threshold, texture_size=args.texture_size,
        overwrite=args.overwrite))
