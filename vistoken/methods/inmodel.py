"""Methods that act inside a model: registered so that ``vt.methods()`` lists them and
``vt.compress`` can say to use ``vt.apply``; their code lives in ``vistoken.models``."""

from __future__ import annotations

from typing import Any

from ..core import Compressed, register


def _needs_model(name: str) -> Compressed:
    raise ValueError(f"method {name!r} acts inside a model; use vt.apply(model, {name!r}, ...)")


@register("fastv", kind="select", options=("layer",), needs_model=True)
def fastv(*args: Any, **kwargs: Any) -> Compressed:
    """FastV: at LLM layer K keep the visual tokens the last token attends to most."""
    return _needs_model("fastv")


@register("visionzip", kind="merge", options=("dominant_share", "layer"), needs_model=True)
def visionzip(*args: Any, **kwargs: Any) -> Compressed:
    """VisionZip: dominant tokens by vision-tower attention, the rest merged into contexts."""
    return _needs_model("visionzip")
