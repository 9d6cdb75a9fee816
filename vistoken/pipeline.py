"""From a file to visual tokens: decode frames, encode them with the default encoder.

The one path every user of a real video takes (``vistoken compress``, ``demo``, ``bench
fidelity`` and the benchmarks)::

    from vistoken.pipeline import encode

    enc = encode("clip.mp4", 16)        # or sampling=, start=, end=, device=, max_* limits
    enc.tokens                          # (T, N, D) float32, N = H * W tokens per frame
    enc.grid                            # (H, W), (14, 14) for the default encoder
    enc.frames                          # the decoded vistoken.video.Frames (indices, notes, ...)
    out = vt.compress(enc.tokens, "scc", retention=0.1, grid=enc.grid)

Decoding is :func:`vistoken.video.load_frames` (its errors and limits unchanged), encoding
:func:`vistoken.encoders.default_encoder`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from . import video
from .video import MAX_BYTES, MAX_FRAMES, MAX_PIXELS, Frames

__all__ = ["Encoded", "encode", "video_features"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Encoded:
    """The tokens of a file's sampled frames, with what was decoded and how long it took.

    Attributes:
        tokens: (T, N, D) float32 encoder tokens on the encoder's device, N = H * W per frame
            in row-major grid order.
        grid: (H, W) token grid of one frame.
        frames: the decoded frames (``array`` (T, height, width, 3) uint8, ``indices``,
            ``timestamps``, ``notes``, ...).
        encoder: a one-line description of the encoder, e.g.
            ``"efficientnet-lite0 448px 14x14x1280"``.
        seconds: wall time per stage: ``"decode"``, ``"encoder_load"``, ``"encode"``.
    """

    tokens: Tensor
    grid: tuple[int, int]
    frames: Frames
    encoder: str
    seconds: dict[str, float] = field(default_factory=dict)


def encode(
    path: str | os.PathLike[str],
    frames: int = 16,
    *,
    sampling: str = "center",
    start: float | None = None,
    end: float | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    check: Callable[[Frames], None] | None = None,
    max_pixels: int = MAX_PIXELS,
    max_frames: int = MAX_FRAMES,
    max_bytes: int = MAX_BYTES,
) -> Encoded:
    """Decode ``frames`` sampled frames of the video or image at ``path`` and encode them.

    Args:
        path: a video (any format FFmpeg reads) or an image (one frame).
        frames: T, the number of frames to sample (an image gives 1).
        sampling: ``"center"`` or ``"linspace"`` (see :func:`vistoken.video.load_frames`).
        start, end: the time range in seconds (default: the whole video).
        device: where the encoder runs (a ``torch.device`` or its name); ``None``: CUDA when
            available, else the CPU.
        progress: tqdm bars while decoding and encoding.
        check: called with the decoded frames before the encoder is loaded; whatever it
            raises stops the pipeline before the expensive step.
        max_pixels, max_frames, max_bytes: the input limits of
            :func:`vistoken.video.load_frames`.
    Returns:
        :class:`Encoded`: ``tokens`` (T, N, D), ``grid`` (H, W), the ``frames`` and the seconds
        per stage.
    Raises:
        FileNotFoundError, vistoken.video.MediaError, vistoken.video.LimitError: as
        :func:`vistoken.video.load_frames`.
    """
    from .encoders import default_encoder

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    decoded = video.load_frames(
        path,
        frames,
        sampling=sampling,
        start=start,
        end=end,
        progress=progress,
        max_pixels=max_pixels,
        max_frames=max_frames,
        max_bytes=max_bytes,
    )
    seconds["decode"] = time.perf_counter() - t0
    logger.info("decoded %d frames of %s", decoded.num_frames, path)
    if check is not None:
        check(decoded)

    t0 = time.perf_counter()
    encoder = default_encoder(device)
    seconds["encoder_load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tokens = encoder(decoded.array, progress=progress)
    seconds["encode"] = time.perf_counter() - t0
    grid = (int(encoder.grid[0]), int(encoder.grid[1]))
    logger.info("encoded %d frames of %s in %.2f s", decoded.num_frames, path, seconds["encode"])
    name = f"efficientnet-lite0 {encoder.image_size}px {grid[0]}x{grid[1]}x{encoder.dim}"
    return Encoded(tokens=tokens, grid=grid, frames=decoded, encoder=name, seconds=seconds)


def video_features(
    path: str | Path | None = None, frames: int = 32, progress: bool = False
) -> tuple[Tensor, tuple[int, int], list[int]]:
    """``(tokens, grid, indices)`` of :func:`encode` on ``path`` (``None``: the bundled clip).

    The older spelling of :func:`encode`, kept for ``vistoken.eval.video_features``.
    """
    enc = encode(video.bundled_video() if path is None else path, frames, progress=progress)
    return enc.tokens, enc.grid, list(enc.frames.indices)
