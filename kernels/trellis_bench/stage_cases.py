"""Pipeline stage timings at the official TRELLIS-image-large sizes (group "stages" of `trellis_bench.bench`).

    PYTHONPATH=backend:kernels python -m trellis_bench.bench --groups stages

Models are built from the official configurations (tests/golden/official_keys/*.json, name +
args) with random weights on the GPU (timing does not depend on weight values). Each stage is
timed on two paths, as the pipeline runs it:

- plain: the backend's own ops with the reference's precision (the `use_fp16` torso, here in
  bf16, norms in float32; `accel.enable` with every fast path off): pure-PyTorch sparse conv
  (gather-GEMM-scatter), padded+masked SDPA for ragged groups and windows, K/V recomputed at
  every step, no fused kernels, no CUDA graphs. (The pipeline's own pre-accel CUDA path, float32
  weights under bf16 autocast, cannot run the PyTorch conv: index_add_ of a bf16 product into a
  float32 output raises; see docs/BENCHMARKS.md.)
- accel: `trellis_backend.accel.enable(model, **accel.hook_settings())`, i.e. what the pipeline's
  hook turns on (bf16 torso, Triton conv without split-K / varlen attention, fused adaLN kernels,
  cross-attention K/V once per run, CUDA graphs of both flow stages, the stage-2 graphs captured
  per run and freed after it as the pipeline's stage hook does). Stage 2 also gets an eager diagnostic row.

Rows are medians of CUDA-event timed runs after warm-up runs (the first, cold run -
compilation, kernel-config tuning, graph capture - is reported in the notes). Inputs: condition
random [1, 1374, 1024] (negative: zeros, as the pipeline), stage-2 voxels a sphere shell of
~20K voxels at 64³ (`bench.shell_coords`). The end-to-end row chains DINOv2 -> stage 1 -> SS
decoder -> stage 2 (on the shell: random SS-decoder weights occupy half the grid) -> Gaussian
and mesh decoders -> GLB, with every model resident, and reports the peak GPU memory.

Environment: TRELLIS_STAGE_REPEATS (accel timed runs, default 5), TRELLIS_STAGE_PLAIN_REPEATS
(default 2), TRELLIS_STAGE_BUDGET (seconds; later optional rows are skipped past it),
TRELLIS_STAGE_PROFILE=1 (print the top CUDA kernels of one stage-1 and one stage-2 forward).
"""
from __future__ import annotations

import contextlib
import gc
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from .harness import Bench, register, shell_coords

REPO = Path(__file__).resolve().parents[2]
KEYS = REPO / "tests" / "golden" / "official_keys"
SS_FLOW = "ss_flow_img_dit_L_16l8_fp16.denoiser"
SLAT_FLOW = "slat_flow_img_dit_L_64l8p2_fp16.denoiser"
SS_DEC = "ss_vae_conv3d_16l8_fp16.decoder"
GS_DEC = "slat_vae_enc_dec_gs_swin8_B_64l8_fp16.decoder"
MESH_DEC = "slat_vae_dec_mesh_swin8_B_64l8_fp16.decoder"
SS_PARAMS = dict(steps=25, cfg_strength=7.5, cfg_interval=(0.5, 1.0), rescale_t=3.0)
SLAT_PARAMS = dict(steps=25, cfg_strength=3.0, cfg_interval=(0.5, 1.0), rescale_t=3.0)
COND_TOKENS, COND_CH = 1374, 1024
# CPU smoke test of this module's wiring (tests): TRELLIS_STAGE_DEVICE=cpu TRELLIS_STAGE_SMALL=1 shrinks every model
DEV = os.environ.get("TRELLIS_STAGE_DEVICE", "cuda")
SMALL = os.environ.get("TRELLIS_STAGE_SMALL", "0") == "1"
if SMALL:
    COND_CH = 64
