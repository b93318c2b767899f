"""Upper bounds on what one request may ask for, shared by the server schema, the CLI and the pipeline.

Every numeric option a user can set has a ceiling here, so a typo (``steps = 1e9``) is refused at
the boundary with a message instead of building a billion-entry timestep list or a dense grid that
the kernel's out-of-memory killer ends. No torch import: the CLI and the server check requests
before torch is loaded. docs/PIPELINE.md ("Limits") lists the same numbers.
"""
from __future__ import annotations

import logging

from ..errors import BadInputError, OutOfMemoryError

log = logging.getLogger("trellis.limits")

MAX_STEPS = 1000            # sampling steps per stage (the released pipelines use 12-50)
MAX_CFG = 100.0             # guidance strength (the released pipelines use 3-7.5)
MAX_SEED = 2 ** 63 - 1      # torch.Generator.manual_seed accepts 64-bit seeds; keep to the signed range
MAX_RESAMPLE = 20           # RePaint jumps per step of a region edit
MAX_MARGIN = 32             # region-edit blend margin in voxels (half the 64^3 grid)
MAX_TEXTURE_SIZE = 8192     # baked GLB texture side
MAX_TEXTURING_GRID = 2048   # O-Voxel grid a user's mesh is encoded at for texturing (reference: 1024)
MAX_PROMPT_CHARS = 4000     # the text encoders truncate at 77 (CLIP) / 256 (MiniLM) tokens anyway
MAX_NAME_CHARS = 200        # output file stem (file systems allow 255 bytes for the whole name)
MAX_PATH_CHARS = 4096       # PATH_MAX on Linux
MAX_REGION_VOXELS = 64 ** 3  # a voxel-list region can at most name every cell of the grid
GRID_RESOLUTION = 64

# Condition images: the encoders see 518 x 518, so anything much larger is only a memory cost.
MAX_IMAGE_SIDE = 2048           # larger images are downscaled right after decoding (JPEG: while decoding)
MAX_IMAGE_PIXELS = 150_000_000  # refused from the header: decoding alone would take >= 600 MB (a bomb?)

# Voxels of the sparse structure: stage-2 time and memory grow with the count (attention over all of
# them). Typical objects have 2K-25K; a condition that fills the grid gives 100K+.
VOXEL_WARN = {"cpu": 20_000, "cuda": 60_000}
VOXEL_LIMIT = {"cpu": 120_000, "cuda": 262_144}
VOXEL_HINT = ("The condition produced an unusually dense structure. Try another seed, a lower stage-1 guidance "
              "(ss_cfg), or a GPU; on a CPU each stage-2 step over this many voxels takes minutes and several GB.")


def check_voxel_count(count: int, device_type: str, report=None) -> None:
    """Refuse (as out of memory) a structure over the device's voxel limit; warn above the soft limit."""
    kind = "cuda" if str(device_type).startswith("cuda") else "cpu"
    if count > VOXEL_LIMIT[kind]:
        raise OutOfMemoryError(f"the sparse structure has {count} voxels, over this backend's limit of "
                               f"{VOXEL_LIMIT[kind]} on {kind.upper()}", hint=VOXEL_HINT)
    if count > VOXEL_WARN[kind]:
        message = (f"warning: {count} voxels (more than {VOXEL_WARN[kind]} on {kind.upper()}); the next stage "
                   f"will be slow and memory-hungry")
        log.warning("%s. %s", message, VOXEL_HINT)
        if report is not None:
            report("sparse_structure", 1, 1, message)


# command-line option -> (low, high); a None value means "not given"
CLI_BOUNDS = {
    "seed": (0, MAX_SEED),
    "steps": (1, MAX_STEPS),
    "ss_steps": (1, MAX_STEPS),
    "cfg": (0.0, MAX_CFG),
    "ss_cfg": (0.0, MAX_CFG),
    "margin": (0, MAX_MARGIN),
    "resample": (0, MAX_RESAMPLE),
    "texture_size": (0, MAX_TEXTURE_SIZE),
}


def check_cli_numbers(args) -> None:
    """Refuse numeric command-line options that are out of range or not finite, naming the option."""
    import math

    for key, (lo, hi) in CLI_BOUNDS.items():
        value = getattr(args, key, None)
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise BadInputError(f"--{key.replace('_', '-')} must be a finite number, got {value}")
        if not lo <= value <= hi:
            raise BadInputError(f"--{key.replace('_', '-')} must be between {lo} and {hi}, got {value}")
