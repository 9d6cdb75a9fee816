"""Frame sampling: which ``num`` of ``total`` frames a video VLM looks at.

Two rules in use by video VLMs, both in exact integer arithmetic (:func:`sample_indices`):
``"center"`` (InternVL / PVC: the middle of ``num`` equal segments) and ``"linspace"``
(LLaVA: evenly spaced from the first to the last frame, rounded). No I/O: the decoder in
:mod:`vistoken.video` asks for these indices and seeks to them.
"""

from __future__ import annotations

import operator
from typing import Any

__all__ = ["SAMPLING_MODES", "sample_indices"]

#: The accepted values of ``sampling`` / ``mode``.
SAMPLING_MODES = ("center", "linspace")


def check_integer(name: str, value: Any) -> int:
    """``value`` as an int (anything with ``__index__`` but bool), else TypeError."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None


def check_mode(name: str, mode: Any) -> str:
    """``mode`` if it is one of :data:`SAMPLING_MODES`, else ValueError naming ``name``."""
    if mode not in SAMPLING_MODES:
        raise ValueError(
            f"unknown {name} {mode!r}: expected one of {', '.join(repr(m) for m in SAMPLING_MODES)}"
        )
    return mode


def sample_indices(total: int, num: int, mode: str = "center") -> list[int]:
    """Pick ``num`` frame indices spread uniformly over ``range(total)``.

    Modes (both computed in exact integer arithmetic, so there are no float-rounding surprises):

    * ``"center"`` (InternVL / PVC style): split ``[0, total)`` into ``num`` equal segments and
      take the middle of each, rounded down:
      ``index_i = floor((i + 0.5) * total / num) = ((2 * i + 1) * total) // (2 * num)``.
      E.g. ``sample_indices(10, 4) == [1, 3, 6, 8]``.
    * ``"linspace"`` (LLaVA style): ``np.linspace(0, total - 1, num)`` rounded half up,
      ``index_i = floor(i * (total - 1) / (num - 1) + 0.5)``; ``[0]`` when ``num == 1``.
      Always includes the first and the last frame. E.g. ``sample_indices(10, 4, "linspace")
      == [0, 3, 6, 9]``. (LLaVA itself truncates with ``dtype=int``; this rounds.)

    When ``num <= total`` the result is strictly increasing, so all indices are distinct. When
    ``num > total`` every frame is returned once: ``list(range(total))``.

    Args:
        total: number of frames available, >= 1.
        num: number of frames wanted, >= 1.
        mode: ``"center"`` or ``"linspace"``.

    Returns:
        ``min(num, total)`` increasing indices in ``[0, total)``.

    Raises:
        ValueError: ``total <= 0``, ``num <= 0`` or an unknown ``mode``.
        TypeError: ``total`` or ``num`` is not an integer.
    """
    total = check_integer("total", total)
    num = check_integer("num", num)
    check_mode("mode", mode)
    if total <= 0:
        raise ValueError(f"total must be >= 1, got {total}")
    if num <= 0:
        raise ValueError(f"num must be >= 1, got {num}")
    if num >= total:
        return list(range(total))
    if mode == "center":
        return [((2 * i + 1) * total) // (2 * num) for i in range(num)]
    if num == 1:
        return [0]
    span, steps = total - 1, num - 1
    return [(2 * i * span + steps) // (2 * steps) for i in range(num)]
