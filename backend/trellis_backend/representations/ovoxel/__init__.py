"""O-Voxel (TRELLIS.2): flexible-dual-grid meshes both ways and PBR attribute voxels, on the CPU."""
from .dual_grid_mesh import flexible_dual_grid_to_mesh
from .grid import UNIT_AABB, grid_geometry

__all__ = ["flexible_dual_grid_to_mesh", "grid_geometry", "UNIT_AABB"]
