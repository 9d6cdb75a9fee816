"""The ``vt_*`` model_args of the lmms-eval wrappers: split off, checked, before any model loads.

lmms-eval hands a wrapper its ``--model_args`` as keywords (``a=1,b=x`` -> ``{"a": 1, "b": "x"}``,
numbers already converted by lmms-eval). The wrappers take every key that starts with ``vt_``
out before the base wrapper sees them (lmms-eval's wrappers ``assert kwargs == {}``):

- ``vt_method``: ``none`` (the base wrapper, untouched) or any ``vt.methods()`` name;
- ``vt_retention``: the share of visual tokens kept, in (0, 1] (a method's own default when
  it has one, e.g. FastV's 0.5);
- ``vt_report``: where the vistoken JSON report goes (default: next to lmms-eval's results,
  see :mod:`vistoken.lmms.report`);
- ``vt_<option>``: any option of the method (``vt_tau=0.9``, ``vt_layer=2``, ...).

Everything is checked by the library's one option check (:meth:`MethodSpec.check_options`),
so a bad value fails at start-up with the same message ``vt.apply`` would give. Pure Python:
no lmms-eval, no model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NONE", "PREFIX", "VtArgError", "VtArgs", "split_model_args"]

PREFIX = "vt_"
NONE = "none"
_OWN = ("method", "retention", "report")


class VtArgError(ValueError):
    """A bad ``vt_*`` model_arg; the message is one line, prefixed ``vistoken:``."""


@dataclass(frozen=True)
class VtArgs:
    """The checked ``vt_*`` model_args."""

    method: str = NONE
    retention: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    report: str | None = None

    @property
    def active(self) -> bool:
        """Whether a compressor is applied (``vt_method`` is not ``none``)."""
        return self.method != NONE

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "retention": self.retention,
                "options": dict(self.options)}


def _value(raw: Any) -> Any:
    """A model_arg value: strings that read as JSON numbers/booleans become them."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def split_model_args(kwargs: Mapping[str, Any]) -> tuple[VtArgs, dict[str, Any]]:
    """(the checked ``vt_*`` args, every other model_arg for the base wrapper).

    Raises :class:`VtArgError` (one line) for an unknown method, a retention outside (0, 1],
    an option the method does not take or a bad option value, and for ``vt_*`` options
    given with ``vt_method=none``.
    """
    from ..core import check_retention, get_method, methods

    rest = {k: v for k, v in kwargs.items() if not k.startswith(PREFIX)}
    vt = {k[len(PREFIX):]: _value(v) for k, v in kwargs.items() if k.startswith(PREFIX)}
    method = vt.pop("method", NONE)
    retention = vt.pop("retention", None)
    report = vt.pop("report", None)
    if not isinstance(method, str) or not method:
        raise VtArgError(f"vistoken: vt_method must be a method name or 'none', got {method!r}")
    method = method.strip().lower()
    if report is not None:
        report = str(report)
    if method == NONE:
        if retention is not None or vt:
            given = ["vt_retention"] * (retention is not None) + [PREFIX + k for k in sorted(vt)]
            raise VtArgError(
                f"vistoken: {', '.join(given)} given with vt_method=none (no compressor); "
                f"give vt_method=<one of {', '.join(methods())}>"
            )
        return VtArgs(report=report), rest
    try:
        spec = get_method(method)
        unknown = sorted(set(vt) - set(spec.option_names))
        if unknown:
            accepted = ", ".join(PREFIX + o for o in spec.option_names) or "none"
            raise ValueError(f"unknown option(s) {', '.join(PREFIX + u for u in unknown)} for "
                             f"method {method!r}; accepted: vt_retention, {accepted}")
        if retention is None:
            retention = spec.default_retention
        if retention is not None:
            try:
                retention = check_retention(retention)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"vt_{exc}") from None
        options = spec.check_options(vt, retention)
        if spec.stage != "tokens" and retention is None:
            raise ValueError(f"method {method!r} needs vt_retention (a fraction in (0, 1])")
    except (TypeError, ValueError) as exc:
        text = str(exc).replace("retention=...", "vt_retention=...")
        raise VtArgError(f"vistoken: bad model_args: {text}") from None
    return VtArgs(method=method, retention=retention, options=options, report=report), rest
