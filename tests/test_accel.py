"""trellis_backend.accel: the CUDA fast path, filled into the `trellis_backend.fastpath` registry.

CPU (CI): models call what the registry assigns them (and nothing else changes on them); enable
assigns, disable restores the plain path; CPU models get the K/V cache only, which gives
bit-identical results, recomputes for a new or modified condition; the fused maths (run here
on trellis_kernels' float32 references), the cached down-sampling and the graph runner's
static-buffer logic (with a stand-in for CUDA graphs) match the plain path; the pipeline hook
(`attach`, `stage`, `detach`) adopts models loaded later and never replaces a pipeline method.
GPU (@gpu, skipped without CUDA): the tuned path (bf16 torso, Triton conv / varlen attention /
fused kernels, K/V cache, CUDA graphs) against the CPU float32 path on the golden cases, to
bf16 tolerance.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections import Counter

import pytest
import torch

from golden_cases import REPO_ROOT, has_case, load_case
from trellis_backend import accel, fastpath, settings
from trellis_backend.accel.fused import FusedPath
from trellis_backend.accel.path import AcceleratedPath
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


def assigned(model: torch.nn.Module):
    """Names of the sub-modules the registry serves with something other than the plain path."""
    return [name for name, m in model.named_modules() if fastpath.lookup(m) is not fastpath.PLAIN]


def instance_attrs(model: torch.nn.Module):
    return {name: sorted(m.__dict__) for name, m in model.named_modules()}


def n_cross(model):
    return sum(1 for m in model.modules() if getattr(m, "_type", None) == "cross")


class RecordingPath(fastpath.FastPath):
    """The plain maths, counting which registry entries a model calls."""

    def __init__(self):
        self.calls = Counter()

    def __getattribute__(self, name):
        value = object.__getattribute__(self, name)
        if callable(value) and not name.startswith("_") and name in fastpath.FastPath.__dict__:
            object.__getattribute__(self, "calls")[name] += 1
        return value


# ---------------------------------------------------------------------------------------------- CPU
@pytest.mark.parametrize("name, entries", [
    ("ss_flow_ape", {"run_model", "modulated_norm", "residual_norm", "gated_residual", "qk_rms_norm", "mlp",
                     "context_kv", "uniform_context"}),
    ("slat_flow_SLatFlowModel", {"run_model", "modulated_norm", "residual_norm", "gated_residual", "qk_rms_norm",
                                 "mlp", "context_kv", "uniform_context", "layer_norm", "downsample"}),
    ("slat_decoder_gs", {"run_model", "layer_norm", "residual_norm", "mlp"}),
])
def test_models_call_the_assigned_implementation(name, entries):
    """What the registry assigns is what the model's modules call; unassigning restores the plain path."""
    model, _, inputs = golden_model(name)
    run = _golden_call(name, model, inputs, "cpu")
    want = run()
    path = RecordingPath()
    fastpath.assign(model, path)
    try:
        got = run()
    finally:
        fastpath.unassign(model, path)
    assert torch.equal(got, want)
    assert entries <= set(path.calls), f"not looked up: {entries - set(path.calls)}"
    assert path.calls["run_model"] == 1
    assert assigned(model) == []
    assert torch.equal(run(), want)


def test_model_entry_keeps_the_forward_signature():
    model, _, _ = golden_model("ss_flow_ape")
    assert fastpath.has_entry(model)
    import inspect

    assert list(inspect.signature(type(model).forward).parameters) == ["self", "x", "t", "cond"]


def test_cpu_models_get_the_kv_cache_only():
    model, _, inputs = golden_model("slat_flow_SLatFlowModel")
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    attrs = instance_attrs(model)
    with accel.enable(model, graphs="all") as acc:
        path = fastpath.lookup(model)
        assert type(path) is AcceleratedPath  # not the fused maths
        assert path.sparse_conv is None and path.varlen_attention is None and not path.cache_downsample
        assert set(assigned(model)) == {name for name, _ in model.named_modules()}
        assert len(acc.kv_caches) == n_cross(model) > 0
        assert not acc.runner(model).graphs_enabled  # graphs need CUDA
        assert {k: v.dtype for k, v in model.state_dict().items()} == dtypes
        assert instance_attrs(model) == attrs, "enable wrote into a module"


