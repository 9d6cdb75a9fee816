"""The hook machinery shared by every model family.

A family adapter (``families.py``) knows where a model keeps its visual tokens; this module
knows how to make the language model really see fewer of them:

1. ``Unit``: one compressible run of visual tokens in one sequence (a video, an image, a
   sample's frames) with the sequence slots its T*N tokens occupy.
2. ``shorten``: given each unit's ``Compressed`` result, keep for every output token the
   slot of its anchor token (``Compressed.anchors``) with the output token's embedding in
   it, drop the other slots of the unit, and re-pack the batch (same padding side as the
   input). Text, padding and tokens outside the units stay where they were.
3. ``DecodeState``: what the decode steps that follow a shortened prefill need, kept per KV
   cache object, so the generation loop's own bookkeeping (attention mask and position ids
   of the uncompressed prompt) is mapped onto the shorter cache.

Nothing here imports transformers; argument names come from ``_hf``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..core import Compressed
from . import _hf


@dataclass
class Unit:
    """One compressible run of visual tokens.

    row: batch row of the sequence; slots: (T*N,) int64 sequence indices of the tokens,
    frame-major; tokens: (T, N, D); grid: (H, W) with H*W == N, or None; extra: what a
    model-side method needs besides the tokens (VisionZip's attention statistics).
    """

    row: int
    slots: Tensor
    tokens: Tensor
    grid: tuple[int, int] | None
    extra: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class Shortened:
    """A re-packed batch. index: (B, L') source column of each new column (valid or not);
    valid: (B, L') bool; embeds: (B, L', D); mask: (B, L') long."""

    index: Tensor
    valid: Tensor
    embeds: Tensor
    mask: Tensor


def place(embeds: Tensor, keep: Tensor, unit: Unit, c: Compressed) -> None:
    """Write unit's output tokens into the slots of their anchors; mark the rest dropped.

    embeds: (B, L, D) modified in place; keep: (B, L) bool modified in place.
    """
    anchors = c.anchors.to(unit.slots.device)
    if anchors.numel() and torch.unique(anchors).numel() != anchors.numel():
        raise RuntimeError(
            f"method {c.info.get('method')!r} gave two output tokens the same anchor; "
            "the adapter needs one anchor per output token"
        )
    target = unit.slots[anchors]
    keep[unit.row, unit.slots] = False
    keep[unit.row, target] = True
    embeds[unit.row, target] = c.tokens.to(embeds.dtype)


def shorten(embeds: Tensor, keep: Tensor, attention_mask: Tensor | None) -> Shortened:
    """Drop the columns where ``keep`` is False and re-pack rows to the longest one.

    embeds: (B, L, D); keep: (B, L) bool; attention_mask: (B, L) or None (no padding).
    Rows that end up shorter are padded on the side the input was padded on: right only
    when the input is right-padded, else left (as generation expects), with zero
    embeddings and mask 0.
    """
    b, l, d = embeds.shape
    mask = (
        attention_mask.to(torch.long)
        if attention_mask is not None
        else torch.ones(b, l, dtype=torch.long, device=embeds.device)
    )
    counts = keep.sum(dim=1)
    new_len = int(counts.max())
    # Kept columns first, in their original order (a stable sort of the drop flags).
    order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices[:, :new_len]
    j = torch.arange(new_len, device=embeds.device).expand(b, -1)
    right = bool((mask[:, -1] == 0).any()) and bool((mask[:, 0] == 1).all())
    if not right:
        src = j - (new_len - counts)[:, None]
        valid = src >= 0
    else:
        src = j
        valid = j < counts[:, None]
    index = order.gather(1, src.clamp(min=0, max=max(new_len - 1, 0)))
    new_embeds = embeds.gather(1, index[..., None].expand(-1, -1, d))
    new_embeds = new_embeds * valid[..., None].to(new_embeds.dtype)
    new_mask = mask.gather(1, index) * valid.to(torch.long)
    return Shortened(index=index, valid=valid, embeds=new_embeds, mask=new_mask)


def contiguous_positions(mask: Tensor) -> Tensor:
    """(B, L) 1-D position ids from a padding mask, the rule generation uses."""
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 0)


def last_valid_column(mask: Tensor) -> Tensor:
    """(B,) index of each row's last real token in a (B, L) padding mask (either side)."""
    cols = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return cols.masked_fill(mask == 0, -1).amax(dim=1).clamp(min=0)


def text_next(text_positions: Tensor | None, mask: Tensor) -> Tensor:
    """(B,) the 1-D position the generation loop gives the first token after a prompt.

    text_positions: (B, L) the prompt's 1-D (text-row) position ids, or None (then the
    loop counts mask ones); mask: (B, L) the prompt's padding mask.
    """
    if text_positions is not None:
        return text_positions.masked_fill(mask == 0, -1).amax(dim=1) + 1
    return mask.sum(dim=1)


@dataclass
class DecodeState:
    """What decode steps after a shortened prefill need.

    mask: (B, L') the prefill's new attention mask; offset: (B,) how many positions the
    generation loop's 1-D position ids run ahead of the shortened sequence's.
    """

    mask: Tensor
    offset: Tensor
    padded: bool


def _repeat_rows(x: Tensor, batch: int) -> Tensor:
    """Expand per-sample state to the generation batch (beams, num_return_sequences)."""
    if x.shape[0] == batch:
        return x
    if batch % x.shape[0]:
        raise RuntimeError(f"batch of {batch} rows does not extend a prefill of {x.shape[0]}")
    return x.repeat_interleave(batch // x.shape[0], dim=0)


def check_mask(attention_mask: Any) -> None:
    """vt.apply works on the processor's 2-D padding masks, not prebuilt 4-D ones."""
    if attention_mask is None:
        return
    if not isinstance(attention_mask, Tensor) or attention_mask.ndim != 2:
        got = getattr(attention_mask, "shape", type(attention_mask).__name__)
        raise ValueError(f"vt.apply supports 2-D attention masks (the processor's); got {got}")


def step_shape(kwargs: dict[str, Any]) -> tuple[int, int]:
    """(batch, tokens) of this forward call."""
    for key in ("input_ids", "inputs_embeds"):
        if kwargs.get(key) is not None:
            return int(kwargs[key].shape[0]), int(kwargs[key].shape[1])
    raise ValueError("the model was called without input_ids or inputs_embeds")


def decode_kwargs(
    kwargs: dict[str, Any],
    state: DecodeState,
    past: int,
    shift_positions: Callable[[Tensor, Tensor], Tensor],
) -> dict[str, Any]:
    """Map a decode step's attention mask and position ids onto the shortened cache.

    past: tokens already in the cache. The mask becomes the prefill's new mask plus the
    columns of the tokens generated since. Position ids are moved back by the per-row
    offset with the family's ``shift_positions(position_ids, offset (B, 1))`` (1-D ids and
    the text row of M-RoPE ids move; M-RoPE's (t, h, w) rows stay as the loop made them).
    """
    out = dict(kwargs)
    am = _hf.attention_mask(kwargs)
    check_mask(am)
    batch, q_len = step_shape(kwargs)
    tail = past + q_len - state.mask.shape[1]
    if am is not None or state.padded:
        head = _repeat_rows(state.mask, batch).to(
            device=am.device if am is not None else state.mask.device
        )
        if am is not None and am.shape[1] >= tail:
            new_cols = am[:, am.shape[1] - tail :].to(head.dtype)
        else:
            new_cols = torch.ones(batch, tail, dtype=head.dtype, device=head.device)
        out[_hf.MASK_KEY] = torch.cat((head, new_cols), dim=1)
    pos = _hf.position_ids(kwargs)
    if pos is not None:
        off = _repeat_rows(state.offset, pos.shape[-2]).to(pos.device)[:, None]
        out[_hf.POSITION_KEY] = shift_positions(pos, off)
    return out
