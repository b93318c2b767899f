"""Node trees on every supported Blender: 3.4 and 4.x need ``use_nodes = True`` before a material or
world has one; 5.0 always has one and deprecates ``use_nodes`` (removed in 6.0)."""

import bpy

USE_NODES_DEPRECATED = bpy.app.version >= (5, 0, 0)


def with_nodes(datablock):
    """Make sure a material / world has its node tree; returns the tree."""
    if not USE_NODES_DEPRECATED and not datablock.use_nodes:
        datablock.use_nodes = True
    return datablock.node_tree
