"""3D representations produced by the structured-latent decoders."""

from .gaussian import SH_C0, Z_UP_TO_Y_UP, Gaussians, matrix_to_quaternion, quaternion_to_matrix
from .mesh import MeshExtractResult, SparseFlexiCubesExtractor
from .strivec import StrivecFields, strivec_channels, strivec_layout

__all__ = [
    "Gaussians",
    "SH_C0",
    "Z_UP_TO_Y_UP",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "MeshExtractResult",
    "SparseFlexiCubesExtractor",
    "StrivecFields",
    "strivec_layout",
    "strivec_channels",
]
