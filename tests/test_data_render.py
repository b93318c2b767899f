"""Condition-image renderer."""
import time

import numpy as np

from trellis_lab.data.render import camera_frame, render, render_views, surface_cloud
from trellis_lab.data.shapes import CATEGORIES, build_object
from trellis_lab.data.voxelize import voxelize


def _project(points, yaw, pitch, size, radius=2.0, fov=40.0):
    o, r, u, f = camera_frame(yaw, pitch, radius)
    rel = points - o
    z = rel @ f
    foc = size / (2 * np.tan(np.deg2rad(fov) / 2))
    return (rel @ r) / z * foc + size / 2, -(rel @ u) / z * foc + size / 2


def test_render_rgba_alpha_covers_object():
    for i, cat in enumerate(CATEGORIES):
        obj = build_object(cat, "green", i)
        yaw, pitch = 30.0 * i, -5.0 + 5 * i
        img = render(obj, yaw, pitch, size=128)
        assert img.shape == (128, 128, 4) and img.dtype == np.uint8
        alpha = img[..., 3] > 0
        assert 0.01 < alpha.mean() < 0.6, (cat, alpha.mean())
        assert (img[..., 3][~alpha] == 0).all()  # transparent background
        # every voxel centre projects onto the silhouette (allowing a pixel of slack)
        v = voxelize(obj, features=False)
        x, y = _project(v.centers(), yaw, pitch, 128)
        a = np.pad(alpha, 1)
        grown = a[1:-1, 1:-1] | a[:-2, 1:-1] | a[2:, 1:-1] | a[1:-1, :-2] | a[1:-1, 2:]
        xi, yi = np.clip(x.astype(int), 0, 127), np.clip(y.astype(int), 0, 127)
        assert grown[yi, xi].mean() > 0.97, cat
        # the object's main colour shows (a house roof seen from above may cover more)
        rgb = img[..., :3][alpha].astype(float)
        assert np.mean((rgb[:, 1] > rgb[:, 0]) & (rgb[:, 1] > rgb[:, 2])) > 0.3, cat


def test_render_options_and_speed():
    obj = build_object("car", "red", 1)
    img = render(obj, 135, 20, size=256, background=(255, 255, 255))
    assert img.shape == (256, 256, 4)
    bg = img[..., 3] == 0
    assert (img[..., :3][bg] == 255).all()
    ortho = render(obj, 90, 0, size=160, ortho=True)
    assert (ortho[..., 3] > 0).mean() > 0.05
    aa = render(obj, size=128, ssaa=2)
    assert ((aa[..., 3] > 0) & (aa[..., 3] < 255)).any()  # antialiased edge
    views = render_views(obj, [(0, 10), (90, 10), (180, 10)], size=96)
    assert len(views) == 3 and not np.array_equal(views[0], views[1])
    # < 0.5 s per 256 px image (CPU time of this process, best of 3)
    times = []
    for _ in range(3):
        t = time.process_time()
        render(obj, 45, 30, size=256)
        times.append(time.process_time() - t)
    assert min(times) < 0.5, times


def test_surface_cloud_on_surface():
    obj = build_object("snowman", "white", 0)
    c = surface_cloud(obj, sub=2)
    assert len(c.points) > 5000
    assert np.abs(obj.shape.sdf(c.points)).max() < 0.5 / 64
    assert np.allclose(np.linalg.norm(c.normals, axis=1), 1, atol=1e-3)


def test_render_voxels_and_meshes():
    from trellis_lab.data.render import cloud_from_mesh, cloud_from_voxels

    obj = build_object("tree", "pink", 2)
    v = voxelize(obj)
    img = render(cloud_from_voxels(v.coords, v.rgb), 135, 25, size=96)
    ref = render(obj, 135, 25, size=96)
    a, b = img[..., 3] > 0, ref[..., 3] > 0
    assert (a & b).sum() / (a | b).sum() > 0.8  # same silhouette as the implicit render
    # a mesh with inward normals still renders with culling off
    import trimesh

    m = trimesh.creation.icosphere(2, radius=0.4)
    m.invert()
    cloud = cloud_from_mesh(m.vertices, m.faces, np.tile([[0.1, 0.2, 0.9]], (len(m.vertices), 1)), n_points=40_000)
    img = render(cloud, size=96, backface_cull=False)
    cov = (img[..., 3] > 0).mean()
    assert 0.25 < cov < 0.5  # a disc of radius ~0.4/(2 tan 20°) of the half-width
