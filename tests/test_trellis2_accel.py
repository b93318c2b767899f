"""TRELLIS.2's models on the fast path (`trellis_backend.accel`), checked on the CPU against the plain path.

With `accel.enable(..., _cpu_kernels=True, _cpu_fused=True, _fake_graphs=True)` a CPU model takes every
fast-path call the CUDA path makes - the conv entry on the SC-VAEs' flex_gemm-named convs (neighbour maps of
space-to-channel and predicted children included), the varlen attention entry, the fused adaLN / residual /
QK RMS norm / MLP maths, the cross-attention K/V cache and the graph runner's static buffers - with
trellis_kernels' float32 PyTorch references in place of the Triton kernels and a stand-in for CUDA graphs.
With ``_cpu_convert=True`` as well, the torso runs in bf16 as on CUDA, and the GPU test's tolerances and
decision band are checked here on every golden2 model case. Only the Triton kernels' bodies and CUDA graphs
proper are left to the GPU tests (`test_trellis2_gpu.py`).

The references sum in another order than the plain ops (one GEMM per kernel offset instead of one im2col
GEMM; a float32 norm kernel), so agreement is to float32 round-off: 1e-5 relative (norm-wise) here, where a
wrong wiring (a missing modulation offset, rope skipped, a wrong neighbour map) is off by O(1).
"""
from __future__ import annotations

from collections import Counter

import pytest
import torch

from golden_cases import has_case
from trellis2_fastpath_calls import compare_outputs, golden_call, model_cases
from trellis2_golden import FAMILY, Case, load_model
from trellis_backend import accel, fastpath
from trellis_backend.accel.fused import FusedPath
from trellis_backend.models import build_model
from trellis_backend.sparse import SparseTensor

CPU_TOL = 1e-5
CASES = model_cases()


def _full_cpu_fast_path(model):
    return accel.enable(model, _cpu_kernels=True, _cpu_fused=True, _fake_graphs=True, graphs="all")


