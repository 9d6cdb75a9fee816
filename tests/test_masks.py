"""vistoken.models.masks: FastV's pure mask and sequence functions, in all three formats.

Every result is compared with a mask written out by hand, and the formats are checked
against each other: SDPA's bool "may attend" is exactly where eager's additive mask is 0,
and, FlashAttention's 2-D keep mask being per key, the bool mask is the causal pattern on
the kept keys (plus the self-only rows of the keep index's padding).
"""

from __future__ import annotations

import pytest
import torch

from vistoken.models import _hf, masks

T, F = True, False
MIN = torch.finfo(torch.float32).min

# A prefill of L = 6 positions, batch 2. Row 1 has two columns of left padding (0 and 1).
# FastV kept positions [0, 2, 4, 5] of row 0 and [1, 3, 5] of row 1; the keep index is
# right-aligned, so row 1 gets one padding entry (a valid position, 0, marked invalid).
L = 6
PAD = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])
INDEX = torch.tensor([[0, 2, 4, 5], [0, 1, 3, 5]])
VALID = torch.tensor([[T, T, T, T], [F, T, T, T]])
IMPLS = {"bool": "sdpa", "additive": "eager", "keep": "flash_attention_2"}

# prefill_mask(None, ...): causal on the kept positions; the index's padding row attends
# only to itself, and no row attends to it
NONE_PREFILL = torch.tensor(
    [
        [[T, F, F, F], [T, T, F, F], [T, T, T, F], [T, T, T, T]],
        [[T, F, F, F], [F, T, F, F], [F, T, T, F], [F, T, T, T]],
    ]
)[:, None]
# prefill_mask(the model's padded mask, ...): besides, columns of padding (position 1 of
# row 1) are masked, so that padding query has no key, as in the model's own mask
PADDED_PREFILL = torch.tensor(
    [
        [[T, F, F, F], [T, T, F, F], [T, T, T, F], [T, T, T, T]],
        [[T, F, F, F], [F, F, F, F], [F, F, T, F], [F, F, T, T]],
    ]
)[:, None]
PADDED_KEEP = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])


def additive(allowed: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The eager mask of a bool one, written out: 0 where allowed, dtype min elsewhere."""
    return torch.where(allowed, 0.0, torch.finfo(dtype).min).to(dtype)


def model_masks(pad: torch.Tensor, q: int, kv: int) -> dict[str, torch.Tensor]:
    """The masks a model passes for key padding ``pad`` (B, kv): the last q rows of causal."""
    rows = torch.arange(kv - q, kv)[:, None]
    allowed = (torch.arange(kv)[None] <= rows) & pad.bool()[:, None, None, :]
    return {"bool": allowed, "additive": additive(allowed), "keep": pad}


def self_only(valid: torch.Tensor) -> torch.Tensor:
    """(B, 1, Lk, Lk) the diagonal entries of the keep index's padding rows."""
    return torch.eye(valid.shape[1], dtype=torch.bool) & ~valid[:, None, :, None]


def agree(bool4: torch.Tensor, add4: torch.Tensor, keep2: torch.Tensor, q: int) -> None:
    """The three formats of one mask say the same: bool == (additive == 0), and bool is the
    causal pattern of the last q rows on the keys of the 2-D keep mask."""
    assert torch.equal(bool4, add4 == 0)
    kv = keep2.shape[1]
    causal = torch.arange(kv)[None] <= torch.arange(kv - q, kv)[:, None]
    assert torch.equal(bool4 & ~causal, torch.zeros_like(bool4))
    assert torch.equal(
        bool4[..., causal], keep2.bool()[:, None, None, :].expand_as(bool4)[..., causal]
    )


# ------------------------------------------------------------------ format names


def test_mask_format_of_each_attention_implementation():
    assert _hf.mask_format("sdpa") == "bool"
    assert _hf.mask_format("eager") == "additive"
    assert _hf.mask_format("flash_attention_2") == "keep"
    assert _hf.mask_format("flash_attention_3") == "keep"
    assert _hf.mask_format("kernels-community/flash-attn") == "keep"
    assert _hf.mask_format("flex_attention") is None


def test_format_mask():
    allowed = NONE_PREFILL
    assert masks.format_mask(allowed, "sdpa", torch.float32) is allowed
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        out = masks.format_mask(allowed, "eager", dtype)
        assert out.dtype == dtype
        assert torch.equal(out, additive(allowed, dtype))
    for impl in ("flex_attention", "flash_attention_2"):  # flash takes no 4-D mask
        with pytest.raises(NotImplementedError, match=f"attn_implementation='{impl}'"):
            masks.format_mask(allowed, impl, torch.float32)


# ------------------------------------------------------------------ sequence helpers


def test_rotate_half():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    assert torch.equal(
        masks.rotate_half(x), torch.tensor([[-3.0, -4.0, 1.0, 2.0], [-7.0, -8.0, 5.0, 6.0]])
    )


def test_gather_seq_on_hidden_rotary_and_positions():
    hidden = torch.arange(2 * L * 3).view(2, L, 3)
    out = masks.gather_seq(hidden, INDEX, 1)
    assert out.shape == (2, 4, 3)
    for b in range(2):
        assert torch.equal(out[b], hidden[b, INDEX[b]])
    cos = torch.arange(L * 4).view(1, L, 4)  # batch 1, broadcast to B
    out = masks.gather_seq(cos, INDEX, -2)
    assert out.shape == (2, 4, 4)
    for b in range(2):
        assert torch.equal(out[b], cos[0, INDEX[b]])
    pos = torch.arange(3 * 2 * L).view(3, 2, L)  # M-RoPE (3, B, L)
    out = masks.gather_seq(pos, INDEX, -1)
    assert out.shape == (3, 2, 4)
    for b in range(2):
        assert torch.equal(out[:, b], pos[:, b][:, INDEX[b]])


def test_query_row_and_last_row_allowed():
    last = torch.tensor([5, 3])  # row 1: right padding after column 3
    pad = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 0, 0]])
    causal = torch.tensor([[T, T, T, T, T, T], [T, T, T, T, F, F]])
    expected = torch.tensor([[T, T, T, T, T, T], [F, T, T, T, F, F]])
    assert torch.equal(masks.last_row_allowed(None, last, L), causal)
    m = model_masks(pad, L, L)
    assert torch.equal(masks.query_row(m["bool"], last), expected)
    assert torch.equal(masks.query_row(m["additive"], last), additive(expected))
    for fmt in ("bool", "additive", "keep"):
        assert torch.equal(masks.last_row_allowed(m[fmt], last, L), expected), fmt
    shared = torch.ones(L, L, dtype=torch.bool).tril()[None, None]  # batch 1
    assert torch.equal(masks.last_row_allowed(shared, last, L), causal)
    with pytest.raises(TypeError, match="tensor or None attention masks"):
        masks.last_row_allowed({"full_attention": shared}, last, L)


