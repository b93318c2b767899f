"""The mesh a decoder returns, with the per-face normals the reference attaches to it."""

from __future__ import annotations

from typing import Optional

import torch


def face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit normal of each triangle, [F, 3] (right-handed from the winding)."""
    v0, v1, v2 = (vertices[faces[:, i].long()] for i in range(3))
    return torch.nn.functional.normalize(torch.cross(v1 - v0, v2 - v0, dim=-1), dim=1)


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals, [V, 3]."""
    faces = faces.long()
    v0, v1, v2 = (vertices[faces[:, i]] for i in range(3))
    n = torch.cross(v1 - v0, v2 - v0, dim=-1)
    acc = torch.zeros_like(vertices)
    for i in range(3):
        acc.index_add_(0, faces[:, i], n)
    return torch.nn.functional.normalize(acc, dim=1)


class MeshExtractResult:
    """Vertices [V,3], faces [F,3] long, optional vertex attributes [V,C] (colour, normal map).

    ``face_normal`` is [F, 3, 3] (the face normal repeated per corner), as in the reference,
    because the renderers consume it per triangle corner. ``success`` is False for an empty mesh.
    The ``tsdf_*``/``reg_loss`` fields are only filled when the extractor runs in training mode.
    """

    def __init__(self, vertices: torch.Tensor, faces: torch.Tensor,
                 vertex_attrs: Optional[torch.Tensor] = None, res: int = 64):
        self.vertices = vertices
        self.faces = faces.long()
        self.vertex_attrs = vertex_attrs
        self.face_normal = face_normals(vertices, self.faces)[:, None, :].repeat(1, 3, 1)
        self.res = res
        self.success = vertices.shape[0] != 0 and self.faces.shape[0] != 0
        self.tsdf_v: Optional[torch.Tensor] = None
        self.tsdf_s: Optional[torch.Tensor] = None
        self.reg_loss = None

    def vertex_normals(self) -> torch.Tensor:
        return vertex_normals(self.vertices, self.faces)

    def __repr__(self) -> str:
        attrs = None if self.vertex_attrs is None else tuple(self.vertex_attrs.shape)
        return (f"MeshExtractResult(vertices={tuple(self.vertices.shape)}, faces={tuple(self.faces.shape)}, "
                f"vertex_attrs={attrs}, res={self.res})")
