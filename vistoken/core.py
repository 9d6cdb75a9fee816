"""The public contract: :class:`Compressed`, the method registry, budgets and input checks.

Every compression method is a pure function of tensors registered here with
:func:`register`. :func:`compress` validates the input once, turns ``retention`` into an
exact token budget and calls the method; methods never re-validate.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from fractions import Fraction
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Compressed",
    "Info",
    "MethodSpec",
    "compress",
    "methods",
    "register",
    "get_method",
    "budget_for",
    "grid_positions",
    "as_real",
    "as_int",
    "check_real",
    "check_int",
]

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


class Info(Mapping[str, Any]):
    """The read-only ``info`` mapping of a :class:`Compressed`.

    Behaves like a dict that cannot be changed (item assignment raises TypeError); unlike
    ``types.MappingProxyType`` it pickles, deep-copies and ``torch.save``s, and ``==``
    compares tensor values exactly (see :meth:`Compressed.__eq__`).
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_data", dict(data or {}))

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Compressed.info is read-only")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return _same(self._data, other)

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (Info, (self._data,))

    def __repr__(self) -> str:
        return repr(self._data)


def _same(a: Any, b: Any) -> bool:
    """Exact equality that handles tensors: same type, dtype, shape, device and values."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return (
            isinstance(a, Tensor)
            and isinstance(b, Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and a.device == b.device
            and a.layout == b.layout
            and bool(torch.equal(a, b))
        )
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        return (
            isinstance(a, Mapping)
            and isinstance(b, Mapping)
            and a.keys() == b.keys()
            and all(_same(a[k], b[k]) for k in a)
        )
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return (
            type(a) is type(b)
            and len(a) == len(b)
            and all(_same(u, v) for u, v in zip(a, b, strict=True))
        )
    result = a == b
    return result if isinstance(result, bool) else bool(np.all(result))


def _check_rows(x: Any, name: str, symbol: str, rows: int, per: str) -> None:
    """``x`` must be a tensor of shape (rows, ...): TypeError / ValueError otherwise."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0 or x.shape[0] != rows:
        raise ValueError(
            f"{name} must have shape ({symbol}, ...) = ({rows}, ...), one row per {per}, "
            f"got {tuple(x.shape)}"
        )


