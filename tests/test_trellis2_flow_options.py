"""TRELLIS.2 options of the flow models, registry and sampler beyond the golden cases: family rules,
derived buffers, rotary maths, guidance edge cases and clear errors on bad input."""
from __future__ import annotations

import pytest
import torch

from trellis_backend.errors import CheckpointMismatchError
from trellis_backend.models import build_model, load_state_dict_strict
from trellis_backend.modules.embedders import RotaryPositionEmbedder, apply_rotary
from trellis_backend.pipeline.samplers import FlowEulerGuidanceIntervalSampler
from trellis_backend.sparse import SparseTensor

SS_ARGS = dict(resolution=4, in_channels=4, out_channels=4, model_channels=24, cond_channels=8, num_blocks=1,
               num_heads=2, mlp_ratio=2, pe_mode="rope", share_mod=True, qk_rms_norm=True, qk_rms_norm_cross=True)
SLAT_ARGS = dict(resolution=8, in_channels=8, out_channels=4, model_channels=24, cond_channels=8, num_blocks=1,
                 num_heads=2, mlp_ratio=2, pe_mode="rope", share_mod=True, initialization="scaled")


def _sparse_item_coords(n_items: int = 2) -> torch.Tensor:
    rows = []
    for b in range(n_items):
        for i in range(5 + 3 * b):
            rows.append([b, i % 4, (i // 4) % 4, i % 3])
    return torch.tensor(rows, dtype=torch.int32)


def test_family_fixes_options_the_config_leaves_out():
    v2 = build_model("SparseStructureFlowModel", SS_ARGS, family="trellis2")
    v1 = build_model("SparseStructureFlowModel", {**SS_ARGS, "pe_mode": "ape"})
    assert v2.patch_size == 1 and v1.patch_size == 2
    assert "blocks.0.modulation" in v2.state_dict() and "blocks.0.modulation" not in v1.state_dict()
    with pytest.raises(CheckpointMismatchError, match="patch_size"):
        build_model("SparseStructureFlowModel", {**SS_ARGS, "patch_size": 2}, family="trellis2")
    with pytest.raises(ValueError, match="unknown model family"):
        build_model("SparseStructureFlowModel", SS_ARGS, family="trellis3")


def test_rope_phases_are_derived_not_saved_and_survive_casts():
    model = build_model("SparseStructureFlowModel", SS_ARGS, family="trellis2")
    assert "rope_phases" not in model.state_dict()
    assert model.rope_phases.shape == (4 ** 3, 6) and model.rope_phases.dtype == torch.complex64
    state = {**model.state_dict(), "rope_phases": torch.zeros(1)}  # a checkpoint that carries it anyway
    load_state_dict_strict(model, state)
    del state["t_embedder.mlp.0.bias"]
    with pytest.raises(CheckpointMismatchError, match="t_embedder.mlp.0.bias"):
        load_state_dict_strict(model, state)
    before = model.rope_phases.clone()
    model.to(torch.float64)
    assert model.rope_phases.dtype == torch.complex64 and torch.equal(model.rope_phases, before)


def test_rotary_scores_depend_on_position_differences_only():
    rope = RotaryPositionEmbedder(head_dim=14)  # 3 axes x 2 freqs + 1 padded unit phase
    q, k = torch.randn(1, 1, 14), torch.randn(1, 1, 14)
    a, b = torch.tensor([[3, 1, 2]]), torch.tensor([[1, 4, 0]])
    shift = torch.tensor([[5, -2, 7]])

    def score(pq, pk):
        return (apply_rotary(q, rope(pq)) * apply_rotary(k, rope(pk))).sum()

    assert torch.allclose(score(a, b), score(a + shift, b + shift), atol=1e-5)
    assert not torch.allclose(score(a, b), score(a, b + shift), atol=1e-3)
    assert torch.equal(rope(a)[..., -1], torch.ones(1, dtype=torch.complex64))  # the padding rotates nothing


def test_slat_flow_rejects_misplaced_concat_cond_and_wrong_condition_count():
    model = build_model("ElasticSLatFlowModel", SLAT_ARGS, family="trellis2").eval()
    coords = _sparse_item_coords()
    x = SparseTensor(torch.randn(coords.shape[0], 4), coords)
    t = torch.tensor([500.0, 500.0])
    shape_latent = SparseTensor(torch.randn(coords.shape[0], 4), coords.clone())
    with torch.no_grad():
        out = model(x, t, torch.randn(2, 3, 8), concat_cond=shape_latent)
        assert out.feats.shape == (coords.shape[0], 4)
        moved = coords.clone()
        moved[0, 1] += 1
        with pytest.raises(ValueError, match="same voxels"):
            model(x, t, torch.randn(2, 3, 8), concat_cond=SparseTensor(shape_latent.feats, moved))
        with pytest.raises(ValueError, match="channels"):
            model(x, t, torch.randn(2, 3, 8))  # the texture flow without its shape latent
        with pytest.raises(ValueError, match="2 conditions|conditions for a batch"):
            model(x, t, [torch.randn(3, 8)] * 3, concat_cond=shape_latent)


def test_varlen_condition_equals_dense_condition_when_lengths_agree():
    model = build_model("SLatFlowModel", {**SLAT_ARGS, "in_channels": 4}, family="trellis2").eval()
    coords = _sparse_item_coords()
    x = SparseTensor(torch.randn(coords.shape[0], 4), coords)
    t = torch.tensor([300.0, 700.0])
    cond = torch.randn(2, 5, 8)
    with torch.no_grad():
        dense = model(x, t, cond).feats
        listed = model(x, t, [cond[0], cond[1]]).feats
    assert torch.allclose(dense, listed, atol=1e-6)


class _ConditionEcho:
    """A 'model' whose velocity is the mean of its condition: shows which conditions a step used."""

    def __call__(self, x, t, cond, **kwargs):
        return torch.zeros_like(x) + cond.mean(dim=(1, 2)).reshape(-1, *[1] * (x.dim() - 1))


@pytest.mark.parametrize("strength, expected", [(1.0, 1.0), (0.0, 3.0), (2.0, -1.0)])
def test_guidance_strength_weights(strength, expected):
    """v = s·v_cond + (1 - s)·v_neg: s = 1 is the condition alone, s = 0 the negative alone."""
    noise = torch.zeros(1, 2, 2, 2, 2)
    cond, neg = torch.ones(1, 3, 4), torch.full((1, 3, 4), 3.0)
    res = FlowEulerGuidanceIntervalSampler(0.0).sample(_ConditionEcho(), noise, cond, neg, steps=1,
                                                       guidance_strength=strength, guidance_interval=(0.0, 1.0))
    # one Euler step from t=1 to 0: x = noise - v
    assert torch.allclose(res.samples, torch.full_like(noise, -expected))


def test_guidance_outside_the_interval_uses_the_condition_only():
    noise = torch.zeros(1, 2, 2, 2, 2)
    cond, neg = torch.ones(1, 3, 4), torch.full((1, 3, 4), 3.0)
    res = FlowEulerGuidanceIntervalSampler(0.0).sample(_ConditionEcho(), noise, cond, neg, steps=1,
                                                       guidance_strength=7.5, guidance_interval=(0.0, 0.5))
    assert torch.allclose(res.samples, torch.full_like(noise, -1.0))


def test_sampler_refuses_mixed_guidance_conventions_and_misplaced_concat_cond():
    sampler = FlowEulerGuidanceIntervalSampler(1e-5)
    noise = torch.zeros(1, 2, 2, 2, 2)
    cond = torch.ones(1, 3, 4)
    with pytest.raises(ValueError, match="not both"):
        sampler.sample(_ConditionEcho(), noise, cond, cond, steps=1, cfg_strength=3.0, guidance_strength=3.0)
    with pytest.raises(ValueError, match="need guidance_strength"):
        sampler.sample(_ConditionEcho(), noise, cond, cond, steps=1, cfg_strength=3.0, guidance_rescale=0.5)
    coords = _sparse_item_coords(1)
    sparse_noise = SparseTensor(torch.zeros(coords.shape[0], 2), coords)
    other = SparseTensor(torch.zeros(coords.shape[0] - 1, 2), coords[1:])
    with pytest.raises(ValueError, match="noise's voxels"):
        sampler.sample(lambda x, t, c, **kw: x, sparse_noise, cond, cond, steps=1, guidance_strength=1.0,
                       concat_cond=other)


def test_fused_fast_path_skips_trellis2_blocks():
    from trellis_backend.accel.fused import forwards_for

    v2 = build_model("SparseStructureFlowModel", SS_ARGS, family="trellis2")
    v1 = build_model("SparseStructureFlowModel", {**SS_ARGS, "pe_mode": "ape"})
    assert forwards_for(v2.blocks[0]) is None and forwards_for(v2.blocks[0].self_attn) is None
    assert forwards_for(v1.blocks[0]) is not None
