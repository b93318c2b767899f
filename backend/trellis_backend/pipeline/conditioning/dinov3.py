"""DINOv3 ViT image features exactly as TRELLIS.2 takes them (its `DinoV3FeatureExtractor`).

The reference (pipeline.json: ``DinoV3FeatureExtractor``, ``facebook/dinov3-vitl16-pretrain-lvd1689m``)
resizes each preprocessed PIL image to ``image_size``² with Lanczos (512 for the sparse structure and
the 512 stages, 1024 for the 1024 stages: the pipeline sets it per call), converts it to RGB in
[0, 1], normalises with the ImageNet mean/std, runs the patch embeddings (CLS, register tokens,
patches) and every transformer layer with the model's 2-D rotary embeddings, and takes *all* tokens
before the model's final norm, through a non-affine ``layer_norm``: ``[B, 1 + 4 + (S/16)², 1024]``
for ViT-L/16 (1029 tokens at 512, 4101 at 1024). The negative condition is zeros of that shape.

The network is transformers' `DINOv3ViTModel` (transformers >= 4.56), read from a local folder in
the Hugging Face layout (``config.json`` + ``model.safetensors``); nothing is ever downloaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ...errors import BadInputError, CheckpointMismatchError, MissingFileError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_IMAGE_SIZE = 512
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")

ImageBatch = Union[Sequence[Image.Image], torch.Tensor]


def dinov3_folder_candidates(model_name: str, models_root: Optional[Path] = None,
                             pipeline_folder: Optional[Path] = None) -> List[Path]:
    """Where the folder of `model_name` (an absolute path, or a Hugging Face id such as
    ``facebook/dinov3-vitl16-pretrain-lvd1689m``) is looked for, in order: the path itself, then
    ``<models_root>/<id>``, then ``<pipeline_folder>/<id>``."""
    given = Path(model_name).expanduser()
    candidates = [given] if given.is_absolute() else []
    for root in (models_root, pipeline_folder):
        if root is not None:
            candidates.append(Path(root) / model_name)
    return candidates


def find_dinov3_folder(model_name: str, models_root: Optional[Path] = None,
                       pipeline_folder: Optional[Path] = None) -> Path:
    """The first existing candidate folder, or a `MissingFileError` naming every place looked at."""
    candidates = dinov3_folder_candidates(model_name, models_root, pipeline_folder)
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise MissingFileError(
        f"DINOv3 model folder for '{model_name}' not found; looked at: " + ", ".join(str(p) for p in candidates),
        hint=f"Download {model_name} (config.json + model.safetensors) from Hugging Face into "
             f"<models root>/{model_name} and pass --models-root <models root>; it is never downloaded for you.")


def _layers(model) -> Sequence[torch.nn.Module]:
    """The transformer layers (transformers 4.x keeps them at `model.layer`, 5.x at `model.model.layer`)."""
    layers = getattr(model, "layer", None)
    if layers is None:
        layers = model.model.layer
    return layers


class DinoV3Conditioner:
    """Images -> TRELLIS.2 condition tokens with a local DINOv3 ViT; negative condition = zeros."""

    kind = "image"

    def __init__(self, model, image_size: int = DEFAULT_IMAGE_SIZE, device="cpu",
                 dtype: torch.dtype = torch.float32, name: str = "DinoV3FeatureExtractor"):
        self.name = name
        self.model = model.eval().to(device=device, dtype=dtype)
        self.patch_size = int(model.config.patch_size)
        self.cond_channels = int(model.config.hidden_size)
        self.image_size = image_size
        self.device = torch.device(device)
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    @classmethod
    def from_folder(cls, folder: Union[str, Path], image_size: int = DEFAULT_IMAGE_SIZE, device="cpu",
                    dtype: torch.dtype = torch.float32) -> "DinoV3Conditioner":
        """Load `DINOv3ViTModel` from a local Hugging Face folder (never from the network)."""
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise MissingFileError(f"DINOv3 model folder not found: {folder}",
                                   hint="Point at the downloaded DINOv3 folder (config.json + model.safetensors).")
        if not (folder / "config.json").is_file():
            raise MissingFileError(f"DINOv3 config not found: {folder / 'config.json'}")
        if not any((folder / f).is_file() for f in WEIGHT_FILES):
            raise MissingFileError(f"DINOv3 weights not found in {folder} (expected {WEIGHT_FILES[0]})")
        try:
            from transformers import DINOv3ViTModel
        except ImportError as e:
            raise MissingFileError("transformers with DINOv3 support (>= 4.56) is not installed",
                                   hint="pip install 'transformers>=4.56' (the backend's 'trellis2' extra).") from e
        try:
            model = DINOv3ViTModel.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as e:
            raise CheckpointMismatchError(f"cannot load DINOv3 from {folder}: {e}",
                                          hint="Re-download the DINOv3 folder; a file may be truncated.") from e
        return cls(model, image_size=image_size, device=device, dtype=dtype, name=str(folder))

    def to(self, device) -> "DinoV3Conditioner":
        self.model.to(device)
        self.device = torch.device(device)
        return self

    # ------------------------------------------------------------- images
    def _pixels(self, images: ImageBatch, image_size: int) -> torch.Tensor:
        """`[B, 3, S, S]` RGB in [0, 1]: PIL images resized as the reference, or a tensor taken as it is."""
        if isinstance(images, torch.Tensor):
            if images.dim() != 4 or images.shape[1] != 3:
                raise BadInputError(f"an image tensor must be [batch, 3, height, width], got {tuple(images.shape)}")
            if images.shape[-1] % self.patch_size or images.shape[-2] % self.patch_size:
                raise BadInputError(f"image tensor size {tuple(images.shape[-2:])} is not a multiple of DINOv3's "
                                    f"patch size {self.patch_size}")
            return images.float()
        if isinstance(images, Image.Image):
            images = [images]
        if not isinstance(images, (list, tuple)) or not images:
            raise BadInputError(f"expected a list of PIL images or a [B, 3, H, W] tensor, got {type(images).__name__}")
        bad = [type(im).__name__ for im in images if not isinstance(im, Image.Image)]
        if bad:
            raise BadInputError(f"the condition images must be PIL images; got {', '.join(sorted(set(bad)))}",
                                hint="Load the image first (trellis_backend.pipeline.conditioning.load_image).")
        arrays = [np.asarray(im.convert("RGB").resize((image_size, image_size), Image.Resampling.LANCZOS),
                             dtype=np.float32) / 255 for im in images]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()

    # ----------------------------------------------------------- features
    @torch.no_grad()
    def encode(self, images: ImageBatch, image_size: Optional[int] = None) -> torch.Tensor:
        """Condition tokens `[B, 1 + registers + (S/patch)², hidden]` (float32)."""
        size = image_size or self.image_size
        if size % self.patch_size:
            raise BadInputError(f"image_size {size} is not a multiple of DINOv3's patch size {self.patch_size}")
        x = (self._pixels(images, size) - self.mean) / self.std
        weight = self.model.embeddings.patch_embeddings.weight
        x = x.to(device=weight.device, dtype=weight.dtype)
        hidden = self.model.embeddings(x, bool_masked_pos=None)
        position_embeddings = self.model.rope_embeddings(x)
        for layer in _layers(self.model):
            hidden = layer(hidden, position_embeddings=position_embeddings)
        return F.layer_norm(hidden.float(), hidden.shape[-1:])

    def get_cond(self, images: ImageBatch, image_size: Optional[int] = None) -> dict:
        """``{'cond', 'neg_cond'}`` as the reference's `get_cond` (negative = zeros of the same shape)."""
        cond = self.encode(images, image_size)
        return {"cond": cond, "neg_cond": torch.zeros_like(cond)}