_SMALL_ARGS = {
    SS_FLOW: dict(model_channels=64, cond_channels=64, num_blocks=2, num_heads=4, resolution=8),
    SLAT_FLOW: dict(model_channels=64, cond_channels=64, num_blocks=2, num_heads=4, io_block_channels=[16]),
    SS_DEC: dict(channels=[32, 16, 8], num_res_blocks=1, num_res_blocks_middle=1),
    GS_DEC: dict(model_channels=64, num_blocks=1, num_heads=4),
    MESH_DEC: dict(model_channels=256, num_blocks=1, num_heads=4),
}

RESULTS: Dict[str, Dict[str, float]] = {}  # stage -> {"plain": ms, "accel": ms}
_T0 = time.perf_counter()


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _budget_left() -> float:
    budget = float(os.environ.get("TRELLIS_STAGE_BUDGET", "0") or 0)
    return float("inf") if budget <= 0 else budget - (time.perf_counter() - _T0)


def official(name: str):
    d = json.loads((KEYS / f"{name}.json").read_text())
    args = dict(d["args"])
    if SMALL:
        args.update(_SMALL_ARGS.get(name, {}))
    return d["name"], args


class _Event:
    """torch.cuda.Event on CUDA; a host clock elsewhere (the CPU smoke test)."""

    def __init__(self):
        self.cuda = DEV.startswith("cuda")
        self.ev = torch.cuda.Event(enable_timing=True) if self.cuda else None
        self.t = 0.0

    def record(self):
        if self.cuda:
            self.ev.record()
        else:
            self.t = time.perf_counter()

    def synchronize(self):
        if self.cuda:
            self.ev.synchronize()

    def elapsed_time(self, end: "_Event") -> float:
        return self.ev.elapsed_time(end.ev) if self.cuda else (end.t - self.t) * 1e3


def _sync():
    if DEV.startswith("cuda"):
        torch.cuda.synchronize()


def time_runs(fn: Callable[[], object], warmup: int, repeats: int):
    """(median ms, samples, first-run ms): CUDA events around each run, after `warmup` runs."""
    first = None
    for i in range(warmup):
        s, e = _Event(), _Event()
        s.record()
        fn()
        e.record()
        e.synchronize()
        if i == 0:
            first = s.elapsed_time(e)
    samples = []
    for _ in range(repeats):
        s, e = _Event(), _Event()
        s.record()
        fn()
        e.record()
        e.synchronize()
        samples.append(s.elapsed_time(e))
    return statistics.median(samples), samples, first


_EARLIER: dict = {}


def _earlier_plain(what: str) -> Optional[float]:
    """Plain-path median of `what` from $TRELLIS_STAGE_PLAIN_FROM (a stages.json of an earlier run), if any."""
    path = os.environ.get("TRELLIS_STAGE_PLAIN_FROM", "")
    if path and not _EARLIER and os.path.isfile(path):
        _EARLIER.update(json.loads(Path(path).read_text()))
        _EARLIER.setdefault("label", os.environ.get("TRELLIS_STAGE_PLAIN_LABEL", Path(path).name))
    return _EARLIER.get(what, {}).get("plain") if isinstance(_EARLIER.get(what), dict) else None


def _row(bench: Bench, impl: str, ms: float, note: str, baseline: Optional[float]) -> None:
    """A row whose speed-up column is against `baseline` (the plain path's number for the same thing)."""
    bench._baseline = baseline if baseline is not None else ms
    bench.row(impl, ms=ms, note=note)


def _plain_runs(fn):
    """Timed runs of a plain model (its fast path has no kernels: `accel.enable` scopes them per model)."""
    return time_runs(fn, _env_int("TRELLIS_STAGE_PLAIN_WARMUP", 1), _env_int("TRELLIS_STAGE_PLAIN_REPEATS", 2))


def _note(samples: List[float], first: Optional[float], extra: str = "") -> str:
    if len(samples) <= 6:
        parts = [f"runs {', '.join(f'{v:.1f}' for v in samples)}"]
    else:
        parts = [f"n={len(samples)}, min {min(samples):.1f}, max {max(samples):.1f}"]
    if first is not None:
        parts.append(f"first run {first:.0f} ms")
    if extra:
        parts.append(extra)
    return "; ".join(parts)