@dataclass(frozen=True, eq=False)
class Compressed:
    """The result of a compression.

    Attributes:
        tokens: (M, D) output tokens, same dtype and device as the input. Never attached to
            the input's autograd graph (compression is inference-only).
        sources: (T*N,) int64. For input token i (frame-major, i = t*N + h*W + w) the index in
            [0, M) of the output token it was merged into or kept as, or -1 if it was dropped.
        positions: (M, 3) int64 (t, h, w) grid position each output token stands for (its
            anchor source token), for position ids and M-RoPE.
        info: read-only mapping of method details (achieved tau, per-stage counts, sizes, ...).
        anchors: (M,) int64, the flat frame-major input index (t*N + h*W + w) of each output
            token's anchor token, so ``positions == grid_positions(T, grid, N)[anchors]``;
            the model adapters put output token j in the sequence slot of input token
            ``anchors[j]``. Every method passes it (``vt.compress`` derives it from
            ``positions`` and the grid for a method that does not); a result built by hand
            without it gets, for each output token, its smallest source index (-1 for an
            output token no input maps to).

    :meth:`reduce` applies the same grouping to any per-token tensor that runs parallel to
    the input tokens (T*N, ...) -> (M, ...), and :meth:`expand` maps per-output rows back
    to the input slots (M, ...) -> (T*N, ...) (ToMe's merge / unmerge).

    A ``Compressed`` is immutable, pickles, deep-copies and ``torch.save``s; it loads with
    ``torch.load(path, weights_only=True)`` once vistoken is imported (which allow-lists
    this class and :class:`Info` in ``torch.serialization``, torch >= 2.4). ``a == b``
    is exact: every tensor of the same dtype, shape, device and values (``torch.equal``)
    and the same info; results hold tensors, so they are not hashable.
    """

    tokens: Tensor
    sources: Tensor
    positions: Tensor
    info: Mapping[str, Any] = field(default_factory=dict)
    anchors: Tensor = None  # type: ignore[assignment]  # None: derived (see above)

    def __post_init__(self) -> None:
        object.__setattr__(self, "info", Info(self.info))
        m = int(self.tokens.shape[0])
        given = self.anchors is not None
        if not given:
            object.__setattr__(self, "anchors", _first_sources(self.sources, m))
        elif not (
            isinstance(self.anchors, Tensor)
            and self.anchors.dtype == torch.int64
            and tuple(self.anchors.shape) == (m,)
        ):
            raise ValueError(
                f"anchors must be an int64 tensor of shape (M,) = ({m},), got "
                f"{_describe(self.anchors)}"
            )
        # whether a method gave its anchors (vt.compress derives them from positions if not)
        object.__setattr__(self, "_anchors_given", given)

    @property
    def num_tokens(self) -> int:
        """M, the number of output tokens."""
        return int(self.tokens.shape[0])

    @property
    def retention(self) -> float:
        """M / (T*N), the fraction of input tokens that remain."""
        return self.num_tokens / int(self.sources.numel())

    def reduce(self, features: Tensor) -> Tensor:
        """The same grouping applied to a per-token tensor parallel to the input tokens.

        features: (T*N, ...) any dtype, any device, frame-major like ``sources`` (e.g.
        ``x.reshape(T*N, D)``, a second set of features, statistics, masks). Returns
        (M, ...) in features' dtype and on features' device: row j is the row of input
        ``i`` when output j stands for that one input token alone (a gather: selections,
        whose outputs all have one source, get exactly the input rows), else the plain
        mean over every input token merged into it (dropped tokens, ``sources == -1``,
        are ignored). Means are taken in float32 (float64 for float64 features) with the
        methods' overflow guard, then cast back, so for the mean-merging methods pool,
        tome and visionzip ``c.reduce(x.reshape(T*N, D))`` equals ``c.tokens``. (SCC's
        outputs also weigh in their representative and are not a plain mean.) Integer,
        bool and complex features can only be gathered: TypeError when an output token
        merges several inputs. Vectorised (no loop over tokens); autograd flows through.
        """
        _check_rows(features, "features", "T*N", int(self.sources.numel()), "input token")
        return reduce_rows(features, self.sources, self.num_tokens)

    def expand(self, outputs: Tensor, fill: Any = 0) -> Tensor:
        """Per-output rows back onto the input slots: (M, ...) -> (T*N, ...).

        Input token i gets row ``sources[i]`` of ``outputs`` (every token merged into an
        output gets that output's row); dropped tokens (``sources == -1``) get ``fill``: a
        number (default 0) or a tensor that broadcasts to one row. Same dtype and device
        as ``outputs``. For every input token kept alone (its output's size is 1),
        ``c.expand(c.reduce(f))`` returns its own row of ``f``.
        """
        _check_rows(outputs, "outputs", "M", self.num_tokens, "output token")
        src = self.sources.to(outputs.device)
        out = outputs[src.clamp(min=0)]
        dropped = (src < 0).reshape(-1, *([1] * (outputs.dim() - 1)))
        if isinstance(fill, Tensor):
            return torch.where(dropped, fill.to(outputs.device, outputs.dtype), out)
        return out.masked_fill(dropped, fill)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Compressed):
            return NotImplemented
        return type(self) is type(other) and all(
            _same(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)
        )

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        # rebuilt through the constructor, info as a plain dict: picklable, deep-copyable
        # and loadable by torch.load(weights_only=True) with only this class allow-listed
        args = tuple(
            dict(self.info) if f.name == "info" else getattr(self, f.name) for f in fields(self)
        )
        return (type(self), args)

    def __repr__(self) -> str:
        d = self.tokens.shape[-1]
        return (
            f"Compressed(num_tokens={self.num_tokens}, input_tokens={self.sources.numel()}, "
            f"dim={d}, retention={self.retention:.4f}, dtype={self.tokens.dtype}, "
            f"method={self.info.get('method')!r})"
        )


