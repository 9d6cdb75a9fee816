"""LLaVA-Scissor: Semantic Connected Components (SCC), training-free.

The official algorithm (REFERENCE.md section 1), with exact connected components:

1. spatial step, per frame: cosine graph (edge when sim > tau, self-loops), connected
   components, each replaced by the unweighted mean of its members -> M1 tokens;
2. temporal step, once over all M1 representatives with the same tau -> M2 tokens;
3. final merge: every original token goes to its most similar representative k, and
   out_k = (rep_k + sum of its tokens) / (1 + count).

Components are emitted in hub order (the member of largest degree, ties to the smallest
index; components sorted by hub index), per frame in the spatial step and over the M1
sequence in the temporal step.

Why exact components by default: the official code samples s = ceil(ln n / epsilon^2)
nodes with numpy's unseeded global RNG and unions only edges that touch them. Below
n = 3234 nodes (epsilon = 0.05) that is every node, so exact components *are* the official
result; above it the official result is random and over-segmented. ``mode="official"``
replays the official draws from a numpy seed (``scc_official``: one draw per frame, then
the temporal one) and, with ``readout="parent"``, the official read-out of the raw
union-find parent array (which drops a few nodes from their component's mean); with
``similarity="input"`` it thresholds similarities in the input's dtype (fp16/bf16) as the
official code does (default: float32).

With a budget K (``retention``), tau is searched until the count M2 is in [K, K + K // 50]
(``scc_search``: the forest-aimed search and the caches that make it fast, about the cost
of one pass), then :func:`settle` keeps
the K representatives that cover the most tokens before the final merge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core import INT64_MAX, Compressed, choice_option, int_option, real_option, register
from ..ops import (
    BlockGraph,
    dense_components,
    finite_cast,
    hub_order,
    nearest,
    normalize,
    normalize_with_norm,
    segment_count,
    segment_mean,
    segment_sum,
    sum_scale,
    threshold_adjacency,
    work_dtype,
)
from ..ops.components import count_true
from ..ops.similarity import BLOCK_ELEMENTS

DEFAULT_TAU = 0.9
DEFAULT_EPSILON = 0.05
MODES = ("exact", "official")
READOUTS = ("find", "parent")
SIMILARITIES = ("float32", "input")


def input_dtype_unit(dtype: torch.dtype):
    """Unit vectors in ``dtype`` (fp16/bf16), as the official code computes them from the
    model's tokens: x / ||x|| in that dtype (a zero norm clamped, so no NaN); the
    similarities of such vectors are matmuls, and thresholds, in that dtype."""

    def unit(v: Tensor) -> Tensor:
        h = v.to(dtype)
        return h / h.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)

    return unit


@dataclass(frozen=True)
class SCCStructure:
    """What the spatial and temporal steps produce for one tau (before the final merge).

    reps: (M2, D) temporal representatives (work dtype); anchors: (M2,) int64 input-token
    index each stands for (hub of hub); support: (M2,) int64 input tokens each covers;
    spatial_tokens: M1.
    """

    reps: Tensor
    anchors: Tensor
    support: Tensor
    spatial_tokens: int


def spatial_step(
    x: Tensor, xn: Tensor, tau: float, sampled_fn=None, sims: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-frame components, batched over frames.

    Args:
        x: (T, N, D) tokens (work dtype); xn: the same, unit-normalised.
        sampled_fn: optional callable (frames, N) -> (frames, N) bool node sample.
        sims: optional (T, N, N) per-frame similarities (``scc_search.frame_similarities``),
            reused across taus by the tau search (thresholding them is what the matmul
            would give).
    Returns:
        comp (T*N,) int64 spatial component of every token, frame-major numbering;
        hubs (M1,) int64 global token index of every component's hub, ascending;
        reps (M1, D) unweighted component means.
    """
    t, n, d = x.shape
    chunk = max(1, BLOCK_ELEMENTS // (n * n))
    labels, degrees = [], []
    for t0 in range(0, t, chunk):
        xs = xn[t0 : t0 + chunk]
        sampled = sampled_fn(xs.shape[0], n) if sampled_fn is not None else None
        if sims is None:
            adj, degree = threshold_adjacency(xs, tau, sampled)
        else:
            adj = sims[t0 : t0 + chunk] > tau
            adj.diagonal(dim1=1, dim2=2).fill_(True)
            degree = count_true(adj, -1)
        offset = torch.arange(t0, t0 + xs.shape[0], device=x.device).unsqueeze(1) * n
        labels.append(dense_components(adj) + offset)
        degrees.append(degree)
    comp, hubs = hub_order(torch.cat(labels).flatten(), torch.cat(degrees).flatten())
    reps = segment_mean(x.reshape(t * n, d), comp, hubs.numel())
    return comp, hubs, reps


def temporal_components(
    reps: Tensor, tau: float, sampled: Tensor | None = None, unit=normalize
) -> tuple[Tensor, Tensor]:
    """The temporal step's components over the M1 spatial representatives, in hub order
    -> comp (M1,), hubs (M2,).

    unit: the unit vectors the similarities are computed from (``normalize``: work dtype)."""
    graph = BlockGraph(unit(reps), tau, sampled)
    return hub_order(graph.components(), graph.degree)


def temporal_step(reps: Tensor, tau: float, sampled: Tensor | None = None, unit=normalize):
    """Components over the M1 spatial representatives -> comp (M1,), hubs (M2,), reps (M2, D)
    (:func:`temporal_components`, then their means)."""
    comp, hubs = temporal_components(reps, tau, sampled, unit)
    return comp, hubs, segment_mean(reps, comp, hubs.numel())


def scc_structure(
    x: Tensor,
    xn: Tensor,
    tau: float,
    mode: str = "exact",
    epsilon: float = DEFAULT_EPSILON,
    seed: int = 0,
    readout: str = "find",
    unit=normalize,
) -> SCCStructure:
    """Spatial then temporal step for one tau. x, xn: (T, N, D) work dtype.

    ``mode="official"`` replays the official code's sampling (numpy's stream from ``seed``)
    and, with ``readout="parent"``, its membership read-out (``scc_official``)."""
    if mode == "official":
        from .scc_official import official_structure

        return official_structure(x, xn, tau, epsilon, seed, readout, unit)
    comp1, hubs1, reps1 = spatial_step(x, xn, tau)
    m1 = hubs1.numel()
    comp2, hubs2, reps2 = temporal_step(reps1, tau)
    size1 = segment_count(comp1, m1)
    support = segment_sum(size1.unsqueeze(1), comp2, hubs2.numel()).squeeze(1)
    return SCCStructure(reps2, hubs1[hubs2], support, m1)


def final_merge(
    x: Tensor, xn: Tensor, reps: Tensor, unit=normalize
) -> tuple[Tensor, Tensor, Tensor]:
    """Fold every original token into its most similar representative.

    Args:
        x, xn: (T*N, D) tokens and their unit vectors; reps: (K, D).
    Returns:
        out (K, D) = (rep_k + sum_{i -> k} x_i) / (1 + |{i -> k}|), assign (T*N,), counts (K,).
    """
    k = reps.shape[0]
    assign = nearest(xn, unit(reps))
    counts = segment_count(assign, k)
    out = (reps + segment_sum(x, assign, k)) / (1 + counts).to(reps.dtype).unsqueeze(1)
    return out, assign, counts


def settle(support: Tensor, budget: int) -> Tensor:
    """The retention rule: which of M2 > budget representatives survive to the final merge.

    support: (M2,) int64 input tokens each representative covers. Returns (budget,) int64
    ascending indices: the representatives of most support, ties to the smaller index (the
    dropped ones' tokens fold into the nearest survivor in the final merge).
    """
    m2 = support.numel()
    idx = torch.arange(m2, device=support.device)
    key = support * m2 + (m2 - 1 - idx)  # more support first, then smaller index
    return key.topk(budget).indices.sort().values


@register(
    "scc",
    kind="merge",
    needs_budget=False,
    options=(
        real_option(
            "tau",
            None,
            math.isfinite,
            "a finite number (a cosine threshold)",
            f"similarity threshold, instead of retention (adaptive count; {DEFAULT_TAU} "
            "when neither is given)",
            excludes_retention=True,
        ),
        choice_option("mode", "exact", MODES, "exact components, or the official sampling"),
        real_option(
            "epsilon",
            DEFAULT_EPSILON,
            lambda v: 0 < v <= 1,
            "a number in (0, 1]",
            "official mode: sampling error (s = ceil(ln n / eps^2) nodes)",
        ),
        int_option("seed", 0, 0, INT64_MAX, "official mode: numpy sampling seed"),
        choice_option(
            "readout",
            "find",
            READOUTS,
            "official mode: membership read-out (find: every node in its component; parent: "
            "the official raw union-find parent array, which drops a few nodes)",
        ),
        choice_option(
            "similarity",
            "float32",
            SIMILARITIES,
            "similarity dtype (float32: float32, float64 for float64 input; input: the "
            "input's dtype, as the official code thresholds fp16/bf16; official mode only)",
        ),
    ),
)
def scc(
    x: Tensor,
    *,
    grid: tuple[int, int] | None,
    budget: int | None,
    tau: float | None = None,
    mode: str = "exact",
    epsilon: float = DEFAULT_EPSILON,
    seed: int = 0,
    readout: str = "find",
    similarity: str = "float32",
) -> Compressed:
    """LLaVA-Scissor semantic connected components (spatial, temporal, final merge).

    x: (T, N, D). With ``budget`` the output has exactly that many tokens: tau is found by
    bisection (the smallest component count >= budget), then the representatives covering
    the fewest input tokens (ties: the later one) are dropped before the final merge, so
    their tokens fold into the nearest survivor. Otherwise tau (default 0.9) sets the count.
    """
    if mode != "official" and (readout != "find" or similarity != "float32"):
        raise ValueError(
            "scc: readout and similarity are options of mode='official' (got mode="
            f"{mode!r}, readout={readout!r}, similarity={similarity!r}); exact mode accepts "
            "only readout='find' and similarity='float32'"
        )
    t, n, d = x.shape
    total = t * n
    xw = x.to(work_dtype(x.dtype))
    xn, norms = normalize_with_norm(xw)
    unit = normalize
    if similarity == "input" and x.dtype != xw.dtype:
        unit = input_dtype_unit(x.dtype)
        xn = unit(x)
    # Every mean below sums at most total + 1 values: pre-scale by a power of two when such
    # sums could overflow (never for ordinary inputs: scale 1.0). Cosines are unchanged.
    scale = sum_scale(float(norms.max()), total + 1, xw.dtype)
    if scale != 1.0:
        xw = xw * scale

    def structure(tau_: float) -> SCCStructure:
        return scc_structure(xw, xn, tau_, mode, epsilon, seed, readout, unit)

    settled, keep = 0, None
    if budget is None:
        tau = DEFAULT_TAU if tau is None else tau
        st = structure(tau)
    else:
        from .scc_search import PassCounter, SearchCounter, search_tau  # (builds on the above)

        exact_search = mode == "exact"
        if mode == "official" and readout == "find" and unit is normalize:
            from .scc_official import every_node_sampled

            # no graph of this input is ever sampled: the official structure is the exact
            # one at every tau (tested), so the exact search's caches apply
            exact_search = every_node_sampled(total, epsilon)
        count_at = SearchCounter(xw, xn) if exact_search else PassCounter(structure, xn)
        tau, count, st = search_tau(count_at, budget, total)
        settled = count - budget
        if settled > 0:
            keep = settle(st.support, budget)
    reps, anchors = st.reps, st.anchors
    if keep is not None:
        reps, anchors = reps[keep], anchors[keep]
    out, assign, counts = final_merge(xw.reshape(total, d), xn.reshape(total, d), reps, unit)
    if scale != 1.0:
        out = out / scale
    h, w = grid if grid is not None else (1, n)
    within = anchors % n
    positions = torch.stack((anchors // n, within // w, within % w), dim=1)
    info = {
        "method": "scc",
        "mode": mode,
        "tau": float(tau),
        "spatial_tokens": st.spatial_tokens,
        "temporal_tokens": int(st.reps.shape[0]),
        "settled": int(settled),
        "sizes": counts,
    }
    if mode == "official":
        info.update(epsilon=epsilon, seed=seed, readout=readout, similarity=similarity)
    return Compressed(finite_cast(out, x.dtype), assign, positions, info, anchors)
