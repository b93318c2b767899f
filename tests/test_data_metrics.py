"""Evaluation metrics: Chamfer, IoU, dominant colour, nearest-category classifier."""
import numpy as np
import torch

from trellis_lab.data.metrics import (CategoryClassifier, chamfer_distance, color_histogram, dominant_color,
                                          mesh_dominant_color, solid_iou, solid_occupancy, voxel_iou)
from trellis_lab.data.palette import COLOR_NAMES, PALETTE, jittered, nearest_color_name
from trellis_lab.data.shapes import CATEGORIES, sample_object
from trellis_lab.data.voxelize import voxelize


def test_chamfer_and_iou():
    a = np.argwhere(np.ones((6, 6, 6), bool)).astype(np.float32)
    assert chamfer_distance(a, a) == 0
    assert abs(chamfer_distance(a, a + [0, 0, 1]) - 1 / 6) < 1e-6  # only one layer moves by 1
    assert abs(chamfer_distance(a, a + [0, 0, 10]) - 7.5) < 1e-5  # mean of 10-z over z = 0..5
    b = a + np.array([3.0, 0, 0])
    assert abs(chamfer_distance(a, b) - chamfer_distance(b, a)) < 1e-6
    batched = np.c_[np.zeros(len(a)), a]  # (batch, x, y, z) coords accepted
    assert chamfer_distance(batched, a) == 0
    assert voxel_iou(a.astype(int), a.astype(int)) == 1.0
    assert voxel_iou(a.astype(int), a.astype(int) + 20) == 0.0
    assert abs(voxel_iou(a.astype(int), (a + [3, 0, 0]).astype(int)) - 108 / 324) < 1e-9
    g = np.zeros((64, 64, 64), bool)
    g[tuple(a.astype(int).T)] = True
    assert voxel_iou(g, torch.from_numpy(a.astype(int))) == 1.0


def _box_shell(lo, hi, open_top=False):
    g = np.zeros((64, 64, 64), bool)
    g[lo:hi, lo:hi, lo:hi] = True
    g[lo + 1:hi - 1, lo + 1:hi - 1, lo + 1:(hi if open_top else hi - 1)] = False
    return g


def test_solid_occupancy_fills_closed_shells_and_keeps_open_cavities():
    shell = _box_shell(10, 30)
    solid = solid_occupancy(np.argwhere(shell))
    assert solid.sum() == 20 ** 3 and solid[shell].all()
    pinhole = shell.copy()
    pinhole[20, 20, 29] = False  # a hole in the lid: a flood fill from outside would empty the box
    # only the grid line through the hole is lost (19 voxels), not the interior (18³ = 5832)
    assert solid_occupancy(pinhole).sum() == 20 ** 3 - 19
    cup = _box_shell(10, 30, open_top=True)
    assert solid_occupancy(cup).sum() == cup.sum()  # the open cavity stays air
    a, b = np.argwhere(shell), np.argwhere(_box_shell(11, 31))  # offset by one voxel on every axis
    assert voxel_iou(a, b) < 0.15 and solid_iou(a, b) > 0.7
    assert solid_iou(a, a) == 1.0 and solid_iou(a, a + 30) == 0.0


def test_dominant_colour():
    rng = np.random.default_rng(0)
    for name in COLOR_NAMES:
        assert nearest_color_name(jittered(name, rng)) == name
        cols = np.stack([jittered(name, rng) for _ in range(30)] + [jittered("white", rng) for _ in range(10)])
        if name != "white":
            assert dominant_color(cols) == name
    cols = np.array([PALETTE["red"]] * 3 + [PALETTE["blue"]] * 5)
    assert dominant_color(cols) == "blue"
    assert dominant_color(cols, weights=[10, 10, 10, 1, 1, 1, 1, 1]) == "red"
    assert abs(color_histogram((cols * 255).astype(np.uint8))["blue"] - 5 / 8) < 1e-9
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 5], [1, 0, 5]], float)
    f = np.array([[0, 1, 2], [3, 4, 3]])
    vc = np.array([PALETTE["green"]] * 3 + [PALETTE["pink"]] * 2)
    assert mesh_dominant_color(v, f, vc) == "green"


def test_nearest_category_classifier_on_fresh_samples():
    clf = CategoryClassifier(per_category=6)
    correct, total = 0, 0
    for i in range(3 * len(CATEGORIES)):
        obj = sample_object(50_000 + i, category=CATEGORIES[i % len(CATEGORIES)])
        coords = voxelize(obj, features=False).coords
        correct += clf.classify(coords) == obj.category
        total += 1
    assert correct / total >= 0.9, correct / total
    d = clf.distances(coords)
    assert set(d) == set(CATEGORIES) and all(np.isfinite(list(d.values())))