def _first_sources(sources: Tensor, m: int) -> Tensor:
    """(M,) int64: the smallest input index mapped to each output (-1 where none is)."""
    total = int(sources.numel())
    seg = torch.where(sources >= 0, sources, m)  # dropped tokens into an extra bucket m
    idx = torch.arange(total, device=sources.device)
    first = torch.full((m + 1,), total, dtype=torch.int64, device=sources.device)
    first = first.scatter_reduce_(0, seg, idx, reduce="amin")[:m]
    return first.masked_fill(first == total, -1)


def reduce_rows(features: Tensor, sources: Tensor, m: int) -> Tensor:
    """(T*N, ...) -> (M, ...): a gather for outputs of one source, the mean over sources
    for merged ones, dropped rows (-1) ignored (:meth:`Compressed.reduce`).

    Means are plain sums divided by the group sizes in the work dtype (float32, float64
    for float64), with :func:`~vistoken.ops.segment.sum_scale` over the rows that count,
    then :func:`~vistoken.ops.segment.finite_cast` to the features' dtype: the same
    arithmetic as the methods' own means (bit for bit on the CPU). An output no input maps
    to gets a zero row.
    """
    from .ops.segment import finite_cast, sum_scale
    from .ops.similarity import work_dtype

    total = int(sources.numel())
    rest = features.shape[1:]
    f = features.reshape(total, -1)
    src = sources.to(features.device)
    seg = torch.where(src >= 0, src, m)  # dropped rows go to an extra bucket m
    counts = torch.bincount(seg, minlength=m + 1)[:m]
    first = _first_sources(src, m)
    gathered = f[first.clamp(min=0)]
    if not f.is_floating_point():
        if total and int(counts.max()) > 1:
            raise TypeError(
                f"reduce averages merged tokens, which needs floating features; got "
                f"{features.dtype} (convert with .float(), or reduce a selection, whose "
                "output tokens have one source each)"
            )
        none = (counts == 0).unsqueeze(1)
        return gathered.masked_fill(none, 0).reshape(m, *rest)
    wd = work_dtype(f.dtype)
    xw = f.to(wd)
    kept = src >= 0
    bound = float(xw.abs().masked_fill(~kept.unsqueeze(1), 0).amax()) if f.numel() else 0.0
    scale = sum_scale(bound, int(kept.sum()), wd)  # 1.0 unless the sums could overflow
    sums = torch.zeros(m + 1, f.shape[1], dtype=wd, device=f.device)
    sums = sums.index_add(0, seg, xw * scale if scale != 1.0 else xw)[:m]
    means = sums / counts.clamp_min(1).to(wd).unsqueeze(1)
    if scale != 1.0:
        means = means / scale
    out = torch.where((counts == 1).unsqueeze(1), gathered, finite_cast(means, f.dtype))
    return out.reshape(m, *rest)


def anchors_from_positions(positions: Tensor, n: int, grid: tuple[int, int] | None) -> Tensor:
    """(M,) flat frame-major index t*N + h*W + w of each (t, h, w) row (W = N without grid)."""
    w = grid[1] if grid is not None else n
    return positions[:, 0] * n + positions[:, 1] * w + positions[:, 2]


if hasattr(torch.serialization, "add_safe_globals"):  # torch >= 2.4
    torch.serialization.add_safe_globals([Compressed, Info])


# A method: fn(x, *, grid, budget, **options) -> Compressed
#   x: (T, N, D) validated input; grid: (H, W) or None; budget: exact output count or None;
#   options: already checked by the method's Option specs (methods never re-validate)
MethodFn = Callable[..., Compressed]

#: where a method acts: "tokens" on bare tokens before the LLM (``vt.compress`` and
#: ``vt.apply``); "vision" before the LLM too, with statistics of the vision tower that
#: ``vt.apply`` records (``vt.compress`` takes them as tensor options); "llm" inside the
#: language model (``vt.apply`` only).
STAGES = ("tokens", "vision", "llm")
KINDS = ("merge", "select")


