"""trellis_bench's CPU smoke mode (`python -m trellis_bench.bench --small`) and its FLOP counts.

The smoke mode runs every pipeline case (TRELLIS "stages", TRELLIS.2 "trellis2") with tiny models on the
CPU: it checks that the GPU session's benchmark command will get through every case, not the timings.
The FLOP counts are checked against torch's own counter (`torch.utils.flop_counter`, GEMMs) on tiny models.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from golden_cases import REPO_ROOT


def _smoke(tmp_path, *extra):
    env = dict(os.environ, OUT=str(tmp_path),
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "backend"), str(REPO_ROOT / "kernels"),
                                           os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "-m", "trellis_bench.bench", "--small", "--out", str(tmp_path / "r.md"),
                          *extra], env=env, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = (tmp_path / "r.md").read_text()
    assert "CPU smoke run" in report and "not GPU timings" in report
    failed = [line for line in report.splitlines() if "failed:" in line]
    assert not failed, "\n".join(failed)
    return report


def test_trellis2_bench_smoke_cpu(tmp_path):
    """Every trellis2 case runs on the CPU at tiny sizes and reports; results land in trellis2.json."""
    report = _smoke(tmp_path, "--groups", "trellis2")
    for what in ("structure flow", "shape flow 512", "texture flow 1024", "SC-VAE decoders 1024",
                 "O-Voxel -> mesh", "GLB with PBR baking", "cascade: shape decoder upsample",
                 "1024_cascade: sum of the stage medians", "GPU memory of one chain"):
        assert what in report, what
    results = json.loads((tmp_path / "trellis2.json").read_text())
    for key in ("ss_flow", "shape_flow_512", "tex_flow_1024", "shape_decoder_1024", "glb_512", "total_1024"):
        assert results[key]["ms"] > 0, key
    assert results["shape_flow_512"]["flops"] > 0


@pytest.mark.slow
def test_whole_bench_smoke_cpu(tmp_path):
    """`--small` alone runs both families' pipeline groups, TRELLIS.2's end to end through `Trellis2Pipeline` on a
    tiny random folder included (the kernel groups need CUDA and are left out)."""
    report = _smoke(tmp_path)
    assert "| stages |" in report and "| trellis2 |" in report and "| conv |" not in report
    assert (tmp_path / "stages.json").is_file()
    results = json.loads((tmp_path / "trellis2.json").read_text())  # end to end through Trellis2Pipeline
    assert results["e2e_512"]["ms"] > 0 and results["e2e_1024"]["ms"] > 0


def _tiny_t2_flow(sparse: bool):
    from trellis_backend.models import build_model

    args = dict(resolution=4, in_channels=4, out_channels=4, model_channels=32, cond_channels=16, num_blocks=2,
                num_heads=2, mlp_ratio=2, pe_mode="rope", share_mod=True, qk_rms_norm=True, qk_rms_norm_cross=True)
    name = "SLatFlowModel" if sparse else "SparseStructureFlowModel"
    return build_model(name, args, family="trellis2").eval()


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_flow_gemm_flops_match_torch_counter(sparse):
    """The GEMM part of `flow_forward_flops` (K/V included) is what torch's FLOP counter sees for one forward."""
    from torch.utils.flop_counter import FlopCounterMode

    from trellis_backend.sparse import SparseTensor
    from trellis_bench.flops import flow_forward_flops

    model = _tiny_t2_flow(sparse)
    cond = torch.randn(2, 5, 16)
    if sparse:
        coords = torch.tensor([[b, i, (2 * i) % 4, (3 * i) % 4] for b in range(2) for i in range(3 + 2 * b)],
                              dtype=torch.int32)
        x, lengths = SparseTensor(torch.randn(coords.shape[0], 4), coords), [3, 5]
    else:
        x, lengths = torch.randn(2, 4, 4, 4, 4), [64, 64]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, torch.tensor([100.0, 900.0]), cond)
    counted = flow_forward_flops(model, lengths, [5, 5], with_context_kv=True)
    mlp = model.t_embedder.mlp  # timestep embedder and shared modulation: per item, not per token (not counted)
    small = 2 * 2 * (mlp[0].in_features * mlp[0].out_features + mlp[2].in_features * mlp[2].out_features)
    small += 2 * 2 * model.adaLN_modulation[1].in_features * model.adaLN_modulation[1].out_features
    assert counter.get_total_flops() == pytest.approx(counted["gemm"] + small, rel=1e-9)


def test_layer_flops_of_a_sc_vae_decoder_match_torch_counter():
    """`LayerFlops` (linears and 3x3x3 convs by hooks) counts what torch's counter sees on the CPU conv path, whose
    gather-GEMM does the dense-equivalent work."""
    from torch.utils.flop_counter import FlopCounterMode

    from trellis_backend.models import build_model
    from trellis_backend.sparse import SparseTensor
    from trellis_bench.flops import LayerFlops

    blocks = ["SparseConvNeXtBlock3d"] * 3
    dec = build_model("SparseUnetVaeDecoder", dict(
        out_channels=6, model_channels=[32, 16, 16], latent_channels=8, num_blocks=[1, 1, 0], block_type=blocks,
        up_block_type=["SparseResBlockC2S3d"] * 2, block_args=[{}] * 3), family="trellis2").eval()
    coords = torch.tensor([[0, x, y, z] for x in range(2) for y in range(2) for z in range(2) if x + y + z != 2],
                          dtype=torch.int32)
    z = SparseTensor(torch.randn(coords.shape[0], 8), coords)
    with torch.no_grad(), FlopCounterMode(display=False) as counter, LayerFlops(dec) as mine:
        dec(z)
    assert mine.by_kind["sparse_conv"] > 0 and mine.total == pytest.approx(counter.get_total_flops(), rel=1e-9)