class _State:
    """Models and inputs shared by the stage cases (built once, on the GPU)."""

    def __init__(self):
        self.models: Dict[str, torch.nn.Module] = {}
        self.accels: Dict[str, object] = {}
        self.plains: Dict[str, object] = {}
        self.gen = torch.Generator(device=DEV).manual_seed(0)
        self.cond = torch.randn(1, COND_TOKENS, COND_CH, device=DEV, generator=self.gen)
        self.neg = torch.zeros_like(self.cond)
        self.coords = shell_coords(32 if SMALL else 64, 600 if SMALL else 20000, device=DEV)
        self.slat = None
        self.mesh = None
        self.decoded = {}  # decoder key -> its last output

    def model(self, key: str) -> torch.nn.Module:
        if key not in self.models:
            from trellis_backend.models import build_model

            name, args = official(key)
            args["use_fp16"] = False  # as the pipeline loads them; accel converts the torso
            self.models[key] = build_model(name, args, device=DEV).eval()
        return self.models[key]

    def plain(self, key: str):
        """Reference precision (bf16 torso, autocast off), every fast path off."""
        if key not in self.plains and key not in self.accels:
            from trellis_backend import accel

            self.plains[key] = accel.enable(self.model(key), conv=False, attention=False, kv_cache=False,
                                            fused=False, graphs="none")
        return self.models[key]

    def accelerate(self, key: str):
        if key not in self.accels:
            from trellis_backend import accel

            p = self.plains.pop(key, None)
            if p is not None:
                p.disable()  # bf16 -> fp32 -> bf16 below: exact round trip
            self.accels[key] = accel.enable(self.model(key), **accel.hook_settings())  # as the pipeline runs
        return self.accels[key]

    def slat_input(self):
        if self.slat is None:
            from trellis_backend.sparse import SparseTensor

            n = self.coords.shape[0]
            self.slat = SparseTensor(torch.randn(n, 8, device=DEV, generator=self.gen), self.coords, shape=(1, 8))
        return self.slat


_STATE: Optional[_State] = None


def state() -> _State:
    global _STATE
    if _STATE is None:
        _STATE = _State()
    return _STATE


def _autocast():
    if not DEV.startswith("cuda"):
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16)


def _sampler():
    from trellis_backend.pipeline.samplers import FlowEulerGuidanceIntervalSampler

    return FlowEulerGuidanceIntervalSampler(sigma_min=1e-5)


def stage1(st: _State, cond=None, neg=None):
    flow = st.model(SS_FLOW)
    noise = torch.randn(1, flow.in_channels, flow.resolution, flow.resolution, flow.resolution, device=DEV,
                        generator=st.gen)
    with torch.no_grad(), _autocast():
        return _sampler().sample(flow, noise, st.cond if cond is None else cond, st.neg if neg is None else neg,
                                 **SS_PARAMS).samples


def stage2(st: _State, coords=None, cond=None, neg=None):
    from trellis_backend.sparse import SparseTensor

    flow = st.model(SLAT_FLOW)
    coords = st.coords if coords is None else coords
    noise = SparseTensor(torch.randn(coords.shape[0], flow.in_channels, device=DEV, generator=st.gen), coords,
                         shape=(1, flow.in_channels))
    with torch.no_grad(), _autocast():
        out = _sampler().sample(flow, noise, st.cond if cond is None else cond, st.neg if neg is None else neg,
                                **SLAT_PARAMS).samples
    acc = st.accels.get(SLAT_FLOW)
    if acc is not None:  # as the pipeline's stage hook after stage 2: the graphs of this voxel set are freed
        acc.release_graphs(sparse_only=True)
    return out


