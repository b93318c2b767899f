"""``edit``: regenerate only the voxels inside a region (box or voxel list) of a generated asset."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import BadInputError
from .common import add_loading_options, add_report_options, require_trellis_folder, run_with_pipeline


def region_from_args(args) -> dict:
    """The region of --box (object space, z-up) or --voxels (a JSON list of 64³ grid indices), checked by the
    server's request schema: one set of rules for regions."""
    from ..server.request_schema import region

    if args.box:
        try:
            values = [float(v) for v in args.box.split(",")]
        except ValueError:
            values = []
        if len(values) != 6:
            raise BadInputError("--box takes six numbers: xmin,ymin,zmin,xmax,ymax,zmax (object space, z-up)")
        return region("--box", {"box_min": values[:3], "box_max": values[3:]})
    path = Path(args.voxels).expanduser()
    if not path.is_file():
        raise BadInputError(f"--voxels file not found: {path}", hint="Give a JSON list of [i, j, k] voxel indices.")
    try:
        voxels = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise BadInputError(f"--voxels file {path} is not JSON: {e}",
                            hint="Give a JSON list of [i, j, k] voxel indices.") from None
    return region("--voxels", {"voxels": voxels})


def add_parser(subparsers):
    p = subparsers.add_parser(
        "edit", help="regenerate only the voxels inside a region of a generated asset",
        description="Regenerate a region (box or voxel list) of an asset from its SLAT sidecar; everything outside "
                    "keeps its exact voxels and features; new files are written next to the old ones, which are "
                    "never overwritten.")
    p.add_argument("--from", dest="source", required=True, metavar="SIDECAR", help="<name>.slat.npz of the asset")
    add_loading_options(p)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--box", metavar="X0,Y0,Z0,X1,Y1,Z1",
                       help="region box in object space (z-up unit cube); write --box=-0.5,... when it starts with "
                            "a minus")
    where.add_argument("--voxels", metavar="JSON", help="JSON file with a list of [i, j, k] indices of the 64³ grid")
    p.add_argument("--prompt", default=None, help="new prompt (default: the asset's own)")
    p.add_argument("--image", default=None, help="new condition image (image models)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep-structure", action="store_true", help="keep the voxels, regenerate features only")
    p.add_argument("--margin", type=int, default=0, help="blend margin in voxels inside the region boundary")
    p.add_argument("--resample", type=int, default=0, help="RePaint resampling jumps per step (harmonises)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--cfg", type=float, default=None)
    p.add_argument("--formats", default="glb,ply,slat",
                   help="glb (mesh), ply (Gaussians); the sidecar is always written")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: the sidecar's folder)")
    p.add_argument("--name", default=None, help="output name stem (default <asset>_edit, never overwriting)")
    add_report_options(p)
    return p


def run(args) -> int:
    require_trellis_folder(args, "edit")
    if not Path(args.source).expanduser().is_file():
        raise BadInputError(f"--from sidecar not found: {args.source}",
                            hint="Give the <name>.slat.npz written next to the generated asset.")
    if args.prompt is not None and not args.prompt.strip():
        raise BadInputError("the prompt is empty", hint="Leave out --prompt to reuse the asset's own prompt.")
    from ..pipeline.limits import check_cli_numbers

    check_cli_numbers(args)
    region = region_from_args(args)
    formats = tuple(f for f, k in (("mesh", "glb"), ("gaussians", "ply")) if k in args.formats.split(","))

    def edit(pipe, progress):
        from ..edit import edit_region

        return edit_region(pipe, args.source, region, prompt=args.prompt, image=args.image, seed=args.seed,
                           keep_structure=args.keep_structure, margin=args.margin, resample=args.resample,
                           ss_steps=args.steps, slat_steps=args.steps, slat_cfg=args.cfg, formats=formats,
                           output_dir=args.out, name=args.name, progress=progress)

    return run_with_pipeline(args, edit)
