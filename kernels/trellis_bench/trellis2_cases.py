"""TRELLIS.2 stage timings at the TRELLIS.2-4B sizes (group "trellis2" of `trellis_bench.bench`).

    PYTHONPATH=backend:kernels python -m trellis_bench.bench --groups trellis2        # a CUDA GPU
    PYTHONPATH=backend:kernels python -m trellis_bench.bench --groups trellis2 --small  # CPU smoke, tiny models

Models are built from the released configurations in tests/golden2/official_keys/*.json (class name +
args, family "trellis2") with random weights (timing does not depend on weight values; the
`make-random-model --family trellis2` folder maker is not needed here), float32 as a pipeline loads
them, then put on the fast path exactly as the pipeline's hook does
(`accel.enable(model, **accel.hook_settings())`: bf16 torso, Triton conv and varlen attention, fused
adaLN / QK RMS norm / GELU, condition K/V once per run, CUDA graphs of the flows).

Rows, per resolution mode where it matters (512: shape latent at 32³; 1024: at 64³; 1536, opt-in with
TRELLIS2_BENCH_MODES=512,1024,1536: the ft1024 flows at 96³):

- the measured bf16 GEMM peak of this GPU (the denominator of every "% of peak");
- structure flow (1.3B DiT over the dense 16³ latent): 12 steps, guidance 7.5 with rescale 0.7 in
  [0.6, 1], rescale_t 5 (the 4B pipeline.json), and one CFG forward (B=2);
- shape flow 512 and 1024 (1.3B sparse DiT): 12 steps, guidance 7.5 / rescale 0.5 / [0.6, 1] / rescale_t 3;
- texture flow 512 and 1024 (the shape latent as ``concat_cond``): 12 steps, guidance 1.0 (none);
- SS decoder (16³ -> 64³ occupancy); shape SC-VAE decoder (4 doublings with predicted subdivision) and
  texture SC-VAE decoder (following the shape decoder's subdivisions);
- O-Voxel -> mesh (`representations.ovoxel.flexible_dual_grid_to_mesh` of the shape decoder's dual grid);
- GLB export with PBR baking (`pipeline.export_pbr.write_pbr_glb`: simplify, unwrap, bake, write);
- the cascade (1024 / 1536 modes): the 512 shape latent upsampled by the shape decoder and quantised to the
  mode's latent grid (the voxels the high-resolution shape flow then samples; the rows time the flows on a
  shell of the configured size instead, so the token count is under control);
- per mode: the sum of the stage medians and the GPU memory of the mode's chain;
- group "trellis2_e2e": image -> GLB per mode through `Trellis2Pipeline.generate` (the family factory
  `trellis_backend.pipeline.load_pipeline` on TRELLIS2_BENCH_MODEL_DIR, a random 4B folder made by
  ``python -m trellis_lab make-random-model --family trellis2 --size official --device cuda``; the smoke mode
  makes a tiny one), with its peak GPU memory.

Flow rows carry their FLOP count (`trellis_bench.flops`) and the fraction of the measured peak; decoder
rows count their linears and convs with hooks on one eager call.

Inputs (assumptions, stated in the rows): image condition random ``[1, 1029, 1024]`` at 512 and
``[1, 4101, 1024]`` at 1024 (DINOv3 ViT-L/16 tokens), negative zeros; shape latent voxels a
2-voxel-thick sphere shell of about TRELLIS2_BENCH_TOKENS_512 (default 6000) voxels at 32³ and
TRELLIS2_BENCH_TOKENS_1024 (default 24000) at 64³. With random weights each decoder doubling keeps
about half of the 8 children (logits symmetric around 0), i.e. 4x the voxels per level, about what a
surface does; the decoded dual grid is noise, so the mesh and GLB rows time a noisy surface of that
size (face budget TRELLIS2_BENCH_FACE_BUDGET, default the export's 500,000).

Environment: the stage module's TRELLIS_STAGE_DEVICE / TRELLIS_STAGE_SMALL (set by ``--small``),
TRELLIS_STAGE_REPEATS (accel timed runs, default 5), TRELLIS_STAGE_WARMUP (default 2),
TRELLIS2_BENCH_MODES (default "512,1024"), TRELLIS2_BENCH_PEAK_TFLOPS (skip the GEMM measurement).
"""
from __future__ import annotations

