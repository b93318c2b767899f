"""Exactness of the sparse building blocks against naive formulations and spconv."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trellis_backend.sparse import (SparseConv3d, SparseDownsample, SparseSubdivide, SparseTensor, SparseUpsample,
                                    set_conv_backend, spconv_available, varlen_attention)
from trellis_backend.sparse.attention import sparse_windowed_self_attention
from trellis_backend.sparse.neighbors import build_neighbor_map

from inputs import random_coords


def random_sparse(n_items=2, res=12, density=0.3, channels=6, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    coords = random_coords(n_items, res, density, g)
    feats = torch.randn(len(coords), channels, generator=g, dtype=dtype)
    return SparseTensor(feats, coords)


@pytest.fixture(autouse=True)
def torch_backend():
    set_conv_backend("torch")
    yield
    set_conv_backend("auto")


def dense_submanifold_conv(x: SparseTensor, conv: SparseConv3d) -> torch.Tensor:
    """Dense conv3d (cross-correlation) evaluated at the active sites: the definition of a submanifold conv."""
    res = int(x.coords[:, 1:].max()) + 1
    dense = x.dense(res)
    w = conv.conv.weight.permute(0, 4, 1, 2, 3)  # [out, in, kx, ky, kz]
    out = F.conv3d(dense, w, conv.conv.bias, padding=conv.kernel_size // 2)
    c = x.coords.long()
    return out[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]]


def test_conv_matches_dense_definition():
    x = random_sparse()
    conv = SparseConv3d(6, 5, 3)
    torch.nn.init.normal_(conv.conv.bias)
    got = conv(x).feats
    torch.testing.assert_close(got, dense_submanifold_conv(x, conv), rtol=1e-5, atol=1e-5)


def test_conv_keeps_voxel_order_and_handles_empty():
    x = random_sparse()
    perm = torch.randperm(len(x.coords))
    conv = SparseConv3d(6, 4, 3)
    a = conv(x).feats[perm]
    y = SparseTensor(x.feats[perm], x.coords[perm])
    torch.testing.assert_close(conv(y).feats, a, rtol=1e-5, atol=1e-6)
    empty = SparseTensor(torch.zeros(0, 6), torch.zeros(0, 4, dtype=torch.int32), shape=(1, 6))
    assert conv(empty).feats.shape == (0, 4)


def test_neighbor_map_is_symmetric():
    x = random_sparse(n_items=1, res=8)
    nbr = build_neighbor_map(x.coords)
    rows = torch.arange(len(nbr))
    for k in range(27):
        valid = nbr[:, k] >= 0
        back = nbr[nbr[valid, k], 26 - k]
        assert torch.equal(back, rows[valid])


@pytest.mark.skipif(not spconv_available(), reason="spconv not installed")
@pytest.mark.parametrize("kernel_size", [3, 1])
def test_torch_and_spconv_backends_agree(kernel_size):
    x = random_sparse(n_items=3, res=14, channels=7, seed=3)
    conv = SparseConv3d(7, 9, kernel_size)
    torch.nn.init.normal_(conv.conv.bias)
    set_conv_backend("torch")
    a = conv(x).feats
    set_conv_backend("spconv")
    b = conv(SparseTensor(x.feats, x.coords)).feats
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_downsample_then_upsample():
    x = random_sparse(channels=3)
    down = SparseDownsample(2)(x)
    parents = x.coords.clone()
    parents[:, 1:] //= 2
    assert len(down.coords) == len(torch.unique(parents, dim=0))
    # the reference's reduction: sum of the children / (children + 1)
    key = lambda c: tuple(c.tolist())
    index = {key(c): i for i, c in enumerate(down.coords)}
    sums = torch.zeros_like(down.feats)
    counts = torch.zeros(len(down.coords))
    for c, f in zip(parents, x.feats):
        sums[index[key(c)]] += f
        counts[index[key(c)]] += 1
    torch.testing.assert_close(down.feats, sums / (counts[:, None] + 1))
    up = SparseUpsample(2)(down)
    assert torch.equal(up.coords, x.coords)
    torch.testing.assert_close(up.feats, down.feats[[index[key(c)] for c in parents]])


def test_subdivide_children():
    x = random_sparse(n_items=1, res=4, channels=2)
    y = SparseSubdivide()(x)
    assert len(y.coords) == 8 * len(x.coords)
    assert torch.equal(y.coords[:8, 1:] // 2, x.coords[:1, 1:].repeat(8, 1))
    assert len(torch.unique(y.coords, dim=0)) == len(y.coords)


def naive_attention(q, k, v):
    w = torch.softmax(torch.einsum("qhc,khc->hqk", q, k) / math.sqrt(q.shape[-1]), dim=-1)
    return torch.einsum("hqk,khc->qhc", w, v)


def test_varlen_attention_matches_per_group_loop():
    g = torch.Generator().manual_seed(1)
    q_lens, kv_lens = [5, 17, 1, 9], [3, 17, 8, 2]
    q = torch.randn(sum(q_lens), 2, 8, generator=g)
    k = torch.randn(sum(kv_lens), 2, 8, generator=g)
    v = torch.randn(sum(kv_lens), 2, 8, generator=g)
    got = varlen_attention(q, k, v, q_lens, kv_lens)
    want, qs, ks = [], 0, 0
    for lq, lk in zip(q_lens, kv_lens):
        want.append(naive_attention(q[qs:qs + lq], k[ks:ks + lk], v[ks:ks + lk]))
        qs, ks = qs + lq, ks + lk
    torch.testing.assert_close(got, torch.cat(want), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shift", [0, 2])
def test_windowed_attention_matches_naive_windows(shift):
    x = random_sparse(n_items=2, res=10, channels=3 * 2 * 4, seed=5)
    qkv = x.replace(x.feats.reshape(-1, 3, 2, 4))
    got = sparse_windowed_self_attention(qkv, window_size=4, shift=shift).feats
    c = x.coords.long().clone()
    c[:, 1:] = (c[:, 1:] + shift) // 4
    want = torch.empty_like(got)
    for key in torch.unique(c, dim=0):
        rows = (c == key).all(dim=1).nonzero()[:, 0]
        q, k, v = qkv.feats[rows].unbind(1)
        want[rows] = naive_attention(q, k, v)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
