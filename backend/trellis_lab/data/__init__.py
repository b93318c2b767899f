"""Procedural dataset of the embedded TRELLIS model (pure numpy/torch, CPU).

Parametric coloured objects in 12 categories, captions, a train / held-out split,
voxelisation at 64³ with native per-voxel features, a condition-image renderer,
training records and evaluation metrics.

Modules (one concern each):

- ``palette``     named colours, nearest-colour lookup
- ``primitives``  SDF primitives and coloured part composition (``Shape``)
- ``builder``     helpers of the category builders
- ``categories/`` the 12 parametric categories (furniture, tableware, nature, structures)
- ``shapes``      ``sample_object(seed, split)`` / ``build_object(category, colour, seed)``
- ``splits``      categories, held-out (category, colour) pairs
- ``captions``    captions from parameters; train / held-out templates
- ``voxelize``    ``voxelize(obj)`` -> shell coords, features, dense occupancy; fine supervision
- ``render``      ``render(obj, yaw, pitch, size)`` -> RGBA; voxel / mesh clouds
- ``dataset``     ``make_record``, ``ProceduralDataset``, ``collate_records``, ``evaluation_set``
- ``shards``      pre-generated npz shards + ``ShardDataset``
- ``metrics``     Chamfer, nearest-category classifier, dominant colour, voxel IoU
- ``preview``     ``python -m trellis_lab.data.preview --n 24 --out grid.png``
"""