import gc
import json
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import torch

from . import flops as flop_count
from .harness import Bench, register, shell_coords
from .stage_cases import DEV, REPO, SMALL, _env_int, _note, _sync, time_runs

KEYS2 = REPO / "tests" / "golden2" / "official_keys"
FAMILY = "trellis2"
SS_FLOW = "ss_flow_img_dit_1_3B_64_bf16.denoiser"
# the 1536 mode runs the ft1024 flows on a 96³ latent (as the reference's 1536_cascade)
SHAPE_FLOW = {512: "slat_flow_img2shape_dit_1_3B_512_bf16.denoiser",
              1024: "slat_flow_img2shape_dit_1_3B_512_bf16_ft1024.denoiser",
              1536: "slat_flow_img2shape_dit_1_3B_512_bf16_ft1024.denoiser"}
TEX_FLOW = {512: "slat_flow_imgshape2tex_dit_1_3B_512_bf16.denoiser",
            1024: "slat_flow_imgshape2tex_dit_1_3B_512_bf16_ft1024.denoiser",
            1536: "slat_flow_imgshape2tex_dit_1_3B_512_bf16_ft1024.denoiser"}
SS_DEC = "ss_vae_conv3d_16l8_fp16.decoder"
SHAPE_DEC = "shape_vae_next_dc_f16c32_fp16_ft_512.decoder"
TEX_DEC = "tex_vae_next_dc_f16c32_fp16_ft_512.decoder"

# microsoft/TRELLIS.2-4B pipeline.json (see tests/golden2/README.md): 12 steps per stage
SS_SAMPLER = dict(steps=12, guidance_strength=7.5, guidance_rescale=0.7, guidance_interval=(0.6, 1.0), rescale_t=5.0)
SHAPE_SAMPLER = dict(steps=12, guidance_strength=7.5, guidance_rescale=0.5, guidance_interval=(0.6, 1.0),
                     rescale_t=3.0)
TEX_SAMPLER = dict(steps=12, guidance_strength=1.0, guidance_rescale=0.0, guidance_interval=(0.6, 0.9),
                   rescale_t=3.0)

COND_CHANNELS = 64 if SMALL else 1024
COND_TOKENS = {512: 37, 1024: 65, 1536: 65} if SMALL else {512: 1029, 1024: 4101, 1536: 4101}
LATENT_RES = {512: 8, 1024: 16, 1536: 24} if SMALL else {512: 32, 1024: 64, 1536: 96}
TOKENS = ({512: 60, 1024: 200, 1536: 400} if SMALL else
          {512: _env_int("TRELLIS2_BENCH_TOKENS_512", 6000), 1024: _env_int("TRELLIS2_BENCH_TOKENS_1024", 24000),
           1536: _env_int("TRELLIS2_BENCH_TOKENS_1536", 49152)})
MODES = [int(m) for m in os.environ.get("TRELLIS2_BENCH_MODES", "512,1024").split(",") if m]
FACE_BUDGET = 2000 if SMALL else _env_int("TRELLIS2_BENCH_FACE_BUDGET", 500_000)
TEXTURE_SIZE = 64 if SMALL else 2048

_SMALL_FLOW = dict(model_channels=64, cond_channels=64, num_blocks=2, num_heads=4)
_SMALL_VAE = dict(model_channels=[64, 32, 32, 16, 16], num_blocks=[1, 1, 1, 1, 0])
_SMALL_ARGS = {
    SS_FLOW: dict(_SMALL_FLOW, resolution=8),
    **{k: dict(_SMALL_FLOW) for k in (*SHAPE_FLOW.values(), *TEX_FLOW.values())},
    SS_DEC: dict(channels=[32, 16, 8], num_res_blocks=1, num_res_blocks_middle=1),
    SHAPE_DEC: dict(_SMALL_VAE), TEX_DEC: dict(_SMALL_VAE),
}

