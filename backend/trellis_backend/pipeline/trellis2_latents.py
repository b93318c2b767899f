"""TRELLIS.2's latents of one asset and their sidecar file, from which decoding, texturing and region
editing start again without sampling.

`Trellis2Latents`: the de-normalised shape latent and texture latent (SparseTensors on the same voxels)
and the output resolution they decode at (512, 1024, 1536 or a cascade's lowered value).

Sidecar ``<name>.trellis2.npz``: ``coords`` int32 ``[N, 3]`` (x, y, z of the latent grid, resolution / 16),
``shape_feats`` / ``tex_feats`` float32 ``[N, C]`` (de-normalised, what the decoders take),
``resolution`` int and ``settings`` (a JSON string: format, model folder, seed, image, mode, samplers,
normalisations, ...). The file is byte-identical for identical contents (fixed zip timestamps), so two
runs with one seed give identical sidecars.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Dict, NamedTuple, Tuple, Union

import numpy as np
import torch

from ..errors import BadInputError, MissingFileError
from .export import atomic_path

SIDECAR_FORMAT = "trellis2-latent-sidecar/1"
SIDECAR_SUFFIX = ".trellis2.npz"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest zip time: no wall clock in the file

PathLike = Union[str, Path]


class Trellis2Latents(NamedTuple):
    """One asset's latents: ``shape_slat`` and ``tex_slat`` (SparseTensors, same voxels), ``resolution``."""

    shape_slat: object
    tex_slat: object
    resolution: int

    @property
    def coords(self) -> torch.Tensor:
        return self.shape_slat.coords


def _array_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def write_latents(path: PathLike, latents: Trellis2Latents, settings: dict) -> Dict[str, int]:
    """Write one asset's latents (batch index 0 only) as a sidecar, atomically and reproducibly."""
    coords = latents.shape_slat.coords.detach().cpu().numpy().astype(np.int32)
    if len(coords) and np.any(coords[:, 0] != coords[0, 0]):
        raise ValueError("write_latents takes one asset (a single batch index)")
    if not torch.equal(latents.shape_slat.coords.cpu(), latents.tex_slat.coords.cpu()):
        raise ValueError("the shape and texture latents must lie on the same voxels, in the same order")
    arrays = {
        "coords": coords[:, 1:],
        "shape_feats": latents.shape_slat.feats.detach().float().cpu().numpy(),
        "tex_feats": latents.tex_slat.feats.detach().float().cpu().numpy(),
        "resolution": np.array(int(latents.resolution), np.int64),
        "settings": np.array(json.dumps({"format": SIDECAR_FORMAT, **settings}, default=str, sort_keys=True)),
    }
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
            for key, array in arrays.items():
                archive.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_TIME), _array_bytes(array))
    return {"voxels": int(coords.shape[0]), "shape_channels": int(arrays["shape_feats"].shape[1]),
            "tex_channels": int(arrays["tex_feats"].shape[1])}


def read_latents(path: PathLike, device: Union[str, torch.device] = "cpu") -> Tuple[Trellis2Latents, dict]:
    """``(latents, settings)`` of a sidecar written by `write_latents` (batch index 0)."""
    from ..sparse import SparseTensor

    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"TRELLIS.2 latent sidecar not found: {path}",
                               hint="Generate the asset again with a TRELLIS.2 model to get its sidecar.")
    try:
        with np.load(path, allow_pickle=False) as z:
            settings = json.loads(str(z["settings"]))
            coords, shape, tex = z["coords"], z["shape_feats"], z["tex_feats"]
            resolution = int(z["resolution"])
    except Exception as e:
        raise BadInputError(f"cannot read TRELLIS.2 latent sidecar {path}: {e}",
                            hint="The file is not a TRELLIS.2 sidecar (a TRELLIS .slat.npz?) or is damaged.") from e
    if settings.get("format") != SIDECAR_FORMAT:
        raise BadInputError(f"{path} is not a TRELLIS.2 latent sidecar (format {settings.get('format')!r})")
    if not (coords.ndim == 2 and coords.shape[1] == 3 and len(coords) == len(shape) == len(tex)):
        raise BadInputError(f"{path}: coords {coords.shape}, shape_feats {shape.shape} and tex_feats {tex.shape} "
                            "do not describe the same voxels")
    full = torch.cat([torch.zeros(len(coords), 1, dtype=torch.int32), torch.from_numpy(coords.astype(np.int32))], 1)
    full = full.to(device)
    shape_slat = SparseTensor(torch.from_numpy(shape).to(device), full, shape=(1, shape.shape[1]))
    tex_slat = shape_slat.replace(torch.from_numpy(tex).to(device))
    return Trellis2Latents(shape_slat, tex_slat, resolution), settings
