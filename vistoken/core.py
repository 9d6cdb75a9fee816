"""The public contract: :class:`Compressed`, the method registry, budgets and input checks.

Every compression method is a pure function of tensors registered here with
:func:`register`. :func:`compress` validates the input once, turns ``retention`` into an
exact token budget and calls the method; methods never re-validate.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "Compressed",
    "MethodSpec",
    "compress",
    "methods",
    "register",
    "get_method",
    "budget_for",
    "grid_positions",
]

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@dataclass(frozen=True)
class Compressed:
    """The result of a compression.

    Attributes:
        tokens: (M, D) output tokens, same dtype and device as the input.
        sources: (T*N,) int64. For input token i (frame-major, i = t*N + h*W + w) the index in
            [0, M) of the output token it was merged into or kept as, or -1 if it was dropped.
        positions: (M, 3) int64 (t, h, w) grid position each output token stands for (its
            anchor source token), for position ids and M-RoPE.
        info: read-only dict of method details (achieved tau, per-stage counts, sizes, ...).
    """

    tokens: Tensor
    sources: Tensor
    positions: Tensor
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "info", MappingProxyType(dict(self.info)))

    @property
    def num_tokens(self) -> int:
        """M, the number of output tokens."""
        return int(self.tokens.shape[0])

    @property
    def retention(self) -> float:
        """M / (T*N), the fraction of input tokens that remain."""
        return self.num_tokens / int(self.sources.numel())

    def __repr__(self) -> str:
        d = self.tokens.shape[-1]
        return (
            f"Compressed(num_tokens={self.num_tokens}, input_tokens={self.sources.numel()}, "
            f"dim={d}, retention={self.retention:.4f}, dtype={self.tokens.dtype}, "
            f"method={self.info.get('method')!r})"
        )


# A method: fn(x, *, grid, budget, **options) -> Compressed
#   x: (T, N, D) validated input; grid: (H, W) or None; budget: exact output count or None
MethodFn = Callable[..., Compressed]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its function and what it needs."""

    name: str
    fn: MethodFn
    kind: str  # "merge" (outputs are means) or "select" (outputs are input tokens)
    options: tuple[str, ...] = ()
    needs_grid: bool = False
    needs_model: bool = False
    description: str = ""


_REGISTRY: dict[str, MethodSpec] = {}


def register(
    name: str,
    *,
    kind: str,
    options: tuple[str, ...] = (),
    needs_grid: bool = False,
    needs_model: bool = False,
) -> Callable[[MethodFn], MethodFn]:
    """Decorator that registers a compression method under ``name``."""
    if kind not in ("merge", "select"):
        raise ValueError(f"kind must be 'merge' or 'select', got {kind!r}")

    def deco(fn: MethodFn) -> MethodFn:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is already registered")
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = MethodSpec(
            name=name,
            fn=fn,
            kind=kind,
            options=tuple(options),
            needs_grid=needs_grid,
            needs_model=needs_model,
            description=doc[0] if doc else "",
        )
        return fn

    return deco


def _load_builtin_methods() -> None:
    # Importing the subpackage registers every built-in method. (``from . import methods``
    # would find the function of that name on the package, not the subpackage.)
    importlib.import_module(f"{__package__}.methods")


def methods() -> list[str]:
    """Every registered method name, sorted."""
    _load_builtin_methods()
    return sorted(_REGISTRY)


def get_method(name: str) -> MethodSpec:
    """The :class:`MethodSpec` registered as ``name``; ValueError listing the known ones."""
    _load_builtin_methods()
    if not isinstance(name, str) or name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown method {name!r}; known methods: {known}")
    return _REGISTRY[name]


def budget_for(retention: float, total: int) -> int:
    """Exact output count for ``retention``: max(1, ceil(retention * total)).

    The product is taken on the decimal value the user wrote (``0.1`` means 1/10), so
    ``0.1 * 6270`` gives 627, not 628 from binary rounding.
    """
    exact = Fraction(repr(float(retention))) * total
    return max(1, math.ceil(exact))


def check_retention(retention: Any) -> float:
    """Return ``retention`` as a float in (0, 1]; TypeError/ValueError otherwise."""
    if isinstance(retention, bool) or not isinstance(retention, (int, float)):
        if isinstance(retention, Tensor) and retention.numel() == 1:
            retention = retention.item()
        else:
            raise TypeError(
                f"retention must be a float in (0, 1], got {type(retention).__name__}"
            )
    r = float(retention)
    if math.isnan(r) or not 0.0 < r <= 1.0:
        raise ValueError(f"retention must be in (0, 1], got {retention!r}")
    return r


