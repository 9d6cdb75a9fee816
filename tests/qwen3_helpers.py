"""Shared helpers for the Qwen3-VL and Qwen3.5 tests: batches, recorded language-model
calls (with DeepStack arguments), and full recomputes to compare cached generation with."""

from __future__ import annotations

import contextlib

import model_helpers
import torch

from vistoken import testing
from vistoken.models.base import contiguous_positions, last_valid_column

STEPS = 4
ATOL = 1e-5  # cached vs recomputed, same batch: float32 round-off only
ATOL_BATCH = 1e-4  # padded batch vs alone: attention sums in another order


def batch(items, side="left"):
    """Pad single-sample inputs into one batch on ``side``, as the processor would."""
    longest = max(s["input_ids"].shape[1] for s in items)
    out = {}
    for key, fill in (
        ("input_ids", testing.PAD_ID),
        ("attention_mask", 0),
        ("mm_token_type_ids", 0),
    ):
        rows = []
        for s in items:
            pad = longest - s[key].shape[1]
            rows.append(
                torch.nn.functional.pad(
                    s[key], (pad, 0) if side == "left" else (0, pad), value=fill
                )
            )
        out[key] = torch.cat(rows)
    for key in ("pixel_values", "pixel_values_videos", "video_grid_thw", "image_grid_thw"):
        if key in items[0]:
            out[key] = torch.cat([s[key] for s in items])
    return out


def generate(model, x, steps=STEPS, **kw):
    return model_helpers.generate(model, x, steps, **kw)


@contextlib.contextmanager
def recording(model):
    """Record every language-model call inside the block (enter it after ``vt.apply``:
    pre-hooks run in the order they were registered, and vt.apply's hands the language
    model its DeepStack arguments)."""
    calls, hook = record_llm_calls(model)
    try:
        yield calls
    finally:
        hook.remove()


def record_llm_calls(model):
    """Hook the language model; returns (calls, hook). Each call: embeds, positions, mask,
    the DeepStack visual mask and levels."""
    calls = []

    def hook(mod, args, kw):
        calls.append(
            {
                "embeds": kw.get("inputs_embeds"),
                "pos": kw.get("position_ids"),
                "mask": kw.get("attention_mask"),
                "visual": kw.get("visual_pos_masks"),
                "deepstack": kw.get("deepstack_visual_embeds"),
            }
        )

    return calls, model.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)


def continued_positions(prefill, new):
    """Positions of the compressed prompt the LLM saw followed by ``new`` generated tokens:
    the text row counts on contiguously, the (t, h, w) rows go on from the highest prompt
    position + 1 (what the model does for an uncompressed prompt)."""
    mask = prefill["mask"]
    if mask is None:
        mask = torch.ones(prefill["embeds"].shape[:2], dtype=torch.long)
    b = mask.shape[0]
    full_mask = torch.cat((mask, torch.ones(b, new, dtype=mask.dtype)), dim=1)
    text = contiguous_positions(full_mask)
    rope = prefill["pos"][-3:]
    top = rope[:, torch.arange(b), last_valid_column(mask)].amax(dim=0)
    more = (top[:, None] + 1 + torch.arange(new))[None].expand(3, -1, -1)
    return torch.cat((text[None], torch.cat((rope, more), dim=2))), full_mask


def recompute(model, prefill, sequences, steps=STEPS):
    """Logits (B, steps, V) of one uncached language-model forward of the compressed prompt
    (with its DeepStack features, if any) followed by the generated tokens."""
    new = sequences[:, -steps:]
    embeds = torch.cat((prefill["embeds"], model.get_input_embeddings()(new[:, :-1])), dim=1)
    pos, mask = continued_positions(prefill, steps - 1)
    extra = {}
    if prefill["visual"] is not None:
        visual = torch.nn.functional.pad(prefill["visual"], (0, steps - 1), value=False)
        extra = {"visual_pos_masks": visual, "deepstack_visual_embeds": prefill["deepstack"]}
    with torch.no_grad():
        out = model.model.language_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=False, **extra
        )
        logits = model.lm_head(out.last_hidden_state)
    start = prefill["embeds"].shape[1] - 1
    return logits[:, start : start + steps]


def pinned_fastv_recompute(model, handle, x, sequences, keep, steps=STEPS):
    """Logits of one uncached forward of prompt + generated tokens with FastV's prefill
    selection ``keep`` (FastV.last_keep) pinned; generated tokens are text, always kept."""
    b, length = x["input_ids"].shape
    new = sequences[:, length : length + steps - 1]
    full = dict(x)
    full["input_ids"] = torch.cat((x["input_ids"], new), dim=1)
    full["attention_mask"] = torch.cat((x["attention_mask"], torch.ones_like(new)), dim=1)
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
    return out.logits[:, -steps:]  # FastV's output columns: the kept positions, right-aligned


def video(model, seed=0, grid=(4, 8, 8), text=6):
    """One video of 4 timestamped blocks of 16 tokens (a (4, 8, 8) patch grid)."""
    return testing.qwen3_vl_inputs(model, [grid], seed=seed, text=text)


def image(model):
    """One image of 16 tokens."""
    return testing.qwen3_vl_inputs(model, [(1, 8, 8)], kind="image")


def singles(model):
    """Two samples with different token counts and lengths (a batch needs padding)."""
    return [video(model, 0), video(model, 1, grid=(2, 8, 4), text=9)]
