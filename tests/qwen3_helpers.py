"""Shared helpers for the Qwen3-VL and Qwen3.5 tests: batches, recorded language-model
calls (with DeepStack arguments), and full recomputes to compare cached generation with."""

from __future__ import annotations

import contextlib

import model_helpers
import torch
from model_helpers import batch, continued_positions  # noqa: F401  (re-exported)

from vistoken import testing

STEPS = 4
ATOL = 1e-5  # cached vs recomputed, same batch: float32 round-off only
ATOL_BATCH = 1e-4  # padded batch vs alone: attention sums in another order


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


def video(model, seed=0, grid=(4, 8, 8), text=6):
    """One video of 4 timestamped blocks of 16 tokens (a (4, 8, 8) patch grid)."""
    return testing.qwen3_vl_inputs(model, [grid], seed=seed, text=text)


def image(model):
    """One image of 16 tokens."""
    return testing.qwen3_vl_inputs(model, [(1, 8, 8)], kind="image")


def singles(model):
    """Two samples with different token counts and lengths (a batch needs padding)."""
    return [video(model, 0), video(model, 1, grid=(2, 8, 4), text=9)]


def pinned_fastv_recompute(model, handle, x, sequences, keep, steps=STEPS):
    """model_helpers.pinned_fastv_recompute at this module's step count."""
    return model_helpers.pinned_fastv_recompute(model, handle, x, sequences, keep, steps)
