"""`build_conditioner` (pipeline.json name -> encoder) and the image-encoder wrapper."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import torch

from ...errors import MissingFileError
from .preprocess import CONDITION_RESOLUTION, images_to_tensor


class ImageConditioner:
    """Wraps an image network ``[B, 3, 518, 518] in [0, 1] -> tokens``; negative condition = zeros."""

    kind = "image"

    def __init__(self, name: str, network: torch.nn.Module, cond_channels: int, device="cpu",
                 dtype: torch.dtype = torch.float32):
        self.name = name
        self.network = network.eval().to(device=device, dtype=dtype)
        self.cond_channels = cond_channels
        self.device = torch.device(device)

    @torch.no_grad()
    def encode(self, images) -> torch.Tensor:
        x = images if isinstance(images, torch.Tensor) else images_to_tensor(images, CONDITION_RESOLUTION)
        return self.network(x.to(self.device)).float()

    def get_cond(self, images) -> dict:
        cond = self.encode(images)
        return {"cond": cond, "neg_cond": torch.zeros_like(cond[:1])}

    def to(self, device):
        self.network.to(device)
        self.device = torch.device(device)
        return self


def build_conditioner(args: dict, folder: Path, models_root: Optional[Path] = None, allow_network: bool = False,
                      device="cpu", dtype: torch.dtype = torch.float32):
    """The encoder named in pipeline.json ``args``."""
    folder = Path(folder)
    if args.get("image_cond_model"):
        name = args["image_cond_model"]
        if name.startswith("embedded:"):
            from .embedded_image import load_image_encoder, parse_name

            net = load_image_encoder(folder / parse_name(name))
            return ImageConditioner(name, net, net.cond_channels, device=device, dtype=dtype)
        from .dinov2 import DINOV2_VARIANTS, DinoV2Encoder, checkpoint_search_paths

        if name not in DINOV2_VARIANTS:
            raise MissingFileError(f"unknown image_cond_model {name!r} in {folder / 'pipeline.json'}",
                                   hint="Known: " + ", ".join(DINOV2_VARIANTS) + ", embedded:image_cnn:<ref>")
        candidates = checkpoint_search_paths(name, folder, models_root)
        ckpt = next((p for p in candidates if p.is_file()), None)
        if ckpt is None:
            raise MissingFileError(
                f"DINOv2 weights for '{name}' not found; looked at: " + ", ".join(str(p) for p in candidates),
                hint=f"Put the official {DINOV2_VARIANTS[name][4]} (torch hub checkpoint) in the models root or "
                     "the pipeline folder, or set TRELLIS_DINOV2_CHECKPOINT to its path.")
        enc = DinoV2Encoder(name).load_checkpoint(ckpt)
        return ImageConditioner(name, enc, DINOV2_VARIANTS[name][0], device=device, dtype=dtype)
    if args.get("text_cond_model"):
        name = args["text_cond_model"]
        if name.startswith("embedded:"):
            from .embedded_text import MiniLMTextEncoder, parse_name

            return MiniLMTextEncoder(parse_name(name), device=device, dtype=dtype)
        from .clip_text import CLIPTextEncoder

        return CLIPTextEncoder(name, model_folder=folder, models_root=models_root, allow_network=allow_network,
                               device=device, dtype=dtype)
    raise MissingFileError(f"{folder / 'pipeline.json'} names no 'image_cond_model' or 'text_cond_model'",
                           hint="A TRELLIS pipeline.json has one of the two in 'args'.")