@dataclass(frozen=True)
class Option:
    """One option of a method: its default, its check and a one-line doc.

    check(value, what) returns the value normalised (e.g. a NumPy float as a Python
    float) or raises TypeError/ValueError naming ``what`` and what is accepted.
    ``model`` options configure what ``vt.apply`` puts into the model (the layer a probe
    or FastV hooks), not the tensor function; ``required`` ones have no default;
    ``excludes_retention`` ones are the method's own alternative to ``retention``.
    """

    name: str
    default: Any
    check: Callable[[Any, str], Any]
    doc: str = ""
    model: bool = False
    required: bool = False
    excludes_retention: bool = False


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its function, where it acts and its options.

    fn: stage "tokens"/"vision": the tensor function ``fn(x, *, grid, budget, **options)``;
    stage "llm": None (``model_part`` does the work). model_part: what ``vt.apply`` puts
    into the model: stage "vision": ``model_part(vision_tower, **model_options)`` -> a
    probe with ``pop_stats() -> dict of statistics`` and ``remove()``; stage "llm":
    ``model_part(text_model, retention=, **model_options)`` -> an object with
    ``prepare(visual_mask, last)`` and ``remove()``. default_retention: used by
    ``vt.apply`` when none is given (FastV: 0.5, its paper's R).
    """

    name: str
    fn: MethodFn | None
    kind: str  # "merge" (outputs are means) or "select" (outputs are input tokens)
    stage: str = "tokens"
    options: tuple[Option, ...] = ()
    needs_grid: bool = False
    needs_budget: bool = True
    default_retention: float | None = None
    model_part: Callable[..., Any] | None = None
    description: str = ""

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.options)

    def defaults(self) -> dict[str, Any]:
        """Every option with a default, by name (required ones are left out)."""
        return {o.name: o.default for o in self.options if not o.required}

    def check_options(
        self, options: Mapping[str, Any], retention: float | None = None
    ) -> dict[str, Any]:
        """The one option check (``compress``, ``apply`` and the CLI use it): unknown
        names, each value by its Option, required ones, and the retention rule. Returns the
        given options normalised (defaults are not filled in)."""
        unknown = sorted(set(options) - set(self.option_names))
        if unknown:
            accepted = ", ".join(self.option_names) or "none"
            raise ValueError(
                f"unknown option(s) {', '.join(unknown)} for method {self.name!r}; "
                f"accepted: {accepted}"
            )
        out = {}
        for opt in self.options:
            if opt.name in options:
                out[opt.name] = opt.check(options[opt.name], f"{self.name} option {opt.name}")
        own = [o.name for o in self.options if o.excludes_retention and out.get(o.name) is not None]
        if retention is not None and own:
            raise ValueError(f"{self.name} takes either retention or {own[0]}, not both")
        if retention is None and self.needs_budget and self.stage != "llm" and not own:
            raise ValueError(f"{self.name} needs retention=... (a fraction in (0, 1])")
        return out

    def split_options(self, options: Mapping[str, Any]) -> tuple[dict, dict]:
        """(tensor-function options, model options) of checked ``options``."""
        model = {o.name for o in self.options if o.model}
        fn = {k: v for k, v in options.items() if k not in model}
        return fn, {k: v for k, v in options.items() if k in model}


_REGISTRY: dict[str, MethodSpec] = {}


def register(
    name: str,
    *,
    kind: str,
    stage: str = "tokens",
    options: tuple[Option, ...] = (),
    needs_grid: bool = False,
    needs_budget: bool = True,
    default_retention: float | None = None,
    model_part: Callable[..., Any] | None = None,
    description: str = "",
) -> Callable[[MethodFn], MethodFn]:
    """Decorator that registers a compression method under ``name`` (see MethodSpec)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if stage != "tokens" and model_part is None:
        raise ValueError(f"a method of stage {stage!r} needs model_part")

    def deco(fn: MethodFn) -> MethodFn:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is already registered")
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = MethodSpec(
            name=name,
            fn=None if stage == "llm" else fn,
            kind=kind,
            stage=stage,
            options=tuple(options),
            needs_grid=needs_grid,
            needs_budget=needs_budget,
            default_retention=default_retention,
            model_part=model_part,
            description=description or (doc[0] if doc else ""),
        )
        return fn

    return deco


def _load_builtin_methods() -> None:
    # Importing the subpackage registers every built-in method.
    importlib.import_module(f"{__package__}.compressors")


def methods(stage: str | None = None, kind: str | None = None) -> list[str]:
    """Every registered method name, sorted; ``stage`` / ``kind`` filter (see STAGES)."""
    _load_builtin_methods()
    if stage is not None and stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return sorted(
        name
        for name, spec in _REGISTRY.items()
        if (stage is None or spec.stage == stage) and (kind is None or spec.kind == kind)
    )


def get_method(name: str) -> MethodSpec:
    """The :class:`MethodSpec` registered as ``name``; ValueError listing the known ones."""
    _load_builtin_methods()
    if not isinstance(name, str) or name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown method {name!r}; known methods: {known}")
    return _REGISTRY[name]


# Option builders: the checks every method's options use.


def real_option(
    name: str,
    default: Any,
    ok: Callable[[float], bool],
    accepted: str,
    doc: str = "",
    **flags: Any,
) -> Option:
    """A real-number option (the scalar rule); None is accepted when it is the default."""

    def check(value: Any, what: str) -> float | None:
        if value is None and default is None:
            return None
        return check_real(value, what, ok, accepted)

    return Option(name, default, check, doc, **flags)


def int_option(name: str, default: Any, low: int, high: int, doc: str = "", **flags: Any) -> Option:
    """An integer option in [low, high] (the scalar rule)."""
    return Option(name, default, lambda v, what: check_int(v, what, low, high), doc, **flags)


def choice_option(name: str, default: str, choices: tuple[str, ...], doc: str = "") -> Option:
    """A string option, one of ``choices``."""

    def check(value: Any, what: str) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ValueError(f"{what} must be one of {choices}, got {value!r}")
        return value

    return Option(name, default, check, doc)


def tensor_option(name: str, doc: str = "") -> Option:
    """A required tensor input (vision-tower statistics of a "vision" method)."""

    def check(value: Any, what: str) -> Tensor:
        if not isinstance(value, Tensor):
            raise TypeError(f"{what} must be a torch.Tensor, got {type(value).__name__}")
        return value

    return Option(name, None, check, doc, required=True)


# --------------------------------------------------------------------------------------
# Scalar arguments: one rule for retention, tau and every method's numeric options.

REAL_RULE = (
    "a real number (a Python int or float, a NumPy integer or floating scalar, or a "
    "one-element integer or floating tensor; not a bool)"
)
INT_RULE = (
    "an integer (a Python int, a NumPy integer scalar or a one-element integer tensor; "
    "not a bool or a float)"
)
_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
# The largest seed (torch.Generator.manual_seed takes 64-bit values) and the bound of every
# other unbounded integer option: int64 tensor arithmetic never overflows below it.
INT64_MAX = 2**63 - 1


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)} on {value.device}"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _shortest_decimal(v: float, dtype: torch.dtype) -> float:
    """The shortest decimal that rounds to ``v`` in ``dtype``, as a Python float (so that
    torch.tensor(0.1), float32 0.10000000149..., means 0.1)."""
    if not math.isfinite(v) or dtype == torch.float64:
        return v
    for digits in range(1, 18):
        d = float(f"{v:.{digits}g}")
        if torch.tensor(d, dtype=dtype).item() == v:
            return d
    return v