def check_tokens(tokens: Any) -> Tensor:
    """Validate ``tokens`` and return them as (T, N, D) (a view, never a copy)."""
    if not isinstance(tokens, Tensor):
        raise TypeError(
            f"tokens must be a torch.Tensor of shape (T, N, D) or (N, D), "
            f"got {type(tokens).__name__}"
        )
    if tokens.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"tokens must be a floating tensor (float32, float16, bfloat16 or float64), "
            f"got {tokens.dtype}"
        )
    if tokens.dim() not in (2, 3):
        raise ValueError(
            f"tokens must have shape (T, N, D) or (N, D), got rank {tokens.dim()} "
            f"shape {tuple(tokens.shape)}"
        )
    if tokens.numel() == 0:
        raise ValueError(f"tokens must not be empty, got shape {tuple(tokens.shape)}")
    if not bool(torch.isfinite(tokens).all()):
        raise ValueError("tokens contain NaN or Inf values; only finite values are accepted")
    return tokens.unsqueeze(0) if tokens.dim() == 2 else tokens


def check_grid(grid: Any, n: int) -> tuple[int, int] | None:
    """Validate ``grid`` against N tokens per frame; default (s, s) when N == s*s."""
    if grid is None:
        s = math.isqrt(n)
        return (s, s) if s * s == n else None
    try:
        h, w = (int(g) for g in grid)
        ok = all(float(g) == int(g) for g in grid)
    except (TypeError, ValueError):
        ok = False
    if not ok or h <= 0 or w <= 0:
        raise ValueError(f"grid must be a pair of positive integers (H, W), got {grid!r}")
    if h * w != n:
        raise ValueError(f"grid {(h, w)} has {h * w} cells but there are N={n} tokens per frame")
    return (h, w)


def grid_positions(
    num_frames: int, grid: tuple[int, int] | None, n: int, device: torch.device | str = "cpu"
) -> Tensor:
    """(T*N, 3) int64 (t, h, w) of every input token, frame-major.

    With no grid a frame is taken as one row of N tokens (h = 0, w = index in the frame).
    """
    h, w = grid if grid is not None else (1, n)
    t_idx = torch.arange(num_frames, device=device).repeat_interleave(h * w)
    within = torch.arange(h * w, device=device).repeat(num_frames)
    return torch.stack((t_idx, within // w, within % w), dim=1)


def identity(x: Tensor, grid: tuple[int, int] | None, method: str) -> Compressed:
    """Every input token unchanged, in input order (the retention=1.0 result)."""
    t, n, d = x.shape
    total = t * n
    return Compressed(
        tokens=x.reshape(total, d).clone(),
        sources=torch.arange(total, device=x.device),
        positions=grid_positions(t, grid, n, x.device),
        info={"method": method, "identity": True},
    )


def compress(
    tokens: Tensor,
    method: str,
    *,
    retention: float | None = None,
    grid: tuple[int, int] | None = None,
    **options: Any,
) -> Compressed:
    """Compress visual tokens with a registered method.

    Args:
        tokens: (T, N, D) float tensor (T frames of N tokens) or (N, D) for one image.
        method: a name from :func:`methods`.
        retention: fraction in (0, 1]. When given the output has exactly
            max(1, ceil(retention * T * N)) tokens; 1.0 returns the input unchanged.
        grid: (H, W) with H * W == N; default (s, s) when N is a perfect square.
        **options: the method's own options (see ``get_method(name).options``).

    Returns:
        A :class:`Compressed` whose tokens have the input's dtype and device.
    """
    spec = get_method(method)
    if spec.needs_model:
        raise ValueError(
            f"method {method!r} acts inside a model and cannot run on bare tokens; "
            f"use vt.apply(model, {method!r}, ...) instead"
        )
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        accepted = ", ".join(spec.options) or "none"
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for method {method!r}; accepted: {accepted}"
        )
    x = check_tokens(tokens)
    t, n, _ = x.shape
    g = check_grid(grid, n)
    if spec.needs_grid and g is None:
        raise ValueError(
            f"method {method!r} needs a frame grid but N={n} is not a perfect square; "
            f"pass grid=(H, W) with H * W == {n}"
        )
    budget = None
    if retention is not None:
        r = check_retention(retention)
        budget = budget_for(r, t * n)
        if budget == t * n:
            return identity(x, g, method)
    with torch.no_grad():
        out = spec.fn(x, grid=g, budget=budget, **options)
    if budget is not None and out.num_tokens != budget:  # a broken method, not bad input
        raise RuntimeError(
            f"method {method!r} returned {out.num_tokens} tokens for a budget of {budget}"
        )
    return out