def test_kv_cache_dense_identical_and_restored():
    model, _, inputs = golden_model("ss_flow_ape")
    x, t, cond = inputs["x"], inputs["t"], inputs["cond"]
    with torch.no_grad():
        want = model(x, t, cond)
        with accel.enable(model) as acc:
            assert assigned(model), "enable() assigned nothing"
            first = model(x, t, cond)
            second = model(x, t, cond)
            stats = acc.kv_stats()
        after = model(x, t, cond)
    assert torch.equal(first, want) and torch.equal(second, want)
    assert stats == {"hits": n_cross(model), "misses": n_cross(model)}
    assert assigned(model) == []
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
    assert assigned(model) == []


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
    # one K/V computation per distinct condition tensor (cond+neg batch, cond alone) per module
    assert stats["misses"] == 2 * n_cross(model) and stats["hits"] > stats["misses"]


@pytest.mark.parametrize("name", ["ss_flow_ape", "slat_flow_SLatFlowModel", "slat_flow_ElasticSLatFlowModel",
                                  "slat_decoder_gs", "slat_decoder_mesh", "slat_encoder"])
def test_fused_path_matches_plain_cpu(name):
    """The fused maths (on trellis_kernels' float32 references here) compute what the plain path computes."""
    model, _, inputs = golden_model(name)
    run = _golden_call(name, model, inputs, "cpu")
    want = run()
    with accel.enable(model, _cpu_fused=True):
        assert all(isinstance(fastpath.lookup(m), FusedPath) for m in model.modules())
        got = run()
    assert rel_err(got, want) < 1e-5
    assert assigned(model) == []


@pytest.mark.parametrize("name", ["ss_flow_ape", "slat_flow_SLatFlowModel"])
def test_uniform_context_items_skip_attention_exactly(name, monkeypatch):
    """Items whose context tokens are all equal (the zero negative condition) skip the cross-attention."""
    model, _, inputs = golden_model(name)
    cond = inputs["cond"].clone()
    cond[1] = 0.0  # item 1: the CFG negative
    x = inputs["x"] if name.startswith("ss") else sparse(inputs, "x")
    run = lambda: model(x, inputs["t"], cond)  # noqa: E731
    feats = lambda out: out if isinstance(out, torch.Tensor) else out.feats  # noqa: E731
    answers = []
    lookup = FusedPath.uniform_context
    monkeypatch.setattr(FusedPath, "uniform_context", lambda *a: answers.append(lookup(*a)) or answers[-1])
    with torch.no_grad():
        want = feats(run())
        with accel.enable(model, _cpu_fused=True, _fake_graphs=True):
            outs = [feats(run()) for _ in range(3)]  # eager, captured (stand-in), replayed
        with settings.override(accel_uniform_context=False), accel.enable(model, _cpu_fused=True):
            off = [feats(run())]
    taken = [a for a in answers if a is not None]
    assert len(taken) >= n_cross(model) and all(a == (False, True) for a in taken), "shortcut not taken"
    assert len(answers) - len(taken) >= n_cross(model), "TRELLIS_ACCEL_UNIFORM_CONTEXT=0 did not turn it off"
    for got in outs + off:
        assert rel_err(got, want) < 1e-5


# TRELLIS.2 flows: rope (dense grid phases / voxel-coordinate phases), shared modulation with per-block offsets
T2_SS_ARGS = dict(resolution=4, in_channels=4, out_channels=4, model_channels=24, cond_channels=8, num_blocks=2,
                  num_heads=2, mlp_ratio=2, pe_mode="rope", share_mod=True, qk_rms_norm=True, qk_rms_norm_cross=True)
T2_SLAT_ARGS = dict(resolution=8, in_channels=4, out_channels=4, model_channels=24, cond_channels=8, num_blocks=2,
                    num_heads=2, mlp_ratio=2, pe_mode="rope", share_mod=True, qk_rms_norm=True, qk_rms_norm_cross=True)


def _randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random (no zero-initialised output layer or gate hides a wrong path)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()


def _voxels(n_items: int = 2) -> torch.Tensor:
    rows = [[b, i % 8, (i * 3) % 8, (i * 5 + b) % 8] for b in range(n_items) for i in range(6 + 5 * b)]
    return torch.tensor(rows, dtype=torch.int32)


