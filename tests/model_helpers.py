"""Shared helpers for the model-integration tests."""

from __future__ import annotations

import torch


def logits(model, x):
    """The model's logits for inputs ``x``, without gradients."""
    with torch.no_grad():
        return model(**x).logits


def lengths_seen(model):
    """Record the sequence length the first decoder layer gets on each call.

    Returns (list that fills as the model runs, the hook handle to remove).
    """
    seen = []
    layer = model.model.language_model.layers[0]
    h = layer.register_forward_pre_hook(
        lambda mod, args, kw: seen.append((args[0] if args else kw["hidden_states"]).shape[1]),
        with_kwargs=True,
    )
    return seen, h
