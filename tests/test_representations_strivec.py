"""Strivec fields: layout of the radiance-field decoder output and the golden field shapes."""

from __future__ import annotations

import pytest
import torch

from golden_cases import has_case, load_case
from trellis_backend.representations import StrivecFields, strivec_channels, strivec_layout


def test_layout_order_and_sizes():
    layout = strivec_layout(rank=8, dim=8)
    assert list(layout) == ["trivec", "density", "features_dc"]
    assert layout["trivec"]["range"] == (0, 192)
    assert layout["density"]["range"] == (192, 200)
    assert layout["features_dc"]["range"] == (200, 224)
    assert strivec_channels(8, 8) == 224  # the released rf decoder's out_channels


def test_from_decoder_output_splits_and_offsets():
    rank, dim, res = 4, 4, 16
    coords = torch.tensor([[0, 0, 0], [15, 3, 7], [8, 8, 8]])
    feats = torch.arange(3 * strivec_channels(rank, dim), dtype=torch.float32).reshape(3, -1)
    f = StrivecFields.from_decoder_output(coords, feats, res, rank, dim)
    assert f.position.tolist()[1] == [15.5 / 16, 3.5 / 16, 7.5 / 16]
    assert f.trivec.shape == (3, rank, 3, dim) and torch.equal(f.trivec[0, 0, 0], torch.arange(4.0) + 1)
    assert torch.equal(f.trivec[1, 1, 2, 3], feats[1, 1 * 12 + 2 * 4 + 3] + 1)
    assert torch.equal(f.density[2], feats[2, 48:52])
    assert torch.equal(f.features_dc[2, 3, 0], feats[2, 52 + 9:52 + 12])
    assert f.rank == rank and f.dim == dim and len(f) == 3
    assert f.depth.dtype == torch.uint8 and (f.depth == 4).all()
    assert torch.allclose(f.world_position, f.position - 0.5)
    with pytest.raises(ValueError):
        StrivecFields.from_decoder_output(coords, feats[:, :-1], res, rank, dim)
    with pytest.raises(ValueError):
        StrivecFields.from_decoder_output(coords, feats, 12, rank, dim)


@pytest.mark.skipif(not has_case("slat_decoder_rf"), reason="golden case slat_decoder_rf absent")
def test_golden_fields_fit_the_container():
    config, _, _, inputs, outputs = load_case("slat_decoder_rf")
    args = config["args"]
    rank, dim, res = args["representation_config"]["rank"], args["representation_config"]["dim"], args["resolution"]
    coords = inputs["z.coords"]
    items = sorted({int(k.split(".")[0]) for k in outputs})
    for i in items:
        f = StrivecFields(position=outputs[f"{i}.position"], trivec=outputs[f"{i}.trivec"],
                          density=outputs[f"{i}.density"], features_dc=outputs[f"{i}.features_dc"],
                          resolution=res)
        assert f.rank == rank and f.dim == dim
        # the decoder keeps the latent's voxels: position = (coord + 0.5) / resolution
        mine = coords[coords[:, 0] == i][:, 1:]
        assert torch.allclose(f.position, (mine.float() + 0.5) / res, atol=1e-7)
        # a decoder output of zeros would give trivec == 1; the +1 offset is part of the fields
        assert f.trivec.shape == (len(mine), rank, 3, dim)
