"""What every subcommand of the command line shares: exit codes, option groups, input checks that need no
torch, the progress bar, pipeline loading and the result report."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from ..errors import BadInputError, Cancelled, MissingFileError, OutOfMemoryError, TrellisError

EXIT_BAD_INPUT = 2
EXIT_MISSING = 3
EXIT_OOM = 4
EXIT_MODEL = 5
EXIT_CANCELLED = 130

FORMAT_HELP = ("comma-separated: glb (mesh), ply (Gaussians), slat (sidecar; always written); default glb,ply,slat "
               "(TRELLIS.2 folders: glb,slat -- a PBR-textured GLB and the latent sidecar)")
DEFAULT_FORMATS = {"trellis": "glb,ply,slat", "trellis2": "glb,slat"}


def exit_code(exc: TrellisError) -> int:
    """The exit status of a user-facing error."""
    if isinstance(exc, Cancelled):
        return EXIT_CANCELLED
    if isinstance(exc, BadInputError):
        return EXIT_BAD_INPUT
    if isinstance(exc, MissingFileError):
        return EXIT_MISSING
    if isinstance(exc, OutOfMemoryError):
        return EXIT_OOM
    return EXIT_MODEL


# ------------------------------------------------------------------- options
def add_loading_options(p: argparse.ArgumentParser) -> None:
    """Where the pipeline comes from and where it runs."""
    p.add_argument("--model", required=True, metavar="DIR", help="pipeline folder (pipeline.json + ckpts/)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--models-root", default=None, metavar="DIR",
                   help="folder holding <org>/<repo> model folders that a text release points at")
    p.add_argument("--allow-network", action="store_true",
                   help="allow downloads from the Hugging Face hub for models not found locally")


def add_report_options(p: argparse.ArgumentParser) -> None:
    """How the command talks back."""
    p.add_argument("--json", action="store_true", help="print the result (files + metadata) as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def add_generation_options(p: argparse.ArgumentParser) -> None:
    """The options of `generate` and `variants`: model, condition, seed, outputs, sampling."""
    add_loading_options(p)
    cond = p.add_mutually_exclusive_group(required=True)
    cond.add_argument("--prompt", metavar="TEXT", help="text prompt (text-conditioned models)")
    cond.add_argument("--image", metavar="PATH", nargs="+",
                      help="condition image (image-conditioned models); several paths = multi-image conditioning")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--formats", default=None, help=FORMAT_HELP)
    p.add_argument("--out", default="trellis_outputs", metavar="DIR", help="output folder (default ./trellis_outputs)")
    p.add_argument("--name", default=None, help="output file name stem (default: derived from the input); "
                                                "an existing name gets _2, _3, ... unless --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace existing files of the same name")
    p.add_argument("--background-threshold", type=float, default=None, metavar="T",
                   help="remove a plain background from an image without alpha: pixels within T*255 of the "
                        "border colour become transparent (T in [0, 1], e.g. 0.1)")
    p.add_argument("--texture-size", type=int, default=0, metavar="N",
                   help="bake the GLB colours into an NxN texture (needs xatlas; default 0 = vertex colours; "
                        "TRELLIS.2: the PBR textures' size, 0 = 2048)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps of both stages (default: pipeline.json)")
    p.add_argument("--cfg", type=float, default=None, help="guidance strength of stage 2 (SLAT)")
    add_report_options(p)


# ---------------------------------------------------------------- validation
def validate_generation_inputs(args) -> None:
    """Checks that need no torch: fail fast with a clear message (sets ``args.formats_norm``)."""
    model = Path(args.model).expanduser()
    if not model.exists():
        raise MissingFileError(f"model folder not found: {model}",
                               hint="Pass --model the folder that contains pipeline.json (e.g. the embedded model).")
    if not (model / "pipeline.json").is_file():
        raise MissingFileError(f"no pipeline.json in {model}" if model.is_dir() else f"not a folder: {model}",
                               hint="--model must be a TRELLIS pipeline folder (pipeline.json + ckpts/).")
    if args.prompt is not None and not args.prompt.strip():
        raise BadInputError("the prompt is empty", hint="Describe the object, e.g. --prompt 'a red wooden chair'.")
    if args.image:
        from ..pipeline.conditioning.preprocess import load_image

        for path in args.image:
            load_image(path)
    if args.background_threshold is not None and not 0 <= args.background_threshold <= 1:
        raise BadInputError(f"--background-threshold must be in [0, 1], got {args.background_threshold}")
    from ..pipeline.limits import check_cli_numbers

    check_cli_numbers(args)
    if args.texture_size < 0 or args.texture_size > 8192:
        raise BadInputError("--texture-size must be between 0 and 8192")
    from ..pipeline.options import check_name, normalize_formats

    if args.name is not None:
        check_name(args.name)
    try:
        config = json.loads((model / "pipeline.json").read_text())
        margs = config.get("args", {})
    except Exception:  # the pipeline loader reports a damaged pipeline.json with details
        args.formats_norm = normalize_formats(args.formats or DEFAULT_FORMATS["trellis"])
        return
    from ..pipeline.family import family_of_config

    args.family = family_of_config(config)
    args.formats_norm = normalize_formats(args.formats or DEFAULT_FORMATS[args.family])
    check_family_arguments(args)
    if margs.get("image_cond_model") and args.prompt is not None:
        raise BadInputError(f"{model} is an image-conditioned model; it cannot take a text prompt",
                            hint="Use --image with an RGBA image, or a text-conditioned model folder.")
    if margs.get("text_cond_model") and args.image:
        raise BadInputError(f"{model} is a text-conditioned model; it cannot take an image",
                            hint="Use --prompt, or an image-conditioned model folder.")


# command-line options that only one model family takes (argparse dest -> option)
TRELLIS_ONLY_ARGS = {"ss_cfg": "--ss-cfg", "cfg": "--cfg"}
TRELLIS2_ONLY_ARGS = {"resolution": "--resolution", "max_tokens": "--max-tokens", "face_budget": "--face-budget"}


def check_family_arguments(args) -> None:
    """Options of the other model family than --model's get a clear error (needs ``args.family``)."""
    from ..pipeline.options import check_family_options

    if args.family == "trellis2" and args.prompt is not None:
        raise BadInputError(f"{args.model} is a TRELLIS.2 model (image-conditioned); it cannot take a text prompt",
                            hint="Use --image with an RGBA image, or a TRELLIS text-to-3D model folder.")
    foreign = TRELLIS_ONLY_ARGS if args.family == "trellis2" else TRELLIS2_ONLY_ARGS
    given = [flag for dest, flag in foreign.items() if getattr(args, dest, None) is not None]
    if given:
        other, this = ("TRELLIS", "TRELLIS.2") if args.family == "trellis2" else ("TRELLIS.2", "TRELLIS")
        raise BadInputError(f"{', '.join(given)}: {other} option{'s' if len(given) > 1 else ''}, but {args.model} is a "
                            f"{this} model folder", hint=f"Leave {' / '.join(given)} out, or use a {other} folder.")
    if args.family == "trellis2" and args.image and len(args.image) > 1:
        raise BadInputError("TRELLIS.2 takes one condition image", hint="Multi-image conditioning is a TRELLIS feature.")
    check_family_options(args.family, {"formats": args.formats_norm})


