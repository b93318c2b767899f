"""Command line: ``python -m trellis_backend <command>`` (also installed as ``trellis-blender``).

Commands:
  generate            image or prompt -> GLB / PLY / SLAT sidecar
  variants            re-run stage 2 on an existing voxelisation (sidecar or mesh) with a new prompt/image/seed
  make-random-model   write a tiny random-weight pipeline folder in the official layout (for tests)

Errors the user can fix are printed as ``error: ...`` and ``hint: ...`` with a non-zero exit
status: 2 bad input (missing/corrupt image, empty prompt, bad option), 3 missing model
files, 4 out of memory, 5 other model problems, 130 cancelled (Ctrl-C). Inputs are checked
before torch is imported, so those errors come back at once.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import List, Optional

from .errors import BadInputError, Cancelled, MissingFileError, OutOfMemoryError, TrellisError

EXIT_BAD_INPUT = 2
EXIT_MISSING = 3
EXIT_OOM = 4
EXIT_MODEL = 5
EXIT_CANCELLED = 130

FORMAT_HELP = "comma-separated: glb (mesh), ply (Gaussians), slat (sidecar; always written); default glb,ply,slat"


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="DIR", help="pipeline folder (pipeline.json + ckpts/)")
    cond = p.add_mutually_exclusive_group(required=True)
    cond.add_argument("--prompt", metavar="TEXT", help="text prompt (text-conditioned models)")
    cond.add_argument("--image", metavar="PATH", nargs="+",
                      help="condition image (image-conditioned models); several paths = multi-image conditioning")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--formats", default="glb,ply,slat", help=FORMAT_HELP)
    p.add_argument("--out", default="trellis_outputs", metavar="DIR", help="output folder (default ./trellis_outputs)")
    p.add_argument("--name", default=None, help="output file name stem (default: derived from the input); "
                                                "an existing name gets _2, _3, ... unless --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace existing files of the same name")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--models-root", default=None, metavar="DIR",
                   help="folder holding <org>/<repo> model folders that a text release points at")
    p.add_argument("--allow-network", action="store_true",
                   help="allow downloads from the Hugging Face hub for models not found locally")
    p.add_argument("--background-threshold", type=float, default=None, metavar="T",
                   help="remove a plain background from an image without alpha: pixels within T*255 of the "
                        "border colour become transparent (T in [0, 1], e.g. 0.1)")
    p.add_argument("--texture-size", type=int, default=0, metavar="N",
                   help="bake the GLB colours into an NxN texture (needs xatlas; default 0 = vertex colours)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps of both stages (default: pipeline.json)")
    p.add_argument("--cfg", type=float, default=None, help="guidance strength of stage 2 (SLAT)")
    p.add_argument("--json", action="store_true", help="print the result (files + metadata) as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def build_parser(with_plugins: bool = True) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m trellis_backend",
                                 description="TRELLIS image/text-to-3D generation (TRELLIS for Blender backend).")
    sub = ap.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate a 3D asset from an image or a prompt",
                       description="Generate a 3D asset (GLB mesh, PLY Gaussians, SLAT sidecar).")
    _add_common(g)
    g.add_argument("--ss-steps", type=int, default=None, help="sampling steps of stage 1 (overrides --steps)")
    g.add_argument("--ss-cfg", type=float, default=None, help="guidance strength of stage 1 (sparse structure)")

    v = sub.add_parser("variants", help="new SLAT (appearance/detail) on an existing voxelisation",
                       description="Re-run stage 2 on the voxels of a SLAT sidecar (.npz) or a mesh file.")
    v.add_argument("--from", dest="source", required=True, metavar="PATH", help="SLAT sidecar (.npz) or mesh file")
    _add_common(v)

    r = sub.add_parser("make-random-model", help="write a tiny random-weight pipeline folder (tests)")
    r.add_argument("--kind", choices=("image", "text"), required=True)
    r.add_argument("--out", required=True, metavar="DIR")
    r.add_argument("--size", choices=("tiny", "embedded", "official"), default="tiny",
                   help="tiny (CPU tests), embedded (the embedded default model's sizes, for CPU timing) or "
                        "official (TRELLIS-image-large sizes, for timing; needs the repo's tests/golden/official_keys)")
    r.add_argument("--device", default="cpu", help="where the calibration runs (cuda for --size official)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--steps", type=int, default=None,
                   help="sampling steps written into pipeline.json (default 3 tiny, 12 embedded, 25 official)")

    # region editing registers its own command(s): trellis_backend/edit/cli.py defines register(subparsers)
    # (skipped when one of the commands above is run, so their input errors come back without importing torch)
    if with_plugins and (Path(__file__).parent / "edit" / "cli.py").is_file():
        try:
            from .edit.cli import register  # type: ignore

            register(sub)
        except ImportError:
            pass
    return ap


# ------------------------------------------------------------------- validation
def _validate_inputs(args) -> None:
    """Checks that need no torch: fail fast with a clear message."""
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
        from .pipeline.conditioning.preprocess import load_image

        for path in args.image:
            load_image(path)
    if args.background_threshold is not None and not 0 <= args.background_threshold <= 1:
        raise BadInputError(f"--background-threshold must be in [0, 1], got {args.background_threshold}")
    from .pipeline.limits import check_cli_numbers

    check_cli_numbers(args)
    if args.texture_size < 0 or args.texture_size > 8192:
        raise BadInputError("--texture-size must be between 0 and 8192")
    from .pipeline.options import check_name, normalize_formats

    args.formats_norm = normalize_formats(args.formats)
    if args.name is not None:
        check_name(args.name)
    try:
        margs = json.loads((model / "pipeline.json").read_text()).get("args", {})
    except Exception:
        return  # the pipeline loader reports a damaged pipeline.json with details
    if margs.get("image_cond_model") and args.prompt is not None:
        raise BadInputError(f"{model} is an image-conditioned model; it cannot take a text prompt",
                            hint="Use --image with an RGBA image, or a text-conditioned model folder.")
    if margs.get("text_cond_model") and args.image:
        raise BadInputError(f"{model} is a text-conditioned model; it cannot take an image",
                            hint="Use --prompt, or an image-conditioned model folder.")


def _default_name(args) -> str:
    if args.name:
        return args.name
    if args.image:
        stem = Path(args.image[0]).stem
    else:
        stem = "_".join(args.prompt.strip().lower().split())[:40]
    clean = "".join(c if (c.isalnum() or c in "-_") else "_" for c in stem).strip("_") or "asset"
    return f"{clean}_seed{args.seed}"


class _Progress:
    """tqdm bar per stage, fed by progress(stage, step, total, message)."""

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


# ----------------------------------------------------------------------- commands
def _load_pipeline(args):
    from .pipeline import TrellisPipeline

    return TrellisPipeline.from_pretrained(args.model, models_root=args.models_root, device=args.device,
                                           dtype=args.dtype, allow_network=args.allow_network)


def _report(args, result: dict) -> None:
    if args.json:
        print(json.dumps({"files": result["files"], "meta": result["meta"]}, default=str, indent=2))
        return
    meta = result["meta"]
    parts = [f"{meta.get('voxels', 0)} voxels"]
    if "faces" in meta:
        parts.append(f"{meta['vertices']} vertices / {meta['faces']} faces")
    if "gaussians" in meta:
        parts.append(f"{meta['gaussians']} Gaussians")
    parts.append(f"{meta['timings'].get('total', 0):.1f} s")
    print("generated: " + ", ".join(parts))
    for kind, path in result["files"].items():
        print(f"{kind}: {path}")


def cmd_generate(args) -> int:
    _validate_inputs(args)
    progress = _Progress(args.quiet)
    try:
        pipe = _load_pipeline(args)
        ss_steps = args.ss_steps if args.ss_steps is not None else args.steps
        result = pipe.generate(
            prompt=args.prompt, image=(args.image[0] if args.image and len(args.image) == 1 else args.image),
            seed=args.seed, ss_steps=ss_steps, slat_steps=args.steps, ss_cfg=args.ss_cfg, slat_cfg=args.cfg,
            formats=args.formats_norm, output_dir=args.out, name=_default_name(args), progress=progress,
            background_threshold=args.background_threshold, texture_size=args.texture_size,
            overwrite=args.overwrite)
    finally:
        progress.close()
    _report(args, result)
    return 0


def cmd_variants(args) -> int:
    _validate_inputs(args)
    if not Path(args.source).expanduser().is_file():
        raise BadInputError(f"--from file not found: {args.source}", hint="Give a SLAT sidecar (.npz) or a mesh file.")
    progress = _Progress(args.quiet)
    try:
        pipe = _load_pipeline(args)
        result = pipe.variants(
            args.source, prompt=args.prompt,
            image=(args.image[0] if args.image and len(args.image) == 1 else args.image), seed=args.seed,
            slat_steps=args.steps, slat_cfg=args.cfg, formats=args.formats_norm, output_dir=args.out,
            name=_default_name(args) + "_variant", progress=progress,
            background_threshold=args.background_threshold, texture_size=args.texture_size,
            overwrite=args.overwrite)
    finally:
        progress.close()
    _report(args, result)
    return 0


def cmd_make_random_model(args) -> int:
    from .pipeline.random_model import make_random_model

    out = make_random_model(args.out, kind=args.kind, size=args.size, seed=args.seed, steps=args.steps,
                            device=args.device)
    print(f"random {args.kind} model written to {out}")
    return 0


COMMANDS = {"generate": cmd_generate, "variants": cmd_variants, "make-random-model": cmd_make_random_model}


def _exit_code(exc: TrellisError) -> int:
    if isinstance(exc, Cancelled):
        return EXIT_CANCELLED
    if isinstance(exc, BadInputError):
        return EXIT_BAD_INPUT
    if isinstance(exc, MissingFileError):
        return EXIT_MISSING
    if isinstance(exc, OutOfMemoryError):
        return EXIT_OOM
    return EXIT_MODEL


def _interrupted() -> int:
    from .pipeline.output_files import committed_files

    done = committed_files()  # files of the job appear as a complete set or not at all
    print("cancelled; " + ("these files were complete before the interrupt: " + ", ".join(done) if done
                           else "no output file was written"), file=sys.stderr)
    return EXIT_CANCELLED


def _caused_by_interrupt(exc: BaseException) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__context__ or exc.__cause__
    return False


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(with_plugins=not (argv and argv[0] in COMMANDS))
    args = parser.parse_args(argv)
    handler = COMMANDS.get(args.command) or getattr(args, "handler", None)
    if handler is None:
        parser.error(f"unknown command {args.command}")
    try:
        return int(handler(args) or 0)
    except TrellisError as e:
        if getattr(args, "debug", False):
            import traceback

            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return _exit_code(e)
    except KeyboardInterrupt:
        return _interrupted()
    except Exception as e:  # unexpected: show what and where to look
        if _caused_by_interrupt(e):  # a library turned the Ctrl-C into its own error while unwinding
            return _interrupted()
        if getattr(args, "debug", False):
            raise
        from .pipeline.pipeline import _is_oom

        if _is_oom(e):
            err = OutOfMemoryError(f"out of memory: {str(e).splitlines()[0][:300] if str(e) else type(e).__name__}")
            print(f"error: {err}\nhint: {err.hint}", file=sys.stderr)
            return EXIT_OOM
        print(f"error: unexpected {type(e).__name__}: {e}", file=sys.stderr)
        print("hint: re-run with --debug for the full traceback and report it.", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
