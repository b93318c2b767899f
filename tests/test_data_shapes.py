"""Procedural objects and voxelisation: determinism, sizes, features, colours."""
import numpy as np
import pytest

from trellis_lab.data.metrics import dominant_color
from trellis_lab.data.shapes import CATEGORIES, build_object, sample_object
from trellis_lab.data.voxelize import (FEATURE_CHANNELS, FEATURE_LAYOUT, RESOLUTION, shell_of, subvoxel_sdf,
                                           surface_points, voxelize)


def test_same_seed_same_object_and_voxels():
    a, b = sample_object(123), sample_object(123)
    assert (a.category, a.color, a.params) == (b.category, b.color, b.params)
    va, vb = voxelize(a), voxelize(b)
    np.testing.assert_array_equal(va.coords, vb.coords)
    np.testing.assert_array_equal(va.feats, vb.feats)
    assert a.caption() == b.caption()


def test_different_seeds_differ():
    sigs = set()
    for s in range(12):
        o = sample_object(s, category="chair")
        sigs.add((o.color, len(voxelize(o, features=False).coords)))
    assert len(sigs) >= 10


@pytest.mark.parametrize("category", CATEGORIES)
def test_category_voxelises_sensibly(category):
    for seed in range(2):
        obj = build_object(category, "blue", seed)
        v = voxelize(obj)
        n = len(v.coords)
        assert 500 <= n <= 40_000, (category, n)
        assert v.coords.dtype == np.int32 and v.coords.shape == (n, 3)
        assert v.coords.min() >= 0 and v.coords.max() < RESOLUTION
        lo, hi = v.coords.min(0), v.coords.max(0)
        extent = hi - lo + 1
        assert 52 <= extent.max() <= 60, (category, extent)  # largest side ~0.9 of the cube
        centre = (lo + hi) / 2
        assert np.all(np.abs(centre - (RESOLUTION - 1) / 2) <= 1.5), (category, centre)
        # dense structure == sparse coords, and it is a shell of the solid
        assert v.occupancy.sum() == n and v.occupancy[tuple(v.coords.T)].all()
        np.testing.assert_array_equal(v.occupancy, shell_of(v.solid))
        # features
        assert v.feats.shape == (n, FEATURE_CHANNELS) and v.feats.dtype == np.float32
        assert np.isfinite(v.feats).all()
        rgb = v.feats[:, FEATURE_LAYOUT["rgb"]]
        assert rgb.min() >= 0 and rgb.max() <= 1
        nrm = np.linalg.norm(v.feats[:, FEATURE_LAYOUT["normal"]], axis=1)
        assert np.mean(np.abs(nrm - 1) < 1e-3) > 0.98
        sdf = v.feats[:, FEATURE_LAYOUT["sdf"]]
        assert sdf.min() > -0.51 and sdf.max() <= 0.51
        assert np.abs(v.feats[:, FEATURE_LAYOUT["corners"]]).max() <= 1.0
        # normals point outwards: stepping along the normal leaves the solid
        step = v.centers() + 1.5 / RESOLUTION * v.normals
        assert np.mean(obj.shape.sdf(step) > 0) > 0.9
        # the caption's colour is the object's dominant colour
        assert dominant_color(rgb) == "blue"


def test_main_colour_dominates_for_every_colour():
    for i, c in enumerate(["red", "white", "black", "green", "brown", "gray", "yellow", "pink", "orange",
                           "purple", "blue", "red"]):
        obj = build_object(CATEGORIES[i], c, 40 + i)
        assert dominant_color(voxelize(obj).rgb) == c, (obj.category, c, obj.params)


def test_fine_supervision():
    obj = build_object("mug", "red", 3)
    v = voxelize(obj)
    p, n, c = surface_points(obj, v.coords, per_voxel=1, seed=0)
    assert len(p) > 0.8 * len(v.coords)
    assert np.abs(obj.shape.sdf(p)).max() < 0.1 / RESOLUTION
    assert np.allclose(np.linalg.norm(n, axis=1), 1, atol=1e-3)
    assert c.shape == p.shape and c.min() >= 0 and c.max() <= 1
    sel = v.coords[:300]
    sub = subvoxel_sdf(obj, sel, sub=2)
    assert sub.shape == (300, 27)
    # the lattice corners (0/2 of each axis) agree with the corner feature channels
    corner_idx = [a * 9 + b * 3 + c for a in (0, 2) for b in (0, 2) for c in (0, 2)]
    np.testing.assert_allclose(np.clip(sub[:, corner_idx] * RESOLUTION, -1, 1),
                               v.feats[:300, FEATURE_LAYOUT["corners"]], atol=1e-4)
    # the surface passes through every shell voxel: its lattice has both signs (or a zero)
    s = subvoxel_sdf(obj, v.coords, sub=2)
    assert np.mean((s.min(1) <= 0) & (s.max(1) >= 0)) > 0.97
