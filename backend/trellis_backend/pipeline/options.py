"""Light helpers shared by the CLI and the pipeline (no torch import here)."""
from __future__ import annotations

from typing import Sequence, Tuple, Union

from ..errors import BadInputError

FORMAT_ALIASES = {
    "mesh": "mesh", "glb": "mesh",
    "gaussians": "gaussians", "gaussian": "gaussians", "ply": "gaussians",
    "radiance_field": "radiance_field", "rf": "radiance_field",
    "slat": "slat",
}


def normalize_formats(formats: Union[str, Sequence[str], None]) -> Tuple[str, ...]:
    """'glb,ply' / ['mesh', 'gaussians'] / ... -> canonical names (mesh, gaussians, radiance_field, slat)."""
    if formats is None:
        return ("mesh", "gaussians")
    if isinstance(formats, str):
        formats = [f for f in formats.replace(";", ",").split(",") if f.strip()]
    out = []
    for f in formats:
        key = FORMAT_ALIASES.get(str(f).strip().lower())
        if key is None:
            raise BadInputError(f"unknown output format {f!r}",
                                hint="Use any of: mesh (glb), gaussians (ply), radiance_field, slat.")
        if key not in out:
            out.append(key)
    if not out:
        raise BadInputError("no output format given", hint="Use any of: mesh (glb), gaussians (ply), slat.")
    return tuple(out)


def check_name(name: str) -> None:
    """An output file stem: no folders, no characters that file systems refuse."""
    if not name or any(c in name for c in '/\\:*?"<>|\0') or name in (".", ".."):
        raise BadInputError(f"invalid output name {name!r}", hint="Use a plain file name without folders.")
