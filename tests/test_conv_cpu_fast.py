"""The fast sparse-conv paths (gather-GEMM, subdivided parents, derived neighbour maps) against the reference."""
from __future__ import annotations

import pytest
import torch

import trellis_backend.sparse.conv as conv_mod
from trellis_backend.sparse import SparseConv3d, SparseDownsample, SparseSubdivide, SparseTensor, set_conv_backend
from trellis_backend.sparse.conv import conv_with_neighbor_map, gather_gemm_conv
from trellis_backend.sparse.neighbors import build_neighbor_map, padded_neighbor_index, subdivided_neighbor_map

from inputs import random_coords as shared_random_coords


@pytest.fixture(autouse=True)
def torch_backend():
    set_conv_backend("torch")
    yield
    set_conv_backend("auto")


def random_coords(n_items=2, res=10, density=0.3, seed=0, isolated=0):
    coords = shared_random_coords(n_items, res, density, torch.Generator().manual_seed(seed))
    if isolated:  # voxels with no neighbour at all (far apart), in their own batch item
        c = torch.arange(isolated)[:, None].repeat(1, 3) * 4 + res + 2
        coords = torch.cat([coords, torch.cat([torch.full((isolated, 1), n_items), c], 1).int()])
    return coords


def reference(x: SparseTensor, conv: SparseConv3d) -> torch.Tensor:
    nbr = build_neighbor_map(x.coords, conv.kernel_size, conv.dilation)
    return conv_with_neighbor_map(x.feats.to(conv.conv.weight.dtype), nbr, conv.conv.weight, conv.conv.bias)


def make_conv(cin, cout, k=3, dilation=1, bias=True, seed=0):
    torch.manual_seed(seed)
    conv = SparseConv3d(cin, cout, k, dilation=dilation, bias=bias)
    if bias:
        torch.nn.init.normal_(conv.conv.bias)
    return conv


@pytest.mark.parametrize("cin,cout,k,dilation,bias", [(6, 5, 3, 1, True), (16, 4, 3, 1, False), (3, 9, 5, 1, True),
                                                      (5, 7, 3, 2, True)])
@pytest.mark.parametrize("block_elems", [1 << 20, 64])
def test_gather_gemm_matches_reference(monkeypatch, cin, cout, k, dilation, bias, block_elems):
    monkeypatch.setattr(conv_mod, "_BLOCK_ELEMS", block_elems)  # tiny blocks: many ragged blocks
    coords = random_coords(isolated=3)
    x = SparseTensor(torch.randn(len(coords), cin), coords)
    conv = make_conv(cin, cout, k, dilation, bias)
    with torch.no_grad():
        got = conv(x).feats
    torch.testing.assert_close(got, reference(x, conv), rtol=1e-5, atol=1e-5)


def test_empty_and_single_voxel():
    conv = make_conv(4, 3)
    empty = SparseTensor(torch.zeros(0, 4), torch.zeros(0, 4, dtype=torch.int32), shape=(1, 4))
    with torch.no_grad():
        assert conv(empty).feats.shape == (0, 3)
    assert conv(empty).feats.shape == (0, 3)
    one = SparseTensor(torch.randn(1, 4), torch.tensor([[0, 3, 3, 3]], dtype=torch.int32))
    with torch.no_grad():
        got = conv(one).feats
    w = conv.conv.weight[:, 1, 1, 1, :]  # only the centre tap sees a voxel
    torch.testing.assert_close(got, one.feats @ w.t() + conv.conv.bias, rtol=1e-5, atol=1e-6)


def test_autograd_matches_reference():
    coords = random_coords(res=7, isolated=2)
    feats = torch.randn(len(coords), 5, dtype=torch.float64)
    conv = make_conv(5, 6).double()
    x = SparseTensor(feats.clone().requires_grad_(True), coords)
    out = conv(x).feats
    g = torch.randn_like(out)
    out.backward(g)
    got = (x.feats.grad, conv.conv.weight.grad.clone(), conv.conv.bias.grad.clone())
    conv.zero_grad()
    feats_ref = feats.clone().requires_grad_(True)
    ref = conv_with_neighbor_map(feats_ref, build_neighbor_map(coords), conv.conv.weight, conv.conv.bias)
    ref.backward(g)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(got[0], feats_ref.grad)
    torch.testing.assert_close(got[1], conv.conv.weight.grad)
    torch.testing.assert_close(got[2], conv.conv.bias.grad)