def _forward_b2(st: _State, key: str):
    """One CFG-batched (B=2) forward of a flow model, as inside the guided steps."""
    from trellis_backend.sparse import SparseTensor

    flow = st.model(key)
    cond2 = torch.cat([st.cond, st.neg])
    t = torch.full((2,), 500.0, device=DEV)
    if key == SS_FLOW:
        x = torch.randn(2, flow.in_channels, *[flow.resolution] * 3, device=DEV)
    else:
        c = st.coords
        coords = torch.cat([c, c.clone()])
        coords[c.shape[0]:, 0] = 1
        n = c.shape[0]
        x = SparseTensor(torch.randn(2 * n, flow.in_channels, device=DEV), coords, shape=(2, flow.in_channels),
                         layout=[slice(0, n), slice(n, 2 * n)])

    def run():
        with torch.no_grad(), _autocast():
            return flow(x, t, cond2)

    return run


def _profile(fn: Callable[[], object], title: str, rows: int = 18) -> None:
    from torch.profiler import ProfilerActivity, profile

    fn()
    _sync()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        fn()
        _sync()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=60)
    print(f"---- profile: {title}\n{table}", flush=True)
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "profiles.txt"), "a") as f:
            f.write(f"---- profile: {title}\n{table}\n")


def profile_run(fn: Callable[[], object], title: str, rows: int = 14) -> None:
    """Where the host time of a whole run goes, and how often it waits for the GPU."""
    from torch.profiler import ProfilerActivity, profile

    _sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        _sync()
    ev = prof.key_averages()
    syncs = {e.key: e.count for e in ev if any(w in e.key for w in (
        "Synchronize", "aten::item", "_local_scalar_dense", "cudaMemcpy", "aten::nonzero", "aten::unique",
        "cudaMalloc", "cudaFree"))}
    cpu = sum(e.self_cpu_time_total for e in ev) / 1e3
    gpu = sum(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0)) for e in ev) / 1e3
    table = ev.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=50)
    text = (f"---- whole-run profile: {title}: host self time {cpu:.0f} ms, device time {gpu:.0f} ms; "
            f"sync/alloc events {syncs}\n{table}")
    print(text, flush=True)
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "profiles.txt"), "a") as f:
            f.write(text + "\n")


def _dit_rows(bench: Bench, st: _State, key: str, label: str, accelerated: bool) -> None:
    if not accelerated:
        st.plain(key)
    run = _forward_b2(st, key)
    med, samples, first = time_runs(run, 3, 10)
    what = f"forward_b2_{key}"
    base = RESULTS.get(what, {}).get("plain") if accelerated else None
    _row(bench, f"{'accel' if accelerated else 'plain'}: one CFG forward (B=2) of {label}", med,
         _note(samples, first), base)
    RESULTS.setdefault(what, {})["accel" if accelerated else "plain"] = med
    if accelerated and os.environ.get("TRELLIS_STAGE_PROFILE") == "1" and _budget_left() > 60:
        _profile(run, f"{label} forward B=2 (accel)")


# ----------------------------------------------------------------------------- cases
def _stage_rows(bench: Bench, what: str, plain_label: str, accel_label: str, run: Callable[[], object],
                key: str, extra_accel: Callable[[object], str] = lambda acc: "", plain: bool = True):
    """plain row (if `plain`), then enable accel on `key` and the accel row; returns (accel median, acc)."""
    st = state()
    base = RESULTS.get(what, {}).get("plain")
    if plain:
        st.plain(key)
        med, samples, first = _plain_runs(run)
        _row(bench, plain_label, med, _note(samples, first), None)
        RESULTS.setdefault(what, {})["plain"] = base = med
    elif _earlier_plain(what) is not None:
        base = _earlier_plain(what)
        _row(bench, plain_label, base, f"from an earlier run on the same machine kind ({_EARLIER.get('label')})",
             None)
        RESULTS.setdefault(what, {})["plain"] = base
    acc = st.accelerate(key)
    med, samples, first = time_runs(run, _env_int("TRELLIS_STAGE_WARMUP", 2), _env_int("TRELLIS_STAGE_REPEATS", 5))
    _row(bench, accel_label, med, _note(samples, first, extra_accel(acc)), base)
    RESULTS.setdefault(what, {})["accel"] = med
    return med, acc


