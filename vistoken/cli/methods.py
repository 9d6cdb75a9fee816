"""``vistoken methods``: every registered method, one line each, with its options."""

from __future__ import annotations

import argparse
from typing import Any

WHERE = {
    "tokens": "on tokens before the LLM",
    "vision": "before the LLM, with vision-tower statistics (vt.apply only)",
    "llm": "inside the LLM (vt.apply only)",
}


def add_parser(sub: Any) -> None:
    sub.add_parser(
        "methods",
        help="list the registered compression methods",
        description="List the registered compression methods with their options.",
    )


def run(args: argparse.Namespace) -> int:
    from ..core import get_method, methods

    names = methods()
    width = max((len(n) for n in names), default=0)
    for name in names:
        spec = get_method(name)
        print(f"{name:<{width}}  {spec.description}  [{spec.kind}; {WHERE[spec.stage]}]")
        for opt in spec.options:
            default = "required" if opt.required else f"default {opt.default!r}"
            print(f"{'':<{width}}    {opt.name} ({default}): {opt.doc}")
    return 0
