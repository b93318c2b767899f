"""What the text encoders share: the negative condition is the encoding of "" (computed once), and
moving to a device moves the model and that cached encoding."""
from __future__ import annotations

from typing import List

import torch


class TextConditioner:
    """Base of the text encoders; a subclass sets ``model``, ``device`` and ``_null = None`` and implements
    ``encode(texts) -> [B, tokens, channels]``."""

    kind = "text"

    def encode(self, texts: List[str]) -> torch.Tensor:
        raise NotImplementedError

    def get_cond(self, texts: List[str]) -> dict:
        if self._null is None:
            self._null = self.encode([""])
        return {"cond": self.encode(texts), "neg_cond": self._null}

    def to(self, device):
        self.model.to(device)
        self.device = torch.device(device)
        self._null = None if self._null is None else self._null.to(device)
        return self
