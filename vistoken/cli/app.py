"""The top-level parser, the dispatch to the commands and the error handling of ``main``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from . import bench, compress, flops, methods
from . import eval as eval_cmd
from . import train as train_cmd
from .common import PROG, Parser, UsageError, media_flags

#: command name -> its function (args -> exit status), in the order the help lists them
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "compress": compress.run_compress,
    "demo": compress.run_demo,
    "methods": methods.run,
    "flops": flops.run,
    "bench": bench.run,
    "eval": eval_cmd.run,
    "train-reference": train_cmd.run,
    "train-pvc": train_cmd.run_pvc,
}


def build_parser() -> argparse.ArgumentParser:
    """The ``vistoken`` parser: every command, the shared flags from one parent parser."""
    from .. import __version__

    parser = Parser(
        prog=PROG,
        description="Visual token compression for video VLMs: compress the visual tokens of "
        "a video and see which ones were merged.",
        epilog="Run 'vistoken COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    media = media_flags()
    compress.add_parsers(sub, media)
    methods.add_parser(sub)
    flops.add_parser(sub)
    bench.add_parser(sub, media)
    eval_cmd.add_parser(sub)
    train_cmd.add_parser(sub)
    train_cmd.add_pvc_parser(sub)
    return parser


def _error(message: str) -> None:
    text = " ".join(str(message).split()) or "unknown error"
    print(f"{PROG}: error: {text}", file=sys.stderr)


_LIMIT_REMEDIES = {
    "max_pixels": "raise it with --max-pixels N",
    "max_frames": "use fewer --frames or raise it with --max-frames N",
    "max_bytes": "use fewer --frames or raise it with --max-bytes SIZE",
}


def _message(exc: BaseException) -> str:
    from ..video import LimitError

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
