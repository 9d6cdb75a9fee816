"""Cosine similarity kernels that never hold more than a block of the similarity matrix."""

from __future__ import annotations

import torch
from torch import Tensor

# Elements of a similarity block held at once (float32: 4 bytes each -> 64 MiB).
BLOCK_ELEMENTS = 1 << 24

# Row norms inside these bounds were computed without any square overflowing or losing
# bits to underflow (float32: every element <= 2^60, so squares <= 2^120; a norm >= 2^-30
# leaves subnormal squares far below half an ulp of the sum), so x / ||x|| is exact there.
_SAFE_NORM = {
    torch.float32: (2.0**-30, 2.0**60),
    torch.float64: (2.0**-400, 2.0**400),
}
# (int view, mantissa bits, exponent bias) of the work dtypes
_BITS = {torch.float32: (torch.int32, 23, 127), torch.float64: (torch.int64, 52, 1023)}


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype similarity and means are computed in: float32, or float64 for float64 input."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def pow2_scale(m: Tensor) -> Tensor:
    """2^-e elementwise for m >= 0 (float32 or float64), e = floor(log2 m) clamped to the
    normal exponents (float32: [-126, 126]), so ``m * pow2_scale(m)`` is in [1, 2) for
    every normal m short of the extremes. Built from the exponent bits: exact, no
    transcendental functions, any device. Zero (and subnormal) m gives the largest factor.

    Multiplying by a power of two is exact (short of underflow), so every result computed
    from ``x * pow2_scale(m)`` is bit for bit the one computed from ``x`` wherever the
    latter neither overflows nor underflows: the scaling only rescues the extremes.
    """
    ibits, mant, bias = _BITS[m.dtype]
    e = (m.contiguous().view(ibits) >> mant) - bias
    e = e.clamp(1 - bias, bias - 1)
    return ((bias - e) << mant).view(m.dtype)


def normalize_with_norm(x: Tensor) -> tuple[Tensor, Tensor]:
    """(x / ||x||, ||x||) along the last dim, in the work dtype (the norm keepdim, Inf where
    it exceeds the dtype). A zero vector stays exactly zero (no NaN).

    Scale-invariant over the dtype's whole finite range: the usual rows are divided by
    their norm directly; when a row's norm is outside the range where that is exact
    (huge tokens whose squares overflow, tiny ones whose squares underflow, zero rows),
    every row is first scaled by a power of two of its max-abs, which gives the same bits
    wherever the direct division was exact. One host synchronisation (the range test).
    """
    x = x.to(work_dtype(x.dtype))
    n = x.norm(dim=-1, keepdim=True)
    lo, hi = _SAFE_NORM[x.dtype]
    if bool(((n >= lo) & (n <= hi)).all()):
        return x / n, n
    f = pow2_scale(x.abs().amax(dim=-1, keepdim=True))
    xs = x * f
    ns = xs.norm(dim=-1, keepdim=True)
    return xs / ns.clamp_min(torch.finfo(x.dtype).tiny), ns / f


def normalize(x: Tensor) -> Tensor:
    """x / ||x|| along the last dim, in the work dtype; see :func:`normalize_with_norm`.

    A zero vector stays zero (no NaN); cosines are the same for x and x * c for any c > 0
    that keeps x * c finite and normal (bit for bit when c is a power of two).
    """
    return normalize_with_norm(x)[0]


def row_block(rows: int, cols: int, limit: int = BLOCK_ELEMENTS) -> int:
    """Rows per block so that a (block, cols) matrix has at most ``limit`` elements."""
    return max(1, min(rows, limit // max(cols, 1)))


def nearest(queries: Tensor, keys: Tensor) -> Tensor:
    """Index of the most cosine-similar key for every query; ties go to the smallest index.

    Args:
        queries: (n, D) unit vectors; keys: (m, D) unit vectors.
    Returns:
        (n,) int64 in [0, m). Computed in row blocks: memory grows with m x block, not n x m.
    """
    n = queries.shape[0]
    out = torch.empty(n, dtype=torch.long, device=queries.device)
    step = row_block(n, keys.shape[0])
    for r0 in range(0, n, step):
        out[r0 : r0 + step] = (queries[r0 : r0 + step] @ keys.T).argmax(dim=1)
    return out
