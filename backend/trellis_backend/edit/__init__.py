"""Region editing: regenerate only the voxels inside a selected region of a generated asset."""
from .editor import edit_region
from .region import region_mask_grid

__all__ = ["edit_region", "region_mask_grid"]
