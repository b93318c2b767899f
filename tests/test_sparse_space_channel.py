"""TRELLIS.2's sparse pieces: space-to-channel / channel-to-space, and the flex_gemm parameter naming of the conv."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trellis_backend.modules.precision import convert_module_to_f16
from trellis_backend.sparse import SparseChannel2Spatial, SparseConv3d, SparseSpatial2Channel, SparseTensor
from trellis_backend.sparse.neighbors import build_neighbor_map, children_neighbor_map
from trellis_backend.sparse.spatial import child_slot


def random_sparse(n_items=2, res=10, density=0.3, channels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    coords = []
    for b in range(n_items):
        c = (torch.rand(res, res, res, generator=g) < density).nonzero()
        coords.append(torch.cat([torch.full((len(c), 1), b), c], 1))
    coords = torch.cat(coords).int()
    return SparseTensor(torch.randn(len(coords), channels, generator=g), coords)


def test_spatial2channel_stacks_children_in_slot_order():
    x = random_sparse()
    out = SparseSpatial2Channel(2)(x)
    parents = torch.cat([x.coords[:, :1], torch.div(x.coords[:, 1:], 2, rounding_mode="floor")], 1)
    assert torch.equal(out.coords, torch.unique(parents, dim=0))  # sorted by (batch, x, y, z)
    assert out.feats.shape == (len(out.coords), 8 * 3) and out._scale == (2, 2, 2)
    row = {tuple(c): i for i, c in enumerate(out.coords.tolist())}
    expected = torch.zeros_like(out.feats)
    for c, f in zip(x.coords.tolist(), x.feats):
        k = c[1] % 2 + 2 * (c[2] % 2) + 4 * (c[3] % 2)  # child (k & 1, k >> 1 & 1, k >> 2 & 1)
        expected[row[(c[0], c[1] // 2, c[2] // 2, c[3] // 2)], 3 * k:3 * k + 3] = f
    assert torch.equal(out.feats, expected)  # absent children are zeros
    assert torch.equal(child_slot(x.coords, 2), x.coords[:, 1] % 2 + 2 * (x.coords[:, 2] % 2) + 4 * (x.coords[:, 3] % 2))


def test_channel2spatial_after_spatial2channel_restores_the_voxels():
    """A tensor sharing the spatial cache of a space-to-channel output goes back to exactly its voxels."""
    x = random_sparse()
    down = SparseSpatial2Channel(2)(x)
    up = SparseChannel2Spatial(2)(down.replace(down.feats.clone()), subdivision=None)
    assert torch.equal(up.coords, x.coords) and torch.equal(up.feats, x.feats)
    assert up._scale == (1, 1, 1) and up._spatial_cache is x._spatial_cache


def test_channel2spatial_from_mask_is_parent_major_in_child_order():
    g = torch.Generator().manual_seed(1)
    coords = torch.tensor([[0, 3, 1, 2], [0, 0, 0, 0], [1, 5, 5, 5]], dtype=torch.int32)
    x = SparseTensor(torch.randn(3, 8 * 2, generator=g), coords)
    mask = torch.rand(3, 8, generator=g) > 0.5
    mask[1] = False  # a voxel without children
    out = SparseChannel2Spatial(2)(x, mask)
    want_coords, want_feats = [], []
    for i in range(3):
        for k in range(8):
            if mask[i, k]:
                c = coords[i].tolist()
                want_coords.append([c[0], 2 * c[1] + (k & 1), 2 * c[2] + (k >> 1 & 1), 2 * c[3] + (k >> 2 & 1)])
                want_feats.append(x.feats[i, 2 * k:2 * k + 2])
    assert out.coords.tolist() == want_coords
    assert torch.equal(out.feats, torch.stack(want_feats))
    assert out._scale == (0.5, 0.5, 0.5) and out._spatial_cache is not x._spatial_cache


def test_channel2spatial_explains_bad_input():
    x = SparseTensor(torch.randn(2, 16), torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.int32))
    with pytest.raises(ValueError, match="needs a subdivision mask"):
        SparseChannel2Spatial(2)(x)
    with pytest.raises(ValueError, match=r"must be \[2, 8\]"):
        SparseChannel2Spatial(2)(x, torch.ones(3, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="divisible by 8"):
        SparseChannel2Spatial(2)(x.replace(torch.randn(2, 12)), torch.ones(2, 8, dtype=torch.bool))


def test_children_neighbor_map_equals_hashing():
    """Convs on channel-to-space children derive their neighbour map from the parents' map (no hashing)."""
    x = random_sparse(channels=16, density=0.4)
    mask = torch.rand(len(x.coords), 8, generator=torch.Generator().manual_seed(2)) > 0.4
    plan = SparseChannel2Spatial(2).plan(x, mask)
    rec = plan.record
    derived = children_neighbor_map(build_neighbor_map(x.coords), rec["parent"], rec["child"], rec["child_rows"])
    assert torch.equal(derived, build_neighbor_map(plan.coords))
    conv = SparseConv3d(2, 3, 3, param_naming="flex_gemm")
    parent_conv = SparseConv3d(16, 4, 3)
    parent_conv(x)  # the parents' map is now in their spatial cache: the children's map reuses it
    children = SparseChannel2Spatial(2).apply_plan(x, plan)
    fresh = SparseTensor(children.feats.clone(), children.coords.clone())
    torch.testing.assert_close(conv(children).feats, conv(fresh).feats, rtol=0, atol=0)
    assert rec["nbr"] is x.get_spatial_cache("nbr_k3_d1")


