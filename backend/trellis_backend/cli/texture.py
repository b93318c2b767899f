"""``texture``: PBR textures for an existing mesh (GLB, OBJ, PLY) from a reference image with a TRELLIS.2 folder;
the mesh's vertices, faces and UVs are kept exactly (xatlas UVs only for a mesh that has none)."""
from __future__ import annotations

from pathlib import Path

from ..errors import BadInputError, MissingFileError
from .common import add_loading_options, add_report_options, run_with_pipeline


def add_parser(subparsers):
    p = subparsers.add_parser(
        "texture", help="texture an existing mesh from an image (TRELLIS.2 folders)",
        description="Texture an existing mesh with TRELLIS.2: the mesh is encoded to a shape latent, the texture "
                    "flow paints it after the image, and base colour / metallic / roughness / alpha are baked onto "
                    "the mesh's own UVs. Writes <name>.glb and <name>.trellis2.npz, never over an existing file.")
    add_loading_options(p)
    p.add_argument("--mesh", required=True, metavar="PATH", help="the mesh to texture: .glb, .gltf, .obj or .ply")
    p.add_argument("--image", required=True, metavar="PATH",
                   help="reference image (RGBA with a transparent background, or see --background-threshold)")
    p.add_argument("--out", default="trellis_outputs", metavar="DIR", help="output folder (default ./trellis_outputs)")
    p.add_argument("--name", default=None, help="output stem (default <mesh>_textured_seed<N>; _2, _3 ... when taken)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resolution", type=int, default=1024,
                   help="O-Voxel grid the mesh is encoded at (default 1024; 512 uses the 512 texture flow)")
    p.add_argument("--texture-size", type=int, default=0, metavar="N", help="texels per side (default 0 = 2048)")
    p.add_argument("--steps", type=int, default=None, help="texture sampling steps (default: pipeline.json)")
    p.add_argument("--up-axis", choices=("y", "z"), default="y",
                   help="the mesh's up axis: y (glTF, the reference's assumption) or z (Blender object space)")
    p.add_argument("--background-threshold", type=float, default=None, metavar="T",
                   help="remove a plain background from an image without alpha (T in [0, 1])")
    add_report_options(p)
    return p


def validate(args) -> None:
    """Checks that need no torch."""
    from ..pipeline.conditioning.preprocess import load_image
    from ..pipeline.family import detect_family
    from ..pipeline.options import check_name
    from ..pipeline.texture_mesh_input import MESH_SUFFIXES

    model = Path(args.model).expanduser()
    if not (model / "pipeline.json").is_file():
        raise MissingFileError(f"no pipeline.json in {model}", hint="--model must be a TRELLIS.2 folder "
                                                                     "(pipeline.json + ckpts/).")
    if detect_family(model) != "trellis2":
        raise BadInputError(f"'texture' needs a TRELLIS.2 model folder; {model} is a TRELLIS folder",
                            hint="Select a TRELLIS.2 folder (e.g. microsoft/TRELLIS.2-4B).")
    mesh = Path(args.mesh).expanduser()
    if not mesh.is_file():
        raise BadInputError(f"mesh file not found: {mesh}", hint="Check --mesh.")
    if mesh.suffix.lower() not in MESH_SUFFIXES:
        raise BadInputError(f"unsupported mesh file type {mesh.suffix!r}", hint="Give a GLB, glTF, OBJ or PLY file.")
    load_image(args.image)
    if args.name is not None:
        check_name(args.name)
    if args.texture_size < 0 or args.texture_size > 8192:
        raise BadInputError("--texture-size must be between 0 and 8192")
    if args.steps is not None and args.steps < 1:
        raise BadInputError(f"--steps must be at least 1, got {args.steps}")


def run(args) -> int:
    validate(args)
    return run_with_pipeline(args, lambda pipe, progress: pipe.texture(
        args.mesh, args.image, seed=args.seed, resolution=args.resolution, texture_size=args.texture_size,
        tex_steps=args.steps, output_dir=args.out, name=args.name, progress=progress, up_axis=args.up_axis,
        background_threshold=args.background_threshold))