RESULTS: Dict[str, Dict[str, float]] = {}  # row key -> {"ms", "flops", "peak_gib", ...}


def official(name: str):
    """(class name, args) of a TRELLIS.2-4B checkpoint config (tiny sizes in the smoke mode)."""
    d = json.loads((KEYS2 / f"{name}.json").read_text())
    args = dict(d["args"])
    if SMALL:
        args.update(_SMALL_ARGS.get(name, {}))
    return d["name"], args


def _cuda() -> bool:
    return DEV.startswith("cuda")


class _State2:
    """TRELLIS.2 models (built once, on the fast path) and the outputs each stage hands to the next, per mode."""

    def __init__(self):
        self.models: Dict[str, torch.nn.Module] = {}
        self.accels: Dict[str, object] = {}
        self.gen = torch.Generator(device=DEV).manual_seed(0)
        self.peak_tflops: Optional[float] = None
        modes = sorted(set(MODES) | {512})
        self.cond = {m: torch.randn(1, COND_TOKENS[m], COND_CHANNELS, device=DEV, generator=self.gen) for m in modes}
        self.coords = {m: shell_coords(LATENT_RES[m], TOKENS[m], device=DEV) for m in modes}
        self.shape_slat: Dict[int, object] = {}
        self.shape_out: Dict[int, tuple] = {}   # mode -> (h, subs) of the shape decoder
        self.mesh: Dict[int, tuple] = {}         # mode -> (vertices, faces, grid size)
        self.tex_out: Dict[int, object] = {}

    def model(self, key: str) -> torch.nn.Module:
        if key not in self.models:
            from trellis_backend import accel
            from trellis_backend.models import build_model

            name, args = official(key)
            args.pop("use_fp16", None)  # float32 as loaded; the fast path converts the torso
            model = build_model(name, args, device=DEV, family=FAMILY).eval()
            self.models[key] = model
            self.accels[key] = accel.enable(model, **accel.hook_settings())
        return self.models[key]

    def release_sparse_graphs(self, key: str) -> None:
        """As the pipeline's stage hook after a sparse stage: that voxel set's graphs are freed."""
        acc = self.accels.get(key)
        if acc is not None:
            acc.release_graphs(sparse_only=True)


_STATE: Optional[_State2] = None


def state() -> _State2:
    global _STATE
    if _STATE is None:
        _STATE = _State2()
    return _STATE


def _sampler():
    from trellis_backend.pipeline.samplers import FlowEulerGuidanceIntervalSampler

    return FlowEulerGuidanceIntervalSampler(sigma_min=1e-5)


def _timed(fn, warmup: Optional[int] = None, repeats: Optional[int] = None):
    return time_runs(fn, _env_int("TRELLIS_STAGE_WARMUP", 2) if warmup is None else warmup,
                     _env_int("TRELLIS_STAGE_REPEATS", 5) if repeats is None else repeats)


def _rate_note(flops: float, ms: float, peak: Optional[float]) -> str:
    tflop = flops / 1e12
    text = f"{tflop:.2f} TFLOP" if tflop >= 0.01 else f"{flops / 1e9:.2f} GFLOP"
    if peak and ms == ms and ms > 0:
        text += f", {100 * flops / (ms * 1e9) / peak:.0f} % of the measured GEMM peak ({peak:.1f} TFLOP/s)"
        text += f"; floor at peak {flops / (peak * 1e9):.1f} ms"
    return text


def _stage_row(bench: Bench, key: str, label: str, fn, flops: Optional[float] = None, extra=None,
               warmup: Optional[int] = None, repeats: Optional[int] = None) -> float:
    """Time `fn`, add its row (FLOPs and % of peak in the notes); `extra`: a note, or a function making it after
    the runs (cache and graph counters)."""
    st = state()
    med, samples, first = _timed(fn, warmup, repeats)
    note = _note(samples, first, extra() if callable(extra) else (extra or ""))
    if flops:
        note = f"{note}; {_rate_note(flops, med, st.peak_tflops)}"
    bench._baseline = med
    bench.row(label, ms=med, flops=flops, note=note)
    RESULTS[key] = {"ms": med, **({"flops": flops} if flops else {})}
    return med