@register("stages", "stage 1 sampling: DiT-L 16³, 25 steps, CFG 7.5 in [0.5, 1]")
def _s_stage1(bench: Bench):
    """Sparse-structure flow (ss_flow_img_dit_L_16l8) sampling: 19 guided (B=2) + 6 plain (B=1) forwards."""
    st = state()
    plain = _env_int("TRELLIS_STAGE_PLAIN_REPEATS", 2) > 0
    if plain:
        _dit_rows(bench, st, SS_FLOW, "DiT-L 16³", False)
    elif _earlier_plain(f"forward_b2_{SS_FLOW}") is not None:
        RESULTS.setdefault(f"forward_b2_{SS_FLOW}", {})["plain"] = _earlier_plain(f"forward_b2_{SS_FLOW}")

    def extra(acc):
        r = acc.runner(st.model(SS_FLOW))
        err = f", graph error: {r.graph_error}" if r.graph_error else ""
        return f"K/V cache {acc.kv_stats()}, graph captures {r.captures}, replays {r.replays}{err}"

    _stage_rows(bench, "stage1", "plain: 25-step sampling (bf16 torso, PyTorch ops, SDPA)",
                "accel: 25-step sampling (bf16, fused adaLN/qk-norm/GELU, K/V once, CUDA graphs)",
                lambda: stage1(st), SS_FLOW, extra, plain)
    _dit_rows(bench, st, SS_FLOW, "DiT-L 16³", True)


@register("stages", "SS decoder 16³ -> 64³ occupancy")
def _s_ssdec(bench: Bench):
    """Sparse-structure VAE decoder (dense 3D convs) + argwhere of the occupied voxels."""
    st = state()
    dec = st.model(SS_DEC)
    z = torch.randn(1, 8, 16, 16, 16, device=DEV)

    def run():
        with torch.no_grad(), _autocast():
            logits = dec(z)
        return torch.argwhere(logits > 0)

    _stage_rows(bench, "ss_decoder", "plain (bf16 torso, cuDNN conv3d)", "accel (same ops; runner only)", run, SS_DEC)


@register("stages", "stage 2 sampling: SLat DiT-L, 20K voxels at 64³, 25 steps, CFG 3 in [0.5, 1]")
def _s_stage2(bench: Bench):
    """SLat flow (slat_flow_img_dit_L_64l8p2) over a ~20K-voxel sphere shell: 19 guided + 6 plain forwards."""
    st = state()
    plain = _env_int("TRELLIS_STAGE_PLAIN_REPEATS", 2) > 0
    if plain:
        _dit_rows(bench, st, SLAT_FLOW, "SLat DiT-L (2x20K voxels)", False)
    elif _earlier_plain(f"forward_b2_{SLAT_FLOW}") is not None:
        RESULTS.setdefault(f"forward_b2_{SLAT_FLOW}", {})["plain"] = _earlier_plain(f"forward_b2_{SLAT_FLOW}")
    med, acc = _stage_rows(
        bench, "stage2", f"plain: 25-step sampling, {st.coords.shape[0]} voxels (bf16 torso, PyTorch conv, SDPA)",
        "accel: 25-step sampling (pipeline hook settings: bf16, Triton conv without split-K, fused adaLN/qk-norm/GELU, "
        "K/V once, cached down-sampling, CUDA graphs captured per run)",
        lambda: stage2(st), SLAT_FLOW, lambda a: f"K/V cache {a.kv_stats()}, graph captures {a.runner(st.model(SLAT_FLOW)).captures}", plain)
    _dit_rows(bench, st, SLAT_FLOW, "SLat DiT-L (2x20K voxels)", True)
    if os.environ.get("TRELLIS_STAGE_PROFILE") == "1" and _budget_left() > 60:
        profile_run(lambda: stage2(st), "stage-2 sampling run (accel, eager)")
    if os.environ.get("TRELLIS_STAGE_EAGER2", "1") == "1" and _budget_left() > 45:
        r = acc.runner(st.model(SLAT_FLOW))
        before = r.graphs_enabled
        r.graphs_enabled = False
        try:
            med_e, samples, first = time_runs(lambda: stage2(st), 1, 3)
            _row(bench, "accel without CUDA graphs (eager sparse forward; diagnostic)", med_e,
                 _note(samples, first), RESULTS["stage2"].get("plain"))
            RESULTS["stage2"]["accel_eager"] = med_e
        finally:
            r.graphs_enabled = before


