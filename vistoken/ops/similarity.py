"""Cosine similarity kernels that never hold more than a block of the similarity matrix."""

from __future__ import annotations

import torch
from torch import Tensor

# Elements of a similarity block held at once (float32: 4 bytes each -> 64 MiB).
BLOCK_ELEMENTS = 1 << 24


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype similarity and means are computed in: float32, or float64 for float64 input."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """x / ||x|| along the last dim, in the work dtype. A zero vector stays zero (no NaN)."""
    x = x.to(work_dtype(x.dtype))
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


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
