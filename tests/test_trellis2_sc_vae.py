"""Behaviour of TRELLIS.2's SC-VAEs beyond the golden cases: the encoder/decoder voxel pairing the texturing
pipeline relies on, training targets, the cascade's `upsample`, guided subdivision, precision and bad input."""
from __future__ import annotations

import pytest
import torch

from trellis_backend.errors import UnknownModelClassError
from trellis_backend.models import (FlexiDualGridVaeDecoder, FlexiDualGridVaeEncoder, SparseUnetVaeDecoder,
                                    SparseUnetVaeEncoder, load_state_dict_strict)
from trellis_backend.sparse import SparseTensor

LEVELS = 3
CONVNEXT = ["SparseConvNeXtBlock3d"] * LEVELS
ARGS = [{"use_checkpoint": False}] * LEVELS


def encoder_args(**kw):
    return dict(model_channels=[8, 16, 16], latent_channels=8, num_blocks=[0, 1, 1], block_type=CONVNEXT,
                down_block_type=["SparseResBlockS2C3d"] * (LEVELS - 1), block_args=ARGS, **kw)


def decoder_args(**kw):
    return dict(model_channels=[16, 16, 8], latent_channels=8, num_blocks=[1, 1, 0], block_type=CONVNEXT,
                up_block_type=["SparseResBlockC2S3d"] * (LEVELS - 1), block_args=ARGS, **kw)


def shells(res=16, items=2, channels=6, seed=0):
    """Sphere shells of different radii, one per batch item (random features)."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.arange(res)] * 3, indexing="ij"), -1).reshape(-1, 3)
    coords = []
    for b in range(items):
        r = (grid.float() + 0.5 - res / 2).norm(dim=1)
        keep = (r - (res / 2 - 1.5 - 2 * b)).abs() < 0.9
        coords.append(torch.cat([torch.full((int(keep.sum()), 1), b), grid[keep]], 1))
    coords = torch.cat(coords).int()
    return SparseTensor(torch.rand(len(coords), channels, generator=g) * 2 - 1, coords)


def latent(res=4, items=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    coords = torch.cat([torch.cat([torch.full((res ** 3, 1), b), torch.stack(torch.meshgrid(
        *[torch.arange(res)] * 3, indexing="ij"), -1).reshape(-1, 3)], 1) for b in range(items)]).int()
    return SparseTensor(torch.randn(len(coords), 8, generator=g), coords)


def randomize(model, seed=0):
    """Non-zero weights everywhere (the constructors zero some output convs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 / max(1, p.shape[-1]) ** 0.5))
    return model


def test_texture_decoder_follows_the_encoded_voxels():
    """The texturing pipeline decodes a latent derived from the encoder's output without guide: each
    channel-to-space then restores the voxels the encoder saw, in the encoder's input order."""
    torch.manual_seed(0)
    x = shells()
    encoder = randomize(SparseUnetVaeEncoder(6, **encoder_args())).eval()
    decoder = randomize(SparseUnetVaeDecoder(6, **decoder_args(pred_subdiv=False)), seed=1).eval()
    with torch.no_grad():
        z = encoder(x)
        assert z.coords.shape[0] < x.coords.shape[0] and z._scale == (4, 4, 4)
        y = decoder(z.replace(z.feats * 0.9 + 0.1))  # e.g. de-normalised flow output on the same voxels
    assert torch.equal(y.coords, x.coords)
    assert y.feats.shape == (len(x.coords), 6) and torch.isfinite(y.feats).all()
    with pytest.raises(ValueError, match="needs a subdivision mask"):
        decoder(SparseTensor(z.feats, z.coords))  # a fresh latent has no encoder record and no guide


def test_training_decoder_returns_the_true_subdivisions():
    x = shells()
    encoder = randomize(SparseUnetVaeEncoder(6, **encoder_args())).train()
    decoder = randomize(SparseUnetVaeDecoder(6, **decoder_args()), seed=1).train()
    z = encoder(x)
    h, subs_gt, subs = decoder(z)
    assert torch.equal(h.coords, x.coords)  # the encoder's voxels, not the predicted ones
    assert len(subs_gt) == len(subs) == LEVELS - 1
    for gt, sub in zip(subs_gt, subs):
        assert gt.dtype == torch.bool and gt.shape == sub.feats.shape
    assert int(subs_gt[-1].sum()) == len(x.coords)
    h.feats.sum().backward()  # differentiable end to end
    assert encoder.input_layer.weight.grad is not None


def test_upsample_gives_the_coords_of_each_level():
    decoder = randomize(SparseUnetVaeDecoder(7, **decoder_args())).eval()
    z = latent()
    with torch.no_grad():
        h, subs = decoder(z, return_subs=True)
    assert torch.equal(decoder.upsample(z, 0), z.coords)
    assert torch.equal(decoder.upsample(z, 1), subs[1].coords)
    assert torch.equal(decoder.upsample(z, 2), h.coords)
    with pytest.raises(ValueError, match="upsample_times"):
        decoder.upsample(z, LEVELS)
    with pytest.raises(ValueError, match="pred_subdiv=True"):
        SparseUnetVaeDecoder(6, **decoder_args(pred_subdiv=False)).upsample(z, 1)


