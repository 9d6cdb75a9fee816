"""What every command shares: the error type, argument types, shared flags, checks, output.

Standard library only at module level (see the package docstring); whatever a function needs
beyond it is imported inside the function.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

PROG = "vistoken"
DEFAULT_RETENTION = 0.1


class UsageError(Exception):
    """Bad command-line input: exit status 2."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one ``vistoken: error:`` line and a UsageError."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


# --------------------------------------------------------------------------------------------
# argument types: each raises argparse.ArgumentTypeError, which argparse reports as
# "argument --flag: <message>"


def integer(minimum: int | None = None) -> Callable[[str], int]:
    """The one integer type: a base-10 integer, at least ``minimum`` when one is given."""
    bound = "" if minimum is None else f" >= {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer{bound}, got {text!r}") from None
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be{bound}, got {text!r}")
        return value

    return parse


#: counts of things that must exist: frames, tokens per frame, limits
POSITIVE = integer(1)
#: counts that may be zero: text tokens
COUNT = integer(0)
#: any integer: seeds, layer indices (range-checked by the command)
ANY_INT = integer()


def retention(text: str) -> float:
    """--retention: a number in (0, 1], checked by the library's own rule."""
    from ..core import check_retention

    try:
        return check_retention(float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def finite(text: str) -> float:
    """A finite number."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return v


def seconds(text: str) -> float:
    """A finite number of seconds >= 0."""
    v = finite(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds, got {text!r}")
    return v


_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def byte_size(text: str) -> int:
    """--max-bytes: a positive number of bytes, optionally with a K/M/G/T suffix (powers of
    1024; ``KB``/``KiB`` spellings too), e.g. 512M, 1.5G, 1000000."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    value = int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]) if m else 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"must be a size in bytes >= 1 such as 4G, 512M or 1000000, got {text!r}"
        )
    return value


def size_text(n: int) -> str:
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


def name_list(text: str) -> list[str]:
    """--methods: comma-separated names, none empty, none repeated."""
    names = _comma_parts(text, "names")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise argparse.ArgumentTypeError(f"{', '.join(dup)} given twice")
    return names


def ratio_list(text: str) -> list[float]:
    """--ratios: comma-separated retention ratios in (0, 1], none repeated."""
    ratios = []
    for part in _comma_parts(text, "numbers"):
        try:
            ratios.append(retention(part))
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{part!r}: {exc}") from None
    if len(set(ratios)) != len(ratios):
        raise argparse.ArgumentTypeError(f"a ratio is given twice in {text!r}")
    return ratios


def option(text: str) -> tuple[str, Any]:
    """--option: KEY=VALUE, VALUE read as JSON when it parses, else as a string."""
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
# shared flags


def output_note(names: Sequence[str]) -> str:
    """The output-folder rule of every command (vistoken._outputs), for the files ``names``."""
    listed = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
    return (
        f"The output folder is created if missing. Only {listed} are written in it, "
        "replacing earlier ones of those names, all together once all were produced (each via "
        "a temporary file renamed into place): on an error the old ones are kept. Output names "
        "that are symbolic links are refused, never written through; nothing else there is "
        "touched."
    )


def media_flags() -> argparse.ArgumentParser:
    """The parent parser of every command that decodes and encodes a file: --device, -q, -v,
    --debug and the input limits --max-pixels, --max-frames, --max-bytes."""
    from ..video import MAX_BYTES, MAX_FRAMES, MAX_PIXELS

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--device",
        help="where the encoder and the method run, e.g. cpu or cuda (default: cuda if "
        "available, else cpu)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    p.add_argument("--debug", action="store_true", help="debug logging; show tracebacks on errors")
    g = p.add_argument_group(
        "input limits",
        "an input over a limit is refused before it is decoded (one error line, exit 1)",
    )
    g.add_argument(
        "--max-pixels",
        type=POSITIVE,
        default=MAX_PIXELS,
        metavar="N",
        help=f"most pixels (height x width) of one frame or image (default: {MAX_PIXELS}, "
        "8192x8192)",
    )
    g.add_argument(
        "--max-frames",
        type=POSITIVE,
        default=MAX_FRAMES,
        metavar="N",
        help=f"most frames decoded (default: {MAX_FRAMES})",
    )
    g.add_argument(
        "--max-bytes",
        type=byte_size,
        default=MAX_BYTES,
        metavar="SIZE",
        help=f"largest decoded frames array, frames x height x width x 3 bytes; K/M/G/T "
        f"suffixes are powers of 1024 (default: {size_text(MAX_BYTES)})",
    )
    return p


def add_frames(p: argparse.ArgumentParser, default: int, what: str) -> None:
    """--frames T: ``what`` (e.g. "frames to sample uniformly"), ``default`` when not given."""
    p.add_argument(
        "--frames", type=POSITIVE, default=default, metavar="T", help=f"{what} (default: {default})"
    )


def add_out(p: argparse.ArgumentParser, default_out: str) -> None:
    """--out DIR, ``./default_out`` when not given (see :func:`output_folder`)."""
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"output folder (default: ./{default_out})",
    )


def limits(args: argparse.Namespace) -> dict[str, int]:
    """The input-limit keyword arguments (load_frames', vistoken.pipeline.encode's)."""
    return {
        "max_pixels": args.max_pixels,
        "max_frames": args.max_frames,
        "max_bytes": args.max_bytes,
    }


def progress(args: argparse.Namespace) -> bool:
    """Progress bars: on a terminal, unless -q."""
    import sys

    return not args.quiet and sys.stderr.isatty()


# --------------------------------------------------------------------------------------------
# checks before any work


def resolve_device(text: str | None) -> Any:
    """--device as a torch.device (``None`` when not given), or a UsageError."""
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


def pre_llm_method(name: str, flag: str) -> Any:
    """The registered spec of a method that runs on encoder tokens, or a UsageError."""
    from ..core import get_method

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


def output_folder(out: Path | None, default_out: str, names: Sequence[str]) -> Path:
    """The output folder (``./default_out`` when ``out`` is None), checked before any work.

    The rule shared by every command (see vistoken._outputs): the folder is created if missing
    and may already hold other files (they are left alone; only the command's own file
    ``names`` are replaced, all at once after all were written), but a path that exists and
    is not a folder, or an output name that is a symbolic link or not a regular file, is an
    error.
    """
    from .._outputs import check_outputs

    out_dir = out if out is not None else Path.cwd() / default_out
    check_outputs(out_dir, names)
    return out_dir


def check_input(input_path: Path) -> None:
    """FileNotFoundError / IsADirectoryError when ``input_path`` is not an existing file."""
    if not input_path.exists():
        raise FileNotFoundError(f"{str(input_path)!r}: no such file")
    if input_path.is_dir():
        raise IsADirectoryError(f"{str(input_path)!r} is a folder, not a video or image file")


# --------------------------------------------------------------------------------------------
# output


def frames_text(n: int) -> str:
    """``"1 frame"``, ``"2 frames"``."""
    return f"{n} frame" if n == 1 else f"{n} frames"


def dumps(obj: Any, indent: int = 0) -> str:
    """JSON with one key per line but every list on a single line (short, diff-friendly)."""
    if isinstance(obj, dict) and obj:
        pad = "  " * (indent + 1)
        items = [f"{pad}{json.dumps(k)}: {dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    return json.dumps(obj, allow_nan=False)
