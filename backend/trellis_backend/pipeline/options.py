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


# --------------------------------------------------------------------------- model families
FAMILY_NAMES = {"trellis": "TRELLIS", "trellis2": "TRELLIS.2"}
RESOLUTION_MODE_NAMES = ("512", "1024", "1024_cascade", "1536_cascade")  # TRELLIS.2's (pipeline.trellis2)

# generation options only one family understands (library keyword / request parameter -> what it is)
FAMILY_ONLY_OPTIONS = {
    "trellis": {
        "prompt": "a text prompt (TRELLIS.2 is image-conditioned only)",
        "ss_cfg": "TRELLIS's stage-1 CFG strength (TRELLIS.2 samples with pipeline.json's guidance settings)",
        "slat_cfg": "TRELLIS's stage-2 CFG strength",
        "slat_steps": "TRELLIS's stage-2 (SLAT) steps (TRELLIS.2: shape_steps / tex_steps)",
        "multi_image_mode": "multi-image conditioning",
    },
    "trellis2": {
        "resolution": "the resolution mode (512, 1024, 1024_cascade, 1536_cascade)",
        "max_num_tokens": "the cascade's token cap",
        "shape_steps": "the shape-latent steps",
        "tex_steps": "the texture-latent steps",
        "face_budget": "the PBR GLB's face budget",
    },
}
FAMILY_FORMATS = {"trellis": ("mesh", "gaussians", "radiance_field", "slat"), "trellis2": ("mesh", "slat")}


def check_family_options(family: str, options: dict) -> None:
    """Refuse, with a clear `BadInputError`, options (given, not None) that belong to the other model family,
    formats the family cannot make, and names neither family knows."""
    other = "trellis2" if family == "trellis" else "trellis"
    given = {k: v for k, v in options.items() if v is not None}
    foreign = sorted(k for k in given if k in FAMILY_ONLY_OPTIONS[other])
    if foreign:
        what = "; ".join(f"{k}: {FAMILY_ONLY_OPTIONS[other][k]}" for k in foreign)
        raise BadInputError(f"{', '.join(foreign)} {'is a' if len(foreign) == 1 else 'are'} {FAMILY_NAMES[other]} "
                            f"option{'s' if len(foreign) > 1 else ''}, but this model folder is {FAMILY_NAMES[family]} "
                            f"({what})", hint=f"Leave {' / '.join(foreign)} out, or load a {FAMILY_NAMES[other]} "
                                              f"model folder.")
    unknown = sorted(k for k in given if k not in FAMILY_ONLY_OPTIONS[family] and k != "formats"
                     and k not in KNOWN_SHARED_OPTIONS)
    if unknown:
        raise BadInputError(f"unknown generation option(s): {', '.join(unknown)}",
                            hint="Check the option names (see `python -m trellis_backend generate --help`).")
    if given.get("formats") is not None:
        bad = [f for f in normalize_formats(given["formats"]) if f not in FAMILY_FORMATS[family]]
        if bad:
            raise BadInputError(f"{FAMILY_NAMES[family]} cannot make {', '.join(bad)}",
                                hint=f"{FAMILY_NAMES[family]} outputs: "
                                     + ", ".join(FAMILY_FORMATS[family])
                                     + (" (a PBR-textured GLB and the latent sidecar)" if family == "trellis2" else ""))


# options every family takes (generate's keywords and the server's request parameters)
KNOWN_SHARED_OPTIONS = frozenset({"image", "seed", "ss_steps", "output_dir", "name", "progress", "cancel",
                                  "background_threshold", "texture_size"})
