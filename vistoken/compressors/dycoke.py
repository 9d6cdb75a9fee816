"""DyCoke's temporal token merging stage (TTM), as a selection.

Frames are grouped in windows of ``window`` frames (default 4, as in DyCoke). The first
frame of each window is the window's anchor. A later frame at offset j in its window is
compared, position by position, with the frame at offset j & (j - 1) (j with its lowest set
bit cleared). For the default window of 4 this is exactly DyCoke's pairing: offset 1 and
offset 2 against the anchor (offset 0), offset 3 against offset 2 (the unpruned frame).
Tokens most similar to their reference are the redundant ones and are dropped first.

DyCoke prunes the same fraction of every later frame; here the budget is settled over the
whole video instead, by one global order (ties: the smaller index):

1. every token of the video's first frame (always kept first);
2. the tokens of the other anchors (frames 0 mod ``window``), by ascending cosine
   similarity to the same position in the previous window's anchor;
3. the tokens of the later frames, by ascending similarity to their reference.

The first ``budget`` tokens of that order are kept. When the budget is below one frame
(including T = 1, where every token is a first-frame token), the first frame keeps the
``budget`` cells that :func:`._select.spread` spreads evenly over its grid. Zero-norm tokens
have cosine 0 to everything, never NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core import INT64_MAX, Compressed, int_option, register
from ..ops import normalize
from ._select import selection, spread

DEFAULT_WINDOW = 4


def dycoke_keys(x: Tensor, window: int) -> tuple[Tensor, Tensor]:
    """(tier (T, N) int64, similarity (T, N)) of the global order; lower = kept first.

    tier 0: the first frame (similarity -inf); tier 1: later anchors; tier 2: other frames.
    """
    t, n, _ = x.shape
    xn = normalize(x)
    f = torch.arange(t, device=x.device)
    j = f % window
    ref = torch.where(j > 0, f - j + (j & (j - 1)), f - window)
    sim = (xn * xn[ref.clamp(min=0)]).sum(dim=-1)
    sim[0] = float("-inf")
    tier = torch.where(j > 0, 2, 1)
    tier[0] = 0
    return tier.unsqueeze(1).expand(t, n), sim


@register(
    "dycoke",
    kind="select",
    options=(
        int_option(
            "window", DEFAULT_WINDOW, 1, INT64_MAX, "frames per window (longer than T: all)"
        ),
    ),
)
def dycoke(
    x: Tensor, *, grid: tuple[int, int] | None, budget: int | None, window: int = DEFAULT_WINDOW
) -> Compressed:
    """DyCoke temporal merging: drop tokens most similar to an earlier frame of their window."""
    k = int(budget)
    t, n, _ = x.shape
    if k <= n:
        keep = spread(k, grid, n, x.device)
    else:
        tier, sim = dycoke_keys(x, min(window, t))  # a window past the last frame is T
        order = torch.sort(sim.flatten(), stable=True).indices
        order = order[torch.sort(tier.flatten()[order], stable=True).indices]
        keep = order[:k]
    return selection(x, keep, grid, {"method": "dycoke", "window": window})
