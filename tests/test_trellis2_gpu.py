"""TRELLIS.2's fast path on CUDA (bf16 torso, Triton conv / varlen attention / fused kernels, K/V cache,
CUDA graphs) against the CPU float32 path on every golden2 model case. Skips without CUDA.

The golden2 folder must be on the GPU machine: `kernels/trellis_bench/device_run.sh` takes a carried
copy `.golden2` (`cp -r ../shared/golden2 .golden2`) as ``TRELLIS2_GOLDEN_DIR``.

Tolerances (‖gpu − cpu‖ / ‖cpu‖ over each output). bf16 keeps 8 significant bits: every weight and
every activation stored in bf16 carries a relative rounding error up to 2⁻⁹ ≈ 2e-3, and the errors of
successive layers add up roughly like a random walk. Running the same cases on the CPU with only the
torso cast to bf16 (as `accel` casts it; plain ops, and the same through the fast path with the kernels'
references: `test_trellis2_accel.py::test_golden2_bf16_fast_path_on_cpu_within_the_gpu_tolerances`)
measured, per case: flows 3.5e-3 - 6.1e-3, the samplers 2.1e-3 (texture, no guidance) to 9.4e-3 (shape,
CFG 7.5 with rescale: guidance multiplies the difference of two predictions by 7.5), SS-VAE 9.8e-3 /
9.9e-3, SC-VAE decoders 2.1e-2, SC-VAE encoders 1.8e-2 (shape) and 6.0e-2 (texture: its latent mean is
that sensitive to the weights' last bit - with the bf16 weights rounded through fp16 first it is 2.3e-2).
The CUDA path rounds no more often (norm statistics and modulation in float32 inside the fused kernels,
float32 accumulation in the Triton conv and attention), so the bounds are 1.7× - 3× those measurements;
a wrong wiring (a modulation offset or rope left out, a wrong neighbour map) is off by O(1):

- ``FLOW_TOL = 2e-2`` for flow forwards, samplers and the SS-VAE;
- ``VAE_TOL = 1e-1`` for the SC-VAE encoders and decoders.

A decoder that predicts its subdivisions keeps child k iff its logit > 0; a logit whose float32 value
lies within bf16 rounding of 0 may land on the other side. ``DECISION_BAND = 1e-2`` (of the level's
largest |logit|) admits those flips only: the CPU bf16 run flipped 9 decisions at level 2 of
`shape_vae_decoder`, the largest at 1.6e-3; past a flip the two runs hold other voxels, so the later
outputs are not compared (`trellis2_fastpath_calls.compare_outputs`).
"""
from __future__ import annotations

import copy

import pytest
import torch

from trellis2_fastpath_calls import compare_outputs, golden_call, model_cases
from trellis2_golden import Case, load_model
from trellis_backend import accel, fastpath

FLOW_TOL = 2e-2
VAE_TOL = 1e-1
DECISION_BAND = 1e-2
SC_VAE_CASES = ("shape_vae_encoder", "tex_vae_encoder", "shape_vae_decoder", "tex_vae_decoder")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _tolerance(name: str) -> float:
    return VAE_TOL if name in SC_VAE_CASES else FLOW_TOL


@pytest.mark.parametrize("name", model_cases())
def test_gpu_fast_path_matches_cpu_float32(name):
    """Three calls on the fast path (eager; capture + replay; replay for the flows) against CPU float32."""
    case = Case.load(name)
    model = load_model(case)
    want = golden_call(case, model, "cpu")()
    gm = copy.deepcopy(model).cuda()
    with accel.enable(gm, graphs="all") as acc:
        torso = [p for p in gm.parameters() if p.dtype == torch.bfloat16]
        if hasattr(gm, "convert_to_fp16"):
            assert torso, "the torso was not converted to bf16"
        call = golden_call(case, gm, "cuda")
        outs = [call() for _ in range(3)]
        runner = acc.runner(gm)
        replays = runner.replays if runner is not None else 0
        flow_call = runner is not None and runner.flow and not name.endswith("_varlen")
    tol = _tolerance(name)
    for i, got in enumerate(outs):
        errors = compare_outputs(got, want, tol, DECISION_BAND)
        print(f"{name} call {i}: " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))
    if flow_call:
        assert replays > 0, "the flow's CUDA graph was never replayed"


def test_gpu_trellis2_flow_takes_the_kernels_and_fused_maths():
    """A TRELLIS.2 flow on CUDA: its blocks are served by the fused path with the Triton kernels."""
    if not accel.kernels_available():
        pytest.skip("trellis_kernels' Triton path is not available here")
    from trellis_backend.accel.fused import FusedPath

    model = load_model(Case.load("slat_flow_imgshape2tex")).cuda()
    with accel.enable(model):
        block = model.blocks[0]
        path = fastpath.lookup(block.self_attn)
        assert isinstance(path, FusedPath)
        assert path.varlen_attention is not None and path.sparse_conv is not None


def test_gpu_sc_vae_convs_take_the_triton_conv():
    """The SC-VAE decoder's flex_gemm-named convs run the fast path's conv entry on CUDA."""
    if not accel.kernels_available():
        pytest.skip("trellis_kernels' Triton path is not available here")
    case = Case.load("tex_vae_decoder")
    model = load_model(case).cuda()
    calls = []
    with accel.enable(model) as acc:
        for path in acc.paths.values():
            kernel = path.sparse_conv
            path.sparse_conv = lambda *a, _k=kernel: calls.append(1) or _k(*a)
        golden_call(case, model, "cuda")()
    n_convs = sum(1 for m in model.modules() if type(m).__name__ == "SparseConv3d")
    assert len(calls) >= n_convs


def test_gpu_texture_sampler_graphs_with_concat_cond():
    """The texture sampler passes `concat_cond=`: the flow is still captured in a CUDA graph and replayed, and the
    condition's keys/values are computed once per run."""
    case = Case.load("sampler_tex_slat")
    model = load_model(case).cuda()
    with accel.enable(model, graphs="all") as acc:
        golden_call(case, model, "cuda")()
        runner = acc.runner(model)
        assert runner.captures >= 1 and runner.replays >= 1, (runner.captures, runner.replays, runner.graph_error)
        n_cross = sum(1 for m in model.modules() if getattr(m, "_type", None) == "cross")
        assert acc.kv_stats()["misses"] <= 2 * n_cross  # the run's condition (and its graph's pinned copy)
