"""VisionZip: dominant + contextual tokens chosen from a vision tower's own attention.

VisionZip (Yang et al., CVPR 2025; REFERENCE.md section 3) keeps, per image or frame,

* **dominant** tokens: the top-k by the attention they *receive* at the vision tower's
  second-to-last layer (CLIP: from the CLS query; SigLIP has no CLS, so the attention
  received averaged over all queries), and
* **contextual** tokens: from the remaining tokens, targets at a uniform stride; every other
  remaining token is assigned to its most cosine-similar target (on that layer's keys) and
  averaged in.

:func:`visionzip` is the pure tensor function that picks and merges; registered as method
"visionzip" of stage "vision": ``vt.compress(tokens, "visionzip", retention=0.1,
received=r, keys=k)`` with the statistics as ordinary inputs, and ``vt.apply(model,
"visionzip", ...)`` records them with ``vistoken.models.attention.AttentionProbe`` (the
``model_part``) on the tower layer ``layer`` (default -2).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import torch
from torch import Tensor

from ..core import (
    INT64_MAX,
    Compressed,
    check_grid,
    check_int,
    check_real,
    check_tokens,
    grid_positions,
    identity,
    int_option,
    real_option,
    register,
    tensor_option,
)
from ..ops import normalize, row_block, segment_count, segment_mean, work_dtype
from ..ops.segment import finite_cast, sum_scale

__all__ = ["visionzip", "frame_split"]

DOMINANT_SHARE = 54 / 64


def frame_split(budget: int, frames: int, share: float) -> tuple[Tensor, Tensor, Tensor]:
    """Per-frame (budget, dominant, contextual) counts, each (T,) int64.

    The budget is split evenly, the remainder going one each to the first frames (so
    frames t >= budget get 0 when budget < T); a frame with b tokens keeps
    d = floor(share * b) dominant tokens (exact: ``share`` is read as the decimal written)
    and c = b - d contextual tokens.
    """
    base, rem = divmod(int(budget), frames)
    b = torch.full((frames,), base, dtype=torch.int64)
    b[:rem] += 1
    s = Fraction(repr(float(share)))
    d = torch.tensor([math.floor(s * v) for v in range(base + 2)], dtype=torch.int64)[b]
    return b, d, b - d


def _check_budget(budget: Any) -> int:
    return check_int(budget, "budget", 1, 2**63 - 1)


def visionzip(
    tokens: Tensor,
    received: Tensor,
    keys: Tensor,
    budget: int,
    *,
    dominant_share: float = DOMINANT_SHARE,
    grid: tuple[int, int] | None = None,
) -> Compressed:
    """VisionZip per frame: dominant tokens by attention received + merged contextual ones.

    Args:
        tokens: (T, N, D) float tokens (or (N, D) for one image).
        received: (T, N) attention each token receives (or (N,)), e.g. from
            :class:`AttentionProbe` (after :func:`resize_stats` when the model pools).
        keys: (T, N, Dk) keys on the same grid (or (N, Dk)); only their direction is used.
        budget: exact number of output tokens, >= 1. ``budget >= T*N`` returns every token
            unchanged in input order (T*N tokens, ``info["identity"]``, all counted
            dominant).
        dominant_share: fraction of each frame's budget that is dominant (VisionZip's 54 of
            64); the rest is contextual. In [0, 1].
        grid: (H, W) with H*W == N, for ``positions``; default square, else one row.

    Per frame t with budget b_t (see :func:`frame_split`: even split, remainder to the
    first frames; frames beyond ``budget`` when budget < T get 0 and all their tokens are
    dropped):

    1. dominant: the d_t tokens with the largest ``received`` (ties: lower index);
    2. contextual: of the R = N - d_t remaining tokens (ascending index), targets are those
       at remaining-rank j * step, j < c_t, step = max(1, R // c_t) (the reference's
       stride); every other remaining token goes to its most cosine-similar target on
       ``keys`` (ties: the earlier target; zero keys have cosine 0), and the output is the
       plain mean of the target and its assigned tokens. (The reference adds the target to
       the mean of its assigned tokens; we take the mean of the whole group, so every
       output is a convex combination of the tokens it covers.) With c_t = 0 the remaining
       tokens are dropped (-1).

    Output order: frame-major; within a frame by the anchor's raster index (dominant and
    contextual interleaved, in spatial order). ``sources``: a dominant token maps to
    itself, a merged token to its target's output. ``positions``: the anchor's (t, h, w)
    (the dominant token / the contextual target). ``info``: "sizes" (M,) input tokens per
    output, "dominant" (M,) bool, "frame_budgets", "dominant_counts",
    "contextual_counts" (T,) int64. Everything is batched over frames (sort, scatter,
    blocked batched cosine, segment means); the only loop is over blocks of frames.
    """
    x = check_tokens(tokens)
    if not isinstance(received, Tensor) or not isinstance(keys, Tensor):
        raise TypeError("received and keys must be torch.Tensor")
    if tokens.dim() == 2:
        received, keys = received.unsqueeze(0), keys.unsqueeze(0)
    t, n, d = x.shape
    if received.shape != (t, n):
        raise ValueError(
            f"received must have shape (T, N) = {(t, n)} to match tokens "
            f"{tuple(tokens.shape)}, got {tuple(received.shape)}"
        )
    if keys.dim() != 3 or keys.shape[:2] != (t, n):
        raise ValueError(
            f"keys must have shape (T, N, Dk) with (T, N) = {(t, n)} to match tokens "
            f"{tuple(tokens.shape)}, got {tuple(keys.shape)}"
        )
    for name, v in (("received", received), ("keys", keys)):
        if not v.is_floating_point() or not bool(torch.isfinite(v).all()):
            raise ValueError(f"{name} must be a finite floating tensor")
    budget = _check_budget(budget)
    share = check_real(dominant_share, "dominant_share", lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
    g = check_grid(grid, n)
    if budget >= t * n:  # every token kept as itself, in input order
        out = identity(x, g, "visionzip")
        per_frame = torch.full((t,), n, dtype=torch.int64, device=x.device)
        info = {
            **out.info,
            "sizes": torch.ones(t * n, dtype=torch.int64, device=x.device),
            "dominant": torch.ones(t * n, dtype=torch.bool, device=x.device),
            "frame_budgets": per_frame,
            "dominant_counts": per_frame,
            "contextual_counts": torch.zeros_like(per_frame),
            "dominant_share": float(share),
        }
        return Compressed(out.tokens, out.sources, out.positions, info, anchors=out.anchors)

    dev = x.device
    received = received.to(dev, work_dtype(received.dtype))
    keys = keys.to(dev)
    b_t, d_t, c_t = (v.to(dev) for v in frame_split(budget, t, float(share)))

    # 1. dominant: rank by received (stable descending sort: ties to the lower index).
    order = torch.sort(received, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(n, device=dev).expand(t, n))
    dom = rank < d_t[:, None]  # (T, N)

    # 2. contextual targets at a uniform stride over the remaining tokens.
    rest = ~dom
    rpos = torch.cumsum(rest, dim=1) - 1  # rank among the remaining (valid where rest)
    step = torch.clamp((n - d_t) // c_t.clamp_min(1), min=1)  # (T,)
    j = rpos // step[:, None]
    target = rest & (rpos % step[:, None] == 0) & (j < c_t[:, None])
    merged = rest & ~target & (c_t[:, None] > 0)

    # Output index of every anchor: frame-major, raster order within a frame.
    anchor = (dom | target).reshape(-1)
    out_of = torch.cumsum(anchor, dim=0) - 1
    m = int(anchor.sum())

    # Target flat index per (frame, j), padded to cmax; then each merged token's target.
    cmax = int(c_t.max())
    sources = torch.where(anchor, out_of, torch.full_like(out_of, -1))
    if cmax > 0:
        tgt_flat = torch.zeros(t, cmax, dtype=torch.long, device=dev)
        tf, tn = target.nonzero(as_tuple=True)
        tgt_flat[tf, j[tf, tn]] = tf * n + tn
        kn = normalize(keys)  # (T, N, Dk) unit rows (zero rows stay zero)
        tkeys = kn.reshape(t * n, -1)[tgt_flat]  # (T, cmax, Dk)
        valid = torch.arange(cmax, device=dev)[None, :] < c_t[:, None]  # (T, cmax)
        assign = torch.empty(t, n, dtype=torch.long, device=dev)
        fstep = row_block(t, n * cmax)
        for f0 in range(0, t, fstep):  # blocks of frames
            sim = kn[f0 : f0 + fstep] @ tkeys[f0 : f0 + fstep].transpose(1, 2)  # (f, N, cmax)
            sim = sim.masked_fill(~valid[f0 : f0 + fstep, None, :], float("-inf"))
            assign[f0 : f0 + fstep] = sim.argmax(dim=2)  # first max: the earlier target
        tgt_of = tgt_flat.gather(1, assign).reshape(-1)  # (T*N,) flat index of the target
        mflat = merged.reshape(-1)
        sources = torch.where(mflat, out_of[tgt_of], sources)

    keep = sources >= 0
    flat = x.reshape(t * n, d)
    seg = sources[keep]
    xw = flat[keep].to(work_dtype(x.dtype))
    scale = sum_scale(float(xw.abs().amax()), xw.shape[0], xw.dtype)  # no overflow near max
    means = segment_mean(xw * scale if scale != 1.0 else xw, seg, m)
    out_tokens = finite_cast(means / scale if scale != 1.0 else means, x.dtype)
    anchors = anchor.nonzero().squeeze(1)
    positions = grid_positions(t, g, n, dev)[anchors]
    info = {
        "method": "visionzip",
        "sizes": segment_count(seg, m),
        "dominant": dom.reshape(-1)[anchors],
        "frame_budgets": b_t,
        "dominant_counts": d_t,
        "contextual_counts": c_t,
        "dominant_share": float(share),
    }
    return Compressed(out_tokens, sources, positions, info, anchors=anchors)


def _probe(vision_tower: Any, *, layer: int = -2) -> Any:
    from ..models.attention import AttentionProbe

    return AttentionProbe(vision_tower, layer=layer)


@register(
    "visionzip",
    kind="merge",
    stage="vision",
    model_part=_probe,
    options=(
        tensor_option("received", "(T, N) attention each token receives (vision tower)"),
        tensor_option("keys", "(T, N, Dk) the tower layer's keys on the token grid"),
        real_option(
            "dominant_share",
            DOMINANT_SHARE,
            lambda v: 0.0 <= v <= 1.0,
            "in [0, 1]",
            "share of each frame's budget kept as dominant tokens (the paper's 54/64)",
        ),
        int_option(
            "layer", -2, -INT64_MAX, INT64_MAX, "vision tower layer the probe reads", model=True
        ),
    ),
)
def _visionzip_method(
    x: Tensor,
    *,
    grid: tuple[int, int] | None,
    budget: int | None,
    received: Tensor,
    keys: Tensor,
    dominant_share: float = DOMINANT_SHARE,
) -> Compressed:
    """VisionZip: dominant tokens by vision-tower attention, the rest merged into contexts."""
    return visionzip(x, received, keys, int(budget), dominant_share=dominant_share, grid=grid)
