"""`python -m trellis_backend edit`: regenerate a region of a generated asset from the command line."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import BadInputError


def _region_from_args(args) -> dict:
    from ..server.request_schema import region  # the server's schema: one set of rules for regions

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


def cmd_edit(args) -> int:
    from ..cli import _Progress, _load_pipeline, _report
    from . import edit_region

    if not Path(args.source).expanduser().is_file():
        raise BadInputError(f"--from sidecar not found: {args.source}",
                            hint="Give the <name>.slat.npz written next to the generated asset.")
    if args.prompt is not None and not args.prompt.strip():
        raise BadInputError("the prompt is empty", hint="Leave out --prompt to reuse the asset's own prompt.")
    from ..pipeline.limits import check_cli_numbers

    check_cli_numbers(args)
    region = _region_from_args(args)
    progress = _Progress(args.quiet)
    try:
        pipe = _load_pipeline(args)
        result = edit_region(pipe, args.source, region, prompt=args.prompt, image=args.image, seed=args.seed,
                             keep_structure=args.keep_structure, margin=args.margin, resample=args.resample,
                             ss_steps=args.steps, slat_steps=args.steps, slat_cfg=args.cfg,
                             formats=tuple(f for f, k in (("mesh", "glb"), ("gaussians", "ply"))
                                           if k in args.formats.split(",")),
                             output_dir=args.out, name=args.name, progress=progress)
    finally:
        progress.close()
    _report(args, result)
    return 0


def register(sub) -> None:
    e = sub.add_parser("edit", help="regenerate only the voxels inside a region of a generated asset",
                       description="Regenerate a region (box or voxel list) of an asset from its SLAT sidecar; "
                                   "everything outside keeps its exact voxels and features; new files are written "
                                   "next to the old ones, which are never overwritten.")
    e.add_argument("--from", dest="source", required=True, metavar="SIDECAR", help="<name>.slat.npz of the asset")
    e.add_argument("--model", required=True, metavar="DIR", help="the pipeline folder that generated the asset")
    where = e.add_mutually_exclusive_group(required=True)
    where.add_argument("--box", metavar="X0,Y0,Z0,X1,Y1,Z1", help="region box in object space (z-up unit cube); write --box=-0.5,... when it starts with a minus")
    where.add_argument("--voxels", metavar="JSON", help="JSON file with a list of [i, j, k] indices of the 64³ grid")
    e.add_argument("--prompt", default=None, help="new prompt (default: the asset's own)")
    e.add_argument("--image", default=None, help="new condition image (image models)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--keep-structure", action="store_true", help="keep the voxels, regenerate features only")
    e.add_argument("--margin", type=int, default=0, help="blend margin in voxels inside the region boundary")
    e.add_argument("--resample", type=int, default=0, help="RePaint resampling jumps per step (harmonises)")
    e.add_argument("--steps", type=int, default=None)
    e.add_argument("--cfg", type=float, default=None)
    e.add_argument("--formats", default="glb,ply,slat", help="glb (mesh), ply (Gaussians); the sidecar is always written")
    e.add_argument("--out", default=None, metavar="DIR", help="output folder (default: the sidecar's folder)")
    e.add_argument("--name", default=None, help="output name stem (default <asset>_edit, never overwriting)")
    e.add_argument("--device", default="auto")
    e.add_argument("--dtype", default=None)
    e.add_argument("--models-root", default=None)
    e.add_argument("--allow-network", action="store_true")
    e.add_argument("--json", action="store_true")
    e.add_argument("--quiet", action="store_true")
    e.add_argument("--debug", action="store_true")
    e.set_defaults(handler=cmd_edit)
