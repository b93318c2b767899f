"""The numpy reference rasteriser of scripts/gaussian_reference.py against closed forms."""

import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))

import gaussian_reference as ref  # noqa: E402


def one(position, sigma, opacity, color, rotation=(1.0, 0.0, 0.0, 0.0)):
    return {"position": np.array([position], float), "scale": np.array([sigma], float) * np.ones((1, 3)),
            "rotation": np.array([rotation], float), "opacity": np.array([opacity], float),
            "color": np.array([color], float)}


def test_single_gaussian_profile_is_the_projected_gaussian():
    cam = ref.Camera.look_at((0, -3, 0), (0, 0, 0), resolution=101)
    img = ref.render(one((0, 0, 0), 0.1, 0.9, (1, 1, 1)), cam)
    sigma_px2 = (cam.focal_px * 0.1 / 3) ** 2 + ref.PIXEL_VARIANCE
    for k in (0, 3, 6, 9):
        want = 0.9 * math.exp(-0.5 * k * k / sigma_px2)
        assert abs(img[50, 50 + k, 0] - want) < 1e-6 and abs(img[50 - k, 50, 1] - want) < 1e-6


def test_rotated_anisotropic_gaussian_turns_on_screen():
    """sigma (0.3, 0.05, 0.05) turned 90 degrees about the view axis: long vertically, short horizontally."""
    q = (math.cos(math.pi / 4), 0.0, math.sin(math.pi / 4), 0.0)  # about y, the viewing axis here
    g = one((0, 0, 0), 1.0, 0.9, (1, 1, 1), q)
    g["scale"] = np.array([[0.3, 0.05, 0.05]])
    cam = ref.Camera.look_at((0, -3, 0), (0, 0, 0), resolution=101)
    img = ref.render(g, cam)
    _, cov, _ = ref.project(g["position"], g["scale"], g["rotation"], cam)
    px = cam.focal_px / 3
    assert np.allclose(cov[0], np.diag([(0.05 * px) ** 2, (0.3 * px) ** 2]) + ref.PIXEL_VARIANCE * np.eye(2), atol=1e-6)
    assert img[50 - 10, 50, 0] > 0.5 > img[50, 50 + 10, 0]


def test_front_to_back_compositing_whatever_the_input_order():
    front = one((0, -0.5, 0), 0.2, 0.8, (1, 0, 0))
    back = one((0, 0.5, 0), 0.2, 0.8, (0, 0, 1))
    both = {k: np.concatenate([back[k], front[k]]) for k in front}
    cam = ref.Camera.look_at((0, -3, 0), (0, 0, 0), resolution=51)
    img = ref.render(both, cam, background=(0, 1, 0))
    centre = img[25, 25]
    assert np.allclose(centre, [0.8, 0.2 * 0.2, 0.2 * 0.8], atol=1e-6)  # red over blue over the green background
    swapped = {k: both[k][::-1] for k in both}
    assert np.allclose(ref.render(swapped, cam, background=(0, 1, 0)), img)