# ----------------------------------------------------------------------------- stages
def structure_flow(st: _State2, mode: int = 512):
    flow = st.model(SS_FLOW)
    noise = torch.randn(1, flow.in_channels, *[flow.resolution] * 3, device=DEV, generator=st.gen)
    cond = st.cond[512]  # the structure stage always sees the 512 condition
    with torch.no_grad():
        return _sampler().sample(flow, noise, cond, torch.zeros_like(cond), **SS_SAMPLER).samples


def shape_flow(st: _State2, mode: int):
    from trellis_backend.sparse import SparseTensor

    key = SHAPE_FLOW[mode]
    flow = st.model(key)
    coords = st.coords[mode]
    noise = SparseTensor(torch.randn(coords.shape[0], flow.in_channels, device=DEV, generator=st.gen), coords)
    cond = st.cond[mode]
    with torch.no_grad():
        out = _sampler().sample(flow, noise, cond, torch.zeros_like(cond), **SHAPE_SAMPLER).samples
    st.release_sparse_graphs(key)
    st.shape_slat[mode] = out
    return out


def texture_flow(st: _State2, mode: int):
    from trellis_backend.sparse import SparseTensor

    key = TEX_FLOW[mode]
    flow = st.model(key)
    shape_slat = st.shape_slat[mode] if mode in st.shape_slat else shape_flow(st, mode)
    noise = SparseTensor(torch.randn(shape_slat.feats.shape[0], flow.out_channels, device=DEV, generator=st.gen),
                         shape_slat.coords)
    concat = SparseTensor(shape_slat.feats, shape_slat.coords)
    cond = st.cond[mode]
    with torch.no_grad():
        out = _sampler().sample(flow, noise, cond, torch.zeros_like(cond), concat_cond=concat, **TEX_SAMPLER).samples
    st.release_sparse_graphs(key)
    return out


def _sampling_flops(model, tokens: int, cond_tokens: int, sampler: dict) -> float:
    return flop_count.sampling_flops(model, tokens, cond_tokens, **sampler)["total"]


def shape_decode(st: _State2, mode: int):
    dec = st.model(SHAPE_DEC)
    dec.set_resolution(LATENT_RES[mode] * 16)
    slat = st.shape_slat[mode] if mode in st.shape_slat else shape_flow(st, mode)
    with torch.no_grad():
        h, subs = dec.decode(slat, return_subs=True)
    st.shape_out[mode] = (h, subs)
    return h


def cascade_coords(st: _State2, mode: int) -> torch.Tensor:
    """The cascade's structure for `mode`: the 512 shape latent upsampled by the shape decoder (4 doublings, to
    512³), quantised to the mode's latent grid (unique voxels)."""
    dec = st.model(SHAPE_DEC)
    with torch.no_grad():
        fine = dec.upsample(st.shape_slat[512], 4)
    quant = fine.clone()  # as Trellis2Pipeline's cascade: (coords + 0.5) / 512 · latent grid, truncated
    quant[:, 1:] = ((fine[:, 1:].float() + 0.5) / (LATENT_RES[512] * 16) * LATENT_RES[mode]).to(fine.dtype)
    return torch.unique(quant, dim=0)


def tex_decode(st: _State2, mode: int):
    from trellis_backend.sparse import SparseTensor

    dec = st.model(TEX_DEC)
    if mode not in st.shape_out:
        shape_decode(st, mode)
    slat = st.shape_slat[mode]
    z = SparseTensor(torch.randn(slat.feats.shape[0], dec.latent_channels, device=DEV, generator=st.gen), slat.coords)
    with torch.no_grad():
        out = dec(z, guide_subs=st.shape_out[mode][1])
    st.tex_out[mode] = out
    return out


def to_mesh(st: _State2, mode: int):
    from trellis_backend.models.fdg_vae import MESH_AABB
    from trellis_backend.representations.ovoxel import flexible_dual_grid_to_mesh

    dec = st.model(SHAPE_DEC)
    grid = dec.dual_grids(st.shape_out[mode][0])[0]
    v, f = flexible_dual_grid_to_mesh(grid.coords, grid.dual_vertices, grid.intersected, grid.split_weight,
                                      aabb=MESH_AABB, grid_size=dec.resolution)
    st.mesh[mode] = (v, f, dec.resolution)
    return v, f


