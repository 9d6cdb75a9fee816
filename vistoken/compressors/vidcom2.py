"""VidCom2 (Video Compression Commander): frame budgets from frame uniqueness, then each
frame's most distinctive tokens. Follows the released algorithm (``vidcom2_compression``):

1. features: the half of the channels (floor(D/2), at least 1) with the lowest variance over
   all T*N tokens (ties: the smaller channel), each token unit-normalised on them;
2. similarity of a token u to a centre c: the multi-scale Gaussian kernel
   G(u, c) = sum_{a in 1/8, 1/4, 1/2, 1, 2} exp(-||u - c||^2 / (2a)), with the video centre
   (mean of all unit tokens) and the frame centre (mean of the frame's unit tokens);
3. frame uniqueness s_t = -mean_p G(u_tp, video centre); p = softmax(s / temperature)
   (default temperature 0.01 as released); frame t's quota is
   q_t = (B / T) * (1 + p_t - 1/T), which sums to the budget B exactly;
4. settling (deterministic largest remainder, capped at N): k_t = min(floor(q_t), N); the
   leftover units go one per frame in order of decreasing fractional part (ties: the earlier
   frame; capped frames last), round after round while frames have room;
5. token score G(u, video centre) + G(u, frame centre): each frame keeps its k_t lowest
   scores (the outliers, least like the means), ties to the smaller index; one stable sort
   of the (T, N) scores along N and a rank < k_t mask, batched over frames.

T = 1: p = 1 and q_0 = B, so the single frame keeps its B most distinctive tokens.
Zero-norm tokens stay zero vectors after normalisation (no NaN).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..core import Compressed, real_option, register
from ..ops import normalize, pow2_scale, work_dtype
from ._select import selection

DEFAULT_TEMPERATURE = 0.01
_ALPHAS = (0.125, 0.25, 0.5, 1.0, 2.0)


def gaussian(u: Tensor, center: Tensor) -> Tensor:
    """Multi-scale Gaussian similarity, summed over the last dim's squared distance."""
    dist_sq = (u - center).pow(2).sum(dim=-1)
    return sum(torch.exp(-dist_sq / (2.0 * a)) for a in _ALPHAS)


def vidcom2_scores(x: Tensor) -> tuple[Tensor, Tensor]:
    """(frame uniqueness (T,), token scores (T, N)) for x (T, N, D); lower token = kept first."""
    t, n, d = x.shape
    flat = x.reshape(t * n, d).to(work_dtype(x.dtype))
    # variances of x / 2^e (2^e <= max|x| < 2^(e+1)): exact scaling, so the same channel
    # order as the plain variances, without their overflow (x^2 beyond the dtype) or
    # underflow (tiny tokens): the order is the same for x and x * c
    var = (flat * pow2_scale(flat.abs().amax())).var(dim=0, unbiased=False)
    c = max(1, d // 2)
    channels = torch.sort(var, stable=True).indices[:c]
    u = normalize(x[..., channels])
    video_center = u.mean(dim=(0, 1), keepdim=True)
    frame_center = u.mean(dim=1, keepdim=True)
    g_video = gaussian(u, video_center)
    g_frame = gaussian(u, frame_center)
    return -g_video.mean(dim=1), g_video + g_frame


def frame_budgets(uniqueness: Tensor, budget: int, n: int, temperature: float) -> Tensor:
    """(T,) int64 per-frame counts summing to ``budget``, each <= n (see module rule 3-4)."""
    t = uniqueness.shape[0]
    s = uniqueness.to(torch.float64)
    p = torch.softmax((s - s.max()) / temperature, dim=0)
    quota = (budget / t) * (1.0 + p - 1.0 / t)
    base = quota.floor().clamp(max=n)
    frac = torch.where(base < n, quota - quota.floor(), torch.full_like(quota, -1.0))
    k = base.long()
    left = budget - int(k.sum())
    if left > 0:
        # unit slots (round j, frame): a frame has room for n - k_t more units; slots are
        # taken by round, then by decreasing fractional part, then by frame index
        frame_rank = torch.empty(t, dtype=torch.long, device=k.device)
        frame_rank[torch.sort(-frac, stable=True).indices] = torch.arange(t, device=k.device)
        rounds = torch.arange(n, device=k.device).unsqueeze(1)  # (n, 1)
        key = rounds * t + frame_rank.unsqueeze(0)  # (n, T), all distinct
        room = rounds < (n - k).unsqueeze(0)
        key = torch.where(room, key, torch.full_like(key, n * t))
        chosen = torch.topk(key.flatten(), left, largest=False).indices % t
        k = k + torch.bincount(chosen, minlength=t)
    return k


@register(
    "vidcom2",
    kind="select",
    options=(
        real_option(
            "temperature",
            DEFAULT_TEMPERATURE,
            lambda v: math.isfinite(v) and v > 0,
            "a finite number > 0",
            "softmax temperature of the frame budgets (the released 0.01)",
        ),
    ),
)
def vidcom2(
    x: Tensor,
    *,
    grid: tuple[int, int] | None,
    budget: int | None,
    temperature: float = DEFAULT_TEMPERATURE,
) -> Compressed:
    """VidCom2: per-frame budgets from frame uniqueness, each frame keeps its outlier tokens."""
    k = int(budget)
    t, n, _ = x.shape
    uniqueness, score = vidcom2_scores(x)
    counts = frame_budgets(uniqueness, k, n, temperature)
    order = torch.sort(score, dim=1, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n, device=x.device).expand(t, n))
    keep = (rank < counts.unsqueeze(1)).flatten().nonzero().squeeze(1)
    info = {"method": "vidcom2", "temperature": temperature, "frame_counts": counts}
    return selection(x, keep, grid, info)
