"""3D Gaussians as the Gaussian decoder emits them, with the reference's activations and an
INRIA-3DGS PLY writer.

The decoder predicts raw (pre-activation) fields; the activations add fixed biases so that a
zero output means "small, faint, unrotated Gaussian at the voxel": scale
``softplus⁻¹(scaling_bias)`` (or ``log`` with the 'exp' activation), opacity
``logit(opacity_bias)`` and the identity quaternion ``[1, 0, 0, 0]``.
"""

from __future__ import annotations

import os
import tempfile
from typing import Optional, Sequence

import numpy as np
import torch

SH_C0 = 0.28209479177387814  # degree-0 spherical harmonic, 1 / (2·sqrt(pi))

# The reference's PLY rotation, applied as p' = T·p: (x, y, z) -> (x, -z, y). Object "up" (+z)
# ends up along -y, the y-down camera convention of COLMAP/INRIA 3DGS scenes and viewers.
Z_UP_TO_Y_UP = ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, 1.0, 0.0))
DEFAULT_AABB = (-0.5, -0.5, -0.5, 1.0, 1.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Quaternion helpers (w, x, y, z), numpy, batched over leading dimensions

def quaternion_to_matrix(q: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rotation matrices [..., 3, 3] of quaternions [..., 4] (w, x, y, z); normalises first."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), eps)
    w, x, y, z = np.moveaxis(q, -1, 0)
    m = np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], axis=-1)
    return m.reshape(*q.shape[:-1], 3, 3)


def matrix_to_quaternion(m: np.ndarray) -> np.ndarray:
    """Unit quaternions [..., 4] (w, x, y, z) of rotation matrices [..., 3, 3].

    Uses the largest of |w|, |x|, |y|, |z| as pivot (stable for every rotation) and returns it
    positive, the same sign convention as the reference's utils3d."""
    m = np.asarray(m, dtype=np.float64)
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    sq = np.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22,
                   1 - m00 + m11 - m22, 1 - m00 - m11 + m22], axis=-1)
    pivot = np.argmax(sq, axis=-1)
    s = 2.0 * np.sqrt(np.maximum(np.take_along_axis(sq, pivot[..., None], -1)[..., 0], 1e-300))
    # Row k below equals 4·q_k·q; dividing by s = 4·|q_k| gives q with q_k > 0.
    cands = np.stack([
        np.stack([s * s / 4, m21 - m12, m02 - m20, m10 - m01], -1),
        np.stack([m21 - m12, s * s / 4, m01 + m10, m02 + m20], -1),
        np.stack([m02 - m20, m01 + m10, s * s / 4, m12 + m21], -1),
        np.stack([m10 - m01, m02 + m20, m12 + m21, s * s / 4], -1),
    ], axis=-2)
    q = np.take_along_axis(cands, pivot[..., None, None], -2)[..., 0, :] / s[..., None]
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def _inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


def _logit(x: torch.Tensor) -> torch.Tensor:
    return torch.log(x / (1 - x))


