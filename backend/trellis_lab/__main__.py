"""``python -m trellis_lab <command>``: the lab's command line.

Commands:
  make-random-model   write a random-weight pipeline folder in the official layout (tests, timing)
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

FAMILIES = ("trellis", "trellis2")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m trellis_lab", description="TRELLIS for Blender: the lab's tools.")
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("make-random-model", help="write a random-weight pipeline folder (tests, timing)")
    r.add_argument("--family", choices=FAMILIES, default="trellis",
                   help="model family of the folder: trellis (default) or trellis2 (the TRELLIS.2-4B layout)")
    r.add_argument("--kind", choices=("image", "text"), default=None,
                   help="condition of a trellis folder (required for --family trellis; trellis2 is image-only)")
    r.add_argument("--out", required=True, metavar="DIR")
    r.add_argument("--size", choices=("tiny", "embedded", "official"), default="tiny",
                   help="tiny (CPU tests), embedded (trellis: the embedded default model's sizes, for CPU timing) or "
                        "official (the released sizes, for timing; needs the repo's tests/golden/official_keys or, "
                        "for trellis2, tests/golden2/official_keys)")
    r.add_argument("--device", default="cpu", help="where the calibration runs (cuda for --size official)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--steps", type=int, default=None,
                   help="sampling steps written into pipeline.json (default: trellis 3 tiny, 12 embedded, 25 official; "
                        "trellis2 2 tiny, 12 official)")
    return ap


def make_random_model_command(args) -> int:
    if args.family == "trellis2":
        if args.kind not in (None, "image"):
            print("error: --family trellis2 folders are image-conditioned", file=sys.stderr)
            print("hint: leave --kind out (or use --family trellis for a text folder)", file=sys.stderr)
            return 2
        if args.size == "embedded":
            print("error: --family trellis2 has no embedded size", file=sys.stderr)
            print("hint: use --size tiny (CPU tests) or official (the TRELLIS.2-4B sizes)", file=sys.stderr)
            return 2
        from .random_model_trellis2 import make_random_trellis2

        out = make_random_trellis2(args.out, size=args.size, seed=args.seed, steps=args.steps, device=args.device)
        print(f"random TRELLIS.2 model ({args.size}) written to {out}")
        return 0
    if args.kind is None:
        print("error: --family trellis needs --kind", file=sys.stderr)
        print("hint: add --kind image or --kind text", file=sys.stderr)
        return 2
    from .random_model import make_random_model

    out = make_random_model(args.out, kind=args.kind, size=args.size, seed=args.seed, steps=args.steps,
                            device=args.device)
    print(f"random {args.kind} model written to {out}")
    return 0


COMMANDS = {"make-random-model": make_random_model_command}


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
