"""O-Voxel (TRELLIS.2): flexible-dual-grid meshes both ways and PBR attribute voxels, on the CPU."""
from .dual_grid_mesh import flexible_dual_grid_to_mesh
from .grid import UNIT_AABB, grid_geometry
from .mesh_to_dual_grid import dual_vertices_to_offsets, mesh_to_flexible_dual_grid

__all__ = ["flexible_dual_grid_to_mesh", "mesh_to_flexible_dual_grid", "dual_vertices_to_offsets",
           "grid_geometry", "UNIT_AABB"]
