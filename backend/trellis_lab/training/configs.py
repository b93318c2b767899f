"""Model configurations of the embedded default model (small TRELLIS, same classes).

``EMBEDDED`` is what ships in ``models/trellis-embedded*``; ``TINY`` is for tests (2
training steps on CPU). Every entry: key in pipeline.json -> (checkpoint name, class,
constructor args). The torso of every network is stored in float16 (``use_fp16``), as
the released checkpoints do; the loader casts.
"""
from __future__ import annotations

import copy

COND_CHANNELS = 384  # MiniLM width; the image encoder emits the same width, so one flow serves both

GS_REPRESENTATION = {
    "lr": {"_xyz": 1.0, "_features_dc": 1.0, "_opacity": 1.0, "_scaling": 1.0, "_rotation": 0.1},
    "perturb_offset": True, "voxel_size": 1.5, "num_gaussians": 32, "2d_filter_kernel_size": 0.1,
    "3d_filter_kernel_size": 9e-4, "scaling_bias": 4e-3, "opacity_bias": 0.1, "scaling_activation": "softplus",
}
RF_REPRESENTATION = {"rank": 4, "dim": 4}
MESH_REPRESENTATION = {"use_color": True}

IMAGE_ENCODER = dict(image_size=128, stem_channels=[32, 64, 96, 128], width=192, depth=2, num_heads=3,
                     mlp_ratio=2.0, cond_channels=COND_CHANNELS)


def _embedded() -> dict:
    dit = dict(mlp_ratio=3, pe_mode="ape", qk_rms_norm=True, use_fp16=True)
    swin = dict(mlp_ratio=3, attn_mode="swin", window_size=8, use_fp16=True)
    return {
        "sparse_structure_encoder": ("ss_enc_conv3d_embedded", "SparseStructureEncoder", dict(
            in_channels=1, latent_channels=8, num_res_blocks=1, num_res_blocks_middle=1, channels=[32, 48, 64],
            use_fp16=True)),
        "sparse_structure_decoder": ("ss_dec_conv3d_embedded", "SparseStructureDecoder", dict(
            out_channels=1, latent_channels=8, num_res_blocks=1, num_res_blocks_middle=1, channels=[64, 48, 32],
            use_fp16=True)),
        "sparse_structure_flow_model": ("ss_flow_embedded_dit", "SparseStructureFlowModel", dict(
            resolution=16, in_channels=8, out_channels=8, model_channels=192, cond_channels=COND_CHANNELS,
            num_blocks=6, num_heads=3, patch_size=2, share_mod=True, **dit)),
        "slat_flow_model": ("slat_flow_embedded_dit", "SLatFlowModel", dict(
            resolution=64, in_channels=8, out_channels=8, model_channels=160, cond_channels=COND_CHANNELS,
            num_blocks=6, num_heads=5, patch_size=2, num_io_res_blocks=1, io_block_channels=[48], share_mod=False,
            **dit)),  # share_mod would feed the 6C shared modulation to the io res-blocks (as in the reference)
        "slat_encoder": ("slat_enc_swin8_embedded", "SLatEncoder", dict(
            resolution=64, in_channels=16, model_channels=128, latent_channels=8, num_blocks=4, num_heads=2,
            **{**swin, "use_fp16": False})),  # the PCA-constructed encoder is an exact linear code only in fp32
        "slat_decoder_gs": ("slat_dec_gs_swin8_embedded", "SLatGaussianDecoder", dict(
            resolution=64, model_channels=128, latent_channels=8, num_blocks=3, num_heads=2, **swin,
            representation_config=GS_REPRESENTATION)),
        "slat_decoder_rf": ("slat_dec_rf_swin8_embedded", "SLatRadianceFieldDecoder", dict(
            resolution=64, model_channels=128, latent_channels=8, num_blocks=1, num_heads=2, **swin,
            representation_config=RF_REPRESENTATION)),
        # the subdivision blocks use GroupNorm(32, model_channels // 8): 256 is the smallest width
        "slat_decoder_mesh": ("slat_dec_mesh_swin8_embedded", "SLatMeshDecoder", dict(
            resolution=64, model_channels=256, latent_channels=8, num_blocks=1, num_heads=4, **swin,
            representation_config=MESH_REPRESENTATION)),
    }


def _tiny() -> dict:
    dit = dict(num_heads=2, mlp_ratio=2, pe_mode="ape", qk_rms_norm=True, use_fp16=False)
    swin = dict(num_heads=2, mlp_ratio=2, attn_mode="swin", window_size=8, use_fp16=False)
    return {
        "sparse_structure_encoder": ("ss_enc_tiny", "SparseStructureEncoder", dict(
            in_channels=1, latent_channels=8, num_res_blocks=1, num_res_blocks_middle=1, channels=[8, 8, 16])),
        "sparse_structure_decoder": ("ss_dec_tiny", "SparseStructureDecoder", dict(
            out_channels=1, latent_channels=8, num_res_blocks=1, num_res_blocks_middle=1, channels=[16, 8, 8])),
        "sparse_structure_flow_model": ("ss_flow_tiny", "SparseStructureFlowModel", dict(
            resolution=16, in_channels=8, out_channels=8, model_channels=32, cond_channels=COND_CHANNELS,
            num_blocks=1, patch_size=2, **dit)),
        "slat_flow_model": ("slat_flow_tiny", "SLatFlowModel", dict(
            resolution=64, in_channels=8, out_channels=8, model_channels=32, cond_channels=COND_CHANNELS,
            num_blocks=1, patch_size=2, num_io_res_blocks=1, io_block_channels=[16], **dit)),
        "slat_encoder": ("slat_enc_tiny", "SLatEncoder", dict(
            resolution=64, in_channels=16, model_channels=32, latent_channels=8, num_blocks=1, **swin)),
        "slat_decoder_gs": ("slat_dec_gs_tiny", "SLatGaussianDecoder", dict(
            resolution=64, model_channels=32, latent_channels=8, num_blocks=1, **swin,
            representation_config=GS_REPRESENTATION)),
        "slat_decoder_rf": ("slat_dec_rf_tiny", "SLatRadianceFieldDecoder", dict(
            resolution=64, model_channels=32, latent_channels=8, num_blocks=1, **swin,
            representation_config=RF_REPRESENTATION)),
        "slat_decoder_mesh": ("slat_dec_mesh_tiny", "SLatMeshDecoder", dict(
            resolution=64, model_channels=256, latent_channels=8, num_blocks=1, **swin,
            representation_config=MESH_REPRESENTATION)),
    }


TINY_IMAGE_ENCODER = dict(image_size=32, stem_channels=[8, 16], width=32, depth=1, num_heads=2, mlp_ratio=2.0,
                          cond_channels=COND_CHANNELS)

PRESETS = {"embedded": _embedded, "tiny": _tiny}
IMAGE_ENCODERS = {"embedded": IMAGE_ENCODER, "tiny": TINY_IMAGE_ENCODER}


def model_configs(preset: str = "embedded") -> dict:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[preset]())


def image_encoder_config(preset: str = "embedded") -> dict:
    return copy.deepcopy(IMAGE_ENCODERS[preset])