def test_spatial2channel_records_subdivision_in_training_only():
    x = random_sparse()
    s2c = SparseSpatial2Channel(2)
    assert s2c.eval()(x).get_spatial_cache("subdivision") is None
    out = s2c.train()(random_sparse())
    sub = out.get_spatial_cache("subdivision")
    assert sub.dtype == torch.bool and sub.shape == (len(out.coords), 8)
    assert int(sub.sum()) == len(random_sparse().coords)


# ------------------------------------------------------------------ conv parameter naming

def test_conv_param_namings_name_the_same_parameters():
    spconv_named = SparseConv3d(3, 4, 3)
    flex_named = SparseConv3d(3, 4, 3, param_naming="flex_gemm")
    assert set(spconv_named.state_dict()) == {"conv.weight", "conv.bias"}
    assert set(flex_named.state_dict()) == {"weight", "bias"}
    assert flex_named.weight.shape == (4, 3, 3, 3, 3)  # [out, kx, ky, kz, in]
    flex_named.load_state_dict({k.removeprefix("conv."): v for k, v in spconv_named.state_dict().items()})
    x = random_sparse()
    torch.testing.assert_close(flex_named(x).feats, spconv_named(x).feats, rtol=0, atol=0)
    assert set(SparseConv3d(3, 4, 3, bias=False, param_naming="flex_gemm").state_dict()) == {"weight"}
    with pytest.raises(ValueError, match="param_naming"):
        SparseConv3d(3, 4, 3, param_naming="torchsparse")


def test_flex_gemm_conv_kernel_index_reads_the_offset_neighbour():
    """Kernel index (a, b, c) reads the voxel at (x + a - 1, y + b - 1, z + c - 1): the dense cross-correlation."""
    x = random_sparse(channels=3)
    conv = SparseConv3d(3, 5, 3, param_naming="flex_gemm")
    torch.nn.init.normal_(conv.bias)
    res = int(x.coords[:, 1:].max()) + 1
    dense = F.conv3d(x.dense(res), conv.weight.permute(0, 4, 1, 2, 3), conv.bias, padding=1)
    c = x.coords.long()
    torch.testing.assert_close(conv(x).feats, dense[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]], rtol=1e-5, atol=1e-5)


def test_flex_gemm_pointwise_conv_is_the_plain_product():
    x = random_sparse()
    conv = SparseConv3d(3, 4, 1, param_naming="flex_gemm")
    torch.nn.init.normal_(conv.bias)
    want = x.feats @ conv.weight.reshape(4, 3).t() + conv.bias
    torch.testing.assert_close(conv(x).feats, want, rtol=1e-6, atol=1e-6)


def test_flex_gemm_conv_weights_convert_to_fp16():
    conv = SparseConv3d(3, 4, 3, param_naming="flex_gemm")
    conv.apply(convert_module_to_f16)
    assert conv.weight.dtype == torch.float16 and conv.bias.dtype == torch.float16