def pbr_voxels(st: _State2, mode: int):
    from trellis_backend.representations.ovoxel import PbrVoxels

    y = st.tex_out[mode]
    h = st.shape_out[mode][0]
    sl = y.layout[0]
    attrs = (y.feats[sl].float() * 0.5 + 0.5).clamp(0, 1).cpu().numpy()
    return PbrVoxels(h.coords[sl, 1:].cpu().numpy(), attrs, grid_size=st.mesh[mode][2])


def _layer_flops(model, fn) -> float:
    with flop_count.LayerFlops(model) as counter:
        fn()
    _sync()
    return counter.total


# ----------------------------------------------------------------------------- cases
@register("trellis2", "bf16 GEMM peak of this GPU (denominator of the % of peak)")
def _t2_peak(bench: Bench):
    """cuBLAS bf16 GEMM 8192³: the measured dense peak that the FLOP rows are a fraction of."""
    st = state()
    given = os.environ.get("TRELLIS2_BENCH_PEAK_TFLOPS")
    if given:
        st.peak_tflops = float(given)
        bench.row("given by TRELLIS2_BENCH_PEAK_TFLOPS", ms=float("nan"), note=f"{st.peak_tflops:.0f} TFLOP/s")
        return
    n = 256 if SMALL else 8192
    dtype = torch.bfloat16 if _cuda() else torch.float32
    a = torch.randn(n, n, device=DEV, dtype=dtype)
    b = torch.randn(n, n, device=DEV, dtype=dtype)
    med, samples, _ = _timed(lambda: a @ b, 3, 10)
    st.peak_tflops = 2 * n ** 3 / (med * 1e9)
    bench._baseline = med
    bench.row(f"{'bf16' if _cuda() else 'fp32 (CPU smoke)'} GEMM {n}³", ms=med, flops=2 * n ** 3,
              note=f"{st.peak_tflops:.1f} TFLOP/s")
    RESULTS["peak"] = {"ms": med, "tflops": st.peak_tflops}


@register("trellis2", "structure flow: 1.3B DiT 16³, 12 steps, guidance 7.5 (rescale 0.7) in [0.6, 1]")
def _t2_structure(bench: Bench):
    """Sparse-structure flow sampling (ss_flow_img_dit_1_3B_64) and one CFG forward (B=2)."""
    st = state()
    flow = st.model(SS_FLOW)
    tokens, lc = flow.resolution ** 3, COND_TOKENS[512]
    x = torch.randn(2, flow.in_channels, *[flow.resolution] * 3, device=DEV)
    cond2 = torch.cat([st.cond[512], torch.zeros_like(st.cond[512])])
    t = torch.full((2,), 500.0, device=DEV)

    def forward():
        with torch.no_grad():
            return flow(x, t, cond2)

    fwd = flop_count.flow_forward_flops(flow, [tokens, tokens], [lc, None])["total"]
    _stage_row(bench, "ss_flow_forward_b2", "accel: one CFG forward (B=2)", forward, fwd)
    guided = flop_count.guided_steps(**{k: SS_SAMPLER[k] for k in ("steps", "rescale_t", "guidance_strength",
                                                                   "guidance_interval")})
    _stage_row(bench, "ss_flow", f"accel: 12-step sampling ({guided} guided B=2 + {12 - guided} B=1 forwards)",
               lambda: structure_flow(st), _sampling_flops(flow, tokens, lc, SS_SAMPLER),
               lambda: f"graph captures {st.accels[SS_FLOW].runner(flow).captures}")


@register("trellis2", "SS decoder 16³ -> 64³ occupancy (TRELLIS's decoder, as TRELLIS.2 loads it)")
def _t2_ss_decoder(bench: Bench):
    """ss_vae_conv3d_16l8 decoder (dense 3D convs) and argwhere of the occupied voxels."""
    st = state()
    dec = st.model(SS_DEC)
    z = torch.randn(1, dec.latent_channels, 16, 16, 16, device=DEV, generator=st.gen)

    def run():
        with torch.no_grad():
            return torch.argwhere(dec(z) > 0)

    _stage_row(bench, "ss_decoder", "accel (bf16 torso, cuDNN conv3d)", run)


