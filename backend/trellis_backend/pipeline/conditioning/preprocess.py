"""Condition-image loading and preprocessing, as the reference does it.

`preprocess_image` follows TrellisImageTo3DPipeline.preprocess_image (`preprocess_image_trellis2`
follows Trellis2ImageTo3DPipeline's: the input shrunk to at most 1024 px first, the crop at 1x the box
and not resized):

1. an RGBA image whose alpha is not all 255 is used as it is;
2. otherwise the background is removed: with ``background_threshold`` by this module's
   plain-background removal, else with rembg (u2net) when it is installed, else a
   `BadInputError` asks for an RGBA image or a threshold;
3. crop a square of 1.2x the bounding box of alpha > 0.8 (centred on the box), resize to
   518x518 (Lanczos), premultiply RGB by alpha (onto black) and return an RGB image.

Deviation, on purpose: EXIF orientation is applied when the file is loaded, and
palette/LA images with transparency are treated as RGBA.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ...errors import BadInputError

CONDITION_RESOLUTION = 518
TRELLIS2_MAX_INPUT_SIZE = 1024

NO_ALPHA_HINT = ("Give an RGBA image whose background is transparent (e.g. a PNG exported with alpha), "
                 "or, for a photo on a plain background, pass --background-threshold 0.1 (CLI) / "
                 "background_threshold=0.1 (library) to remove the background colour, "
                 "or install the optional 'rembg' package for automatic background removal.")


def load_image(image: Union[str, Path, Image.Image, bytes]) -> Image.Image:
    """Open an image from a path, bytes or a PIL image; raise `BadInputError` when it is missing/corrupt."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (bytes, bytearray)):
        src, label = io.BytesIO(image), "<bytes>"
    else:
        path = Path(image).expanduser()
        if not path.exists():
            raise BadInputError(f"image not found: {path}", hint="Check the image path; the file does not exist.")
        if not path.is_file():
            raise BadInputError(f"image path is not a file: {path}", hint="Point at an image file (PNG, JPEG, ...).")
        src, label = str(path), str(path)
    from ..limits import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE

    too_big = BadInputError(f"image {label} is too large to use (over {MAX_IMAGE_PIXELS // 1_000_000} megapixels)",
                            hint=f"Scale the image down (at most {MAX_IMAGE_SIDE} pixels on a side is plenty; the "
                                 f"model sees {CONDITION_RESOLUTION}x{CONDITION_RESOLUTION}).")
    try:
        img = Image.open(src)
        if img.width * img.height > MAX_IMAGE_PIXELS:  # refused from the header, before decoding
            raise too_big
        if max(img.size) > MAX_IMAGE_SIDE:
            img.draft(img.mode, (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))  # JPEG: decode at a reduced scale
        img.load()
    except Image.DecompressionBombError as e:
        raise too_big from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise BadInputError(f"cannot read image {label}: {e}",
                            hint="The file is not a readable image (corrupt or unsupported format); "
                                 "re-export it as PNG or JPEG.") from e
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # broken EXIF: keep the pixels as stored
        pass
    if img.width < 1 or img.height < 1:
        raise BadInputError(f"image {label} is empty ({img.width}x{img.height})")
    if max(img.size) > MAX_IMAGE_SIDE:  # downscale before any float copy of the pixels is made
        img = _to_rgba_if_transparent(img)
        if img.mode not in ("RGB", "RGBA", "L"):
            img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
        img.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return img


def _has_transparency(img: Image.Image) -> bool:
    if img.mode == "RGBA":
        return not np.all(np.asarray(img)[:, :, 3] == 255)
    return False


def _to_rgba_if_transparent(img: Image.Image) -> Image.Image:
    if img.mode in ("LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        return img.convert("RGBA")
    if img.mode in ("RGBa", "La"):
        return img.convert("RGBA")
    return img


def remove_plain_background(img: Image.Image, threshold: float) -> Image.Image:
    """Make pixels close to the background colour transparent.

    The background colour is the per-channel median of the image border (1 pixel wide).
    A pixel is background when its largest channel difference from that colour is at
    most ``threshold * 255`` (threshold in [0, 1]). Returns an RGBA image.
    """
    if not 0.0 <= threshold <= 1.0:
        raise BadInputError(f"background threshold must be in [0, 1], got {threshold}")
    rgb = np.asarray(img.convert("RGB")).astype(np.int16)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]], axis=0)
    bg = np.median(border, axis=0)
    diff = np.abs(rgb - bg[None, None]).max(axis=-1)
    alpha = np.where(diff > threshold * 255, 255, 0).astype(np.uint8)
    return Image.fromarray(np.concatenate([rgb.astype(np.uint8), alpha[..., None]], axis=-1), "RGBA")


_REMBG_SESSION = None


