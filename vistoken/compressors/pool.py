"""PLLaVA-style adaptive average pooling over (frames, h, w) to an exact token budget.

The video (T, H, W) is cut into an output grid (t', h', w') of boxes; each output token is
the plain mean of the input tokens in its box (REFERENCE.md section 3, "PLLaVA pooling").

Cell boundaries. Along an axis of length L cut into l <= L cells, cell i covers
[floor(i*L/l), floor((i+1)*L/l)). These are torch's adaptive_avg_pool start indices, but
torch ends a cell at ceil((i+1)*L/l), so its cells overlap when l does not divide L; here
every input token belongs to exactly one cell. On a divisible grid both are the same.

Grid choice. The ideal per-axis reduction factors f*_T, f*_H, f*_W are as equal as the axes
allow with product T*H*W / budget (equal shares of log(T*H*W / budget); an axis shorter
than its share is pooled whole and the rest is shared by the others), so equal factors keep
the frame's aspect ratio. Every (t', h', w') with 1 <= t' <= T, 1 <= h' <= H, 1 <= w' <= W,
P = t'*h'*w' <= budget and R = budget - P <= (cells with >= 2 members) is a candidate; the
one chosen minimises

    cost = sum over axes of (log(L / l) - log f*)^2  +  log(2)^2 * 2R / budget

(rounded to 1e-9; ties to the larger P, then the larger t', then the larger h'). The first
term is the squared log distortion of every cell from the ideal box; the second charges the
2R tokens that come from split cells (below) a factor-2 distortion of one side each,
averaged over the output tokens. So an exact factorisation of the budget wins unless it is
badly unbalanced: 8 tokens from (4, 4, 4) give (2, 2, 2); 92 from (4, 24, 24) give
(1, 10, 9) plus two splits rather than the exact but degenerate (2, 2, 23).

Budgets that the grid does not reach (P < budget; e.g. a prime budget larger than every
axis). The remaining R = budget - P tokens come from splitting R cells in two: the R cells
with the most members (ties: the earlier cell), each cut along its longest side (ties: t,
then h, then w) into a first half of ceil(len/2) and a second half of floor(len/2) slices.
The split halves take consecutive output indices, so outputs stay in (t, h, w) raster
order of their boxes. A candidate needs R cells with >= 2 members; the grid of largest
product <= budget always has them (if w' < W then R < t'*h' <= cells with >= 2 members, and
likewise for h' and t'), so a candidate always exists.

Positions: the (t, h, w) of each output box's first member (its smallest corner).
info: "grid" (t', h', w'), "split" (R), "sizes" (members per output token, int64).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..core import Compressed, grid_positions, register
from ..ops import finite_cast, segment_count, segment_mean, sum_scale, work_dtype

# Cost of one output token that comes from a split cell: one side off by a factor of 2.
_SPLIT_COST = math.log(2.0) ** 2


def _ideal_factors(lengths: tuple[int, ...], budget: int) -> list[float]:
    """log of the most balanced per-axis reduction factors with product prod(L) / budget."""
    rest = math.log(math.prod(lengths) / budget)
    logs = [0.0] * len(lengths)
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    for k, i in enumerate(order):
        share = rest / (len(lengths) - k)
        logs[i] = min(share, math.log(lengths[i]))
        rest -= logs[i]
    return logs


def _ones(length: Tensor, cells: Tensor) -> Tensor:
    """Number of cells with exactly one member when `length` is cut into `cells`."""
    return (2 * cells - length).clamp_min(0)


def choose_grid(lengths: tuple[int, int, int], budget: int) -> tuple[int, int, int]:
    """The pooled grid (t', h', w') for ``budget`` tokens (rule in the module docstring)."""
    ln_t, ln_h, ln_w = lengths
    ideal = _ideal_factors(lengths, budget)
    f64 = torch.float64
    a = torch.arange(1, ln_t + 1, dtype=torch.int64).view(-1, 1, 1)
    b = torch.arange(1, ln_h + 1, dtype=torch.int64).view(1, -1, 1)
    c = torch.arange(1, ln_w + 1, dtype=torch.int64).view(1, 1, -1)
    prod = a * b * c
    twos = prod - _ones(torch.tensor(ln_t), a) * _ones(torch.tensor(ln_h), b) * _ones(
        torch.tensor(ln_w), c
    )
    ok = (prod <= budget) & (budget - prod <= twos)
    score = sum(
        (torch.log(length / n.to(f64)) - g) ** 2
        for length, n, g in zip(lengths, (a, b, c), ideal, strict=True)
    )
    score = score + _SPLIT_COST * 2 * (budget - prod).to(f64) / budget
    key = torch.round(score * 1e9).to(torch.int64)
    big = torch.iinfo(torch.int64).max
    key = torch.where(ok, key, torch.full_like(key, big))
    pick = key == key.min()
    for rank in (prod, a.expand_as(prod), b.expand_as(prod)):  # tie-breaks, larger first
        r = torch.where(pick, rank, torch.full_like(rank, -1))
        pick = r == r.max()
    i, j, k = (int(v[0]) for v in pick.nonzero(as_tuple=True))
    return i + 1, j + 1, k + 1


def _cells(coord: Tensor, length: int, cells: int) -> tuple[Tensor, Tensor]:
    """Cell index and offset inside the cell of each coordinate (non-overlapping cells)."""
    idx = ((coord + 1) * cells - 1) // length
    return idx, coord - (idx * length) // cells


def _extents(length: int, cells: int) -> Tensor:
    i = torch.arange(cells + 1)
    edges = (i * length) // cells
    return edges[1:] - edges[:-1]


def pool_assign(
    num_frames: int, grid: tuple[int, int], budget: int, device: torch.device | str = "cpu"
) -> tuple[Tensor, tuple[int, int, int], int]:
    """Output index of every input token (frame-major), the base grid and the split count."""
    h, w = grid
    lengths = (num_frames, h, w)
    gt, gh, gw = choose_grid(lengths, budget)
    pos = grid_positions(num_frames, grid, h * w, device)
    ct, ot = _cells(pos[:, 0], num_frames, gt)
    ch, oh = _cells(pos[:, 1], h, gh)
    cw, ow = _cells(pos[:, 2], w, gw)
    cell = (ct * gh + ch) * gw + cw
    cells = gt * gh * gw
    split_count = budget - cells
    if split_count == 0:
        return cell, (gt, gh, gw), 0
    ext = (
        torch.stack(
            torch.meshgrid(
                _extents(num_frames, gt), _extents(h, gh), _extents(w, gw), indexing="ij"
            ),
            dim=-1,
        )
        .reshape(cells, 3)
        .to(device)
    )
    size = ext.prod(dim=1)
    order = torch.sort(-size, stable=True).indices  # most members first, then earlier cell
    split = torch.zeros(cells, dtype=torch.int64, device=device)
    split[order[:split_count]] = 1
    axis = ext.argmax(dim=1)  # longest side, ties to the earlier axis
    offset = torch.stack((ot, oh, ow), dim=1)
    local = offset.gather(1, axis[cell].unsqueeze(1)).squeeze(1)
    half_len = (ext.gather(1, axis.unsqueeze(1)).squeeze(1) + 1) // 2
    second = (local >= half_len[cell]).to(torch.int64) * split[cell]
    before = torch.cumsum(split, 0) - split  # split cells before this one
    return cell + before[cell] + second, (gt, gh, gw), split_count


@register("pool", kind="merge", needs_grid=True)
def pool(x: Tensor, *, grid: tuple[int, int] | None, budget: int | None) -> Compressed:
    """PLLaVA adaptive average pooling over (t, h, w) to exactly ``budget`` tokens.

    x: (T, N, D). The pooled grid is the most balanced one (see the module docstring);
    cells never overlap, so each input token is averaged into exactly one output.
    """
    t, n, d = x.shape
    g = grid if grid is not None else (1, n)
    total = t * n
    sources, base, split_count = pool_assign(t, g, budget, x.device)
    xw = x.reshape(total, d).to(work_dtype(x.dtype))
    scale = sum_scale(float(xw.abs().amax()), total, xw.dtype)  # 1.0 unless sums overflow
    out = segment_mean(xw * scale if scale != 1.0 else xw, sources, budget) / scale
    index = torch.arange(total, device=x.device)
    anchor = torch.full((budget,), total, dtype=torch.int64, device=x.device).scatter_reduce_(
        0, sources, index, reduce="amin"
    )
    positions = grid_positions(t, g, n, x.device)[anchor]
    info = {
        "method": "pool",
        "grid": base,
        "split": split_count,
        "sizes": segment_count(sources, budget),
    }
    return Compressed(finite_cast(out, x.dtype), sources, positions, info, anchors=anchor)