def test_gradcheck_small():
    coords = random_coords(n_items=1, res=4, density=0.5)
    nbr = padded_neighbor_index(build_neighbor_map(coords))
    feats = torch.randn(len(coords), 2, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 3, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f, w, b: gather_gemm_conv(f, nbr, w, b), (feats, weight, bias))


@pytest.mark.parametrize("n_items", [1, 3])
def test_subdivided_neighbor_map_equals_hashing(n_items):
    coords = random_coords(n_items=n_items, res=6, isolated=2)
    x = SparseTensor(torch.zeros(len(coords), 1), coords)
    sub = SparseSubdivide()
    once = sub(x)
    twice = sub(once)
    assert torch.equal(subdivided_neighbor_map(build_neighbor_map(coords)), build_neighbor_map(once.coords))
    nbr_once = build_neighbor_map(once.coords)
    assert torch.equal(subdivided_neighbor_map(nbr_once), build_neighbor_map(twice.coords))


@pytest.mark.parametrize("cin,cout,k,bias", [(7, 5, 3, True), (6, 6, 3, False), (8, 3, 1, True), (4, 4, 1, False)])
def test_subdivided_conv_matches_plain_conv(cin, cout, k, bias):
    """A conv of `SparseSubdivide`'s output runs on the parents; the same rows given as a plain tensor agree."""
    coords = random_coords(res=6, isolated=2)
    x = SparseTensor(torch.randn(len(coords), cin), coords)
    sub = SparseSubdivide()(x)
    assert sub._parent_feats is not None
    conv = make_conv(cin, cout, k, bias=bias)
    plain = SparseTensor(sub.feats.clone(), sub.coords.clone())
    with torch.no_grad():
        got = conv(sub)
        want = conv(plain).feats
        # the next conv of the block sees new features on the same voxels: its map is derived from the parents'
        h = got.replace(torch.randn(got.feats.shape[0], cout))
        conv2 = make_conv(cout, 3, 3, seed=1)
        got2 = conv2(h).feats
        want2 = conv2(plain.replace(h.feats)).feats
    torch.testing.assert_close(got.feats, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got2, want2, rtol=1e-5, atol=1e-5)
    if k == 3:  # (1×1 convs follow spconv's conv1x1 reading of the weight, not the reference loop)
        torch.testing.assert_close(want, reference(plain, conv), rtol=1e-5, atol=1e-5)
    assert h.get_spatial_cache("nbr_k3_d1") is not None


def test_subdivided_conv_with_grad_uses_the_general_path():
    coords = random_coords(n_items=1, res=5)
    parent = torch.randn(len(coords), 4, dtype=torch.float64, requires_grad=True)
    sub = SparseSubdivide()(SparseTensor(parent, coords))
    conv = make_conv(4, 3).double()
    out = conv(sub).feats
    out.sum().backward()
    plain = SparseTensor(sub.feats.detach().clone(), sub.coords)
    torch.testing.assert_close(out, reference(plain, conv))
    assert parent.grad is not None and parent.grad.abs().sum() > 0


def test_downsample_cache_and_upsample_roundtrip():
    coords = random_coords(res=8)
    x = SparseTensor(torch.randn(len(coords), 3), coords)
    down = SparseDownsample(2)
    a = down(x)
    b = down(x.replace(x.feats * 2))
    assert a.coords is b.coords  # parents computed once per coordinate set
    torch.testing.assert_close(b.feats, a.feats * 2)


@pytest.mark.parametrize("k", [3, 1])
def test_autocast_computes_in_one_dtype(k):
    """Under bf16 autocast the conv runs and returns bf16 (like torch's convs), forward and backward."""
    coords = random_coords(res=6)
    conv = make_conv(8, 16, k)
    x = SparseTensor(torch.randn(len(coords), 8, requires_grad=True), coords)
    with torch.no_grad():
        ref = conv(x).feats  # float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x).feats
        assert out.dtype == torch.bfloat16
        out.float().sum().backward()
    assert x.feats.grad is not None and conv.conv.weight.grad is not None
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        sub = SparseSubdivide()(x)
        assert conv(sub).feats.dtype == torch.bfloat16