def as_real(value: Any, what: str) -> float:
    """``value`` as a Python float, by the one rule for scalar arguments.

    Accepted: a Python int or float, a NumPy integer or floating scalar, or a torch tensor
    with exactly one element (0-d or not, any device) of an integer or floating dtype.
    Refused with TypeError: bools of every kind (Python, NumPy, bool tensors), strings,
    complex numbers, arrays and tensors of more than one element, anything else.

    The value is the shortest decimal that round-trips at the value's own precision:
    ``np.float32(0.1)``, ``torch.tensor(0.1)`` (float32) and ``0.1`` all give 0.1, so a
    budget taken on the decimal (:func:`budget_for`) does not depend on the carrier.
    NaN and infinities are returned as they are: the callers check their ranges.
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be {REAL_RULE}, got the bool {value!r}")
    if isinstance(value, (int, np.integer)):
        try:
            return float(value)
        except OverflowError:
            return math.copysign(math.inf, int(value))
    if isinstance(value, float):  # also np.float64, a float subclass
        return float(value)
    if isinstance(value, np.floating):
        return float(str(value))  # NumPy prints the shortest round-trip decimal
    if isinstance(value, Tensor) and value.numel() == 1 and value.device.type != "meta":
        if value.dtype in _INT_DTYPES:
            return float(int(value.item()))
        if value.dtype.is_floating_point:
            return _shortest_decimal(float(value.item()), value.dtype)
    raise TypeError(f"{what} must be {REAL_RULE}, got {_describe(value)}")


def as_int(value: Any, what: str) -> int:
    """``value`` as a Python int: a Python int, a NumPy integer scalar or a one-element
    integer tensor. Bools, floats (even integral ones), strings: TypeError."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be {INT_RULE}, got the bool {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if (
        isinstance(value, Tensor)
        and value.numel() == 1
        and value.dtype in _INT_DTYPES
        and value.device.type != "meta"
    ):
        return int(value.item())
    raise TypeError(f"{what} must be {INT_RULE}, got {_describe(value)}")


