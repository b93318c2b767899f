"""Small synthetic inputs several test modules share (no tests here)."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def write_rgba_png(path, size, box, colour):
    """An RGBA image of `size` (h, w): a solid `colour` rectangle `box` (top, bottom, left, right) on transparency."""
    a = np.zeros((*size, 4), np.uint8)
    top, bottom, left, right = box
    a[top:bottom, left:right] = (*colour, 255)
    Image.fromarray(a, "RGBA").save(path)
    return path


def random_coords(n_items=2, res=10, density=0.3, generator=None) -> torch.Tensor:
    """int32 coords ``[N, 4]`` of random occupancy (`density`) in a res³ grid per batch item, batch-contiguous."""
    out = []
    for b in range(n_items):
        c = (torch.rand(res, res, res, generator=generator) < density).nonzero()
        out.append(torch.cat([torch.full((len(c), 1), b), c], 1))
    return torch.cat(out).int()