def _mode_case(mode: int):
    def shape(bench: Bench):
        st = state()
        flow = st.model(SHAPE_FLOW[mode])
        n = st.coords[mode].shape[0]
        guided = flop_count.guided_steps(**{k: SHAPE_SAMPLER[k] for k in ("steps", "rescale_t", "guidance_strength",
                                                                         "guidance_interval")})
        _stage_row(bench, f"shape_flow_{mode}",
                   f"accel: 12-step sampling, {n} tokens at {LATENT_RES[mode]}³ ({guided} guided B=2 forwards)",
                   lambda: shape_flow(st, mode), _sampling_flops(flow, n, COND_TOKENS[mode], SHAPE_SAMPLER),
                   lambda: f"cond {COND_TOKENS[mode]} tokens; K/V cache {st.accels[SHAPE_FLOW[mode]].kv_stats()}; "
                           f"graph captures {st.accels[SHAPE_FLOW[mode]].runner(flow).captures}")

    def texture(bench: Bench):
        st = state()
        flow = st.model(TEX_FLOW[mode])
        n = st.coords[mode].shape[0]
        _stage_row(bench, f"tex_flow_{mode}", f"accel: 12-step sampling, {n} tokens, concat_cond (B=1: no guidance)",
                   lambda: texture_flow(st, mode), _sampling_flops(flow, n, COND_TOKENS[mode], TEX_SAMPLER),
                   lambda: f"K/V cache {st.accels[TEX_FLOW[mode]].kv_stats()}; "
                           f"graph captures {st.accels[TEX_FLOW[mode]].runner(flow).captures}")

    def decoders(bench: Bench):
        st = state()
        shape_decode(st, mode)  # warm (and the input of the texture decoder)
        f_shape = _layer_flops(st.model(SHAPE_DEC), lambda: shape_decode(st, mode))
        h = st.shape_out[mode][0]
        _stage_row(bench, f"shape_decoder_{mode}",
                   f"shape SC-VAE decoder: {st.shape_slat[mode].feats.shape[0]} latent voxels -> {h.feats.shape[0]} "
                   f"at {LATENT_RES[mode] * 16}³", lambda: shape_decode(st, mode), f_shape, warmup=1, repeats=3)
        tex_decode(st, mode)
        f_tex = _layer_flops(st.model(TEX_DEC), lambda: tex_decode(st, mode))
        _stage_row(bench, f"tex_decoder_{mode}", "texture SC-VAE decoder (the shape decoder's subdivisions)",
                   lambda: tex_decode(st, mode), f_tex, warmup=1, repeats=3)
        if mode > 512:
            if 512 not in st.shape_slat:
                shape_flow(st, 512)
            _stage_row(bench, f"cascade_upsample_{mode}", f"cascade: shape decoder upsample of the 512 latent (4 "
                       f"doublings) + quantise to the {LATENT_RES[mode]}³ latent grid", lambda: cascade_coords(st, mode),
                       None, lambda: f"{cascade_coords(st, mode).shape[0]} voxels", 1, 3)

    def mesh_and_glb(bench: Bench):
        from trellis_backend.pipeline.export_pbr import write_pbr_glb

        st = state()
        if mode not in st.tex_out:
            tex_decode(st, mode)
        to_mesh(st, mode)
        v, f, grid = st.mesh[mode]
        _stage_row(bench, f"ovoxel_mesh_{mode}", f"O-Voxel -> mesh (flexible dual grid, {grid}³)",
                   lambda: to_mesh(st, mode), None, f"{v.shape[0]} vertices, {f.shape[0]} faces", 0, 2)
        voxels = pbr_voxels(st, mode)
        with tempfile.TemporaryDirectory() as d:
            info: dict = {}

            def export():
                info.update(write_pbr_glb(os.path.join(d, "asset.glb"), v, f, voxels, face_budget=FACE_BUDGET,
                                          texture_size=TEXTURE_SIZE))

            _stage_row(bench, f"glb_{mode}", f"GLB with PBR baking (CPU: simplify to {FACE_BUDGET} faces, xatlas, "
                       f"bake {TEXTURE_SIZE}²)", export, None, "", 0, 1)
            RESULTS[f"glb_{mode}"].update({k: float(v_) for k, v_ in info.items()})

    def totals(bench: Bench):
        st = state()
        keys = ["ss_flow", "ss_decoder", f"shape_flow_{mode}", f"tex_flow_{mode}", f"shape_decoder_{mode}",
                f"tex_decoder_{mode}", f"ovoxel_mesh_{mode}", f"glb_{mode}"]
        if mode > 512:  # the cascade samples the shape at 512 first and upsamples it
            keys[2:2] = ["shape_flow_512", f"cascade_upsample_{mode}"]
        have = [k for k in keys if k in RESULTS]
        total = sum(RESULTS[k]["ms"] for k in have)
        missing = [k for k in keys if k not in RESULTS]
        bench._baseline = total
        bench.row(f"{E2E_MODES[mode]}: sum of the stage medians", ms=total,
                  note="stages above" + (f"; missing: {', '.join(missing)}" if missing else ""))
        mem = _chain_peak_memory(st, mode)
        bench.row(f"{E2E_MODES[mode]}: GPU memory of one chain, GiB (in the ms column): the mode's models + the "
                  f"chain's peak above what was resident", ms=mem["mode_gib"],
                  note=(f"peak allocated {mem['peak_gib']:.2f} GiB with {mem['resident_gib']:.2f} GiB resident before "
                        f"the chain (every benchmarked model of both families); this mode's models "
                        f"{mem['models_gib']:.2f} GiB; structure flow -> SS decoder -> shape flow(s) -> texture flow "
                        f"-> both decoders") if _cuda() else "CPU smoke: no GPU memory")
        RESULTS[f"total_{mode}"] = {"ms": total, **mem}
        _write_results()

    return shape, texture, decoders, mesh_and_glb, totals