def check_real(value: Any, what: str, ok: Callable[[float], bool], accepted: str) -> float:
    """:func:`as_real`, then ValueError ``"{what} must be {accepted}, got ..."`` unless
    ``ok(v)`` (NaN never passes)."""
    v = as_real(value, what)
    if math.isnan(v) or not ok(v):
        raise ValueError(f"{what} must be {accepted}, got {value!r}")
    return v


def check_int(value: Any, what: str, low: int, high: int) -> int:
    """:func:`as_int`, then ValueError unless low <= value <= high."""
    v = as_int(value, what)
    if not low <= v <= high:
        raise ValueError(f"{what} must be an int in [{low}, {high}], got {value!r}")
    return v


def budget_for(retention: float, total: int) -> int:
    """Exact output count for ``retention``: max(1, ceil(retention * total)).

    The product is taken on the decimal value the user wrote (``0.1`` means 1/10), so
    ``0.1 * 6270`` gives 627, not 628 from binary rounding; a float32 ``0.1`` (NumPy or
    tensor) means the same 1/10 (:func:`as_real`).
    """
    exact = Fraction(repr(as_real(retention, "retention"))) * total
    return max(1, math.ceil(exact))


def check_retention(retention: Any) -> float:
    """Return ``retention`` as a float in (0, 1] (scalar rule: :func:`as_real`);
    TypeError/ValueError otherwise."""
    return check_real(retention, "retention", lambda r: 0.0 < r <= 1.0, "in (0, 1]")


def all_finite(x: Tensor) -> bool:
    """Whether every element of ``x`` is finite, in one reduction for ordinary inputs.

    A sum (in float32, float64 for float64) is finite only when every element is: a NaN
    or an infinity makes it NaN or infinite. So a finite sum proves the tensor finite at
    the cost of one read (about 20x cheaper than an elementwise isfinite mask on a CPU); a
    sum that is not finite (a non-finite element, or finite values whose sum overflows)
    falls back to the elementwise test.
    """
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    if bool(torch.isfinite(x.sum(dtype=acc))):
        return True
    return bool(torch.isfinite(x).all())