# ------------------------------------------------------------------ prefill


@pytest.mark.parametrize("fmt", ["bool", "additive", "keep"])
def test_prefill_mask_built_from_none(fmt):
    out = masks.prefill_mask(None, INDEX, VALID, IMPLS[fmt], torch.float32)
    expected = {
        "bool": NONE_PREFILL,
        "additive": additive(NONE_PREFILL),
        "keep": VALID.long(),
    }[fmt]
    assert out.dtype == expected.dtype and torch.equal(out, expected)


def test_prefill_mask_built_from_none_formats_agree():
    out = {
        f: masks.prefill_mask(None, INDEX, VALID, impl, torch.float32) for f, impl in IMPLS.items()
    }
    assert torch.equal(out["bool"], out["additive"] == 0)
    # on the index's valid rows, causal over the 2-D keep mask's keys; padding rows: self
    keep = out["keep"].bool()[:, None, None, :]
    tril = torch.ones(4, 4, dtype=torch.bool).tril()
    assert torch.equal(out["bool"], (tril & keep) | self_only(VALID))


@pytest.mark.parametrize("fmt", ["bool", "additive", "keep"])
def test_prefill_mask_gathered_from_the_models_mask(fmt):
    given = model_masks(PAD, L, L)[fmt]
    out = masks.prefill_mask(given, INDEX, VALID, "unused", torch.float32)
    expected = {
        "bool": PADDED_PREFILL,
        "additive": additive(PADDED_PREFILL),
        "keep": PADDED_KEEP,
    }[fmt]
    assert out.dtype == expected.dtype and torch.equal(out, expected)


def test_prefill_mask_gathered_formats_agree():
    m = model_masks(PAD, L, L)
    out = {f: masks.prefill_mask(m[f], INDEX, VALID, "unused", torch.float32) for f in m}
    assert torch.equal(out["bool"], out["additive"] == 0)
    keep = out["keep"].bool()[:, None, None, :]
    tril = torch.ones(4, 4, dtype=torch.bool).tril()
    assert torch.equal(out["bool"], (tril & keep) | self_only(VALID))