def require_trellis_folder(args, command: str) -> None:
    """`command` (variants, edit) works on TRELLIS SLATs; a TRELLIS.2 --model gets a clear error before loading."""
    from ..pipeline.family import detect_family

    try:
        family = detect_family(args.model)
    except TrellisError:
        return  # the pipeline loader reports a missing or damaged folder with details
    if family == "trellis2":
        raise BadInputError(f"'{command}' works on TRELLIS assets (SLAT sidecars); {args.model} is a TRELLIS.2 model "
                            "folder", hint=f"Use a TRELLIS model folder for '{command}', or 'generate' with this one.")


def default_name(args) -> str:
    """The output stem: --name, else the image's stem or the prompt's words, with the seed."""
    if args.name:
        return args.name
    if args.image:
        stem = Path(args.image[0]).stem
    else:
        stem = "_".join(args.prompt.strip().lower().split())[:40]
    clean = "".join(c if (c.isalnum() or c in "-_") else "_" for c in stem).strip("_") or "asset"
    return f"{clean}_seed{args.seed}"


def condition_image(args):
    """--image as the pipeline takes it: one path, or a list for multi-image conditioning (or None)."""
    return args.image[0] if args.image and len(args.image) == 1 else args.image


# ----------------------------------------------------------------- running
class Progress:
    """A tqdm bar per stage, fed by progress(stage, step, total, message)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None
        self.stage = None

    def __call__(self, stage: str, step: int, total: int, message: str = "") -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=max(total, 1), desc=stage, unit="step", file=sys.stderr, leave=True,
                            dynamic_ncols=True)
        if self.bar is not None:
            self.bar.n = min(step, self.bar.total)
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def load_pipeline(args):
    """The pipeline of --model (TRELLIS or TRELLIS.2, from its pipeline.json) with the loading options."""
    from ..pipeline import load_pipeline as load_any

    return load_any(args.model, models_root=args.models_root, device=args.device, dtype=args.dtype,
                    allow_network=args.allow_network)


def report_result(args, result: dict) -> None:
    """Print the files and a one-line summary (or, with --json, files + metadata as JSON)."""
    if args.json:
        print(json.dumps({"files": result["files"], "meta": result["meta"]}, default=str, indent=2))
        return
    meta = result["meta"]
    parts = [f"{meta.get('voxels', 0)} voxels"]
    if "resolution_mode" in meta:
        parts.append(f"{meta['resolution_mode']} -> {meta['resolution']}^3")
    if "faces" in meta:
        parts.append(f"{meta['vertices']} vertices / {meta['faces']} faces")
    if "gaussians" in meta:
        parts.append(f"{meta['gaussians']} Gaussians")
    parts.append(f"{meta['timings'].get('total', 0):.1f} s")
    print("generated: " + ", ".join(parts))
    for kind, path in result["files"].items():
        print(f"{kind}: {path}")


def run_with_pipeline(args, call: Callable) -> int:
    """Load the pipeline, run ``call(pipe, progress)`` under a progress bar, report its result."""
    progress = Progress(args.quiet)
    try:
        result = call(load_pipeline(args), progress)
    finally:
        progress.close()
    report_result(args, result)
    return 0
