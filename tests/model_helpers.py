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


def generate(model, x, steps, **kw):
    """Greedy generation of exactly ``steps`` tokens with each step's logits (and, passed on,
    any other ``generate`` keyword: ``output_scores``, ``suppress_tokens``, ``pad_token_id``
    overriding the tiny tokenizer's)."""
    from vistoken import testing

    kw.setdefault("pad_token_id", testing.PAD_ID)
    with torch.no_grad():
        return model.generate(**x, max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                              output_logits=True, return_dict_in_generate=True, **kw)