class _Counting:
    """Wraps a kernel entry, counting its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


@pytest.mark.parametrize("name", CASES)
def test_golden2_model_on_cpu_fast_path_matches_plain(name):
    """Every golden2 model case: the full fast path (reference kernels, fused maths, K/V cache, stand-in graphs)
    gives the plain path's outputs on three repeated calls; the models' convs and attention reach the entries."""
    case = Case.load(name)
    model = load_model(case)
    want = golden_call(case, model, "cpu")()
    with _full_cpu_fast_path(model) as acc:
        path = fastpath.lookup(model)
        assert isinstance(path, FusedPath)
        conv, varlen = _Counting(path.sparse_conv), _Counting(path.varlen_attention)
        for p in set(acc.paths.values()) | {p._unfused for p in acc.paths.values() if getattr(p, "_unfused", None)}:
            p.sparse_conv, p.varlen_attention = conv, varlen
        call = golden_call(case, model, "cpu")
        outs = [call() for _ in range(3)]
    for got in outs:
        compare_outputs(got, want, CPU_TOL)
    n_convs = sum(1 for m in model.modules() if type(m).__name__ == "SparseConv3d" and m.kernel_size == 3)
    if n_convs:
        assert conv.calls >= n_convs, f"{conv.calls} conv-entry calls for {n_convs} 3x3x3 convs"
    assert [n for n, m in model.named_modules() if fastpath.lookup(m) is not fastpath.PLAIN] == []


@pytest.mark.parametrize("name", CASES)
def test_golden2_bf16_fast_path_on_cpu_within_the_gpu_tolerances(name):
    """The GPU test's check (`test_trellis2_gpu.py`: bf16 torso vs float32, its tolerances and decision band) on
    the CPU: the same fast path with the torso converted to bf16, the kernels' references in place of Triton.
    Shows the tolerances hold for the bf16 maths of the path itself, so a GPU failure points at a kernel."""
    from test_trellis2_gpu import DECISION_BAND, _tolerance

    case = Case.load(name)
    model = load_model(case)
    want = golden_call(case, model, "cpu")()
    with accel.enable(model, dtype=torch.bfloat16, _cpu_kernels=True, _cpu_fused=True, _fake_graphs=True,
                      _cpu_convert=True, graphs="all"):
        if hasattr(model, "convert_to_fp16"):
            assert any(p.dtype == torch.bfloat16 for p in model.parameters())
        call = golden_call(case, model, "cpu")
        outs = [call() for _ in range(2)]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    for got in outs:
        errors = compare_outputs(got, want, _tolerance(name), DECISION_BAND)
        assert max(errors.values()) > 0, "bf16 maths gave float32's exact result: the torso was not converted"


def _tex_flow(dtype=None):
    """A small texture flow (TRELLIS.2 imgshape2tex structure: rope, share_mod + offsets, QK norms, concat_cond)."""
    args = dict(resolution=8, in_channels=8, out_channels=4, model_channels=32, cond_channels=16, num_blocks=2,
                num_heads=2, mlp_ratio=2, pe_mode="rope", share_mod=True, qk_rms_norm=True, qk_rms_norm_cross=True)
    if dtype is not None:
        args["dtype"] = dtype
    torch.manual_seed(0)
    model = build_model("SLatFlowModel", args, family=FAMILY).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return model


def _shell(n_items: int = 1) -> torch.Tensor:
    rows = [[b, i % 6, (i * 3) % 6, (i * 5 + b) % 6] for b in range(n_items) for i in range(20)]
    return torch.unique(torch.tensor(rows, dtype=torch.int32), dim=0)


def _tex_sample(model, coords, cond, neg):
    from trellis_backend.pipeline.samplers import FlowEulerGuidanceIntervalSampler

    gen = torch.Generator().manual_seed(3)
    noise = SparseTensor(torch.randn(coords.shape[0], 4, generator=gen), coords)
    shape_slat = SparseTensor(torch.randn(coords.shape[0], 4, generator=gen), coords)
    return FlowEulerGuidanceIntervalSampler(1e-5).sample(
        model, noise, cond, neg, steps=4, guidance_strength=3.0, guidance_rescale=0.5, guidance_interval=(0.0, 1.0),
        rescale_t=3.0, concat_cond=shape_slat).samples.feats


def test_texture_flow_with_concat_cond_casts_once_caches_kv_and_graphs():
    """The texture flow is called with `concat_cond=`: the runner still casts the condition once per run (so the
    K/V cache hits at every later step, also for a bf16 torso) and graphs the forward, the concat_cond in a static
    buffer beside x; results equal the plain path."""
    model = _tex_flow(dtype="bfloat16")
    coords = _shell()
    cond, neg = torch.randn(1, 5, 16), torch.zeros(1, 5, 16)
    with torch.no_grad():
        want = _tex_sample(model, coords, cond, neg)
        with accel.enable(model, dtype=None, _fake_graphs=True, graphs="all") as acc:
            got = _tex_sample(model, coords, cond, neg)
            stats, runner = acc.kv_stats(), acc.runner(model)
            captures, replays = runner.captures, runner.replays
    n_cross = sum(1 for m in model.modules() if getattr(m, "_type", None) == "cross")
    assert stats["misses"] == n_cross, stats  # one K/V computation per cross-attention module per run
    assert stats["hits"] >= 3 * n_cross, stats
    assert captures == 1 and replays == 3, (captures, replays)  # 4 guided steps: eager, capture + replay, 2 replays
    assert torch.equal(got, want)


def test_rope_phases_computed_once_per_voxel_set_in_a_run():
    """The rotary phases of the voxels are computed once per voxel set a sampling run uses (the CFG-stacked
    set), not per block or per step."""
    from trellis_backend.modules import embedders

    model = _tex_flow()
    calls = Counter()
    orig = embedders.RotaryPositionEmbedder.__call__

    def counting(self, positions):
        calls[positions.shape[0]] += 1
        return orig(self, positions)

    coords = _shell()
    cond, neg = torch.randn(1, 5, 16), torch.zeros(1, 5, 16)
    embedders.RotaryPositionEmbedder.__call__ = counting
    try:
        with torch.no_grad(), accel.enable(model, _cpu_fused=True, _cpu_kernels=True):
            _tex_sample(model, coords, cond, neg)
    finally:
        embedders.RotaryPositionEmbedder.__call__ = orig
    assert calls == Counter({2 * coords.shape[0]: 1}), calls  # 4 guided steps x 2 blocks: one computation


def test_trellis2_blocks_take_the_fused_maths():
    """TRELLIS.2's blocks (rope, modulation offsets) are fusable: the offset only changes the modulation vectors
    handed to the fused ops, and rope rotates q/k after the fused QK RMS norm."""
    model = _tex_flow()
    with accel.enable(model, _cpu_fused=True):
        assert all(isinstance(fastpath.lookup(m), FusedPath) for m in model.modules())


@pytest.mark.skipif(not has_case("shape_vae_decoder", FAMILY), reason="golden2 case not present")
def test_decision_band_comparison_fails_on_a_clear_flip():
    """compare_outputs accepts differing child decisions only for logits inside the band around 0."""
    case = Case.load("shape_vae_decoder")
    want = golden_call(case, load_model(case), "cpu")()
    got = {k: v.clone() for k, v in want.items()}
    feats = got["subs.0.feats"]
    i = feats.abs().argmax()
    feats.view(-1)[i] = -feats.view(-1)[i]  # the most confident decision flipped
    with pytest.raises(AssertionError):
        compare_outputs(got, want, tol=10.0, decision_band=1e-2)