def check_tokens(tokens: Any) -> Tensor:
    """Validate ``tokens`` and return them as (T, N, D) (a view, never a copy)."""
    if not isinstance(tokens, Tensor):
        raise TypeError(
            f"tokens must be a torch.Tensor of shape (T, N, D) or (N, D), "
            f"got {type(tokens).__name__}"
        )
    if tokens.layout != torch.strided or tokens.is_nested:
        layout = "nested" if tokens.is_nested else str(tokens.layout)
        raise TypeError(
            f"tokens must be a dense tensor (layout torch.strided), got layout {layout}; "
            "convert it first (e.g. tokens.to_dense())"
        )
    if tokens.device.type == "meta":
        raise TypeError(
            "tokens must hold data (a CPU or accelerator tensor), got a meta tensor"
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
    if not all_finite(tokens):
        raise ValueError("tokens contain NaN or Inf values; only finite values are accepted")
    return tokens.unsqueeze(0) if tokens.dim() == 2 else tokens


GRID_RULE = (
    "a pair (H, W) of positive integers: a tuple, list or torch.Size (or a 1-D integer "
    "array or tensor) of two Python ints, NumPy integers or one-element integer tensors "
    "(not bools, floats or strings)"
)


def check_grid(grid: Any, n: int) -> tuple[int, int] | None:
    """Validate ``grid`` against N tokens per frame; default (s, s) when N == s*s.

    TypeError for anything but a length-2 sequence of integers (:data:`GRID_RULE`),
    ValueError for non-positive sizes or H * W != N.
    """
    if grid is None:
        s = math.isqrt(n)
        return (s, s) if s * s == n else None
    array = isinstance(grid, (np.ndarray, Tensor)) and grid.ndim == 1
    if not (isinstance(grid, (tuple, list)) or array):  # torch.Size is a tuple
        raise TypeError(f"grid must be {GRID_RULE}, got {_describe(grid)}")
    if len(grid) != 2:
        raise ValueError(f"grid must be a pair (H, W), got {len(grid)} values: {grid!r}")
    try:
        h, w = (as_int(g, "grid") for g in grid)
    except TypeError:
        raise TypeError(f"grid must be {GRID_RULE}, got {grid!r}") from None
    if h <= 0 or w <= 0:
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
    """Every input token unchanged, in input order (the retention=1.0 result).

    The tokens are a copy, detached like every other result: never on the input's graph.
    """
    t, n, d = x.shape
    total = t * n
    return Compressed(
        tokens=x.detach().reshape(total, d).clone(),
        sources=torch.arange(total, device=x.device),
        positions=grid_positions(t, grid, n, x.device),
        info={"method": method, "identity": True},
        anchors=torch.arange(total, device=x.device),
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
        **options: the method's own options (``get_method(name).options``: names,
            defaults, checks). "vision" methods take their tower statistics here too.

    Returns:
        A :class:`Compressed` whose tokens have the input's dtype and device.

    Compression is inference-only: the outputs never carry the input's autograd graph
    (at retention=1.0 too, where the tokens are a detached copy). Scalars (retention and
    the methods' numeric options) follow one rule, :func:`as_real` / :func:`as_int`.
    Cosine similarities are scale-invariant over the dtype's whole finite range and
    means never overflow for finite input.
    """
    spec = get_method(method)
    if spec.stage == "llm":
        raise ValueError(
            f"method {method!r} acts inside a model and cannot run on bare tokens; "
            f"use vt.apply(model, {method!r}, ...) instead"
        )
    r = check_retention(retention) if retention is not None else None
    options = spec.check_options(options, r)
    missing = [o.name for o in spec.options if o.required and o.name not in options]
    if missing:
        raise ValueError(
            f"method {method!r} needs {', '.join(missing)} (vision-tower statistics; "
            f"vt.apply(model, {method!r}, ...) records them)"
        )
    fn_options, _ = spec.split_options(options)
    x = check_tokens(tokens)
    t, n, _ = x.shape
    g = check_grid(grid, n)
    if spec.needs_grid and g is None:
        raise ValueError(
            f"method {method!r} needs a frame grid but N={n} is not a perfect square; "
            f"pass grid=(H, W) with H * W == {n}"
        )
    budget = None
    if r is not None:
        budget = budget_for(r, t * n)
        if budget == t * n:
            return identity(x, g, method)
    assert spec.fn is not None
    with torch.no_grad():
        out = spec.fn(x, grid=g, budget=budget, **fn_options)
    if budget is not None and out.num_tokens != budget:  # a broken method, not bad input
        raise RuntimeError(
            f"method {method!r} returned {out.num_tokens} tokens for a budget of {budget}"
        )
    if not out._anchors_given:  # a method that gave positions only: anchors follow them
        out = Compressed(
            out.tokens, out.sources, out.positions, dict(out.info),
            anchors_from_positions(out.positions, n, g),
        )
    return out
