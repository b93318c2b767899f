"""Sparse FlexiCubes mesh extraction (no dense (res+1)³ grid)."""

from .extractor import SparseFlexiCubesExtractor, deformed_vertices
from .flexicubes import sparse_flexicubes
from .result import MeshExtractResult, face_normals, vertex_normals

__all__ = [
    "SparseFlexiCubesExtractor",
    "MeshExtractResult",
    "sparse_flexicubes",
    "deformed_vertices",
    "face_normals",
    "vertex_normals",
]
