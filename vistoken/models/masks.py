"""Pure functions on attention masks and sequence tensors for in-LLM pruning (FastV).

No state and no hooks: every function maps tensors to tensors. :class:`~.fastv.FastV` calls
them with its keep index. The masks come in the three formats decoder layers receive
(``_hf.mask_format``, assumption 4 of ``_hf``):

- ``"bool"`` (SDPA): 4-D (B|1, 1, q, kv) bool, True = may attend;
- ``"additive"`` (eager): 4-D (B|1, 1, q, kv) float, 0 = may attend, ``finfo(dtype).min``
  = masked;
- ``"keep"`` (FlashAttention): 2-D (B, kv) integer, 1 = key present, 0 = padding; the
  causal part is implied by the kernel.

A layer may also get None (no padding: plain causal); then a mask is built in the format of
the attention implementation. The keep index of a pruned prefill is ``index`` (B, Lk) long,
always a valid position, with ``valid`` (B, Lk) bool False where a row has fewer kept
positions than the longest (left padding of the index). Padding rows of the index attend
only to themselves, so no softmax row is empty (never NaN).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _hf

__all__ = [
    "apply_rope",
    "decode_mask",
    "padding_mask",
    "format_mask",
    "gather_seq",
    "last_row_allowed",
    "prefill_mask",
    "query_row",
    "rotate_half",
]


def rotate_half(x: Tensor) -> Tensor:
    """Rotate half the last dimension: (x1, x2) -> (-x2, x1), as HF's Llama-style RoPE."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding on the first ``cos.shape[-1]`` channels of ``x`` (all of them, or
    a partial rotary's share: the rest pass unchanged), as HF's Llama-style RoPE."""
    r = cos.shape[-1]
    if r == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    rot, rest = x[..., :r], x[..., r:]
    return torch.cat((rot * cos + rotate_half(rot) * sin, rest), dim=-1)


def gather_seq(x: Tensor, index: Tensor, seq_dim: int) -> Tensor:
    """Gather ``x`` along its sequence dimension with a per-row index.

    x: (..., B|1, L, ...) with batch at ``seq_dim - 1``; index: (B, Lk) long.
    Returns (..., B, Lk, ...).
    """
    seq_dim = seq_dim % x.ndim
    b, lk = index.shape
    shape = list(x.shape)
    shape[seq_dim - 1] = b
    x = x.expand(shape)
    view = [1] * x.ndim
    view[seq_dim - 1], view[seq_dim] = b, lk
    idx_shape = list(shape)
    idx_shape[seq_dim] = lk
    return x.gather(seq_dim, index.view(view).expand(idx_shape))


def query_row(mask: Tensor, last: Tensor) -> Tensor:
    """(B, L) the 4-D mask's row of each sample's query ``last`` (B,)."""
    b = last.shape[0]
    full = mask[:, 0].expand(b, mask.shape[2], mask.shape[3])
    return full.gather(1, last[:, None, None].expand(b, 1, full.shape[2]))[:, 0]


def last_row_allowed(mask: Tensor | None, last: Tensor, length: int) -> Tensor:
    """(B, L) bool: the keys query ``last`` (B,) may attend (causal, False on padding).

    mask: None, 2-D keep mask (B, L), or 4-D bool / additive float (B|1, 1, L, L).
    """
    causal = torch.arange(length, device=last.device)[None] <= last[:, None]
    if mask is None:
        return causal
    if not isinstance(mask, Tensor):
        raise TypeError(
            f"FastV supports tensor or None attention masks (eager, sdpa, flash), got "
            f"{type(mask).__name__}; use attn_implementation='sdpa' or 'eager'"
        )
    if mask.ndim == 2:
        return mask.bool().expand_as(causal) & causal
    row = query_row(mask, last)
    return row if row.dtype == torch.bool else row > torch.finfo(row.dtype).min


def format_mask(allowed: Tensor, impl: str, dtype: torch.dtype) -> Tensor:
    """Bool "may attend" (B, 1, q, kv) -> the 4-D mask format of attention ``impl``
    (bool for SDPA, additive ``dtype`` for eager; NotImplementedError for others)."""
    fmt = _hf.mask_format(impl)
    if fmt == "bool":
        return allowed
    if fmt == "additive":
        out = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        return out.masked_fill_(~allowed, torch.finfo(dtype).min)
    raise NotImplementedError(
        f"FastV cannot build an attention mask for attn_implementation={impl!r}; "
        "use 'sdpa', 'eager' or a FlashAttention implementation"
    )


def prefill_mask(
    mask: Tensor | None, index: Tensor, valid: Tensor, impl: str, dtype: torch.dtype
) -> Tensor:
    """The mask of a prefill restricted to the kept positions ``index`` (B, Lk).

    mask: the layer's mask over the full prefill (None, 2-D (B, L) or 4-D (B|1, 1, L, L));
    impl: the attention implementation (used when mask is None); dtype: of the hidden
    states (an additive mask built from None). Returns 4-D (B, 1, Lk, Lk) bool or float, or
    2-D (B, Lk) for FlashAttention. Padding columns of the index are masked; their rows
    attend only to themselves.
    """
    b, lk = index.shape
    eye = torch.eye(lk, dtype=torch.bool, device=index.device)
    self_only = eye & ~valid[:, None, :, None]  # (B, 1, Lk, Lk), rows of padding
    if mask is None:
        if _hf.mask_format(impl) == "keep":
            return valid.long()
        causal = torch.ones(lk, lk, dtype=torch.bool, device=index.device).tril()
        allowed = (causal & valid[:, None, None, :]) | self_only
        return format_mask(allowed, impl, dtype)
    if mask.ndim == 2:
        return (gather_seq(mask, index, -1).bool() & valid).to(mask.dtype)
    full = mask.expand(b, mask.shape[1], mask.shape[2], mask.shape[3])
    rows = index[:, None, :, None].expand(b, full.shape[1], lk, full.shape[3])
    full = full.gather(2, rows)
    cols = index[:, None, None, :].expand(b, full.shape[1], lk, lk)
    full = full.gather(3, cols)
    drop = ~valid[:, None, None, :]
    if full.dtype == torch.bool:
        return (full & ~drop) | self_only
    return full.masked_fill(drop, torch.finfo(full.dtype).min).masked_fill(self_only, 0.0)


def padding_mask(mask: Tensor | None, index: Tensor, valid: Tensor) -> Tensor | None:
    """The 2-D padding mask of a linear-attention layer on the kept positions ``index``
    (B, Lk): (B, Lk) long, 0 on the input's padding and the index's; None (no masking)
    when neither has any. mask: the layer's (B, L) padding mask or None."""
    if mask is None:
        return None if bool(valid.all()) else valid.long()
    if mask.ndim != 2:
        raise ValueError(
            f"a linear-attention layer takes a 2-D padding mask, got shape {tuple(mask.shape)}"
        )
    return (gather_seq(mask, index, -1).bool() & valid).long()


