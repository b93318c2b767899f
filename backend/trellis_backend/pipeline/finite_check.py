"""Refuse NaN/inf before they reach a file or the protocol.

Non-finite numbers come from damaged weights or extreme guidance; written out they make a GLB
no viewer opens, and in an event they cannot be encoded as JSON at all (the job would never
answer). Checking the latent once, before decoding, turns them into an error the user can act on.
"""
from __future__ import annotations

from ..errors import TrellisError


class NonFiniteOutputError(TrellisError):
    hint = ("The model produced NaN or infinite values. Lower the guidance strength (CFG), try another seed, "
            "or re-download the model folder if this happens for every input (its weights may be damaged).")


def check_finite(tensor, what: str) -> None:
    """Raise NonFiniteOutputError if `tensor` (torch or numpy) holds NaN or inf."""
    import torch

    t = torch.as_tensor(tensor)
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise NonFiniteOutputError(f"{what} has {bad} NaN/infinite value(s) of {t.numel()}; nothing was written")
