"""The part of the shape SC-VAE decoder's golden case that needs no O-Voxel mesh: network output,
subdivision logits and the per-voxel mesh vertices (the full case runs in test_trellis2_parity.py)."""
from __future__ import annotations

from trellis2_runners_vae import run_shape_vae_decoder_network


def test_shape_vae_decoder_network_and_vertices():
    run_shape_vae_decoder_network("shape_vae_decoder")
