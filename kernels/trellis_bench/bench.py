"""Benchmarks: `python -m trellis_bench.bench [--groups conv,attention,...] [--out docs/BENCHMARKS.md] [--small]`.

Prints (and optionally writes) a markdown table of median times over repeats
after warm-up, timed with CUDA events, of each Triton kernel against its
PyTorch baseline (the op as the backend would otherwise run it, in the same
dtype) and, for attention, against torch SDPA's backends. Every Triton row
also reports its relative error against the float32 reference.

Cases live in a registry (`@register(group, name)`), so later rounds can add
full-pipeline stage timings (group "stages") next to the kernel rows: a case
is a function `fn(bench: Bench) -> None` that calls `bench.row(...)`.

``--small`` is the CPU smoke mode: the pipeline groups ("stages": TRELLIS, "trellis2": TRELLIS.2) run
with tiny models on the CPU, one timed run each, host clock (wiring only: never report these numbers
as GPU timings); the kernel groups need CUDA and are left out.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, Optional

import torch

from .harness import REGISTRY, Bench, Row, machine_header, markdown_table

CASE_MODULES = ("kernel_cases", "stage_cases", "trellis2_cases")  # importing them registers their cases
SMOKE_GROUPS = ("stages", "trellis2", "trellis2_e2e")  # the groups `--small` runs on the CPU
SMOKE_ENV = {"TRELLIS_STAGE_DEVICE": "cpu", "TRELLIS_STAGE_SMALL": "1", "TRELLIS_STAGE_REPEATS": "1",
             "TRELLIS_STAGE_WARMUP": "0", "TRELLIS_STAGE_PLAIN_REPEATS": "1", "TRELLIS_STAGE_PLAIN_WARMUP": "0",
             "TRELLIS_STAGE_E2E_REPEATS": "1", "TRELLIS_STAGE_EAGER2": "0"}


def load_cases(small: bool = False) -> None:
    """Import the case modules (registering their cases); `small` first sets the CPU smoke environment, which
    the stage modules read at import."""
    import importlib

    if small:
        os.environ.update(SMOKE_ENV)
    for name in CASE_MODULES:
        importlib.import_module(f".{name}", __package__)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", default="", help="comma-separated groups to run, in this order (default: all)")
    ap.add_argument("--cases", default="", help="comma-separated substrings of case names to run")
    ap.add_argument("--list", action="store_true", help="list the registered cases and exit")
    ap.add_argument("--repeats", type=int, default=25)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", default="", help="also write the markdown report here")
    ap.add_argument("--commit", default=os.environ.get("TRELLIS_COMMIT"))
    ap.add_argument("--time-budget", type=float, default=0.0, help="stop starting new cases after this many seconds")
    ap.add_argument("--save-tuned", default="", help="write the sparse-conv tuner's (config, split) table here "
                                                      "(commit it as trellis_kernels/tuned/<GPU>.json)")
    ap.add_argument("--small", action="store_true", help="CPU smoke mode: tiny models, the pipeline groups only")
    args = ap.parse_args(argv)
    load_cases(args.small)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    cases = list(REGISTRY.values())
    wanted = set(args.groups.split(",")) if args.groups else set()
    if args.small:
        wanted = (wanted or set(SMOKE_GROUPS)) & set(SMOKE_GROUPS)
    if wanted:
        order = [g for g in (args.groups.split(",") if args.groups else SMOKE_GROUPS) if g in wanted]
        cases = [c for g in order for c in cases if c.group == g]  # groups in the order given
    if args.cases:
        subs = args.cases.split(",")
        cases = [c for c in cases if any(s in c.name for s in subs)]
    if args.list:
        for c in cases:
            print(f"{c.group}/{c.name}: {c.doc}")
        return 0
    if not torch.cuda.is_available() and not args.small:
        print("trellis_bench.bench needs a CUDA GPU (or --small: the CPU smoke mode)", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = True
    bench = Bench(warmup=args.warmup, repeats=args.repeats)
    t_start = time.perf_counter()
    skipped = []
    for c in cases:
        if args.time_budget and time.perf_counter() - t_start > args.time_budget:
            skipped.append(f"{c.group}/{c.name}")
            continue
        print(f"[{time.perf_counter() - t_start:6.1f}s] {c.group}/{c.name}", flush=True)
        bench.start_case(c.group, c.name)
        try:
            torch.manual_seed(0)
            c.fn(bench)
        except Exception as exc:
            import traceback

            traceback.print_exc()
            bench.rows.append(Row(c.group, c.name, "(case)", float("nan"), note=f"failed: {exc!r}"[:200]))
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if args.out:  # partial report after every case (a run cut short still leaves its rows)
            with open(args.out + ".partial", "w") as f:
                f.write(markdown_table(bench.rows) + "\n")
        if args.save_tuned:
            try:
                from trellis_kernels import conv_triton

                conv_triton.save_tuned(args.save_tuned)
            except Exception:  # pragma: no cover
                pass
    smoke = ["", "**CPU smoke run (`--small`): tiny models on the CPU, host clock. These numbers only show that "
             "every case runs; they are not GPU timings.**"] if args.small else []
    origin = ("Generated by `python -m trellis_bench.bench --small` on the CPU (smoke mode)." if args.small else
              "Generated by `python -m trellis_bench.bench --out docs/BENCHMARKS.md` on the lent GPU "
              "(`PYTHONPATH=backend:kernels` where the package is not installed). Floors, analysis and the "
              "history of each kernel: `kernels/NOTES.md`.")
    report = ["# Benchmarks", *smoke, "", *machine_header(args.commit), "", origin, "",
              f"Median of {args.repeats} CUDA-event samples after {args.warmup} warm-up calls (each sample "
              "averages enough back-to-back calls to last >= 1 ms), timed as CUDA-graph replays (the GPU time "
              "inside a captured sampling loop) where the op can be captured; 'eager ms' is the same op launched "
              "from Python, launch overhead included; inputs random (never zeros), bf16 unless "
              "stated; L2 not flushed (in the pipeline each op's input was just written by the previous op). "
              "'achieved' counts the dense-equivalent work (conv: 2·N·27·Cin·Cout, attention: 4·H·D·Σ Lq·Lk) or "
              "the minimum bytes (elementwise: read inputs once, write outputs once). Triton rows are autotuned; "
              "their error is ‖out − ref‖/‖ref‖ against the float32 PyTorch reference on the same inputs.", "",
              markdown_table(bench.rows)]
    if skipped:
        report += ["", "Not run (time budget): " + ", ".join(skipped)]
    text = "\n".join(report) + "\n"
    if args.save_tuned:
        try:
            from trellis_kernels import conv_triton

            print(f"saved {conv_triton.save_tuned(args.save_tuned)} tuned conv shapes to {args.save_tuned}")
        except Exception as exc:  # pragma: no cover
            print(f"could not save the tuned conv table: {exc!r}")
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