def _decoder_case(bench: Bench, key: str, what: str, keep: bool = False):
    """Plain and accel rows of decoder `key` on the stage-2 input; returns the state, whose ``decoded[key]``
    holds the last output when `keep` (for the rows that follow; otherwise it is freed)."""
    st = state()
    dec = st.model(key)
    x = st.slat_input()

    def run():
        with torch.no_grad(), _autocast():
            out = dec(x)
        if keep:
            st.decoded[key] = out
        return out

    _stage_rows(bench, what, "plain (bf16 torso, PyTorch conv, padded SDPA windows)",
                "accel (bf16, Triton conv + varlen window attention, fused LN/GELU)", run, key)
    return st


@register("stages", "Gaussian decoder (20K voxels -> 640K Gaussians)")
def _s_gs(bench: Bench):
    """slat_vae_enc_dec_gs_swin8_B_64l8 decoder: 12 swin-8 blocks at 768 channels, 32 Gaussians per voxel."""
    _decoder_case(bench, GS_DEC, "gs_decoder")


@register("stages", "mesh decoder + sparse FlexiCubes (20K voxels -> 256³)")
def _s_mesh(bench: Bench):
    """slat_vae_dec_mesh_swin8_B_64l8 decoder (transformer, two subdivisions to 1.28M voxels) + extraction."""
    st = _decoder_case(bench, MESH_DEC, "mesh_decoder", keep=True)
    st.mesh = st.decoded[MESH_DEC][0]
    dec = st.model(MESH_DEC)
    with torch.no_grad(), _autocast():
        feats = dec.decode_features(st.slat_input())
    med, samples, _ = time_runs(lambda: dec.to_representation(feats), 1, 3)
    m = st.mesh
    _row(bench, "  of which: sparse FlexiCubes extraction alone", med,
         f"{feats.coords.shape[0]} cubes -> {m.vertices.shape[0]} vertices, {m.faces.shape[0]} faces", med)


@register("stages", "GLB export (vertex colours)")
def _s_glb(bench: Bench):
    """trellis_backend.pipeline.export.write_glb of the decoded mesh (CPU: trimesh)."""
    from trellis_backend.pipeline.export import write_glb

    st = state()
    if st.mesh is None:
        raise RuntimeError("run the mesh decoder case first")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "asset.glb")
        info = {}

        def run():
            info.update(write_glb(path, st.mesh))

        med, samples, first = time_runs(run, 1, 3)
        size = os.path.getsize(path)
    _row(bench, "write_glb (trimesh, vertex colours; same on both paths)", med,
         _note(samples, first, f"{info.get('vertices')} vertices, {info.get('faces')} faces, {size / 1e6:.1f} MB"),
         None)
    RESULTS["glb"] = {"plain": med, "accel": med}


def _dino(dtype):
    from trellis_backend.pipeline.conditioning.dinov2 import DinoV2Encoder

    with torch.device(DEV):
        enc = DinoV2Encoder("dinov2_vitl14_reg", backend="builtin",
                            arch_overrides=dict(depth=2, embed_dim=64, num_heads=4) if SMALL else None)
    return enc.eval().to(dtype=dtype)


