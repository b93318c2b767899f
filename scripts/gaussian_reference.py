"""A reference rasteriser for 3D Gaussians, written from the 3DGS equations (numpy only).

Kerbl et al. 2023, "3D Gaussian Splatting for Real-Time Radiance Field Rendering": each
Gaussian (mean mu, covariance Sigma = R S S^T R^T) is projected with the EWA splatting
approximation, Sigma' = J W Sigma W^T J^T (W the view rotation, J the Jacobian of the
perspective projection at the Gaussian's centre), and pixels composite the splats front to
back by centre depth: C = sum_i c_i a_i prod_{j<i} (1 - a_j), with
a_i = min(0.99, o_i exp(-d^T Sigma'^-1 d / 2)), splats under 1/255 skipped, each cut at 3
sigma, and a pixel done once its transmittance drops under 1e-4. Colours are composited as
the PLY stores them (sRGB display values), as 3DGS does.

The only departure: 3DGS dilates Sigma' by 0.3 px^2 against aliasing; here it is 1/12 px^2,
the variance of the one-pixel box filter that the Blender renders it is compared with use
(scripts/splat_fidelity.py), so both images mean the same pixel footprint.
"""

import math

import numpy as np

ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4
PIXEL_VARIANCE = 1.0 / 12.0


class Camera:
    """A pinhole camera as Blender defines one: looking down its local -z with +y up.

    ``matrix_world``: 4x4 camera-to-world; ``lens_mm`` / ``sensor_mm``: focal length and sensor
    width (Blender's defaults 50 / 36, sensor fit on the width of a square image)."""

    def __init__(self, matrix_world, resolution, lens_mm=50.0, sensor_mm=36.0):
        self.matrix_world = np.asarray(matrix_world, dtype=np.float64)
        self.resolution = int(resolution)
        self.focal_px = self.resolution * lens_mm / sensor_mm

    @classmethod
    def look_at(cls, eye, target, resolution, lens_mm=50.0, up=(0.0, 0.0, 1.0)):
        eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
        back = eye - target
        back /= np.linalg.norm(back)
        right = np.cross(up, back)
        right /= np.linalg.norm(right)
        true_up = np.cross(back, right)
        m = np.eye(4)
        m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, true_up, back, eye
        return cls(m, resolution, lens_mm)


def quat_to_matrix(q):
    """(w, x, y, z) unit quaternions [N, 4] -> rotation matrices [N, 3, 3]."""
    w, x, y, z = np.moveaxis(np.asarray(q, dtype=np.float64), -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def project(position, scale, rotation, camera):
    """EWA projection: (pixel centres [N, 2], 2D covariances [N, 2, 2] in px^2, depths [N])."""
    world_to_cam = np.linalg.inv(camera.matrix_world)
    w_rot = world_to_cam[:3, :3]
    t = position @ w_rot.T + world_to_cam[:3, 3]
    depth = -t[:, 2]
    f = camera.focal_px
    half = camera.resolution / 2.0
    safe = np.where(depth > 1e-6, depth, 1e-6)
    centres = np.stack([half + f * t[:, 0] / safe, half - f * t[:, 1] / safe], axis=1)
    # d(u, v) / d(t_x, t_y, t_z) with depth = -t_z
    jac = np.zeros((len(t), 2, 3))
    jac[:, 0, 0] = f / safe
    jac[:, 0, 2] = f * t[:, 0] / safe ** 2
    jac[:, 1, 1] = -f / safe
    jac[:, 1, 2] = -f * t[:, 1] / safe ** 2
    rs = quat_to_matrix(rotation) * scale[:, None, :]  # R S
    cov3 = rs @ np.swapaxes(rs, 1, 2)
    jw = jac @ w_rot
    cov2 = jw @ cov3 @ np.swapaxes(jw, 1, 2)
    cov2[:, 0, 0] += PIXEL_VARIANCE
    cov2[:, 1, 1] += PIXEL_VARIANCE
    return centres, cov2, depth


def render(gaussians, camera, background=(0.0, 0.0, 0.0)):
    """Composite the Gaussians front to back -> float image [H, W, 3] in the colours' own space.

    ``gaussians``: dict of arrays position [N, 3], scale [N, 3] (sigmas), rotation [N, 4]
    (w, x, y, z), opacity [N], color [N, 3]."""
    res = camera.resolution
    centres, cov2, depth = project(gaussians["position"], gaussians["scale"], gaussians["rotation"], camera)
    opacity, color = np.asarray(gaussians["opacity"], dtype=np.float64), np.asarray(gaussians["color"])[:, :3]
    det = cov2[:, 0, 0] * cov2[:, 1, 1] - cov2[:, 0, 1] ** 2
    visible = (depth > 1e-3) & (det > 0) & (opacity >= ALPHA_MIN)
    inv = np.stack([cov2[:, 1, 1], -cov2[:, 0, 1], cov2[:, 0, 0]], axis=1) / np.where(det > 0, det, 1)[:, None]
    radius = 3.0 * np.sqrt(np.maximum(cov2[:, 0, 0], cov2[:, 1, 1]))
    image = np.zeros((res, res, 3))
    transmittance = np.ones((res, res))
    for i in np.argsort(depth):
        if not visible[i]:
            continue
        cx, cy, r = centres[i, 0], centres[i, 1], radius[i]
        x0, x1 = max(0, int(math.floor(cx - r))), min(res, int(math.ceil(cx + r)) + 1)
        y0, y1 = max(0, int(math.floor(cy - r))), min(res, int(math.ceil(cy + r)) + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        dx = np.arange(x0, x1) + 0.5 - cx
        dy = (np.arange(y0, y1) + 0.5 - cy)[:, None]
        a, b, c = inv[i]
        power = -0.5 * (a * dx * dx + 2 * b * dx * dy + c * dy * dy)
        alpha = np.minimum(ALPHA_MAX, opacity[i] * np.exp(power))
        alpha = np.where((alpha >= ALPHA_MIN) & (power <= 0), alpha, 0.0)
        t = transmittance[y0:y1, x0:x1]
        alpha = np.where(t >= T_MIN, alpha, 0.0)
        image[y0:y1, x0:x1] += (t * alpha)[..., None] * color[i]
        transmittance[y0:y1, x0:x1] = t * (1 - alpha)
    return image + transmittance[..., None] * np.asarray(background, dtype=np.float64)
