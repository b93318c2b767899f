"""trellis_backend.accel: the CUDA fast path.

CPU (CI): the cross-attention K/V cache gives bit-identical results, recomputes for a new or
modified condition, and is restored by disable(); the fused block forwards (run here on
trellis_kernels' float32 references), the cached down-sampling and the graph runner's
static-buffer logic (with a stand-in for CUDA graphs) match the plain forwards.
GPU (@gpu, skipped without CUDA): the tuned path (bf16 torso, Triton conv / varlen attention /
fused kernels, K/V cache, CUDA graphs) against the CPU float32 path on the golden cases, to
bf16 tolerance.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch

from golden_cases import REPO_ROOT, has_case, load_case
from trellis_backend import accel
from trellis_backend.models import build_model, load_state_dict_strict
from trellis_backend.sparse import SparseTensor

HAS_CUDA = torch.cuda.is_available()
BF16_TOL = 1e-2


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def golden_model(name):
    if not has_case(name):
        pytest.skip(f"golden case {name} not present")
    config, _, state_dict, inputs, _ = load_case(name)
    model = build_model(config["name"], config["args"])
    load_state_dict_strict(model, state_dict, source=name)
    return model.eval(), config, inputs


def sparse(inputs, key, device="cpu"):
    return SparseTensor(inputs[f"{key}.feats"].to(device), inputs[f"{key}.coords"].to(device))


def patched_attrs(module: torch.nn.Module):
    return sorted((name, attr) for name, m in module.named_modules() for attr in ("forward", "context_kv")
                  if attr in m.__dict__)


# ---------------------------------------------------------------------------------------------- CPU
def test_kv_cache_dense_identical_and_restored():
    model, _, inputs = golden_model("ss_flow_ape")
    x, t, cond = inputs["x"], inputs["t"], inputs["cond"]
    with torch.no_grad():
        want = model(x, t, cond)
        with accel.enable(model) as acc:
            assert patched_attrs(model), "enable() installed nothing"
            first = model(x, t, cond)
            second = model(x, t, cond)
            stats = acc.kv_stats()
        after = model(x, t, cond)
    assert torch.equal(first, want) and torch.equal(second, want)
    n_cross = sum(1 for m in model.modules() if getattr(m, "_type", None) == "cross")
    assert stats == {"hits": n_cross, "misses": n_cross}
    assert patched_attrs(model) == []
    assert torch.equal(after, want)


def test_kv_cache_sparse_identical():
    model, _, inputs = golden_model("slat_flow_SLatFlowModel")
    x, t, cond = sparse(inputs, "x"), inputs["t"], inputs["cond"]
    with torch.no_grad():
        want = model(x, t, cond).feats
        with accel.enable(model) as acc:
            got1 = model(x, t, cond).feats
            got2 = model(x, t, cond).feats
            assert acc.kv_stats()["hits"] > 0
    assert torch.equal(got1, want) and torch.equal(got2, want)
    assert patched_attrs(model) == []


def test_kv_cache_recomputes_for_new_or_modified_condition():
    model, _, inputs = golden_model("ss_flow_ape")
    x, t, cond = inputs["x"], inputs["t"], inputs["cond"].clone()
    other = torch.randn_like(cond)
    with torch.no_grad(), accel.enable(model):
        a = model(x, t, cond)
        b = model(x, t, other)
        cond.mul_(0.5)  # in place: the version counter changes
        c = model(x, t, cond)
    with torch.no_grad():
        assert torch.equal(a, model(x, t, inputs["cond"]))
        assert torch.equal(b, model(x, t, other))
        assert torch.equal(c, model(x, t, inputs["cond"] * 0.5))


def test_sampler_with_kv_cache_identical():
    from trellis_backend.pipeline.samplers import build_sampler

    model, config, _ = golden_model("sampler_guidance_interval")
    _, _, _, inputs, _ = load_case("sampler_guidance_interval")
    spec = config["sampler"]
    run = lambda: build_sampler(spec).sample(model, inputs["noise"], inputs["cond"], inputs["neg_cond"],  # noqa: E731
                                             **spec["params"]).samples
    want = run()
    with accel.enable(model) as acc:
        got = run()
        stats = acc.kv_stats()
    assert torch.equal(got, want)
    n_cross = sum(1 for m in model.modules() if getattr(m, "_type", None) == "cross")
    # one K/V computation per distinct condition tensor (cond+neg batch, cond alone) per module
    assert stats["misses"] == 2 * n_cross and stats["hits"] > stats["misses"]


@pytest.mark.parametrize("name", ["ss_flow_ape", "slat_flow_SLatFlowModel", "slat_flow_ElasticSLatFlowModel",
                                  "slat_decoder_gs", "slat_decoder_mesh", "slat_encoder"])
def test_fused_forwards_match_plain_cpu(name):
    """The fused forwards (on trellis_kernels' float32 references here) compute what the modules compute."""
    model, _, inputs = golden_model(name)

    def run():
        with torch.no_grad():
            if name.startswith("ss_flow"):
                return model(inputs["x"], inputs["t"], inputs["cond"])
            if name.startswith("slat_flow"):
                return model(sparse(inputs, "x"), inputs["t"], inputs["cond"]).feats
            if name == "slat_decoder_mesh":
                return model.decode_features(sparse(inputs, "z")).feats
            if name == "slat_decoder_gs":
                return torch.cat([g._xyz.flatten() for g in model(sparse(inputs, "z"))]
                                 + [g._features_dc.flatten() for g in model(sparse(inputs, "z"))])
            z = model(sparse(inputs, "x"), sample_posterior=False, return_raw=True)[0]
            return z.feats

    want = run()
    with accel.enable(model, _cpu_fused=True):
        assert any(a == "forward" for _, a in patched_attrs(model))
        got = run()
    assert rel_err(got, want) < 1e-5
    assert patched_attrs(model) == []


@pytest.mark.parametrize("name", ["ss_flow_ape", "slat_flow_SLatFlowModel"])
def test_uniform_context_items_skip_attention_exactly(name, monkeypatch):
    """Items whose context tokens are all equal (the zero negative condition) skip the cross-attention."""
    from trellis_backend.accel import fused

    model, _, inputs = golden_model(name)
    cond = inputs["cond"].clone()
    cond[1] = 0.0  # item 1: the CFG negative
    x = inputs["x"] if name.startswith("ss") else sparse(inputs, "x")
    run = lambda: model(x, inputs["t"], cond)  # noqa: E731
    feats = lambda out: out if isinstance(out, torch.Tensor) else out.feats  # noqa: E731
    with torch.no_grad():
        want = feats(run())
        calls = []
        orig = fused._value_row_out
        monkeypatch.setattr(fused, "_value_row_out", lambda *a: calls.append(1) or orig(*a))
        with accel.enable(model, _cpu_fused=True, _fake_graphs=True):
            outs = [feats(run()) for _ in range(3)]  # eager, captured (stand-in), replayed
    n_cross = sum(1 for m in model.modules() if getattr(m, "_type", None) == "cross")
    assert len(calls) >= n_cross, "the uniform-context shortcut was not taken"
    for got in outs:
        assert rel_err(got, want) < 1e-5


def test_cached_downsample_matches():
    from trellis_backend.accel.sparse_cache import cached_downsample_forward
    from trellis_backend.sparse import SparseDownsample

    _, _, inputs = golden_model("slat_flow_SLatFlowModel")
    x = sparse(inputs, "x")
    x = x.replace(torch.randn(x.feats.shape[0], 16))
    down = SparseDownsample(2)
    want = down(x)
    fast = lambda t: cached_downsample_forward(down, t)  # noqa: E731
    first, second = fast(x), fast(x.replace(x.feats * 2))
    for got, scale in ((first, 1), (second, 2)):
        assert torch.equal(got.coords, want.coords)
        assert torch.allclose(got.feats, want.feats * scale, atol=1e-6)
        assert got.layout == want.layout
        assert got.get_spatial_cache("upsample_2")[2].equal(want.get_spatial_cache("upsample_2")[2])


@pytest.mark.parametrize("cpu_fused", [False, True], ids=["module_forwards", "fused_forwards"])
def test_graph_runner_logic_with_stand_in_graphs(cpu_fused):
    """Static buffers, the condition refresh and the K/V pinning of the CUDA-graph runner (stand-in graphs)."""
    from trellis_backend.pipeline.samplers import build_sampler

    model, config, _ = golden_model("sampler_guidance_interval")
    _, _, _, inputs, _ = load_case("sampler_guidance_interval")
    spec = config["sampler"]

    def run(cond):
        return build_sampler(spec).sample(model, inputs["noise"], cond, inputs["neg_cond"], **spec["params"]).samples

    other = torch.randn_like(inputs["cond"])
    want_a, want_b = run(inputs["cond"]), run(other)
    with accel.enable(model, _fake_graphs=True, _cpu_fused=cpu_fused) as acc:
        got_a, got_b, got_a2 = run(inputs["cond"]), run(other), run(inputs["cond"])
        r = acc.runner(model)
        assert r.captures == 2 and r.replays > 0  # one graph per batch size (B=2 guided, B=1 plain)
    for got, want in ((got_a, want_a), (got_b, want_b), (got_a2, want_a)):
        assert rel_err(got, want) < (1e-5 if cpu_fused else 1e-6)


def test_graph_runner_sparse_voxel_sets_with_stand_in_graphs():
    model, _, inputs = golden_model("slat_flow_SLatFlowModel")
    x, t, cond = sparse(inputs, "x"), inputs["t"], inputs["cond"]
    with torch.no_grad():
        want = model(x, t, cond).feats
        y = SparseTensor(x.feats[:1000].clone(), x.coords[:1000].clone())
        y_t = t[:int(y.coords[:, 0].max()) + 1]
        want_y = model(y, y_t, cond[:y_t.shape[0]]).feats
        with accel.enable(model, _fake_graphs=True) as acc:
            outs = [model(x.replace(x.feats.clone()), t, cond).feats for _ in range(3)]
            outs_y = [model(y.replace(y.feats.clone()), y_t, cond[:y_t.shape[0]]).feats for _ in range(3)]
            r = acc.runner(model)
            assert r.captures == 2
    for o in outs:
        assert rel_err(o, want) < 1e-6
    for o in outs_y:
        assert rel_err(o, want_y) < 1e-6


def test_enable_pipeline_like_object_accelerates_later_models():
    model, _, _ = golden_model("ss_flow_ape")
    later, _, _ = golden_model("slat_flow_SLatFlowModel")

    class Pipe:
        def __init__(self):
            self.models = {"a": model}
            self.device = torch.device("cpu")

        def get_model(self, key):
            if key not in self.models:
                self.models[key] = later
            return self.models[key]

        def release(self):
            self.released = True

        def sample_slat(self, x, t, cond):
            with torch.no_grad():
                return self.get_model("b")(x, t, cond)

    pipe = Pipe()
    acc = accel.enable(pipe, graphs="all", _fake_graphs=True)
    assert "get_model" in pipe.__dict__ and "sample_slat" in pipe.__dict__
    pipe.get_model("b")
    assert any(m is later for m in acc.models) and patched_attrs(later)
    _, _, inputs = golden_model("slat_flow_SLatFlowModel")
    x = sparse(inputs, "x")
    r = acc.runner(later)
    with torch.no_grad():
        for _ in range(2):  # eager, then captured
            r(x.replace(x.feats.clone()), inputs["t"], inputs["cond"])
    assert any(k[0] == "sparse" for k in r.graphs)
    pipe.sample_slat(x.replace(x.feats.clone()), inputs["t"], inputs["cond"])
    assert not r.graphs, "sample_slat did not release the stage-2 graphs"
    pipe.release()  # the pipeline's own release first disables the fast path
    assert not acc.active and pipe.released
    assert "get_model" not in pipe.__dict__ and "sample_slat" not in pipe.__dict__ and "release" not in pipe.__dict__
    assert patched_attrs(model) == [] and patched_attrs(later) == []
    assert accel.maybe_enable(pipe) is None  # CPU: the pipeline hook does nothing


def test_disable_restores_kernel_hooks_and_dtypes():
    from trellis_backend.sparse import attention as sattn
    from trellis_backend.sparse import conv as sconv

    model, _, _ = golden_model("ss_flow_ape")
    before = {k: (v.dtype, v.clone()) for k, v in model.state_dict().items()}
    hooks = (sconv._fast_kernel, sattn.get_varlen_kernel())
    acc = accel.enable(model)
    acc.disable()
    assert (sconv._fast_kernel, sattn.get_varlen_kernel()) == hooks
    for k, v in model.state_dict().items():
        assert v.dtype == before[k][0] and torch.equal(v, before[k][1])
    assert not hasattr(model, "accel")


@pytest.mark.slow
def test_stage_bench_smoke_cpu(tmp_path):
    """The stage cases of trellis_bench.bench run end to end (tiny models, CPU clock)."""
    code = (
        "import trellis_bench.bench as b, trellis_bench.stage_cases as s\n"
        "bench = b.Bench(log=lambda *a: None)\n"
        "for c in [c for c in b.REGISTRY.values() if c.group == 'stages']:\n"
        "    bench.start_case(c.group, c.name); c.fn(bench)\n"
        "print(b.markdown_table(bench.rows))\n"
        "assert all(r.ms == r.ms for r in bench.rows), 'a stage failed'\n"
    )
    env = dict(os.environ, TRELLIS_STAGE_DEVICE="cpu", TRELLIS_STAGE_SMALL="1", TRELLIS_STAGE_REPEATS="1",
               TRELLIS_STAGE_PLAIN_REPEATS="1", TRELLIS_STAGE_E2E_REPEATS="1", OUT=str(tmp_path),
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "backend"), str(REPO_ROOT / "kernels"),
                                           os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (tmp_path / "stages.json").is_file()


# ---------------------------------------------------------------------------------------------- GPU
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")


def _gpu_copy(model):
    return copy.deepcopy(model).cuda()


GOLDEN_GPU = ["ss_flow_ape", "slat_flow_SLatFlowModel", "slat_flow_ElasticSLatFlowModel", "slat_decoder_gs",
              "slat_decoder_mesh", "slat_decoder_rf", "slat_encoder", "ss_decoder", "ss_encoder"]


def _golden_call(name, model, inputs, device):
    """A function running the golden call of `name` on `device` (inputs built once, so that repeated calls
    reuse one voxel set as a sampling loop does), returning one flat float tensor."""
    dense = {k: v.to(device) for k, v in inputs.items() if "." not in k}
    sp = {key: sparse(inputs, key, device) for key in ("x", "z") if f"{key}.feats" in inputs}

    def fresh(key):  # same coords and spatial cache, new feature tensor (as the sampler's steps)
        return sp[key].replace(sp[key].feats.clone())

    def call():
        with torch.no_grad():
            if name.startswith("ss_flow"):
                return model(dense["x"], dense["t"], dense["cond"]).float()
            if name.startswith("slat_flow"):
                return model(fresh("x"), dense["t"], dense["cond"]).feats.float()
            if name == "slat_decoder_mesh":
                return model.decode_features(fresh("z")).feats.float()
            if name == "slat_decoder_gs":
                gs = model(fresh("z"))
                return torch.cat([getattr(g, f).float().flatten() for g in gs
                                  for f in ("get_xyz", "_features_dc", "get_scaling", "get_rotation", "get_opacity")])
            if name == "slat_decoder_rf":
                fs = model(fresh("z"))
                return torch.cat([getattr(f, a).float().flatten() for f in fs
                                  for a in ("position", "trivec", "density", "features_dc")])
            if name == "slat_encoder":
                return model(fresh("x"), sample_posterior=False, return_raw=True)[1].float()
            if name == "ss_decoder":
                return model(dense["z"]).float()
            if name == "ss_encoder":
                return model(dense["x"], sample_posterior=False, return_raw=True)[1].float()
        raise KeyError(name)

    return call


@gpu
@needs_cuda
@pytest.mark.parametrize("name", GOLDEN_GPU)
def test_gpu_tuned_path_matches_cpu_float32(name):
    model, _, inputs = golden_model(name)
    want = _golden_call(name, model, inputs, "cpu")()
    gm = _gpu_copy(model)
    with accel.enable(gm, graphs="all") as acc:
        call = _golden_call(name, gm, inputs, "cuda")
        outs = [call() for _ in range(3)]  # eager, capture + replay, replay
        r = acc.runner(gm)
        if r is not None and r.flow:
            assert r.replays == 2, "the graph runner did not replay"
    errs = [rel_err(o, want) for o in outs]
    print(f"{name}: rel err vs CPU float32 = {', '.join(f'{e:.2e}' for e in errs)}")
    assert all(e < BF16_TOL for e in errs), errs


@gpu
@needs_cuda
def test_gpu_sampler_with_graphs_matches_cpu_float32():
    from trellis_backend.pipeline.samplers import build_sampler

    model, config, _ = golden_model("sampler_guidance_interval")
    _, _, _, inputs, _ = load_case("sampler_guidance_interval")
    spec = config["sampler"]

    def run(m, dev, cond):
        return build_sampler(spec).sample(m, inputs["noise"].to(dev), cond.to(dev), inputs["neg_cond"].to(dev),
                                          **spec["params"]).samples.float().cpu()

    other = torch.randn_like(inputs["cond"])
    want_a, want_b = run(model, "cpu", inputs["cond"]), run(model, "cpu", other)
    gm = _gpu_copy(model)
    with accel.enable(gm) as acc:
        got = [run(gm, "cuda", c) for c in (inputs["cond"], other, inputs["cond"])]
        r = acc.runner(gm)
        assert r.captures == 2 and r.replays > 0
        assert acc.kv_stats()["hits"] > 0
    errs = [rel_err(g, w) for g, w in zip(got, (want_a, want_b, want_a))]
    print(f"sampler (graphs, K/V cache): rel err vs CPU float32 = {errs}")
    assert all(e < BF16_TOL for e in errs), errs


@gpu
@needs_cuda
def test_gpu_windowed_and_ragged_attention_use_kernel():
    from trellis_backend.sparse import attention as sattn

    torch.manual_seed(0)
    coords = torch.unique(torch.randint(0, 24, (3000, 3)), dim=0)
    coords = torch.cat([torch.zeros(coords.shape[0], 1, dtype=torch.long), coords], 1).int().cuda()
    qkv = SparseTensor(torch.randn(coords.shape[0], 3, 4, 32, device="cuda", dtype=torch.bfloat16), coords)
    want = sattn.sparse_windowed_self_attention(qkv.replace(qkv.feats.float()), 8, 4).feats
    import trellis_kernels as tk

    prev = sattn.get_varlen_kernel()
    sattn.register_varlen_kernel(tk.varlen_attention)
    try:
        got = sattn.sparse_windowed_self_attention(SparseTensor(qkv.feats, coords), 8, 4).feats
        q, k, v = torch.randn(3, 700, 4, 32, device="cuda", dtype=torch.bfloat16).unbind(0)
        ragged = sattn.varlen_attention(q, k, v, [300, 400], [300, 400])
    finally:
        sattn.register_varlen_kernel(prev)
    ragged_want = sattn.varlen_attention(q.float(), k.float(), v.float(), [300, 400], [300, 400])
    assert rel_err(got, want) < BF16_TOL
    assert rel_err(ragged, ragged_want) < BF16_TOL


@gpu
@needs_cuda
def test_gpu_gelu_epilogue_is_tanh_or_off():
    from trellis_backend.accel.fused import ffn, gelu_epilogue_ok

    ok = gelu_epilogue_ok(torch.device("cuda", torch.cuda.current_device()), torch.bfloat16)
    seq = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.GELU(approximate="tanh"),
                              torch.nn.Linear(1024, 256)).cuda().to(torch.bfloat16)
    x = torch.randn(4096, 256, device="cuda", dtype=torch.bfloat16)
    want = torch.nn.Sequential(*[copy.deepcopy(m).float() for m in seq])(x.float())
    with torch.no_grad():
        err = rel_err(ffn(seq, x), want)
    print(f"GELU epilogue in use: {ok}; rel err {err:.2e}")
    assert err < BF16_TOL


@gpu
@needs_cuda
def test_gpu_deterministic_conv_is_bitwise_reproducible():
    """With accel's deterministic mode (the pipeline hook's), tuned convs skip split-K: same input, same bits."""
    import trellis_kernels as tk
    from trellis_kernels import conv_triton

    torch.manual_seed(0)
    coords = torch.unique(torch.randint(0, 40, (6000, 3)), dim=0)
    coords = torch.cat([torch.zeros(coords.shape[0], 1, dtype=torch.long), coords], 1).int().cuda()
    nbr = tk.build_neighbor_map(coords)
    feats = torch.randn(coords.shape[0], 1024, device="cuda", dtype=torch.bfloat16)
    weight = (torch.randn(128, 3, 3, 3, 1024, device="cuda") / 166).to(torch.bfloat16)
    prev = conv_triton.set_deterministic(True)
    try:
        outs = [conv_triton.sparse_conv3d(feats, nbr, weight) for _ in range(3)]
    finally:
        conv_triton.set_deterministic(prev)
    assert all(torch.equal(o, outs[0]) for o in outs[1:])