def test_guided_decoder_emits_the_shape_decoders_voxels():
    shape = randomize(FlexiDualGridVaeDecoder(64, **decoder_args())).eval()
    tex = randomize(SparseUnetVaeDecoder(6, **decoder_args(pred_subdiv=False)), seed=1).eval()
    z = latent()
    with torch.no_grad():
        h, subs = shape.decode(z, return_subs=True)
        y = tex(latent(seed=2), guide_subs=subs)
    assert torch.equal(y.coords, h.coords)
    grids = shape.dual_grids(h)
    assert [len(g.coords) for g in grids] == h.seqlens
    for g in grids:
        assert g.intersected.dtype == torch.bool and g.split_weight.shape == (len(g.coords), 1)
        assert (g.dual_vertices >= -0.5).all() and (g.dual_vertices <= 1.5).all() and (g.split_weight > 0).all()
    with pytest.raises(ValueError, match="one SparseTensor per doubling"):
        tex(z, guide_subs=subs[:1])
    with pytest.raises(ValueError, match="rows for"):
        tex(z, guide_subs=[subs[1], subs[0]])
    with pytest.raises(ValueError, match="pred_subdiv=False"):
        shape.decode(z, guide_subs=subs)
    with pytest.raises(ValueError, match="return_subs"):
        tex(z, guide_subs=subs, return_subs=True)


def _rel(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


def test_fp16_torso_matches_float32():
    """`use_fp16`: conv/linear weights of the blocks in float16, the rest float32; results near float32's."""
    enc32 = randomize(FlexiDualGridVaeEncoder(**encoder_args())).eval()
    enc16 = FlexiDualGridVaeEncoder(**encoder_args(), use_fp16=True).eval()
    load_state_dict_strict(enc16, enc32.state_dict())
    dec32 = randomize(FlexiDualGridVaeDecoder(64, **decoder_args())).eval()
    dec16 = FlexiDualGridVaeDecoder(64, **decoder_args(), use_fp16=True).eval()
    load_state_dict_strict(dec16, dec32.state_dict())
    block = dec16.blocks[0][0]
    assert block.conv.weight.dtype == torch.float16 and block.mlp[0].weight.dtype == torch.float16
    assert block.norm.weight.dtype == torch.float32 and dec16.blocks[0][1].to_subdiv.weight.dtype == torch.float16
    assert dec16.from_latent.weight.dtype == torch.float32 and dec16.output_layer.weight.dtype == torch.float32
    x = shells()
    vertices, intersected = x.replace(x.feats[:, :3] * 0.5 + 0.5), x.replace(x.feats[:, 3:] > 0)
    with torch.no_grad():
        z32, z16 = enc32(vertices, intersected), enc16(vertices, intersected)
        assert z16.feats.dtype == torch.float32 and torch.equal(z16.coords, z32.coords)
        assert _rel(z16.feats, z32.feats) < 1e-2
        # decoder: the first doubling's logits (later voxel sets may differ where fp16 flips a logit near 0)
        (h16, subs16), (_, subs32) = dec16.decode(latent(), return_subs=True), dec32.decode(latent(), return_subs=True)
    assert h16.feats.dtype == torch.float32 and subs16[0].feats.dtype == torch.float16
    assert _rel(subs16[0].feats, subs32[0].feats) < 1e-2


def test_activation_checkpointing_gives_the_same_gradients():
    x = shells()
    grads = []
    for use_checkpoint in (False, True):
        args = encoder_args()
        args["block_args"] = [{"use_checkpoint": use_checkpoint}] * LEVELS
        encoder = randomize(FlexiDualGridVaeEncoder(**args)).train()
        vertices = x.replace(x.feats[:, :3] * 0.5 + 0.5)
        intersected = x.replace(x.feats[:, 3:] > 0)
        encoder(vertices, intersected).feats.square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in encoder.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)


def test_configs_and_inputs_that_do_not_fit_are_named():
    with pytest.raises(UnknownModelClassError, match="SparseResBlockDownsample3d"):
        SparseUnetVaeEncoder(6, **{**encoder_args(), "down_block_type": ["SparseResBlockDownsample3d"] * 2})
    with pytest.raises(ValueError, match="one entry per level"):
        SparseUnetVaeEncoder(6, **{**encoder_args(), "num_blocks": [0, 1]})
    with pytest.raises(ValueError, match="channel counts"):
        SparseUnetVaeEncoder(6, **{**encoder_args(), "model_channels": [8, 12, 16]})
    encoder = FlexiDualGridVaeEncoder(**encoder_args()).eval()
    x = shells()
    with pytest.raises(ValueError, match="same voxels"):
        encoder(x.replace(x.feats[:, :3]), SparseTensor(x.feats[:5, 3:] > 0, x.coords[:5]))
    with pytest.raises(ValueError, match="expects 6 input channels"):
        SparseUnetVaeEncoder(6, **encoder_args())(x.replace(x.feats[:, :4]))
    decoder = FlexiDualGridVaeDecoder(64, **decoder_args()).train()
    with pytest.raises(ValueError, match="gt_intersected"):
        decoder(latent())
