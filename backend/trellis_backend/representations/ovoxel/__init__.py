"""O-Voxel (TRELLIS.2) on the CPU: flexible-dual-grid meshes both ways, PBR attribute voxels.

* ``flexible_dual_grid_to_mesh``: the SC-VAE decoder's mesh (exact to the reference).
* ``mesh_to_flexible_dual_grid``: a mesh's dual grid for the shape encoder / texturing / training data.
* ``textured_mesh_to_pbr_voxels``: a textured mesh's base colour, metallic, roughness, alpha per voxel.
* ``PbrVoxels``: sparse PBR voxels with the reference's trilinear sampling (used by the GLB bake).
"""
from .dual_grid_mesh import flexible_dual_grid_to_mesh
from .grid import UNIT_AABB, grid_geometry
from .mesh_to_dual_grid import dual_vertices_to_offsets, mesh_to_flexible_dual_grid
from .pbr_voxelize import pbr_voxels_to_uint8, textured_mesh_to_pbr_voxels
from .pbr_voxels import PBR_CHANNELS, PBR_LAYOUT, PbrVoxels, sample_trilinear

__all__ = [
    "flexible_dual_grid_to_mesh",
    "mesh_to_flexible_dual_grid",
    "dual_vertices_to_offsets",
    "textured_mesh_to_pbr_voxels",
    "pbr_voxels_to_uint8",
    "PbrVoxels",
    "PBR_LAYOUT",
    "PBR_CHANNELS",
    "sample_trilinear",
    "grid_geometry",
    "UNIT_AABB",
]
