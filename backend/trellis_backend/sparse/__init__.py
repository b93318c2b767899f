"""Sparse voxel tensors and the sparse layers TRELLIS is built from."""
from .tensor import SparseTensor, sparse_cat
from .conv import SparseConv3d, set_conv_backend, get_conv_backend, spconv_available
from .layers import SparseLinear, SparseSiLU, SparseGELU, SparseGroupNorm32, SparseLayerNorm32
from .spatial import (SparseChannel2Spatial, SparseDownsample, SparseSpatial2Channel, SparseSubdivide,
                      SparseUpsample)
from .attention import (varlen_attention, sparse_self_attention, sparse_cross_attention,
                        sparse_windowed_self_attention)

__all__ = [
    "SparseTensor", "sparse_cat", "SparseConv3d", "set_conv_backend", "get_conv_backend", "spconv_available",
    "SparseLinear", "SparseSiLU", "SparseGELU", "SparseGroupNorm32", "SparseLayerNorm32",
    "SparseDownsample", "SparseUpsample", "SparseSubdivide", "SparseSpatial2Channel", "SparseChannel2Spatial",
    "varlen_attention", "sparse_self_attention", "sparse_cross_attention", "sparse_windowed_self_attention",
]
