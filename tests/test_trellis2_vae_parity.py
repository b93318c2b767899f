"""Parity of TRELLIS.2's SC-VAE classes with the reference on their golden cases (CPU, float32).

Runs this branch's runners on their own; the family-wide `test_trellis2_parity.py` collects the same
`RUNNERS` (the ids are the same, so the lead keeps one of the two).
"""
from __future__ import annotations

import pytest

from trellis2_runners_vae import RUNNERS, run_shape_vae_decoder_network


@pytest.mark.parametrize("case", sorted(RUNNERS))
def test_trellis2_parity(case):
    RUNNERS[case](case)


def test_shape_vae_decoder_network_and_vertices():
    """The shape decoder's part that needs no O-Voxel module: h, subdivision logits, mesh vertices."""
    run_shape_vae_decoder_network("shape_vae_decoder")