def test_prefill_mask_of_a_shared_causal_mask_equals_the_one_built_from_none():
    tril = torch.ones(L, L, dtype=torch.bool).tril()[None, None]  # (1, 1, L, L)
    assert torch.equal(masks.prefill_mask(tril, INDEX, VALID, "sdpa", torch.float32), NONE_PREFILL)
    add = masks.prefill_mask(additive(tril), INDEX, VALID, "eager", torch.float32)
    assert torch.equal(add, additive(NONE_PREFILL))
    ones = torch.ones(2, L, dtype=torch.long)
    keep = masks.prefill_mask(ones, INDEX, VALID, "flash_attention_2", torch.float32)
    assert torch.equal(keep, VALID.long())


# ------------------------------------------------------------------ decode

# After the prefill: new_before tokens generated and cached, q new ones in this step. The
# columns of the decode mask: the 4 kept prefill columns, then the new_before + q new ones.


def none_decode(q: int, new_before: int) -> torch.Tensor:
    """The decode mask from None, written out (bool, (2, 1, q, 4 + new_before + q))."""
    rows = []
    for t in range(q):
        new = [c <= new_before + t for c in range(new_before + q)]
        rows.append([[*v, *new] for v in VALID.tolist()])
    return torch.tensor(rows).permute(1, 0, 2)[:, None]


def test_decode_mask_none_written_out():
    assert torch.equal(
        none_decode(2, 1),
        torch.tensor(
            [
                [[T, T, T, T, T, T, F], [T, T, T, T, T, T, T]],
                [[F, T, T, T, T, T, F], [F, T, T, T, T, T, T]],
            ]
        )[:, None],
    )


@pytest.mark.parametrize(("q", "new_before"), [(1, 0), (1, 2), (2, 1)])
@pytest.mark.parametrize("fmt", ["bool", "additive", "keep"])
def test_decode_mask_built_from_none(fmt, q, new_before):
    out = masks.decode_mask(None, INDEX, VALID, L, q, new_before, IMPLS[fmt], torch.float32)
    allowed = none_decode(q, new_before)
    expected = {
        "bool": allowed,
        "additive": additive(allowed),
        "keep": torch.cat([VALID.long(), torch.ones(2, new_before + q, dtype=torch.long)], 1),
    }[fmt]
    assert out.dtype == expected.dtype and torch.equal(out, expected)


@pytest.mark.parametrize(("q", "new_before"), [(1, 0), (1, 2), (2, 1)])
def test_decode_mask_built_from_none_formats_agree(q, new_before):
    out = {
        f: masks.decode_mask(None, INDEX, VALID, L, q, new_before, impl, torch.float32)
        for f, impl in IMPLS.items()
    }
    agree(out["bool"], out["additive"], out["keep"], q)


@pytest.mark.parametrize(("q", "new_before"), [(1, 0), (1, 2), (2, 1)])
@pytest.mark.parametrize("fmt", ["bool", "additive", "keep"])
def test_decode_mask_gathered_from_the_models_mask(fmt, q, new_before):
    n_new = new_before + q
    pad = torch.cat([PAD, torch.ones(2, n_new, dtype=torch.long)], 1)
    given = model_masks(pad, q, L + n_new)[fmt]
    out = masks.decode_mask(given, INDEX, VALID, L, q, new_before, "unused", torch.float32)
    # kept prefill columns: the model's (padding masked) and the index's padding masked
    keep = torch.cat([PADDED_KEEP, torch.ones(2, n_new, dtype=torch.long)], 1)
    allowed = none_decode(q, new_before) & keep.bool()[:, None, None, :]
    expected = {"bool": allowed, "additive": additive(allowed), "keep": keep}[fmt]
    assert out.dtype == expected.dtype and torch.equal(out, expected)


@pytest.mark.parametrize(("q", "new_before"), [(1, 0), (1, 2), (2, 1)])
def test_decode_mask_gathered_formats_agree(q, new_before):
    n_new = new_before + q
    pad = torch.cat([PAD, torch.ones(2, n_new, dtype=torch.long)], 1)
    m = model_masks(pad, q, L + n_new)
    out = {
        f: masks.decode_mask(m[f], INDEX, VALID, L, q, new_before, "unused", torch.float32)
        for f in m
    }
    agree(out["bool"], out["additive"], out["keep"], q)


@pytest.mark.parametrize("fmt", ["bool", "additive", "keep"])
def test_decode_mask_refuses_a_mask_of_other_length(fmt):
    given = model_masks(torch.ones(2, L + 2, dtype=torch.long), 1, L + 2)[fmt]
    with pytest.raises(RuntimeError, match="has 8 columns, expected 9"):
        masks.decode_mask(given, INDEX, VALID, L, 1, 2, "unused", torch.float32)
