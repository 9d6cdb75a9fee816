"""Shared helpers for the model-integration tests."""

from __future__ import annotations

import torch

from vistoken import testing
from vistoken.models.base import contiguous_positions, last_valid_column


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
    kw.setdefault("pad_token_id", testing.PAD_ID)
    with torch.no_grad():
        return model.generate(**x, max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                              output_logits=True, return_dict_in_generate=True, **kw)


def batch(items, side="left"):
    """Pad single-sample inputs into one batch on ``side``, as a processor would."""
    longest = max(s["input_ids"].shape[1] for s in items)
    out = {}
    for key, fill in (
        ("input_ids", testing.PAD_ID),
        ("attention_mask", 0),
        ("mm_token_type_ids", 0),
    ):
        if key in items[0]:
            rows = []
            for s in items:
                pad = longest - s[key].shape[1]
                spec = (pad, 0) if side == "left" else (0, pad)
                rows.append(torch.nn.functional.pad(s[key], spec, value=fill))
            out[key] = torch.cat(rows)
    for key in ("pixel_values", "pixel_values_videos", "video_grid_thw", "image_grid_thw"):
        if key in items[0]:
            out[key] = torch.cat([s[key] for s in items])
    return out


def continued_positions(prefill, new):
    """Position ids of a compressed prompt followed by ``new`` generated tokens: 1-D ids
    count on contiguously; M-RoPE rows go on from the highest prompt position + 1 (all
    three rows equal), with the text row (if any) contiguous."""
    mask = prefill["mask"]
    pos = prefill["pos"]
    if mask is None:  # generate() drops an all-ones mask
        mask = torch.ones(prefill["embeds"].shape[:2], dtype=torch.long)
    b = mask.shape[0]
    full_mask = torch.cat((mask, torch.ones(b, new, dtype=mask.dtype)), dim=1)
    text = contiguous_positions(full_mask)
    if pos.ndim == 2:
        return text, full_mask
    rope = pos[-3:]
    # generate's rule: the last prompt token's position + 1 (what the model does uncompressed)
    top = rope[:, torch.arange(b), last_valid_column(mask)].amax(dim=0)
    more = (top[:, None] + 1 + torch.arange(new))[None].expand(3, -1, -1)
    rope = torch.cat((rope, more), dim=2)
    return (torch.cat((text[None], rope)) if pos.shape[0] == 4 else rope), full_mask


def pinned_fastv_recompute(model, handle, x, sequences, keep, steps):
    """Logits of one uncached forward of prompt + generated tokens with FastV's prefill
    selection pinned (generated tokens are text: always kept)."""
    b, length = x["input_ids"].shape
    new = sequences[:, length : length + steps - 1]
    full = dict(x)
    full["input_ids"] = torch.cat((x["input_ids"], new), dim=1)
    full["attention_mask"] = torch.cat(
        (x["attention_mask"], torch.ones_like(new, dtype=x["attention_mask"].dtype)), dim=1
    )
    if "mm_token_type_ids" in x:
        full["mm_token_type_ids"] = torch.cat((x["mm_token_type_ids"], torch.zeros_like(new)), 1)
    pinned = torch.zeros(b, length, dtype=torch.bool)
    for r in range(b):
        pinned[r, keep[r][keep[r] >= 0]] = True
    pinned = torch.cat((pinned, torch.ones(b, steps - 1, dtype=torch.bool)), dim=1)
    fastv = handle._parts[0]
    fastv._select = lambda scores, candidates: pinned
    try:
        with torch.no_grad():
            out = model(**full, use_cache=False)
    finally:
        del fastv._select
    return out.logits[:, -steps:]  # FastV output columns: the kept positions, right-aligned
