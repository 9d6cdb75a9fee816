"""``vistoken bench fidelity``: every pre-LLM method at every ratio on a real video."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from .common import (
    PROG,
    Parser,
    UsageError,
    add_frames,
    add_out,
    check_input,
    frames_text,
    limits,
    name_list,
    output_folder,
    output_note,
    pre_llm_method,
    progress,
    ratio_list,
    resolve_device,
)

FIDELITY_NAMES = ("fidelity.md", "fidelity.csv", "fidelity.png")
FIDELITY_FRAMES = 32
FIDELITY_OUT = "vistoken-fidelity"


def add_parser(sub: Any, media: argparse.ArgumentParser) -> None:
    """The bench command and its benchmarks, ``media`` (the shared flags) as their parent."""
    from ..eval import RATIOS

    b = sub.add_parser(
        "bench",
        help="measure the compression methods (see 'vistoken bench --help')",
        description="Benchmarks of the compression methods.",
    )
    bsub = b.add_subparsers(dest="bench_command", metavar="BENCH", parser_class=Parser)
    f = bsub.add_parser(
        "fidelity",
        parents=[media],
        help="reconstruction, attention error and frame coverage of every method",
        description="Decode T frames of a video (default: the bundled bigbuckbunny.mp4), "
        "encode them with the default encoder, compress the tokens with every pre-LLM method "
        "(methods that act inside a model are skipped) at every retention ratio and measure "
        "how well the output tokens stand for the input: reconstruction (mean cosine of each "
        "input token to the output token representing it), attention error (relative error "
        "of a softmax-attention readout) and frame coverage. Writes "
        f"DIR/{FIDELITY_NAMES[0]}, DIR/{FIDELITY_NAMES[1]} and DIR/{FIDELITY_NAMES[2]}. "
        f"{output_note(FIDELITY_NAMES)}",
    )
    f.add_argument(
        "--video",
        type=Path,
        metavar="PATH",
        help="video (any format FFmpeg reads) or image (default: the bundled bigbuckbunny.mp4)",
    )
    add_frames(f, FIDELITY_FRAMES, "frames to sample uniformly")
    f.add_argument(
        "--methods",
        type=name_list,
        metavar="A,B,...",
        help="comma-separated methods (default: every registered method that runs on encoder "
        "tokens; see 'vistoken methods')",
    )
    f.add_argument(
        "--ratios",
        type=ratio_list,
        metavar="R,R,...",
        help="comma-separated retention ratios in (0, 1] (default: "
        f"{','.join(f'{r:g}' for r in RATIOS)})",
    )
    add_out(f, FIDELITY_OUT)


def _bench_methods(names: list[str] | None) -> list[str]:
    """The methods of a bench run: ``names`` checked, or every pre-LLM method."""
    from ..core import methods

    if names is None:
        return methods(stage="tokens")
    for name in names:
        pre_llm_method(name, "--methods")
    return names


def run_fidelity(args: argparse.Namespace) -> int:
    # everything that can be checked cheaply, before decoding
    from ..eval import RATIOS

    names = _bench_methods(args.methods)
    ratios = list(RATIOS) if args.ratios is None else args.ratios
    device = resolve_device(args.device)
    out_dir = output_folder(args.out, FIDELITY_OUT, FIDELITY_NAMES)
    if args.video is None:
        from ..video import bundled_video

        input_path = bundled_video()
    else:
        input_path = args.video
    check_input(input_path)

    from ..eval import run_fidelity as measure
    from ..eval import write_report
    from ..pipeline import encode

    show = progress(args)
    encoded = encode(input_path, args.frames, device=device, progress=show, **limits(args))
    t, n, d = encoded.tokens.shape

    t0 = time.perf_counter()
    rows = measure(encoded.tokens, encoded.grid, methods=names, ratios=ratios, progress=show)
    seconds = time.perf_counter() - t0
    title = f"Fidelity on {input_path.name}: {frames_text(t)} x {n} tokens x {d} channels"
    paths = write_report(rows, out_dir, title)

    lines = [
        f"{input_path}: {frames_text(t)} (of {encoded.frames.total_frames}), {t * n} tokens "
        f"of dimension {d}",
        f"  ran      {len(names)} methods x {len(ratios)} ratios in {seconds:.1f} s",
        *(f"  note     {note}" for note in encoded.frames.notes),
        f"  wrote    {paths['md']}",
        f"           {paths['csv']}",
        f"           {paths['png']}",
    ]
    print("\n".join(lines))
    return 0


BENCHES = {"fidelity": run_fidelity}


def run(args: argparse.Namespace) -> int:
    if args.bench_command is None:
        raise UsageError(
            f"a benchmark is required: {', '.join(BENCHES)} (see '{PROG} bench --help')"
        )
    return BENCHES[args.bench_command](args)
