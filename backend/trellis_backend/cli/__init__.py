"""Command line: ``python -m trellis_backend <command>`` (also installed as ``trellis-blender``).

Commands (one module each):
  generate   image or prompt -> GLB / PLY / SLAT sidecar
  variants   re-run stage 2 on an existing voxelisation (sidecar or mesh) with a new prompt/image/seed
  edit       regenerate only the voxels inside a region of a generated asset
  texture    paint an existing mesh (PBR textures on its own UVs) from an image, with a TRELLIS.2 folder
  serve      the JSON-lines server the add-on talks to
  batch      many assets from a prompt list, an image folder or a jobs file (Ray, or in-process)

Errors the user can fix are printed as ``error: ...`` and ``hint: ...`` with a non-zero exit
status (`common.exit_code`): 2 bad input (missing/corrupt image, empty prompt, bad option), 3 missing
model files, 4 out of memory, 5 other model problems, 130 cancelled (Ctrl-C). Inputs are checked
before torch is imported (command modules import torch only inside `run`), so those errors come back
at once. Shared helpers (options, checks, progress bar, pipeline loading, result report) are public
in `common`.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from ..errors import TrellisError, is_out_of_memory, out_of_memory_error
from ..batch import cli as batch_cli
from . import edit, generate, serve, texture, variants
from .common import EXIT_CANCELLED, EXIT_OOM, exit_code

# Registration point of the subcommands. A command is a module with ``add_parser(subparsers)`` (adds
# and returns its argparse parser) and ``run(args) -> exit status``; add a new one to this tuple
# (e.g. the Ray batch runner's ``batch`` module).
COMMAND_MODULES = (generate, variants, edit, texture, serve, batch_cli)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m trellis_backend",
                                 description="TRELLIS image/text-to-3D generation (TRELLIS for Blender backend).")
    sub = ap.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.add_parser(sub).set_defaults(run=module.run)
    return ap


def _interrupted() -> int:
    """Ctrl-C: say which files (if any) were complete; a job's files appear as a set or not at all."""
    from ..pipeline.output_files import committed_files

    done = committed_files()
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
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return int(args.run(args) or 0)
    except TrellisError as e:
        if getattr(args, "debug", False):
            import traceback

            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return exit_code(e)
    except KeyboardInterrupt:
        return _interrupted()
    except Exception as e:  # unexpected: show what and where to look
        if _caused_by_interrupt(e):  # a library turned the Ctrl-C into its own error while unwinding
            return _interrupted()
        if getattr(args, "debug", False):
            raise
        if is_out_of_memory(e):
            err = out_of_memory_error(e)
            print(f"error: {err}\nhint: {err.hint}", file=sys.stderr)
            return EXIT_OOM
        print(f"error: unexpected {type(e).__name__}: {e}", file=sys.stderr)
        print("hint: re-run with --debug for the full traceback and report it.", file=sys.stderr)
        return 1
