"""FastV (Chen et al., 2024): prune visual tokens inside the language model.

Registered as method "fastv" of stage "llm": ``vt.apply(model, "fastv", retention=0.5,
layer=2)`` puts :class:`vistoken.models.fastv.FastV` (the ``model_part``) into the model's
decoder stack; at layer K (``layer``) only the visual tokens the last token attended to most
at layer K-1 go on. There is no tensor function: ``vt.compress`` refuses it.
"""

from __future__ import annotations

from typing import Any

from ..core import INT64_MAX, int_option, register

DEFAULT_LAYER = 2  # the paper's K
DEFAULT_RETENTION = 0.5  # the paper's R = 50%


def _in_llm(text_model: Any, *, retention: float, layer: int = DEFAULT_LAYER) -> Any:
    from ..models.fastv import FastV

    return FastV(text_model, retention=retention, layer=layer)


@register(
    "fastv",
    kind="select",
    stage="llm",
    model_part=_in_llm,
    default_retention=DEFAULT_RETENTION,
    options=(
        int_option(
            "layer",
            DEFAULT_LAYER,
            1,
            INT64_MAX,
            "LLM layer K: scores from layer K-1, layers >= K see the kept tokens",
            model=True,
        ),
    ),
)
def fastv(*args: Any, **kwargs: Any) -> None:
    """FastV: at LLM layer K keep the visual tokens the last token attends to most."""
