"""Sparse FlexiCubes extraction: golden parity with the reference, a dense re-derivation, closed surfaces."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
import torch

from golden_cases import has_case, load_case
from trellis_backend.representations.mesh import MeshExtractResult, SparseFlexiCubesExtractor
from trellis_backend.representations.mesh.tables import (
    CHECK_TABLE, CUBE_CORNERS, CUBE_EDGES, DMC_TABLE, NUM_VD_TABLE)


class Cubes:
    """Minimal stand-in for a single-item SparseTensor (coords [N,4] batch,x,y,z; feats [N,C])."""

    def __init__(self, coords_xyz, feats):
        coords_xyz = torch.as_tensor(coords_xyz, dtype=torch.int32)
        self.coords = torch.cat([torch.zeros_like(coords_xyz[:, :1]), coords_xyz], dim=1)
        self.feats = feats


def exact_cdist(a, b):
    # The matmul formulation of cdist loses ~1e-4 at these magnitudes; compare exactly.
    return torch.cdist(a.double(), b.double(), compute_mode="donot_use_mm_for_euclid_dist")


def canonical_triangles(faces):
    """Rotate each triangle so its smallest index comes first (keeps the winding)."""
    f = np.asarray(faces, dtype=np.int64)
    shift = f.argmin(axis=1)
    rows = np.arange(len(f))[:, None]
    return f[rows, (shift[:, None] + np.arange(3)[None]) % 3]


def compare_meshes(got: MeshExtractResult, want_vertices, want_faces, want_attrs=None):
    """Same vertex set (bijective nearest match), same oriented triangles, same attributes.

    Returns (max vertex distance, max attribute error)."""
    assert got.vertices.shape == want_vertices.shape, (got.vertices.shape, want_vertices.shape)
    assert got.faces.shape == want_faces.shape, (got.faces.shape, want_faces.shape)
    if want_vertices.shape[0] == 0:
        return 0.0, 0.0
    nearest = exact_cdist(got.vertices, want_vertices).min(dim=1)
    match = nearest.indices
    assert torch.unique(match).numel() == match.numel(), "vertex matching is not one-to-one"
    max_dist = nearest.values.max().item()
    mapped = canonical_triangles(match[got.faces.long()].numpy())
    want = canonical_triangles(want_faces.long().numpy())
    got_set = set(map(tuple, mapped.tolist()))
    want_set = set(map(tuple, want.tolist()))
    assert len(got_set) == len(mapped) and len(want_set) == len(want)
    assert got_set == want_set, f"{len(got_set ^ want_set)} triangles differ (winding included)"
    attr_err = 0.0
    if want_attrs is not None:
        attr_err = (got.vertex_attrs - want_attrs[match]).abs().max().item()
    return max_dist, attr_err


# ----------------------------------------------------------------------------------------------
# Golden parity with the reference implementation

@pytest.mark.skipif(not has_case("slat_decoder_mesh"), reason="golden case slat_decoder_mesh absent")
def test_golden_mesh_matches_reference():
    config, _, _, _, outputs = load_case("slat_decoder_mesh")
    res = config["args"]["resolution"] * 4
    extractor = SparseFlexiCubesExtractor(res=res, use_color=config["args"]["representation_config"]["use_color"])
    assert extractor.feats_channels == outputs["feats.feats"].shape[1]
    cubes = Cubes(outputs["feats.coords"][:, 1:], outputs["feats.feats"].clone())
    feats_before = cubes.feats.clone()
    mesh = extractor(cubes)
    assert torch.equal(cubes.feats, feats_before), "the extractor must not modify its input"
    assert mesh.success
    max_dist, color_err = compare_meshes(mesh, outputs["0.vertices"], outputs["0.faces"], outputs["0.vertex_attrs"])
    print(f"golden mesh: V={mesh.vertices.shape[0]} F={mesh.faces.shape[0]} "
          f"max vertex distance {max_dist:.3e}, max colour error {color_err:.3e}")
    assert max_dist < 1e-5
    assert color_err < 1e-4
    assert mesh.face_normal.shape == (mesh.faces.shape[0], 3, 3)
    assert torch.isfinite(mesh.face_normal).all()


# ----------------------------------------------------------------------------------------------
# Published facts about the FlexiCubes tables (spot checks of the derived tables)

def test_tables_spot_checks():
    def groups(case):
        return sorted(tuple(e for e in g if e >= 0) for g in DMC_TABLE[case] if g[0] >= 0)

    assert groups(0) == [] and groups(255) == []
    assert groups(1) == [(0, 3, 8)]
    assert groups(3) == [(1, 3, 8, 9)]
    assert groups(6) == [(0, 1, 9), (4, 7, 8)]
    assert groups(60) == [(1, 3, 10, 11), (5, 7, 8, 9)]
    assert groups(105) == [(0, 3, 8), (1, 2, 10), (4, 5, 9), (6, 7, 11)]
    assert NUM_VD_TABLE[:26] == [0, 1, 1, 1, 1, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1, 2, 1, 2, 1, 3, 1, 2, 2]
    assert sum(NUM_VD_TABLE) == 358  # total patches over all 256 cases (published table)
    problems = {c: tuple(CHECK_TABLE[c]) for c in range(256) if CHECK_TABLE[c][0]}
    assert len(problems) == 36
    assert problems[61] == (1, 1, 0, 0, 194) and problems[62] == (1, -1, 0, 0, 193)
    assert problems[91] == (1, 0, 1, 0, 164) and problems[249] == (1, 0, 0, -1, 6)
    # every edge group is a closed loop of crossing edges, and every crossing edge is used once
    for case in range(256):
        neg = [(case >> k) & 1 for k in range(8)]
        crossing = sorted(e for e, (a, b) in enumerate(CUBE_EDGES) if neg[a] != neg[b])
        assert sorted(e for g in groups(case) for e in g) == crossing


# ----------------------------------------------------------------------------------------------
# A straightforward dense re-derivation of the reference pipeline (loops, dense arrays)

def dense_reference(coords, feats, res, use_color=True):
    """Dense (res+1)³ FlexiCubes, written plainly: averaged corners, default 'outside' vertices,
    zero weights for absent cubes, one dual vertex per edge group, one quad per interior edge."""
    coords = coords.long()
    r1 = res + 1
    n_attr = 10 if use_color else 4
    sdf = feats[:, 0:8] - 1.0 / res
    deform = feats[:, 8:32].reshape(-1, 8, 3)
    weights = feats[:, 32:53]
    attrs = [sdf[..., None], deform] + ([feats[:, 53:101].reshape(-1, 8, 6)] if use_color else [])
    attrs = torch.cat(attrs, -1)

    total = torch.zeros(r1, r1, r1, n_attr, dtype=torch.float64)
    count = torch.zeros(r1, r1, r1, dtype=torch.float64)
    for k, (dx, dy, dz) in enumerate(CUBE_CORNERS):
        x, y, z = coords[:, 0] + dx, coords[:, 1] + dy, coords[:, 2] + dz
        total.index_put_((x, y, z), attrs[:, k].double(), accumulate=True)
        count.index_put_((x, y, z), torch.ones(len(coords), dtype=torch.float64), accumulate=True)
    grid = torch.zeros(r1, r1, r1, n_attr, dtype=torch.float64)
    grid[..., 0] = 1.0
    have = count > 0
    grid[have] = total[have] / count[have][:, None]
    cube_w = torch.zeros(res, res, res, 21)  # float32 like the network output: gamma ties stay ties
    cube_w[coords[:, 0], coords[:, 1], coords[:, 2]] = weights

    lattice = torch.stack(torch.meshgrid(*[torch.arange(r1)] * 3, indexing="ij"), -1).double()
    pos = lattice / res - 0.5 + (1 - 1e-8) / (2 * res) * torch.tanh(grid[..., 1:4])
    s = grid[..., 0]
    color = torch.sigmoid(grid[..., 4:]) if use_color else None

    def case_of(c):
        x, y, z = c
        return sum(int(s[x + dx, y + dy, z + dz] < 0) << k for k, (dx, dy, dz) in enumerate(CUBE_CORNERS))

    surface = [(x, y, z) for x in range(res) for y in range(res) for z in range(res)
               if 0 < case_of((x, y, z)) < 255]
    base_case = {c: case_of(c) for c in surface}
    case = dict(base_case)
    for c, cid in base_case.items():
        chk = CHECK_TABLE[cid]
        if chk[0]:
            nb = (c[0] + chk[1], c[1] + chk[2], c[2] + chk[3])
            if nb in base_case and CHECK_TABLE[base_case[nb]][0]:
                case[c] = chk[4]

    vertices, colors, gammas = [], [], []
    edge_users = defaultdict(list)  # edge (a, b) as lattice points -> [(cube, dual vertex)]
    for c in surface:  # lexicographic = dense cube order
        x, y, z = c
        w = cube_w[x, y, z]
        beta = torch.tanh(w[:12].double()) * 0.99 + 1
        alpha = torch.tanh(w[12:20].double()) * 0.99 + 1
        gamma = torch.sigmoid(w[20]) * 0.99 + 0.005
        corner = [(x + dx, y + dy, z + dz) for dx, dy, dz in CUBE_CORNERS]
        for group in DMC_TABLE[case[c]]:
            edges = [e for e in group if e >= 0]
            if not edges:
                continue
            acc_p, acc_c, acc_b = 0.0, 0.0, 0.0
            for e in edges:
                i, j = CUBE_EDGES[e]
                a, b = corner[i], corner[j]
                si, sj = s[a] * alpha[i], s[b] * alpha[j]
                t = sj / (sj - si)  # weight of end a
                acc_p = acc_p + beta[e] * (t * pos[a] + (1 - t) * pos[b])
                if use_color:
                    acc_c = acc_c + beta[e] * (t * color[a] + (1 - t) * color[b])
                acc_b = acc_b + beta[e]
                edge_users[(a, b)].append((c, len(vertices)))
            vertices.append(acc_p / acc_b)
            colors.append(acc_c / acc_b if use_color else None)
            gammas.append(gamma)

    faces = []
    for (a, b), users in sorted(edge_users.items()):
        if len(users) != 4 or (s[a] < 0) == (s[b] < 0):
            continue
        q = [v for _, v in sorted(users)]
        quad = [q[0], q[1], q[3], q[2]] if s[a] > 0 else [q[2], q[3], q[1], q[0]]
        if gammas[quad[0]] * gammas[quad[2]] > gammas[quad[1]] * gammas[quad[3]]:
            faces += [[quad[0], quad[1], quad[2]], [quad[0], quad[2], quad[3]]]
        else:
            faces += [[quad[0], quad[1], quad[3]], [quad[3], quad[1], quad[2]]]
    v = torch.stack(vertices).float() if vertices else torch.zeros(0, 3)
    col = torch.stack(colors).float() if (vertices and use_color) else None
    f = torch.tensor(faces, dtype=torch.long).reshape(-1, 3)
    return v, f, col


def random_cubes(seed, res, n, clustered=False):
    g = torch.Generator().manual_seed(seed)
    if clustered:  # a blob touching the grid boundary, to exercise edges shared with absent cubes
        lattice = torch.stack(torch.meshgrid(*[torch.arange(res)] * 3, indexing="ij"), -1).reshape(-1, 3)
        centre = torch.tensor([res * 0.8, res * 0.5, res * 0.3])
        d = (lattice.float() - centre).norm(dim=1) + torch.rand(len(lattice), generator=g) * 2
        coords = lattice[d < res * 0.45]
    else:
        keys = torch.randperm(res ** 3, generator=g)[:n]
        coords = torch.stack([keys // (res * res), (keys // res) % res, keys % res], 1)
    feats = torch.randn(len(coords), 101, generator=g)
    if clustered:
        feats[:, :8] = feats[:, :8] * 0.3 + 0.2  # mostly-positive field with negative pockets
    return coords, feats


@pytest.mark.parametrize("seed,res,n,clustered,use_color", [
    (0, 16, 900, False, True),
    (1, 16, 2500, False, True),
    (2, 16, 0, True, True),
    (3, 8, 300, False, False),
])
def test_sparse_matches_dense_reference(seed, res, n, clustered, use_color):
    coords, feats = random_cubes(seed, res, n, clustered)
    if not use_color:
        feats = feats[:, :53].contiguous()
    mesh = SparseFlexiCubesExtractor(res, use_color=use_color)(Cubes(coords, feats))
    v, f, col = dense_reference(coords, feats, res, use_color=use_color)
    assert f.shape[0] > 100
    max_dist, col_err = compare_meshes(mesh, v, f, col)
    assert max_dist < 1e-6
    assert col_err < 1e-6
    if not use_color:
        assert mesh.vertex_attrs is None


# ----------------------------------------------------------------------------------------------
# Geometry sanity on an analytic field

def sphere_cubes(res, radius, shell=None):
    """Cubes of a solid ball (or of a shell band) with the exact signed distance at their corners."""
    lattice = torch.stack(torch.meshgrid(*[torch.arange(res)] * 3, indexing="ij"), -1).reshape(-1, 3)
    centre_dist = ((lattice.float() + 0.5) / res - 0.5).norm(dim=1) - radius
    keep = centre_dist < 2.0 / res if shell is None else centre_dist.abs() < shell
    coords = lattice[keep]
    corners = torch.tensor(CUBE_CORNERS)
    p = (coords[:, None, :] + corners[None]).float() / res - 0.5
    feats = torch.zeros(len(coords), 101)
    feats[:, :8] = (p.norm(dim=-1) - radius) + 1.0 / res  # cancels the extractor's sdf bias
    feats[:, 53:101] = 2.0  # colour logits -> sigmoid(2)
    return coords, feats


def test_sphere_on_sparse_band_is_closed():
    trimesh = pytest.importorskip("trimesh")
    res, radius = 32, 0.3
    coords, feats = sphere_cubes(res, radius)
    assert len(coords) < 0.6 * res ** 3
    mesh = SparseFlexiCubesExtractor(res)(Cubes(coords, feats))
    assert mesh.success
    tm = trimesh.Trimesh(mesh.vertices.numpy(), mesh.faces.numpy(), process=False)
    assert tm.is_watertight and tm.is_winding_consistent
    assert len(tm.split(only_watertight=False)) == 1
    radii = mesh.vertices.norm(dim=1)
    assert (radii - radius).abs().max().item() < 0.25 / res
    assert tm.volume == pytest.approx(4 / 3 * math.pi * radius ** 3, rel=0.02)  # outward normals
    assert torch.allclose(mesh.vertex_attrs, torch.full_like(mesh.vertex_attrs, torch.sigmoid(torch.tensor(2.0)).item()))
    # face normals point away from the centre
    centres = mesh.vertices[mesh.faces].mean(1)
    assert ((mesh.face_normal[:, 0] * centres).sum(-1) > 0).float().mean() > 0.99


def test_band_gives_two_closed_surfaces():
    trimesh = pytest.importorskip("trimesh")
    res, radius = 32, 0.3
    coords, feats = sphere_cubes(res, radius, shell=2.0 / res)
    mesh = SparseFlexiCubesExtractor(res)(Cubes(coords, feats))
    tm = trimesh.Trimesh(mesh.vertices.numpy(), mesh.faces.numpy(), process=False)
    # vertices missing from the band count as outside, so the band's inner side is a second surface
    parts = tm.split(only_watertight=False)
    assert tm.is_watertight and len(parts) == 2


def test_training_mode_splits_quads_around_centres():
    coords, feats = random_cubes(5, 12, 700)
    extractor = SparseFlexiCubesExtractor(12)
    plain = extractor(Cubes(coords, feats))
    train = extractor(Cubes(coords, feats), training=True)
    n_vd, n_quads = plain.vertices.shape[0], plain.faces.shape[0] // 2
    assert train.vertices.shape[0] == n_vd + n_quads
    assert train.faces.shape[0] == 4 * n_quads
    assert torch.equal(train.vertices[:n_vd], plain.vertices)
    assert torch.equal(train.vertex_attrs[:n_vd], plain.vertex_attrs)
    assert (train.faces[:, 2] >= n_vd).all()
    assert torch.isfinite(train.reg_loss) and train.reg_loss > 0
    assert train.tsdf_v.shape[1] == 3 and train.tsdf_s.shape[0] == train.tsdf_v.shape[0]


def test_training_mode_is_differentiable():
    coords, feats = random_cubes(6, 8, 200)
    feats.requires_grad_(True)
    mesh = SparseFlexiCubesExtractor(8)(Cubes(coords, feats), training=True)
    (mesh.vertices.sum() + mesh.vertex_attrs.sum() + mesh.reg_loss).backward()
    grad = feats.grad
    assert torch.isfinite(grad).all()
    for block in (slice(0, 8), slice(8, 32), slice(32, 53), slice(53, 101)):
        assert grad[:, block].abs().sum() > 0


def test_layout_and_empty_inputs():
    with_color, without = SparseFlexiCubesExtractor(256), SparseFlexiCubesExtractor(256, use_color=False)
    assert with_color.feats_channels == 101 and without.feats_channels == 53
    assert with_color.sdf_bias == pytest.approx(-1 / 256)
    # all corners outside: no surface
    coords = torch.tensor([[3, 4, 5], [3, 4, 6]])
    feats = torch.randn(2, 101)
    feats[:, :8] = 1.0
    mesh = SparseFlexiCubesExtractor(16)(Cubes(coords, feats))
    assert not mesh.success and mesh.vertices.shape == (0, 3) and mesh.faces.shape == (0, 3)
    assert mesh.vertex_attrs.shape == (0, 6)
    mesh = SparseFlexiCubesExtractor(16)(Cubes(torch.zeros(0, 3, dtype=torch.int32), torch.zeros(0, 101)))
    assert not mesh.success
    # a single inside cube becomes a closed blob (its neighbours' default corners are outside)
    feats[:, :8] = -1.0
    mesh = SparseFlexiCubesExtractor(16)(Cubes(coords[:1], feats[:1]))
    assert mesh.success and mesh.vertices.shape[0] == 26  # 6 face + 12 edge + 8 corner neighbours


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_cuda_matches_cpu():
    coords, feats = random_cubes(7, 16, 2000)
    cpu = SparseFlexiCubesExtractor(16)(Cubes(coords, feats))
    gpu = SparseFlexiCubesExtractor(16)(Cubes(coords.cuda(), feats.cuda()))
    assert torch.equal(gpu.faces.cpu(), cpu.faces)
    assert (gpu.vertices.cpu() - cpu.vertices).abs().max() < 1e-5
    assert (gpu.vertex_attrs.cpu() - cpu.vertex_attrs).abs().max() < 1e-5
