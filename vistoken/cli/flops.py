"""``vistoken flops``: the analytic prefill cost model (vistoken/flops.py), full vs compressed."""

from __future__ import annotations

import argparse
from typing import Any

from .common import (
    ANY_INT,
    COUNT,
    DEFAULT_RETENTION,
    POSITIVE,
    UsageError,
    add_frames,
    dumps,
    frames_text,
    retention,
)

FLOPS_MODEL = "llava-onevision-7b"
FLOPS_FRAMES = 32  # the field's LLaVA-OneVision setting (REFERENCE.md section 4)
FLOPS_TEXT_TOKENS = 100


def add_parser(sub: Any) -> None:
    from ..flops import FORMULAS, PRESETS

    f = sub.add_parser(
        "flops",
        help="prefill FLOPs of a video VLM, full vs compressed",
        description="Analytic prefill cost of a video VLM's language model with all visual "
        "tokens and with a fraction of them kept (one multiply-add = 1 FLOP, as papers "
        "count). Formula 'fastv' is the one papers print (4nd^2 + 2n^2d + 2ndm per layer); "
        "'exact' counts grouped-query attention, the gated MLP, the causal half of attention "
        "and the lm_head on the last token.",
    )
    f.add_argument(
        "--model",
        default=FLOPS_MODEL,
        metavar="NAME",
        help=f"model preset: {', '.join(PRESETS)} (default: {FLOPS_MODEL})",
    )
    add_frames(f, FLOPS_FRAMES, "video frames")
    f.add_argument(
        "--retention",
        type=retention,
        default=DEFAULT_RETENTION,
        metavar="R",
        help=f"fraction of visual tokens kept, in (0, 1] (default: {DEFAULT_RETENTION})",
    )
    f.add_argument(
        "--text-tokens",
        type=COUNT,
        default=FLOPS_TEXT_TOKENS,
        metavar="N",
        help=f"text tokens of the prompt (default: {FLOPS_TEXT_TOKENS})",
    )
    f.add_argument(
        "--tokens-per-frame",
        type=POSITIVE,
        metavar="N",
        help="visual tokens per frame (default: the preset's, e.g. 196 for LLaVA-OneVision)",
    )
    f.add_argument(
        "--formula", choices=FORMULAS, default="fastv", help="cost formula (default: fastv)"
    )
    f.add_argument(
        "--method",
        metavar="NAME",
        help="'fastv' to prune inside the LLM from --layer on; default: compression before "
        "the LLM (every layer sees the kept tokens), as any method of 'vistoken methods'",
    )
    f.add_argument(
        "--layer",
        type=ANY_INT,
        metavar="K",
        help="FastV's pruning layer K, with --method fastv (default: the method's, see "
        "'vistoken methods')",
    )
    f.add_argument(
        "--vision",
        action="store_true",
        help="add the vision tower and projector on every frame (LLaVA and InternVL presets)",
    )
    f.add_argument("--json", action="store_true", help="print the figures as JSON")


def run(args: argparse.Namespace) -> int:
    from ..flops import check_method, fastv_default_layer, kept_tokens, prefill_flops, resolve

    try:
        preset = resolve(args.model)
    except ValueError as exc:
        raise UsageError(f"argument --model: {exc}") from None
    if args.layer is not None and args.method != "fastv":
        raise UsageError("argument --layer: only with --method fastv")
    per_frame = args.tokens_per_frame or preset.tokens_per_frame
    visual = args.frames * per_frame
    text = args.text_tokens
    layer = fastv_default_layer() if args.method == "fastv" and args.layer is None else args.layer
    common = {
        "formula": args.formula,
        "method": args.method,
        "layer": layer,
        "vision": args.vision,
        "frames": args.frames,
    }
    try:
        check_method(args.method)
    except ValueError as exc:
        raise UsageError(f"argument --method: {exc}") from None
    layers = preset.llm.num_hidden_layers
    if layer is not None and not 0 <= layer <= layers:
        raise UsageError(f"argument --layer: must be in [0, {layers}] for {preset.name}")
    if args.vision and preset.vision is None:
        raise UsageError(f"argument --vision: no vision tower is modelled for {preset.name}")
    try:
        full = prefill_flops(preset, visual, text, 1.0, **common)
        compressed = prefill_flops(preset, visual, text, args.retention, **common)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    kept = kept_tokens(visual, args.retention)
    llm = preset.llm
    summary = {
        "model": preset.name,
        "llm": {
            "name": llm.name,
            "layers": llm.num_hidden_layers,
            "hidden_size": llm.hidden_size,
            "intermediate_size": llm.intermediate_size,
            "attention_heads": llm.num_attention_heads,
            "key_value_heads": llm.num_key_value_heads,
        },
        "formula": args.formula,
        "method": args.method,
        "layer": layer,
        "vision": args.vision,
        "frames": args.frames,
        "tokens_per_frame": per_frame,
        "visual_tokens": visual,
        "text_tokens": text,
        "retention": args.retention,
        "kept_visual_tokens": kept,
        "tokens_full": visual + text,
        "tokens_compressed": kept + text,
        "flops_full": full,
        "flops_compressed": compressed,
        "tflops_full": full / 1e12,
        "tflops_compressed": compressed / 1e12,
        "ratio": compressed / full if full else 1.0,
    }
    if args.json:
        print(dumps(summary))
        return 0
    if args.method == "fastv":
        where = (
            f"fastv inside the LLM: layers < {layer} see {visual + text} tokens, "
            f"layers >= {layer} see {kept + text}"
        )
    else:
        where = f"{args.method or 'compression'} before the LLM: every layer sees the kept tokens"
    ratio = summary["ratio"]
    fewer = f"{full / compressed:.2f}x fewer" if compressed else ""
    lines = [
        f"{preset.name}: {llm.name}, {llm.num_hidden_layers} layers, d={llm.hidden_size}, "
        f"m={llm.intermediate_size}; formula {args.formula} (1 multiply-add = 1 FLOP)"
        + (", vision tower included" if args.vision else ""),
        f"  input      {frames_text(args.frames)} x {per_frame} = {visual} visual tokens, "
        f"{text} text tokens",
        f"  method     {where}",
        f"  {'':<10} {'tokens':>7} {'TFLOPs':>9}",
        f"  {'full':<10} {visual + text:>7} {full / 1e12:>9.2f}",
        f"  {'compressed':<10} {kept + text:>7} {compressed / 1e12:>9.2f}   "
        f"retention {args.retention:g}",
        f"  {'ratio':<10} {'':>7} {ratio:>9.2%}   {fewer}",
    ]
    print("\n".join(lines))
    return 0
