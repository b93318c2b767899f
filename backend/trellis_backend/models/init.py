"""Initialisation of freshly built models (training from scratch, random-weight test models)."""
from __future__ import annotations

import math

import torch.nn as nn


def _init_linears(model: nn.Module, init_weight) -> None:
    """Every linear layer's weight by `init_weight`, its bias zeroed."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            init_weight(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _init_dit_conditioning(model: nn.Module) -> None:
    """The DiT recipe's last steps: small timestep MLP, zeroed adaLN projections and output layer (so every
    block starts as the identity and the model's first output is zero)."""
    nn.init.normal_(model.t_embedder.mlp[0].weight, std=0.02)
    nn.init.normal_(model.t_embedder.mlp[2].weight, std=0.02)
    projections = [model.adaLN_modulation] if model.share_mod else [b.adaLN_modulation for b in model.blocks]
    for proj in projections:
        nn.init.zeros_(proj[-1].weight)
        nn.init.zeros_(proj[-1].bias)
    nn.init.zeros_(model.out_layer.weight)
    nn.init.zeros_(model.out_layer.bias)


def init_dit_weights(model: nn.Module) -> None:
    """Xavier linears, small timestep MLP, zeroed adaLN projections and output layer (DiT recipe)."""
    _init_linears(model, nn.init.xavier_uniform_)
    _init_dit_conditioning(model)


def init_dit_weights_scaled(model: nn.Module) -> None:
    """TRELLIS.2's 'scaled' recipe: linears N(0, 2/(5C)); attention outputs and the MLP's second layer
    N(0, 1/(5·blocks·C)); input layer N(0, 1/in_channels); then the DiT recipe's small timestep MLP and
    zeroed adaLN projections and output layer."""
    c = model.model_channels
    _init_linears(model, lambda w: nn.init.normal_(w, std=math.sqrt(2.0 / (5.0 * c))))
    for block in model.blocks:
        for layer in (block.self_attn.to_out, block.cross_attn.to_out, block.mlp.mlp[2]):
            nn.init.normal_(layer.weight, std=1.0 / math.sqrt(5 * model.num_blocks * c))
            nn.init.zeros_(layer.bias)
    nn.init.normal_(model.input_layer.weight, std=1.0 / math.sqrt(model.in_channels))
    nn.init.zeros_(model.input_layer.bias)
    _init_dit_conditioning(model)


def init_flow_weights(model: nn.Module, initialization: str) -> None:
    """Initialise a flow transformer by the reference's `initialization` name ('vanilla' or 'scaled')."""
    if initialization == "vanilla":
        init_dit_weights(model)
    elif initialization == "scaled":
        init_dit_weights_scaled(model)
    else:
        raise ValueError(f"unknown initialization {initialization!r}; use 'vanilla' or 'scaled'")


def init_transformer_weights(model: nn.Module) -> None:
    """Xavier linears with zero biases (the VAEs' transformer recipe)."""
    _init_linears(model, nn.init.xavier_uniform_)
