"""Contact sheets that show which input tokens a compression merged together.

:func:`merge_sheet` draws the sampled frames side by side, each with its ``grid_h x grid_w``
token grid painted over it: every cell takes the colour of the output token its input token
went to (``result.sources``), blended semi-transparently with the picture, so one colour
spread over several cells (and several frames) is one output token. Dropped input tokens
(``sources == -1``) are painted dark grey with light diagonal hatching, thin white lines
separate cells that went to different output tokens, and each output token's anchor cell
(``result.positions``) carries a small dot in the token's colour ringed in white.

The picture is composited pixel by pixel in numpy and placed unscaled on a
:class:`matplotlib.figure.Figure` rendered by the Agg canvas (no pyplot, so no global
matplotlib state is touched); matplotlib only adds the text and writes the PNG.

Sheet geometry, in pixels (dpi 100): ``cols = min(T, max_cols)``, ``rows = ceil(T / cols)``,
panels are ``panel_w = PANEL_W = 250`` wide and ``round(panel_w * H / W)`` high (the frame's
aspect ratio), separated by ``PAD`` pixels, each with a ``CAPTION_H`` band below it, under a
``TITLE_H`` band: width ``max(MIN_WIDTH, cols * (panel_w + PAD) + PAD)``, height
``TITLE_H + rows * (panel_h + CAPTION_H) + PAD``. :func:`sheet_layout` computes it.

The sheet's size is bounded whatever the frames: a panel's height is clamped to
``[panel_w / MAX_ASPECT, panel_w * MAX_ASPECT]`` (a very tall or very wide frame is squeezed
to a 4:1 panel), and when the sheet would exceed ``MAX_SHEET_PIXELS`` pixels or
``MAX_SHEET_SIDE`` pixels on a side (many frames, or many columns) every panel is shrunk
alike, down to ``MIN_PANEL_W`` pixels wide; more frames than fit even then are refused with a
ValueError before anything is drawn. Frames much larger than their panel are subsampled
before resizing, so no full-size copy of a frame is made.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import hsv_to_rgb
from matplotlib.figure import Figure
from PIL import Image

from .core import Compressed

__all__ = [
    "DROPPED_RGB",
    "OVERLAY_ALPHA",
    "SheetLayout",
    "merge_sheet",
    "sheet_layout",
    "token_colors",
]

#: Resolution of the sheet: pixels per inch.
DPI = 100
#: Width in pixels of one frame panel (2.5 in at 100 dpi).
PANEL_W = 250
#: Pixels between panels and around the sheet's left, right and bottom edges.
PAD = 6
#: Height in pixels of the caption band under each panel.
CAPTION_H = 22
#: Height in pixels of the title band at the top of the sheet.
TITLE_H = 62
#: Smallest sheet width in pixels, so that the title fits next to one or two frames.
MIN_WIDTH = 480
#: Largest panel height / width (and width / height): odder frames are squeezed to it.
MAX_ASPECT = 4
#: Largest sheet in pixels (width * height): 32 Mi pixels, a 128 MiB RGBA canvas.
MAX_SHEET_PIXELS = 32 * 1024 * 1024
#: Largest sheet width or height in pixels (Agg's own limit is 2**16).
MAX_SHEET_SIDE = 32_000
#: Narrowest panel when panels are shrunk to fit the sheet bounds.
MIN_PANEL_W = 32
#: Opacity of an output token's colour painted over its cells.
OVERLAY_ALPHA = 0.45
#: Colour and opacity of dropped cells (``sources == -1``), and of their hatching lines.
DROPPED_RGB = (0.16, 0.16, 0.16)
DROPPED_ALPHA = 0.8
HATCH_RGB = (0.55, 0.55, 0.55)
#: Colour and opacity of the lines between cells of different output tokens.
BOUNDARY_RGB = (1.0, 1.0, 1.0)
BOUNDARY_ALPHA = 0.7

_GOLDEN = (math.sqrt(5) - 1) / 2  # 0.618..., hue step between consecutive tokens
_SATURATIONS = (0.85, 0.6)
_VALUES = (0.95, 0.78)


def token_colors(m: int) -> np.ndarray:
    """``m`` deterministic, well separated RGB colours, one per output token.

    Colour ``i`` has hue ``(0.05 + i * 0.618...) mod 1`` (golden-ratio stepping, so
    consecutive indices sit about 220 degrees apart on the colour wheel and no two hues
    repeat), saturation alternating 0.85 / 0.6 with ``i`` and value alternating 0.95 / 0.78
    with ``i // 2``: always clearly coloured, never close to the grey of dropped cells.

    Returns:
        (m, 3) float64 array in [0, 1]; colour ``i`` does not depend on ``m``.
    """
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 0:
        raise ValueError(f"m must be a non-negative integer, got {m!r}")
    i = np.arange(int(m))
    hsv = np.stack(
        (
            (0.05 + i * _GOLDEN) % 1.0,
            np.asarray(_SATURATIONS)[i % 2],
            np.asarray(_VALUES)[(i // 2) % 2],
        ),
        axis=1,
    )
    return hsv_to_rgb(hsv.reshape(-1, 1, 3)).reshape(-1, 3) if m else np.zeros((0, 3))


@dataclass(frozen=True)
class SheetLayout:
    """Pixel geometry of a contact sheet (origin at the top left, y downwards)."""

    cols: int
    rows: int
    panel_w: int
    panel_h: int
    width: int
    height: int

    def panel_box(self, i: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of frame ``i``'s panel, end-exclusive."""
        r, c = divmod(i, self.cols)
        x0 = PAD + c * (self.panel_w + PAD)
        y0 = TITLE_H + r * (self.panel_h + CAPTION_H)
        return x0, y0, x0 + self.panel_w, y0 + self.panel_h

    def cell_box(self, i: int, h: int, w: int, grid: tuple[int, int]) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of grid cell (h, w) of frame ``i``, end-exclusive."""
        px, py, _, _ = self.panel_box(i)
        gh, gw = grid
        ys, xs = _cell_edges(self.panel_h, gh), _cell_edges(self.panel_w, gw)
        return px + int(xs[w]), py + int(ys[h]), px + int(xs[w + 1]), py + int(ys[h + 1])


def sheet_layout(num_frames: int, frame_hw: tuple[int, int], max_cols: int = 8) -> SheetLayout:
    """Geometry of the sheet for ``num_frames`` frames of ``frame_hw = (H, W)`` pixels.

    Panels are ``PANEL_W`` wide, or narrower (down to ``MIN_PANEL_W``) when that is needed to
    keep the sheet within ``MAX_SHEET_PIXELS`` pixels and ``MAX_SHEET_SIDE`` pixels a side;
    their height follows the frame's aspect ratio clamped to ``[1 / MAX_ASPECT, MAX_ASPECT]``.

    Raises:
        ValueError: bad arguments, or more frames than fit within the bounds even with the
            narrowest panels.
    """
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)):
        raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if isinstance(max_cols, bool) or not isinstance(max_cols, (int, np.integer)) or max_cols < 1:
        raise ValueError(f"max_cols must be a positive integer, got {max_cols!r}")
    h, w = (int(v) for v in frame_hw)
    if h < 1 or w < 1:
        raise ValueError(f"frame_hw must be two positive sizes, got {frame_hw!r}")
    cols = min(int(num_frames), int(max_cols))
    rows = math.ceil(num_frames / cols)
    for panel_w in range(PANEL_W, MIN_PANEL_W - 1, -1):
        lo, hi = math.ceil(panel_w / MAX_ASPECT), panel_w * MAX_ASPECT
        panel_h = min(max(round(panel_w * h / w), lo), hi)
        width = max(MIN_WIDTH, cols * (panel_w + PAD) + PAD)
        height = TITLE_H + rows * (panel_h + CAPTION_H) + PAD
        if width * height <= MAX_SHEET_PIXELS and max(width, height) <= MAX_SHEET_SIDE:
            return SheetLayout(cols, rows, panel_w, panel_h, width, height)
    raise ValueError(
        f"{num_frames} frames of {w}x{h} in {cols} columns do not fit on one sheet: even with "
        f"{MIN_PANEL_W}-pixel panels it would be {width}x{height} pixels, over "
        f"MAX_SHEET_PIXELS={MAX_SHEET_PIXELS:,} or MAX_SHEET_SIDE={MAX_SHEET_SIDE:,} pixels a "
        "side; draw fewer frames (or change max_cols)"
    )


def _cell_edges(size: int, cells: int) -> np.ndarray:
    """Pixel edges of ``cells`` equal cells over ``size`` pixels: (cells + 1,) ints."""
    return (np.arange(cells + 1) * size) // cells


def _check_inputs(
    frames: np.ndarray, result: Compressed, grid: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        raise TypeError("frames must be a (T, H, W, 3) uint8 numpy array")
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise ValueError(f"frames must have shape (T, H, W, 3), got {frames.shape}")
    try:
        gh, gw = (int(g) for g in grid)
    except (TypeError, ValueError):
        raise ValueError(f"grid must be a pair of positive integers, got {grid!r}") from None
    if gh < 1 or gw < 1:
        raise ValueError(f"grid must be a pair of positive integers, got {grid!r}")
    t = frames.shape[0]
    sources = result.sources.detach().cpu().numpy().astype(np.int64)
    if sources.size != t * gh * gw:
        raise ValueError(
            f"result has {sources.size} input tokens but {t} frames of a {gh}x{gw} grid "
            f"make {t * gh * gw}"
        )
    positions = result.positions.detach().cpu().numpy().astype(np.int64).reshape(-1, 3)
    return frames, sources.reshape(t, gh, gw), positions


def _paint_panel(
    frame: np.ndarray,
    src: np.ndarray,
    anchors: np.ndarray,
    colors: np.ndarray,
    panel_wh: tuple[int, int],
) -> np.ndarray:
    """One frame resized to ``panel_wh`` with its token overlay: (ph, pw, 3) uint8."""
    pw, ph = panel_wh
    gh, gw = src.shape
    # a frame far larger than its panel: keep every k-th pixel first (at least 4 per panel
    # pixel remain, for the antialiased resize), so no full-size copy of it is made
    sy, sx = max(1, frame.shape[0] // (4 * ph)), max(1, frame.shape[1] // (4 * pw))
    if sy > 1 or sx > 1:
        frame = np.ascontiguousarray(frame[::sy, ::sx])
    img = Image.fromarray(frame).resize((pw, ph), Image.Resampling.BILINEAR, reducing_gap=2.0)
    out = np.asarray(img, dtype=np.float64) / 255.0

    # which grid cell every pixel lies in
    rows = np.searchsorted(_cell_edges(ph, gh), np.arange(ph), side="right") - 1
    cols = np.searchsorted(_cell_edges(pw, gw), np.arange(pw), side="right") - 1
    cell_src = src[rows[:, None], cols[None, :]]  # (ph, pw)

    kept = cell_src >= 0
    paint = colors[np.where(kept, cell_src, 0)] if len(colors) else np.zeros((ph, pw, 3))
    out[kept] = (1 - OVERLAY_ALPHA) * out[kept] + OVERLAY_ALPHA * paint[kept]
    dropped = ~kept
    if dropped.any():
        yy, xx = np.mgrid[0:ph, 0:pw]
        hatch = ((xx + yy) % 7 == 0) & dropped
        out[dropped] = (1 - DROPPED_ALPHA) * out[dropped] + DROPPED_ALPHA * np.asarray(DROPPED_RGB)
        out[hatch] = np.asarray(HATCH_RGB)

    # one-pixel lines where neighbouring cells went to different output tokens
    edge = np.zeros((ph, pw), dtype=bool)
    edge[:, :-1] |= cell_src[:, :-1] != cell_src[:, 1:]
    edge[:-1, :] |= cell_src[:-1, :] != cell_src[1:, :]
    out[edge] = (1 - BOUNDARY_ALPHA) * out[edge] + BOUNDARY_ALPHA * np.asarray(BOUNDARY_RGB)

    # anchor dots: the token's colour, ringed in white
    if len(anchors):
        cell = min(ph / gh, pw / gw)
        radius = float(np.clip(cell * 0.22, 1.5, 4.0))
        yy, xx = np.mgrid[0:ph, 0:pw]
        for m, h, w in anchors:
            cy = (h + 0.5) * ph / gh - 0.5
            cx = (w + 0.5) * pw / gw - 0.5
            y0, y1 = max(0, int(cy - radius - 2)), min(ph, int(cy + radius + 3))
            x0, x1 = max(0, int(cx - radius - 2)), min(pw, int(cx + radius + 3))
            d = np.hypot(yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx)
            win = out[y0:y1, x0:x1]
            win[d <= radius + 1.0] = 1.0
            win[d <= radius] = colors[m]
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


def merge_sheet(
    frames: np.ndarray,
    result: Compressed,
    grid: tuple[int, int],
    path: str | os.PathLike[str],
    *,
    max_cols: int = 8,
    title: str | None = None,
    captions: Sequence[str] | None = None,
) -> Path:
    """Write a PNG contact sheet showing which input tokens went to which output token.

    Args:
        frames: (T, H, W, 3) uint8 RGB, the frames the tokens were computed from.
        result: the compression of those frames' T * grid_h * grid_w tokens.
        grid: (grid_h, grid_w) token grid of a frame (row-major token order).
        path: where to write the PNG (its folder must exist; an existing file is replaced).
        max_cols: frames per row.
        title: an optional first title line; a line with the method, input -> output tokens
            and retention (and tau when the result has one) is always shown.
        captions: one caption per frame; default ``"frame i"``.

    The sheet's size is bounded (see the module docstring): odd aspect ratios are squeezed
    to at most 4:1 and panels shrink when there are many frames, so its memory stays within
    about ``MAX_SHEET_PIXELS`` (32 Mi) pixels whatever the frames.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        TypeError / ValueError: inconsistent shapes or bad arguments, or more frames than fit
            on one sheet (:func:`sheet_layout`); raised before anything is drawn.
    """
    frames, sources, positions = _check_inputs(frames, result, grid)
    t, fh, fw, _ = frames.shape
    if captions is None:
        captions = [f"frame {i}" for i in range(t)]
    else:
        captions = [str(c) for c in captions]
        if len(captions) != t:
            raise ValueError(f"captions has {len(captions)} entries for {t} frames")
    layout = sheet_layout(t, (fh, fw), max_cols)
    m = result.num_tokens
    colors = token_colors(m)
    anchor_ids = np.arange(len(positions))

    fig = Figure(
        # a hair over the exact size: Agg truncates the canvas size to whole pixels
        figsize=((layout.width + 1e-3) / DPI, (layout.height + 1e-3) / DPI),
        dpi=DPI,
        facecolor="white",
    )
    FigureCanvasAgg(fig)
    for i in range(t):
        mine = positions[:, 0] == i
        anchors = np.column_stack((anchor_ids[mine], positions[mine, 1], positions[mine, 2]))
        panel = _paint_panel(
            frames[i], sources[i], anchors, colors, (layout.panel_w, layout.panel_h)
        )
        x0, y0, x1, y1 = layout.panel_box(i)
        fig.figimage(panel, xo=x0, yo=layout.height - y1, origin="upper")
        fig.text(
            (x0 + x1) / 2 / layout.width,
            1 - (y1 + CAPTION_H / 2) / layout.height,
            captions[i],
            ha="center",
            va="center",
            fontsize=8,
        )

    n_in = int(sources.size)
    stats = f"{result.info.get('method', '?')}: {n_in} \u2192 {m} tokens, retention {m / n_in:.3f}"
    tau = result.info.get("tau")
    if isinstance(tau, (int, float)):
        stats += f", tau {tau:.3f}"
    legend = "same colour = same output token (across frames too); dot = its anchor cell"
    if (sources < 0).any():
        legend += f"; grey hatched = dropped ({int((sources < 0).sum())})"
    lines = [(title, 10, "bold")] if title else []
    stats_style = (9, "normal") if title else (10, "bold")
    lines += [(stats, *stats_style), (legend, 7.5, "normal")]
    y = 6
    for text, size, weight in lines[-3:]:
        fig.text(
            PAD / layout.width,
            1 - y / layout.height,
            text,
            ha="left",
            va="top",
            fontsize=size,
            fontweight=weight,
        )
        y += size * DPI / 72 * 1.2
    path = Path(path)
    fig.savefig(path, format="png", dpi=DPI, facecolor="white")
    return path