def _trellis2_flow_call(kind: str):
    torch.manual_seed(1)
    if kind == "dense":
        model = _randomized(build_model("SparseStructureFlowModel", T2_SS_ARGS, family="trellis2"))
        x = torch.randn(2, 4, 4, 4, 4)
        return model, lambda cond: model(x, torch.tensor([250.0, 750.0]), cond)
    model = _randomized(build_model("SLatFlowModel", T2_SLAT_ARGS, family="trellis2"))
    coords = _voxels()
    x = SparseTensor(torch.randn(coords.shape[0], 4), coords)
    return model, lambda cond: model(x, torch.tensor([250.0, 750.0]), cond).feats


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_trellis2_flow_identical_with_cpu_fast_path(kind):
    """A TRELLIS.2 flow (rope, shared modulation + per-block offsets) gives the plain path's exact output with
    the CPU fast path (K/V cache), and with the fused maths (its blocks fuse: rope and the offsets sit outside
    the fused ops) the same output to float32 round-off."""
    model, run = _trellis2_flow_call(kind)
    blocks = list(model.blocks)
    assert all(b.modulation_offset and b.self_attn.use_rope for b in blocks)
    cond = torch.randn(2, 3, 8)
    with torch.no_grad():
        want = run(cond)
        with accel.enable(model) as acc:
            assert type(fastpath.lookup(blocks[0])) is AcceleratedPath
            first, second = run(cond), run(cond)
            stats = acc.kv_stats()
        with accel.enable(model, _cpu_fused=True):
            assert isinstance(fastpath.lookup(model), FusedPath)
            for block in blocks:
                assert all(isinstance(fastpath.lookup(m), FusedPath) for m in block.modules())
            fused = run(cond)
        after = run(cond)
    assert stats == {"hits": len(blocks), "misses": len(blocks)}
    for got in (first, second, after):
        assert torch.equal(got, want)
    assert rel_err(fused, want) < 1e-5
    assert assigned(model) == []


def test_varlen_context_is_never_uniform(monkeypatch):
    """Per-item condition lists (VarLenContext) take the varlen cross-attention: the uniform-context shortcut is
    not asked for them (nor answers for them), even with every token of an item equal; graphs stay off."""
    from trellis_backend.modules.attention import VarLenContext

    args = {**T2_SLAT_ARGS, "pe_mode": "ape", "share_mod": False}  # fusable blocks: the fused path serves them
    model = _randomized(build_model("SLatFlowModel", args))
    coords = _voxels()
    x, t = SparseTensor(torch.randn(coords.shape[0], 4), coords), torch.tensor([250.0, 750.0])
    conds = [torch.randn(4, 8), torch.zeros(2, 8)]  # item 1: uniform tokens, fewer of them
    asked = []
    lookup = FusedPath.uniform_context
    monkeypatch.setattr(FusedPath, "uniform_context", lambda self, attn, c: asked.append(c) or lookup(self, attn, c))
    with torch.no_grad():
        want = model(x, t, conds).feats
        with accel.enable(model, _cpu_fused=True, _fake_graphs=True) as acc:
            cross = next(m for m in model.modules() if getattr(m, "_type", None) == "cross")
            assert isinstance(fastpath.lookup(cross), FusedPath)
            assert fastpath.lookup(cross).uniform_context(cross, VarLenContext.from_list(conds)) is None
            asked.clear()
            outs = [model(x, t, conds).feats for _ in range(3)]
            assert acc.runner(model).captures == 0  # a condition list is never graphed
    assert asked == []
    for got in outs:
        assert rel_err(got, want) < 1e-5


def test_cached_downsample_matches():
    from trellis_backend.accel.sparse_cache import cached_downsample
    from trellis_backend.sparse import SparseDownsample

    _, _, inputs = golden_model("slat_flow_SLatFlowModel")
    x = sparse(inputs, "x")
    x = x.replace(torch.randn(x.feats.shape[0], 16))
    down = SparseDownsample(2)
    want = down(x)
    first, second = cached_downsample(down, x), cached_downsample(down, x.replace(x.feats * 2))
    for got, scale in ((first, 1), (second, 2)):
        assert torch.equal(got.coords, want.coords)
        assert torch.allclose(got.feats, want.feats * scale, atol=1e-6)
        assert got.layout == want.layout
        assert got.get_spatial_cache("upsample_2")[2].equal(want.get_spatial_cache("upsample_2")[2])