def decode_mask(
    mask: Tensor | None,
    index: Tensor,
    valid: Tensor,
    length: int,
    q: int,
    new_before: int,
    impl: str,
    dtype: torch.dtype,
) -> Tensor:
    """The mask of a decode step after a pruned prefill of ``length`` positions.

    Columns: the kept prefill columns ``index`` (B, Lk), then every token generated since
    (``new_before`` cached ones and the step's ``q``). mask: the model's mask over the
    uncompressed columns (None, 2-D (B, length + new_before + q) or 4-D (B|1, 1, q, same)).
    Returns (B, 1, q, Lk + new_before + q) bool/float, or (B, Lk + new_before + q) 2-D.
    """
    b, lk = index.shape
    n_new = new_before + q
    if mask is None:
        if _hf.mask_format(impl) == "keep":
            ones = torch.ones(b, n_new, dtype=torch.long, device=index.device)
            return torch.cat([valid.long(), ones], dim=1)
        t = torch.arange(q, device=index.device)[:, None]
        c = torch.arange(n_new, device=index.device)[None, :]
        new = (c <= new_before + t).expand(b, 1, q, n_new)
        old = valid[:, None, None, :].expand(b, 1, q, lk)
        return format_mask(torch.cat([old, new], dim=-1), impl, dtype)
    if mask.shape[-1] != length + n_new:
        raise RuntimeError(
            f"FastV: decode attention mask has {mask.shape[-1]} columns, expected "
            f"{length + n_new} (prefill {length} + {n_new} new)"
        )
    if mask.ndim == 2:
        old = gather_seq(mask[:, :length], index, -1).bool() & valid
        return torch.cat([old.to(mask.dtype), mask[:, length:].expand(b, -1)], dim=1)
    full = mask.expand(b, mask.shape[1], q, mask.shape[3])
    cols = index[:, None, None, :].expand(b, full.shape[1], q, lk)
    old = full[..., :length].gather(3, cols)
    drop = ~valid[:, None, None, :]
    if old.dtype == torch.bool:
        old = old & ~drop
    else:
        old = old.masked_fill(drop, torch.finfo(old.dtype).min)
    return torch.cat([old, full[..., length:]], dim=-1)
