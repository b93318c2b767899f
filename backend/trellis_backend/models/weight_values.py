"""Refuse weights no trained network has: NaN/inf or absurd magnitudes (random bytes, damaged files).

Kept apart from `folder_check` (which builds models on the meta device through the registry) so that the
registry can run this check after loading without an import cycle.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Union

from ..errors import CheckpointMismatchError

REDOWNLOAD = "Re-download the model folder (this file is damaged or was edited by hand)."
ABSURD_WEIGHT = 1e10  # trained weights stay far below (the embedded encoder peaks at 4e4); random
#                      float32/bf16 bits exceed it in a third of the values, random fp16 bits are NaN/inf


def check_weight_values(state_dict: Dict[str, Any], source: Union[str, Path]) -> None:
    """Refuse weights holding NaN/inf or magnitudes no trained network has (random bytes, damaged files)."""
    for key, tensor in state_dict.items():
        if not tensor.is_floating_point() or tensor.numel() == 0:
            continue
        peak = float(tensor.detach().abs().amax().float())
        if not math.isfinite(peak) or peak > ABSURD_WEIGHT:
            what = "NaN or infinite values" if not math.isfinite(peak) else f"values up to {peak:.3g}"
            raise CheckpointMismatchError(f"{source}: tensor '{key}' holds {what}; these are not trained weights "
                                          f"(the file is damaged or holds random bytes)", hint=REDOWNLOAD)
