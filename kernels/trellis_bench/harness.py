"""The benchmark harness: a case registry, CUDA-event timing (eager and CUDA-graph replay), the inputs
every case shares (sphere-shell voxel sets, window/patch group sizes) and the markdown report.

A case is a function ``fn(bench: Bench) -> None`` registered with ``@register(group, name)`` that
calls ``bench.row(...)``; `trellis_bench.kernel_cases` and `trellis_bench.stage_cases` hold them and
`trellis_bench.bench` runs them.
"""
from __future__ import annotations

import datetime as _dt
import math
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch

# ----------------------------------------------------------------------------- registry


@dataclass
class Case:
    group: str
    name: str
    fn: Callable[["Bench"], None]
    doc: str = ""


REGISTRY: Dict[str, Case] = {}


def register(group: str, name: str):
    """Register a bench case under `group/name`; the function receives the `Bench`."""
    def deco(fn):
        REGISTRY[f"{group}/{name}"] = Case(group, name, fn, (fn.__doc__ or "").strip().splitlines()[0]
                                           if fn.__doc__ else "")
        return fn
    return deco


@dataclass
class Row:
    group: str
    case: str
    impl: str
    ms: float
    baseline_ms: Optional[float] = None
    rate: str = ""
    err: Optional[float] = None
    note: str = ""
    eager_ms: Optional[float] = None


@dataclass
class Bench:
    warmup: int = 5
    repeats: int = 25
    min_sample_ms: float = 1.0
    rows: List[Row] = field(default_factory=list)
    log: Callable[[str], None] = print
    _group: str = ""
    _case: str = ""
    _baseline: Optional[float] = None

    def _samples(self, run: Callable[[], object], inner: int) -> float:
        samples = []
        for _ in range(self.repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / inner)
        return statistics.median(samples)

    def time_ms(self, fn: Callable[[], object], graph: bool = True):
        """(median ms per call from CUDA-graph replays or None, median ms per call launched eagerly).

        Warm-up first (autotuning, compilation), then `repeats` CUDA-event samples of `inner` back-to-back
        calls. Graph replays remove the Python launch overhead: the GPU time the op costs inside a captured
        sampling loop. Ops that sync with the host cannot be captured (graph=False).
        """
        for _ in range(self.warmup):
            fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        one = (time.perf_counter() - t0) * 1e3
        inner = max(1, min(200, int(math.ceil(self.min_sample_ms / max(one, 1e-3)))))

        def eager():
            for _ in range(inner):
                fn()

        eager_ms = self._samples(eager, inner)
        graph_ms = None
        if graph:
            try:
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(2):
                        fn()
                torch.cuda.current_stream().wait_stream(side)
                g_inner = max(1, min(100, int(math.ceil(self.min_sample_ms / max(eager_ms, 1e-3)))))
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    for _ in range(g_inner):
                        fn()
                g.replay()
                torch.cuda.synchronize()
                graph_ms = self._samples(g.replay, g_inner)
                del g
            except Exception as exc:
                self.log(f"    (no graph: {type(exc).__name__}: {str(exc)[:100]})")
                torch.cuda.synchronize()
        return graph_ms, eager_ms

    def start_case(self, group: str, case: str):
        self._group, self._case, self._baseline = group, case, None

    def row(self, impl: str, fn: Optional[Callable[[], object]] = None, *, ms: Optional[float] = None,
            flops: Optional[float] = None, nbytes: Optional[float] = None, err: Optional[float] = None,
            note: str = "", baseline: bool = False, graph: bool = True) -> Optional[float]:
        """Time `fn` (or take `ms`) and add a row; the first row (or baseline=True) is the case's baseline.

        The row's time is the CUDA-graph replay time where the op can be captured, else the eager time.
        """
        eager_ms = None
        try:
            if ms is None:
                graph_ms, eager_ms = self.time_ms(fn, graph)
                ms = graph_ms if graph_ms is not None else eager_ms
                if graph_ms is None:
                    note = ("eager only (host sync); " + note) if note else "eager only (host sync)"
        except Exception as exc:  # a backend that cannot run this case: report, keep going
            msg = str(exc).splitlines()[0][:120] if str(exc) else ""
            self.rows.append(Row(self._group, self._case, impl, float("nan"),
                                 note=f"failed: {type(exc).__name__}: {msg}"))
            self.log(f"  {impl}: FAILED {exc!r}"[:300])
            torch.cuda.synchronize()
            return None
        if baseline or self._baseline is None:
            self._baseline = ms
        rate = []
        if flops:
            rate.append(f"{flops / ms / 1e9:.0f} TFLOP/s")
        if nbytes:
            rate.append(f"{nbytes / ms / 1e6:.0f} GB/s")
        self.rows.append(Row(self._group, self._case, impl, ms, self._baseline, ", ".join(rate), err, note, eager_ms))
        self.log(f"  {impl}: {ms:.4f} ms (eager {eager_ms}) {', '.join(rate)} err={err} {note}")
        return ms