class Gaussians:
    """Raw Gaussian fields plus the reference's activations (``get_*``) and PLY I/O.

    Raw fields: ``_xyz`` [N,3] in [0,1]³ of the aabb, ``_features_dc`` [N,1,3],
    ``_features_rest`` [N,K,3] or None, ``_scaling`` [N,3], ``_rotation`` [N,4] (w,x,y,z),
    ``_opacity`` [N,1]. As in the reference, ``opacity_bias`` and ``scale_bias`` hold the
    *pre-activation* biases after construction; ``init_params`` keeps the constructor values.
    """

    def __init__(
        self,
        aabb: Sequence[float] = DEFAULT_AABB,
        sh_degree: int = 0,
        mininum_kernel_size: float = 0.0,
        scaling_bias: float = 0.01,
        opacity_bias: float = 0.1,
        scaling_activation: str = "exp",
        device="cpu",
    ):
        if scaling_activation not in ("exp", "softplus"):
            raise ValueError(f"scaling_activation must be 'exp' or 'softplus', got {scaling_activation!r}")
        self.init_params = {
            "aabb": list(aabb),
            "sh_degree": sh_degree,
            "mininum_kernel_size": mininum_kernel_size,
            "scaling_bias": scaling_bias,
            "opacity_bias": opacity_bias,
            "scaling_activation": scaling_activation,
        }
        self.sh_degree = sh_degree
        self.active_sh_degree = sh_degree
        self.mininum_kernel_size = mininum_kernel_size
        self.scaling_bias = scaling_bias
        self.scaling_activation_type = scaling_activation
        self.device = torch.device(device)
        self.aabb = torch.tensor(list(aabb), dtype=torch.float32, device=self.device)
        # Biases are computed in float32 like the reference, then kept as Python floats (exactly
        # representable in float32) so they follow the fields to any device.
        if scaling_activation == "exp":
            self.scaling_activation = torch.exp
            self.inverse_scaling_activation = torch.log
        else:
            self.scaling_activation = torch.nn.functional.softplus
            self.inverse_scaling_activation = _inverse_softplus
        self.scale_bias = float(self.inverse_scaling_activation(torch.tensor(scaling_bias, dtype=torch.float32)))
        self.opacity_bias = float(_logit(torch.tensor(opacity_bias, dtype=torch.float32)))

        self._xyz: Optional[torch.Tensor] = None
        self._features_dc: Optional[torch.Tensor] = None
        self._features_rest: Optional[torch.Tensor] = None
        self._scaling: Optional[torch.Tensor] = None
        self._rotation: Optional[torch.Tensor] = None
        self._opacity: Optional[torch.Tensor] = None

    # ----------------------------------------------------------------- activated fields
    def _rots_bias(self, like: torch.Tensor) -> torch.Tensor:
        return torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=like.dtype, device=like.device)

    @property
    def get_xyz(self) -> torch.Tensor:
        aabb = self.aabb.to(self._xyz.device)
        return self._xyz * aabb[None, 3:] + aabb[None, :3]

    @property
    def get_scaling(self) -> torch.Tensor:
        scales = self.scaling_activation(self._scaling + self.scale_bias)
        return torch.sqrt(torch.square(scales) + self.mininum_kernel_size ** 2)

    @property
    def get_rotation(self) -> torch.Tensor:
        return torch.nn.functional.normalize(self._rotation + self._rots_bias(self._rotation))

    @property
    def get_opacity(self) -> torch.Tensor:
        return torch.sigmoid(self._opacity + self.opacity_bias)

    @property
    def get_features(self) -> torch.Tensor:
        """SH coefficients [N, 1+K, 3] (raw, as in the reference)."""
        if self._features_rest is None:
            return self._features_dc
        return torch.cat((self._features_dc, self._features_rest), dim=1)

    @property
    def get_colors(self) -> torch.Tensor:
        """View-independent RGB [N, 3] from the DC term (0.5 is grey)."""
        return SH_C0 * self._features_dc[:, 0, :] + 0.5

    def get_covariance(self, scaling_modifier: float = 1.0) -> torch.Tensor:
        """Upper triangle (xx, xy, xz, yy, yz, zz) [N, 6] of R·S·Sᵀ·Rᵀ."""
        q = self.get_rotation
        w, x, y, z = q.unbind(-1)
        rot = torch.stack([
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ], -1).reshape(-1, 3, 3)
        l = rot * (scaling_modifier * self.get_scaling)[:, None, :]
        cov = l @ l.transpose(1, 2)
        i, j = torch.triu_indices(3, 3)
        return cov[:, i, j]

    def __len__(self) -> int:
        return 0 if self._xyz is None else self._xyz.shape[0]

    # ----------------------------------------------------------------- setters from activated values
    def from_xyz(self, xyz: torch.Tensor) -> None:
        aabb = self.aabb.to(xyz.device)
        self._xyz = (xyz - aabb[None, :3]) / aabb[None, 3:]

    def from_scaling(self, scales: torch.Tensor) -> None:
        scales = torch.sqrt(torch.square(scales) - self.mininum_kernel_size ** 2)
        self._scaling = self.inverse_scaling_activation(scales) - self.scale_bias

    def from_rotation(self, rots: torch.Tensor) -> None:
        self._rotation = rots - self._rots_bias(rots)

    def from_features(self, features: torch.Tensor) -> None:
        self._features_dc = features

    def from_opacity(self, opacities: torch.Tensor) -> None:
        self._opacity = _logit(opacities) - self.opacity_bias

    def to(self, device) -> "Gaussians":
        """Move every field (in place) and return self."""
        self.device = torch.device(device)
        self.aabb = self.aabb.to(device)
        for name in ("_xyz", "_features_dc", "_features_rest", "_scaling", "_rotation", "_opacity"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(device))
        return self

    # ----------------------------------------------------------------- PLY (INRIA 3DGS layout)
    def ply_attribute_names(self):
        names = ["x", "y", "z", "nx", "ny", "nz"]
        names += [f"f_dc_{i}" for i in range(self._features_dc.shape[1] * self._features_dc.shape[2])]
        if self._features_rest is not None:
            names += [f"f_rest_{i}" for i in range(self._features_rest.shape[1] * self._features_rest.shape[2])]
        names.append("opacity")
        names += [f"scale_{i}" for i in range(self._scaling.shape[1])]
        names += [f"rot_{i}" for i in range(self._rotation.shape[1])]
        return names

    def save_ply(self, path, transform: Optional[Sequence[Sequence[float]]] = Z_UP_TO_Y_UP) -> None:
        """Write an INRIA-3DGS PLY (binary little endian), rotating positions and orientations
        by ``transform`` (default ``Z_UP_TO_Y_UP``, the reference's). Opacity is stored as a
        logit, scales as logs.

        The file appears atomically: it is written next to ``path`` under a temporary name and
        renamed at the end, so a crash never leaves a truncated file that looks complete."""
        from plyfile import PlyData, PlyElement

        with torch.no_grad():
            xyz = self.get_xyz.double().cpu().numpy()
            f_dc = self._features_dc.transpose(1, 2).flatten(start_dim=1).double().cpu().numpy()
            f_rest = None
            if self._features_rest is not None:
                f_rest = self._features_rest.transpose(1, 2).flatten(start_dim=1).double().cpu().numpy()
            # logit(sigmoid(o + b)) written directly as o + b: identical, and stays finite where
            # the sigmoid saturates in float32.
            opacity = (self._opacity + self.opacity_bias).double().cpu().numpy()
            scales = self.get_scaling.clamp_min(torch.finfo(torch.float32).tiny)
            scale = torch.log(scales).double().cpu().numpy()
            rotation = (self._rotation + self._rots_bias(self._rotation)).double().cpu().numpy()

        if transform is not None:
            t = np.asarray(transform, dtype=np.float64)
            xyz = xyz @ t.T
            rotation = matrix_to_quaternion(t @ quaternion_to_matrix(rotation))

        columns = [xyz, np.zeros_like(xyz), f_dc] + ([f_rest] if f_rest is not None else [])
        columns += [opacity.reshape(-1, 1), scale, rotation]
        values = np.concatenate(columns, axis=1).astype(np.float32)
        names = self.ply_attribute_names()
        assert values.shape[1] == len(names)
        vertex = np.empty(values.shape[0], dtype=[(n, "<f4") for n in names])
        for i, n in enumerate(names):
            vertex[n] = values[:, i]

        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".partial", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                PlyData([PlyElement.describe(vertex, "vertex")], byte_order="<").write(f)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def load_ply(self, path, transform: Optional[Sequence[Sequence[float]]] = Z_UP_TO_Y_UP) -> "Gaussians":
        """Read an INRIA-3DGS PLY written with ``transform`` back into raw fields (in place)."""
        from plyfile import PlyData

        v = PlyData.read(os.fspath(path))["vertex"]
        names = [p.name for p in v.properties]

        def stack(prefix):
            cols = sorted((n for n in names if n.startswith(prefix)), key=lambda n: int(n.rsplit("_", 1)[1]))
            return np.stack([np.asarray(v[n], dtype=np.float64) for n in cols], axis=1) if cols else None

        xyz = np.stack([np.asarray(v[a], dtype=np.float64) for a in "xyz"], axis=1)
        rotation = stack("rot_")
        if transform is not None:
            t = np.asarray(transform, dtype=np.float64)
            xyz = xyz @ t  # inverse of xyz @ t.T for a rotation
            rotation = matrix_to_quaternion(t.T @ quaternion_to_matrix(rotation))
        f_dc = stack("f_dc_")
        f_rest = stack("f_rest_")

        def tensor(a):
            return torch.tensor(a, dtype=torch.float32, device=self.device)

        self.from_xyz(tensor(xyz))
        self._features_dc = tensor(f_dc).reshape(-1, 3, 1).transpose(1, 2).contiguous()
        self._features_rest = None
        if f_rest is not None:
            self._features_rest = tensor(f_rest).reshape(-1, 3, f_rest.shape[1] // 3).transpose(1, 2).contiguous()
        self._opacity = tensor(np.asarray(v["opacity"], dtype=np.float64)[:, None]) - self.opacity_bias
        self.from_scaling(torch.exp(tensor(stack("scale_"))))
        self.from_rotation(tensor(rotation))
        return self

    @classmethod
    def from_ply(cls, path, transform=Z_UP_TO_Y_UP, device="cpu", **init_params) -> "Gaussians":
        return cls(device=device, **init_params).load_ply(path, transform=transform)

    def __repr__(self) -> str:
        return f"Gaussians(n={len(self)}, sh_degree={self.sh_degree}, scaling_activation={self.scaling_activation_type!r})"


__all__ = ["Gaussians", "SH_C0", "Z_UP_TO_Y_UP", "quaternion_to_matrix", "matrix_to_quaternion"]
