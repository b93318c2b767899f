"""Initialisation of freshly built models (training from scratch, random-weight test models)."""
from __future__ import annotations

import torch.nn as nn


def init_dit_weights(model: nn.Module) -> None:
    """Xavier linears, small timestep MLP, zeroed adaLN projections and output layer (DiT recipe)."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    nn.init.normal_(model.t_embedder.mlp[0].weight, std=0.02)
    nn.init.normal_(model.t_embedder.mlp[2].weight, std=0.02)
    projections = [model.adaLN_modulation] if model.share_mod else [b.adaLN_modulation for b in model.blocks]
    for proj in projections:
        nn.init.zeros_(proj[-1].weight)
        nn.init.zeros_(proj[-1].bias)
    nn.init.zeros_(model.out_layer.weight)
    nn.init.zeros_(model.out_layer.bias)


def init_transformer_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