def _rembg_remove(img: Image.Image) -> Image.Image:
    global _REMBG_SESSION
    import rembg  # optional dependency

    img = img.convert("RGB")
    max_size = max(img.size)
    scale = min(1, 1024 / max_size)
    if scale < 1:
        img = img.resize((int(img.width * scale), int(img.height * scale)), Image.Resampling.LANCZOS)
    try:
        if _REMBG_SESSION is None:
            _REMBG_SESSION = rembg.new_session("u2net")
        return rembg.remove(img, session=_REMBG_SESSION)
    except Exception as e:  # typically: its u2net weights cannot be downloaded offline
        raise BadInputError(f"background removal with rembg failed: {e}", hint=NO_ALPHA_HINT) from e


def rembg_available() -> bool:
    try:
        import rembg  # noqa: F401
        return True
    except Exception:
        return False


def foreground_rgba(image: Union[str, Path, Image.Image], background_threshold: Optional[float] = None,
                    max_size: Optional[int] = None) -> Tuple[Image.Image, bool]:
    """``(rgba, removed)``: the image as RGBA with its object opaque -- its own alpha when it has transparency
    (``removed`` False), else the background removed (``background_threshold``: plain-colour removal; else rembg
    when installed; else a `BadInputError`). ``max_size``: first shrink (Lanczos) so that the longer side is at
    most that (TRELLIS.2 does, at 1024)."""
    img = _to_rgba_if_transparent(load_image(image))
    if max_size is not None and max(img.size) > max_size:
        scale = max_size / max(img.size)
        img = img.resize((int(img.width * scale), int(img.height * scale)), Image.Resampling.LANCZOS)
    if _has_transparency(img):
        return img, False
    if background_threshold is not None:
        return remove_plain_background(img, background_threshold), True
    if rembg_available():
        return _rembg_remove(img), True
    raise BadInputError("the image has no transparent background (no alpha channel) and no background "
                        "remover is available", hint=NO_ALPHA_HINT)


def square_object_crop(rgba: Image.Image, scale: float, removed_background: bool = False) -> Image.Image:
    """RGBA square crop of `scale` x the bounding box of alpha > 0.8, centred on it.

    An image with no such pixel has no object: `BadInputError` (the same for every model family)."""
    alpha = np.asarray(rgba)[:, :, 3]
    fg = np.argwhere(alpha > 0.8 * 255)
    if fg.shape[0] == 0:
        raise BadInputError("the image has no foreground: every pixel is (nearly) transparent"
                            + (" after background removal" if removed_background else ""),
                            hint="Use an image with a visible object; with --background-threshold, try a smaller value.")
    bbox = np.min(fg[:, 1]), np.min(fg[:, 0]), np.max(fg[:, 1]), np.max(fg[:, 0])
    center = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    size = int(max(bbox[2] - bbox[0], bbox[3] - bbox[1]) * scale)
    return rgba.crop((center[0] - size // 2, center[1] - size // 2, center[0] + size // 2, center[1] + size // 2))


def premultiply(rgba: Image.Image) -> Image.Image:
    """RGB premultiplied by alpha (the object onto black), as both references hand it to the encoder."""
    arr = np.array(rgba).astype(np.float32) / 255
    arr = arr[:, :, :3] * arr[:, :, 3:4]
    return Image.fromarray((arr * 255).astype(np.uint8))


def preprocess_image(image: Union[str, Path, Image.Image], background_threshold: Optional[float] = None,
                     resolution: int = CONDITION_RESOLUTION) -> Image.Image:
    """TRELLIS's preprocessing: object crop at 1.2x its box, resized to 518x518, premultiplied onto black (RGB)."""
    rgba, removed = foreground_rgba(image, background_threshold)
    crop = square_object_crop(rgba, 1.2, removed)
    return premultiply(crop.resize((resolution, resolution), Image.Resampling.LANCZOS))


def preprocess_image_trellis2(image: Union[str, Path, Image.Image],
                              background_threshold: Optional[float] = None) -> Image.Image:
    """TRELLIS.2's preprocessing: shrink to at most 1024 px, object crop at 1x its box (no resize: DINOv3
    resizes to 512 / 1024 itself), premultiplied onto black (RGB)."""
    rgba, removed = foreground_rgba(image, background_threshold, max_size=TRELLIS2_MAX_INPUT_SIZE)
    return premultiply(square_object_crop(rgba, 1.0, removed))


def images_to_tensor(images, resolution: int = CONDITION_RESOLUTION):
    """List of PIL images -> float tensor ``[B, 3, R, R]`` in [0, 1] (as the reference's encode_image)."""
    import torch

    out = []
    for im in images:
        if im.size != (resolution, resolution):
            im = im.resize((resolution, resolution), Image.Resampling.LANCZOS)
        out.append(torch.from_numpy(np.array(im.convert("RGB")).astype(np.float32) / 255).permute(2, 0, 1))
    return torch.stack(out)