@register("stages", "DINOv2 ViT-L/14-reg conditioning at 518²")
def _s_dino(bench: Bench):
    """The image condition: 1374 tokens x 1024 from one 518x518 image (random weights)."""
    st = state()
    img = torch.rand(1, 3, 518, 518, device=DEV, generator=st.gen)
    if _env_int("TRELLIS_STAGE_PLAIN_REPEATS", 2) > 0 or _earlier_plain("dinov2") is None:
        enc = _dino(torch.float32)
        med, samples, first = time_runs(lambda: enc(img), 1, 5)
        _row(bench, "fp32 weights", med, _note(samples, first), None)
        del enc
    else:
        med = _earlier_plain("dinov2")
        _row(bench, "fp32 weights", med, f"from an earlier run ({_EARLIER.get('label')})", None)
    RESULTS["dinov2"] = {"plain": med}
    enc = _dino(torch.bfloat16)
    med, samples, first = time_runs(lambda: enc(img), 2, 10)
    _row(bench, "bf16 weights (the pipeline's conditioner on CUDA), SDPA", med, _note(samples, first),
         RESULTS["dinov2"]["plain"])
    RESULTS["dinov2"]["accel"] = med
    st.models["dino"] = enc


@register("stages", "image -> GLB end to end (accel) and peak GPU memory")
def _s_e2e(bench: Bench):
    """DINOv2 -> stage 1 -> SS decoder -> stage 2 -> Gaussian + mesh decoders -> GLB, every model resident."""
    from trellis_backend.pipeline.export import write_glb

    st = state()
    for key in (SS_FLOW, SS_DEC, SLAT_FLOW, GS_DEC, MESH_DEC):
        st.accelerate(key)
    enc = st.models.get("dino") or _dino(torch.bfloat16)
    img = torch.rand(1, 3, 518, 518, device=DEV, generator=st.gen)
    tmp = tempfile.TemporaryDirectory()
    parts: Dict[str, float] = {}

    def e2e():
        t0 = time.perf_counter()
        cond = enc(img)
        neg = torch.zeros_like(cond)
        z = stage1(st, cond, neg)
        with torch.no_grad(), _autocast():
            logits = st.model(SS_DEC)(z)
        occupied = torch.argwhere(logits > 0)  # random weights: ~half the grid; stage 2 runs on the shell
        parts["occupied"] = int(occupied.shape[0])
        slat = stage2(st, st.coords, cond, neg)
        with torch.no_grad(), _autocast():
            st.model(GS_DEC)(slat)
            mesh = st.model(MESH_DEC)(slat)[0]
        write_glb(os.path.join(tmp.name, "e2e.glb"), mesh)
        parts["wall"] = (time.perf_counter() - t0) * 1e3

    gc.collect()
    cuda = DEV.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
    e2e()  # warm
    _sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    med, samples, _ = time_runs(e2e, 0, _env_int("TRELLIS_STAGE_E2E_REPEATS", 3))
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else 0.0
    reserved = torch.cuda.max_memory_reserved() / 2 ** 30 if cuda else 0.0
    resident = torch.cuda.memory_allocated() / 2 ** 30 if cuda else 0.0
    tmp.cleanup()
    order = ["dinov2", "stage1", "ss_decoder", "stage2", "gs_decoder", "mesh_decoder", "glb"]
    plain_sum = sum(RESULTS[k]["plain"] for k in order if k in RESULTS and "plain" in RESULTS[k])
    accel_sum = sum(RESULTS[k]["accel"] for k in order if k in RESULTS and "accel" in RESULTS[k])
    missing = [k for k in order if k not in RESULTS]
    note_missing = f"; missing stages: {', '.join(missing)}" if missing else ""
    _row(bench, "plain: sum of the stage medians", plain_sum, "stages above" + note_missing, None)
    _row(bench, "accel: sum of the stage medians", accel_sum, "stages above" + note_missing, plain_sum)
    _row(bench, "accel: measured end to end", med,
         _note(samples, None, f"wall {parts.get('wall', 0):.0f} ms; peak GPU memory allocated {peak:.2f} GiB "
                              f"(reserved {reserved:.2f} GiB; models resident {resident:.2f} GiB)"), plain_sum)
    RESULTS["e2e"] = {"accel": med, "peak_gib": peak, "reserved_gib": reserved}
    out = os.environ.get("OUT")
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "stages.json"), "w") as f:
            json.dump(RESULTS, f, indent=1)
