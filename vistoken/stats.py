"""Per-frame statistics of a compression: where the output tokens sit, what was dropped.

The figures ``vistoken compress`` writes to ``summary.json``, for Python users::

    out = vt.compress(x, "scc", retention=0.1)           # x: (T, N, D)
    frame_stats(out, frames=T, tokens_per_frame=N)
    # {"output_tokens_per_frame": [...], "dropped_per_frame": [...],
    #  "inputs_per_output_token": {"min": 1, "median": 8.0, "max": 40}}

One function per figure, named as its key; every value is a plain Python int, float, list or
dict (JSON-ready).
"""

from __future__ import annotations

from typing import Any

import torch

from .core import Compressed

__all__ = [
    "dropped_per_frame",
    "frame_stats",
    "inputs_per_output_token",
    "output_tokens_per_frame",
]


def _check(out: Compressed, frames: int, tokens_per_frame: int | None = None) -> None:
    if not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames must be an int >= 1, got {frames!r}")
    if tokens_per_frame is not None and out.sources.numel() != frames * tokens_per_frame:
        raise ValueError(
            f"out has {out.sources.numel()} sources, expected frames * tokens_per_frame = "
            f"{frames} * {tokens_per_frame}"
        )


def output_tokens_per_frame(out: Compressed, frames: int) -> list[int]:
    """(T,) number of output tokens anchored in each frame (``positions[:, 0]``).

    Their sum is ``out.num_tokens`` when every anchor lies in ``[0, frames)``.
    """
    _check(out, frames)
    anchors = out.positions[:, 0].detach().cpu()
    anchors = anchors[(anchors >= 0) & (anchors < frames)]
    return torch.bincount(anchors, minlength=frames).tolist()


def dropped_per_frame(out: Compressed, frames: int, tokens_per_frame: int) -> list[int]:
    """(T,) number of input tokens of each frame that no output token stands for
    (``sources == -1``); all zeros for merge methods."""
    _check(out, frames, tokens_per_frame)
    sources = out.sources.detach().cpu().reshape(frames, tokens_per_frame)
    return (sources < 0).sum(dim=1).tolist()


def inputs_per_output_token(out: Compressed) -> dict[str, int | float] | None:
    """``{"min", "median", "max"}`` of the number of input tokens each output token stands
    for (counted from ``sources``), or ``None`` when no input token is kept."""
    sources = out.sources.detach().cpu()
    kept = sources[sources >= 0]
    if kept.numel() == 0:
        return None
    group = torch.bincount(kept, minlength=out.num_tokens)
    return {
        "min": int(group.min()),
        "median": float(group.float().median()),
        "max": int(group.max()),
    }


def frame_stats(out: Compressed, *, frames: int, tokens_per_frame: int) -> dict[str, Any]:
    """The per-frame statistics of ``out``, a compression of ``frames`` x ``tokens_per_frame``
    input tokens.

    Returns:
        ``{"output_tokens_per_frame": [T ints], "dropped_per_frame": [T ints],
        "inputs_per_output_token": inputs_per_output_token(out)}``
        (each key is the function of that name).
    Raises:
        ValueError: ``out.sources`` does not have ``frames * tokens_per_frame`` entries.
    """
    _check(out, frames, tokens_per_frame)
    return {
        "output_tokens_per_frame": output_tokens_per_frame(out, frames),
        "dropped_per_frame": dropped_per_frame(out, frames, tokens_per_frame),
        "inputs_per_output_token": inputs_per_output_token(out),
    }