@pytest.mark.parametrize("cpu_fused", [False, True], ids=["plain_maths", "fused_maths"])
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
            # the same signature on another voxel set (same size, new spatial cache): eager, then a new graph
            x2 = sparse(inputs, "x")
            outs += [model(x2.replace(x2.feats.clone()), t, cond).feats for _ in range(3)]
            r = acc.runner(model)
            assert r.captures == 3
    for o in outs:
        assert rel_err(o, want) < 1e-6
    for o in outs_y:
        assert rel_err(o, want_y) < 1e-6


class _Pipe:
    """The parts of a pipeline the hook uses: `models` (filled lazily by `get_model`), `device`, `dtype`."""

    def __init__(self, first, later, device="cpu"):
        self.models = {"a": first}
        self._later = later
        self.device = torch.device(device)
        self.dtype = torch.float32

    def get_model(self, key):
        if key not in self.models:
            self.models[key] = self._later
        return self.models[key]


def test_pipeline_hook_stages_adopt_models_and_free_sparse_graphs():
    model, _, _ = golden_model("ss_flow_ape")
    later, _, inputs = golden_model("slat_flow_SLatFlowModel")
    pipe = _Pipe(model, later)
    pipe_attrs = dict(vars(pipe))
    hook = accel.PipelineFastPath(pipe, accel.enable(pipe, graphs="all", _fake_graphs=True))
    assert assigned(model) and not assigned(later)
    x = sparse(inputs, "x")
    with torch.no_grad(), hook.stage("slat"):
        flow = pipe.get_model("b")  # loaded after attach: adopted when the next stage starts
        assert not assigned(flow)
        hook.add(flow)  # what the pipeline's get_model does right away
        assert assigned(flow)
        for _ in range(2):  # eager, then captured
            flow(x.replace(x.feats.clone()), inputs["t"], inputs["cond"])
        r = hook.runner(flow)
        assert any(k[0] == "sparse" for k in r.graphs)
    assert not r.graphs, "the end of the stage did not free the stage-2 graphs"
    pipe.models["c"] = copy.deepcopy(later)
    with hook.stage("sparse_structure"):
        assert assigned(pipe.models["c"]), "the stage did not adopt a model the pipeline loaded"
    assert vars(pipe).keys() == pipe_attrs.keys() | {"models"} and pipe.get_model.__func__ is _Pipe.get_model
    hook.detach()
    assert not hook.active
    assert assigned(model) == [] and assigned(later) == [] and assigned(pipe.models["c"]) == []


def test_attach_only_on_cuda_and_when_enabled():
    model, _, _ = golden_model("ss_flow_ape")
    assert accel.attach(_Pipe(model, model)) is None  # CPU: the plain path
    with settings.override(accel=False):
        assert accel.attach(_Pipe(model, model, device="cuda")) is None  # TRELLIS_ACCEL=0
    assert assigned(model) == []
    assert accel.hook_settings(torch.float32)["fused"] is False
    with settings.override(accel_graphs="dense"):
        assert accel.hook_settings(torch.bfloat16)["graphs"] == "dense"


def test_disable_restores_plain_path_and_dtypes():
    model, _, _ = golden_model("ss_flow_ape")
    before = {k: (v.dtype, v.clone()) for k, v in model.state_dict().items()}
    acc = accel.enable(model, _cpu_fused=True)
    assert assigned(model)
    acc.disable()
    assert assigned(model) == [] and not acc.kv_caches and not acc.runners
    for k, v in model.state_dict().items():
        assert v.dtype == before[k][0] and torch.equal(v, before[k][1])
    with pytest.raises(RuntimeError):
        acc.add(model)


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

    got = sattn.sparse_windowed_self_attention(SparseTensor(qkv.feats, coords), 8, 4, kernel=tk.varlen_attention).feats
    q, k, v = torch.randn(3, 700, 4, 32, device="cuda", dtype=torch.bfloat16).unbind(0)
    ragged = sattn.varlen_attention(q, k, v, [300, 400], [300, 400], kernel=tk.varlen_attention)
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