def _mode_models(mode: int) -> List[str]:
    keys = [SS_FLOW, SS_DEC, SHAPE_FLOW[mode], TEX_FLOW[mode], SHAPE_DEC, TEX_DEC]
    if mode > 512:
        keys.append(SHAPE_FLOW[512])
    return list(dict.fromkeys(keys))


def _chain_peak_memory(st: _State2, mode: int) -> Dict[str, float]:
    """GPU memory (GiB) of one mode's chain: `peak_gib` allocated while it runs, `resident_gib` before it (every
    model built so far, of both families), `models_gib` the weights of this mode's models, and `mode_gib` = those
    weights + the chain's peak above the resident memory: what the mode needs with only its own models loaded."""
    if not _cuda():
        return {"peak_gib": 0.0, "resident_gib": 0.0, "models_gib": 0.0, "mode_gib": 0.0}
    gc.collect()
    torch.cuda.empty_cache()
    resident = torch.cuda.memory_allocated()
    models = sum(p.numel() * p.element_size() for k in _mode_models(mode) for p in st.model(k).parameters())
    torch.cuda.reset_peak_memory_stats()
    structure_flow(st)
    with torch.no_grad():
        torch.argwhere(st.model(SS_DEC)(torch.randn(1, 8, 16, 16, 16, device=DEV)) > 0)
    if mode > 512:
        shape_flow(st, 512)
        cascade_coords(st, mode)
    shape_flow(st, mode)
    texture_flow(st, mode)
    shape_decode(st, mode)
    tex_decode(st, mode)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    gib = 2 ** 30
    return {"peak_gib": peak / gib, "resident_gib": resident / gib, "models_gib": models / gib,
            "mode_gib": (models + peak - resident) / gib}


# ----------------------------------------------------------------------------- end to end (Trellis2Pipeline)
E2E_MODES = {512: "512", 1024: "1024_cascade", 1536: "1536_cascade"}
_PIPE: dict = {}