def rel_err(out: torch.Tensor, want: torch.Tensor) -> float:
    out, want = out.double(), want.double()
    if not torch.isfinite(out).all():
        return float("nan")
    return ((out - want).norm() / want.norm().clamp_min(1e-30)).item()


# ----------------------------------------------------------------------------- inputs
def shell_coords(res: int = 64, target: int = 20000, batch: int = 1, device="cuda") -> torch.Tensor:
    """Coords `[N, 4]` of a 2-voxel-thick sphere shell at res³ with about `target` voxels per item (lexicographic)."""
    r = torch.arange(res, device=device)
    x, y, z = torch.meshgrid(r, r, r, indexing="ij")
    c = (res - 1) / 2
    d = ((x - c) ** 2 + (y - c) ** 2 + (z - c) ** 2).sqrt()
    radius = math.sqrt(target / (4 * math.pi * 2.0))  # area × thickness 2
    xyz = torch.stack([x, y, z], -1)[(d - radius).abs() < 1.0]
    parts = [torch.cat([torch.full((xyz.shape[0], 1), b, device=device), xyz], 1) for b in range(batch)]
    return torch.cat(parts).int()


def subdivide(coords: torch.Tensor) -> torch.Tensor:
    """Each voxel -> its 8 children at twice the resolution (as SparseSubdivide)."""
    ch = torch.stack(torch.meshgrid(*[torch.arange(2, device=coords.device)] * 3, indexing="ij"), -1).reshape(-1, 3)
    out = torch.cat([coords[:, None, :1].expand(-1, 8, 1), coords[:, None, 1:] * 2 + ch[None]], -1)
    return out.reshape(-1, 4).int()


def group_lengths(coords: torch.Tensor, cell: int, shift: int = 0) -> torch.Tensor:
    """Sizes of the groups of voxels sharing a cell of `cell`³ (windows, or patches)."""
    c = coords.long().clone()
    c[:, 1:] = torch.div(c[:, 1:] + shift, cell, rounding_mode="floor")
    _, counts = torch.unique(c, dim=0, return_counts=True)
    return counts


def cu_from_lengths(lengths: torch.Tensor) -> torch.Tensor:
    return torch.cat([lengths.new_zeros(1), lengths.cumsum(0)]).int()


# ----------------------------------------------------------------------------- report
def machine_header(commit: Optional[str]) -> List[str]:
    lines = []
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        lines.append(f"- GPU: {p.name}, {p.multi_processor_count} SMs, {p.total_memory / 2**30:.0f} GiB")
    try:
        import triton

        tv = triton.__version__
    except Exception:
        tv = "not installed"
    lines.append(f"- torch {torch.__version__} (CUDA {torch.version.cuda}), Triton {tv}, Python "
                 f"{platform.python_version()}")
    if commit is None:
        try:
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                    check=True).stdout.strip()
        except Exception:
            commit = "unknown"
    lines.append(f"- commit: {commit}; date: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    return lines


def markdown_table(rows: List[Row]) -> str:
    out = ["| group | case | implementation | median ms | speed-up vs first row | achieved | rel. err vs fp32 ref "
           "| eager ms | notes |",
           "| --- | --- | --- | ---: | ---: | --- | ---: | ---: | --- |"]
    last = None
    for r in rows:
        case = r.case if (r.group, r.case) != last else ""
        group = r.group if (r.group, r.case) != last else ""
        last = (r.group, r.case)
        sp = f"{r.baseline_ms / r.ms:.2f}x" if r.baseline_ms and r.ms == r.ms and r.ms > 0 else ""
        ms = f"{r.ms:.4f}" if r.ms == r.ms else "n/a"
        err = f"{r.err:.1e}" if r.err is not None else ""
        eager = f"{r.eager_ms:.4f}" if r.eager_ms is not None else ""
        out.append(f"| {group} | {case} | {r.impl} | {ms} | {sp} | {r.rate} | {err} | {eager} | {r.note} |")
    return "\n".join(out)
