"""Which model family a pipeline folder holds, and the one public way to load any folder.

`detect_family` reads only pipeline.json (no torch: the CLI checks options with it before loading);
`load_pipeline` returns a `TrellisPipeline` (TRELLIS image/text folders, the embedded model) or a
`Trellis2Pipeline` (TRELLIS.2 folders such as microsoft/TRELLIS.2-4B).
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

TRELLIS2_PIPELINE_NAMES = ("Trellis2ImageTo3DPipeline",)
TRELLIS2_ONLY_NAMES = ("Trellis2TexturingPipeline",)


def family_of_config(config: dict) -> str:
    """'trellis2' for a TRELLIS.2 pipeline.json (by its name, or its shape/texture samplers), else 'trellis'."""
    from ..errors import CheckpointMismatchError

    name = config.get("name", "") if isinstance(config, dict) else ""
    args = config.get("args", {}) if isinstance(config, dict) else {}
    if name in TRELLIS2_ONLY_NAMES:
        raise CheckpointMismatchError(f"pipeline {name!r} (TRELLIS.2 texturing) is not an image-to-3D pipeline",
                                      hint="Select the TRELLIS.2-4B folder (Trellis2ImageTo3DPipeline).")
    if name in TRELLIS2_PIPELINE_NAMES or (isinstance(args, dict) and "shape_slat_sampler" in args):
        return "trellis2"
    return "trellis"


def detect_family(folder: Union[str, Path]) -> str:
    """The family of a model folder from its pipeline.json; errors name the missing or damaged file."""
    from .folder import read_pipeline_document

    return family_of_config(read_pipeline_document(Path(folder).expanduser()))


def load_pipeline(folder: Union[str, Path], **kwargs):
    """Load any model folder: `TrellisPipeline` or `Trellis2Pipeline`, chosen by its pipeline.json.

    `kwargs`: ``models_root``, ``device``, ``dtype``, ``allow_network`` (as both ``from_pretrained`` take them).
    """
    if detect_family(folder) == "trellis2":
        from .trellis2 import Trellis2Pipeline

        return Trellis2Pipeline.from_pretrained(folder, **kwargs)
    from .pipeline import TrellisPipeline

    return TrellisPipeline.from_pretrained(folder, **kwargs)