def _e2e_pipeline():
    """The `Trellis2Pipeline` of TRELLIS2_BENCH_MODEL_DIR (a `make-random-model --family trellis2` folder), loaded
    once through the family factory; in the smoke mode without a folder, a tiny random folder made here."""
    if "pipe" not in _PIPE:
        from trellis_backend.pipeline import load_pipeline

        folder = os.environ.get("TRELLIS2_BENCH_MODEL_DIR")
        if not folder:
            if not SMALL:
                return None
            from trellis_lab.random_model_trellis2 import make_random_trellis2

            _PIPE["tmp"] = tempfile.TemporaryDirectory()
            folder = str(make_random_trellis2(Path(_PIPE["tmp"].name) / "t2-tiny", size="tiny"))
        _PIPE["pipe"] = load_pipeline(folder, device=DEV)
        _PIPE["folder"] = folder
    return _PIPE["pipe"]


def _bench_image():
    """An RGBA image of a coloured disc on a transparent background (no background removal needed)."""
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:512, 0:512]
    inside = (xx - 256) ** 2 + (yy - 256) ** 2 < 180 ** 2
    rgba = np.zeros((512, 512, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = 200, (xx // 2).astype(np.uint8), 90
    rgba[..., 3] = np.where(inside, 255, 0)
    return Image.fromarray(rgba, "RGBA")


def _e2e_case(mode: int):
    def run(bench: Bench):
        label = f"{E2E_MODES[mode]}: image -> GLB through Trellis2Pipeline.generate"
        pipe = _e2e_pipeline()
        if pipe is None:
            bench.row(label, ms=float("nan"), note="not run: set TRELLIS2_BENCH_MODEL_DIR to a random-weight 4B "
                      "folder (python -m trellis_lab make-random-model --family trellis2 --size official)")
            return
        if E2E_MODES[mode] not in pipe.resolution_modes:
            bench.row(label, ms=float("nan"), note=f"not run: the folder has no {E2E_MODES[mode]} mode")
            return
        image = _bench_image()
        info: dict = {}
        with tempfile.TemporaryDirectory() as out:
            def generate():
                res = pipe.generate(image=image, seed=0, resolution=E2E_MODES[mode], output_dir=out, name="bench",
                                    texture_size=TEXTURE_SIZE if SMALL else 0)
                info.update(res.get("meta", {}))

            if _cuda():
                gc.collect()
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            med, samples, first = time_runs(generate, 0 if SMALL else 1,
                                            _env_int("TRELLIS2_BENCH_E2E_REPEATS", 1 if SMALL else 3))
            peak = torch.cuda.max_memory_allocated() / 2 ** 30 if _cuda() else 0.0
        meta = {k: info[k] for k in ("resolution", "tokens", "vertices", "faces") if k in info}
        bench._baseline = med
        bench.row(label, ms=med, note=_note(samples, first, f"peak GPU memory allocated {peak:.2f} GiB (every "
                                                           f"model of the mode resident); {meta}"))
        RESULTS[f"e2e_{mode}"] = {"ms": med, "peak_gib": peak}
        _write_results()

    return run


def _write_results() -> None:
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "trellis2.json").write_text(json.dumps(RESULTS, indent=1))


for _mode in MODES:
    _shape, _texture, _decoders, _mesh_glb, _totals = _mode_case(_mode)
    register("trellis2", f"shape flow {_mode}: 1.3B sparse DiT, {TOKENS[_mode]} tokens at {LATENT_RES[_mode]}³, "
                         f"12 steps, guidance 7.5 (rescale 0.5)")(_shape)
    register("trellis2", f"texture flow {_mode}: 1.3B sparse DiT + concat_cond, 12 steps")(_texture)
    register("trellis2", f"SC-VAE decoders {_mode}: shape (predicted subdivision) and texture")(_decoders)
    register("trellis2", f"O-Voxel -> mesh and PBR GLB {_mode}")(_mesh_glb)
    register("trellis2", f"{_mode} mode totals: sum of stages, peak memory")(_totals)
    register("trellis2_e2e", f"{E2E_MODES[_mode]}: image -> GLB through Trellis2Pipeline (random 4B folder)")(
        _e2e_case(_mode))
