"""The merge contact sheet: geometry, cell colours, dropped cells, anchor dots."""

from __future__ import annotations

import sys
import tracemalloc

import numpy as np
import pytest
import torch
from PIL import Image

import vistoken as vt
from vistoken import viz
from vistoken.core import Compressed

GRID = (4, 4)
FRAME_HW = (40, 80)
FRAME_RGB = [(200, 30, 30), (30, 180, 60), (40, 40, 200)]


def solid_frames(colors=FRAME_RGB, hw=FRAME_HW) -> np.ndarray:
    h, w = hw
    return np.stack([np.full((h, w, 3), c, dtype=np.uint8) for c in colors])


def clustered_tokens(t: int, n: int = 16, d: int = 8, seed: int = 0) -> torch.Tensor:
    """Tokens drawn around 5 centres, so that SCC merges cells within and across frames."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(5, d, generator=g) * 4
    which = torch.randint(0, 5, (t, n), generator=g)
    return centres[which] + 0.05 * torch.randn(t, n, d, generator=g)


def read_png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def interior(img: np.ndarray, box, margin: int = 3) -> np.ndarray:
    x0, y0, x1, y1 = box
    return img[y0 + margin : y1 - margin, x0 + margin : x1 - margin].reshape(-1, 3)


def blend(frame_rgb, color, alpha) -> np.ndarray:
    return (1 - alpha) * np.asarray(frame_rgb, float) + alpha * 255 * np.asarray(color, float)


@pytest.fixture(scope="module")
def merged():
    x = clustered_tokens(3)
    return vt.compress(x, "scc", retention=0.25, grid=GRID)


def test_token_colors_deterministic_distinct_and_saturated():
    c = viz.token_colors(40)
    assert c.shape == (40, 3) and c.dtype == np.float64
    assert c.min() >= 0 and c.max() <= 1
    np.testing.assert_array_equal(c[:10], viz.token_colors(10))  # independent of m
    np.testing.assert_array_equal(c, viz.token_colors(40))
    # neighbouring indices are far apart, and every colour is far from grey
    assert np.linalg.norm(np.diff(c, axis=0), axis=1).min() > 0.3
    assert (c.max(axis=1) - c.min(axis=1)).min() > 0.3
    assert len({tuple(np.round(row, 6)) for row in c}) == 40
    assert viz.token_colors(0).shape == (0, 3)
    with pytest.raises(ValueError):
        viz.token_colors(-1)


def test_sheet_size_follows_layout(tmp_path, merged):
    frames = solid_frames()
    wide = viz.merge_sheet(frames, merged, GRID, tmp_path / "wide.png")
    two = viz.merge_sheet(frames, merged, GRID, tmp_path / "two.png", max_cols=2)
    assert wide == tmp_path / "wide.png" and wide.is_file() and two.is_file()
    panel_h = round(viz.PANEL_W * FRAME_HW[0] / FRAME_HW[1])  # 125
    # 3 frames in one row
    w1 = max(viz.MIN_WIDTH, 3 * (viz.PANEL_W + viz.PAD) + viz.PAD)
    h1 = viz.TITLE_H + (panel_h + viz.CAPTION_H) + viz.PAD
    assert Image.open(wide).size == (w1, h1)
    # 3 frames in rows of 2
    w2 = max(viz.MIN_WIDTH, 2 * (viz.PANEL_W + viz.PAD) + viz.PAD)
    h2 = viz.TITLE_H + 2 * (panel_h + viz.CAPTION_H) + viz.PAD
    assert Image.open(two).size == (w2, h2)
    assert h2 > h1 and w2 < w1
    lay = viz.sheet_layout(3, FRAME_HW, max_cols=2)
    assert (lay.width, lay.height, lay.cols, lay.rows) == (w2, h2, 2, 2)


def test_cells_painted_in_their_output_token_colour(tmp_path, merged):
    frames = solid_frames()
    path = viz.merge_sheet(frames, merged, GRID, tmp_path / "s.png", max_cols=2)
    img = read_png(path)
    lay = viz.sheet_layout(3, FRAME_HW, max_cols=2)
    colors = viz.token_colors(merged.num_tokens)
    src = merged.sources.reshape(3, *GRID).numpy()
    assert len(np.unique(src)) > 3  # several colours on the sheet
    for t in range(3):
        for h in range(GRID[0]):
            for w in range(GRID[1]):
                px = interior(img, lay.cell_box(t, h, w, GRID))
                got = np.median(px, axis=0)  # robust to an anchor dot in the middle
                want = blend(FRAME_RGB[t], colors[src[t, h, w]], viz.OVERLAY_ALPHA)
                np.testing.assert_allclose(got, want, atol=2.5, err_msg=f"cell {t, h, w}")


def test_tokens_merged_across_frames_share_a_colour(tmp_path, merged):
    # the same frame colour everywhere: equal painted colour <=> equal output token
    frames = solid_frames([(128, 128, 128)] * 3)
    img = read_png(viz.merge_sheet(frames, merged, GRID, tmp_path / "g.png"))
    lay = viz.sheet_layout(3, FRAME_HW)
    src = merged.sources.reshape(3, *GRID).numpy()
    shared = [m for m in np.unique(src) if len(np.unique(np.nonzero(src == m)[0])) > 1]
    assert shared, "the fixture should merge some tokens across frames"
    m = shared[0]
    cells = np.argwhere(src == m)
    painted = [np.median(interior(img, lay.cell_box(t, h, w, GRID)), axis=0) for t, h, w in cells]
    assert np.ptp(np.array(painted), axis=0).max() <= 1
    other = np.argwhere(src != m)[0]
    diff = painted[0] - np.median(interior(img, lay.cell_box(*other, GRID)), axis=0)
    assert np.abs(diff).max() > 10


def test_anchor_cells_carry_a_dot_in_the_token_colour(tmp_path, merged):
    frames = solid_frames()
    img = read_png(viz.merge_sheet(frames, merged, GRID, tmp_path / "a.png"))
    lay = viz.sheet_layout(3, FRAME_HW)
    colors = viz.token_colors(merged.num_tokens)
    for m, (t, h, w) in enumerate(merged.positions.tolist()):
        x0, y0, x1, y1 = lay.cell_box(t, h, w, GRID)
        centre = img[(y0 + y1) // 2, (x0 + x1) // 2].astype(float)
        np.testing.assert_allclose(centre, colors[m] * 255, atol=2.5, err_msg=f"token {m}")


def test_dropped_cells_are_dark_grey_and_hatched(tmp_path):
    t, (gh, gw) = 2, GRID
    sources = torch.full((t * gh * gw,), -1, dtype=torch.int64)
    sources[[0, 5, 17, 30]] = torch.tensor([0, 1, 2, 2])
    positions = torch.tensor([[0, 0, 0], [0, 1, 1], [1, 0, 1]])
    result = Compressed(torch.zeros(3, 4), sources, positions, {"method": "hand"})
    frames = solid_frames([(200, 30, 30), (30, 180, 60)])
    img = read_png(viz.merge_sheet(frames, result, GRID, tmp_path / "d.png"))
    lay = viz.sheet_layout(t, FRAME_HW)
    src = sources.reshape(t, gh, gw)
    for f, h, w in [(0, 0, 1), (0, 3, 3), (1, 2, 2)]:
        assert src[f, h, w] == -1
        px = interior(img, lay.cell_box(f, h, w, GRID)).astype(float)
        base = blend(FRAME_RGB[f], viz.DROPPED_RGB, viz.DROPPED_ALPHA)
        np.testing.assert_allclose(np.median(px, axis=0), base, atol=2.5)
        assert base.max() < 90  # dark
        hatch = np.all(np.abs(px - 255 * np.asarray(viz.HATCH_RGB)) <= 2, axis=1)
        assert 0.05 < hatch.mean() < 0.4  # diagonal hatching lines cover part of the cell
    # a kept cell is neither
    kept = interior(img, lay.cell_box(1, 0, 1, GRID)).astype(float)
    want = blend(FRAME_RGB[1], viz.token_colors(3)[2], viz.OVERLAY_ALPHA)
    np.testing.assert_allclose(np.median(kept, axis=0), want, atol=2.5)


def test_captions_and_inputs_are_checked(tmp_path, merged):
    frames = solid_frames()
    with pytest.raises(ValueError, match="captions"):
        viz.merge_sheet(frames, merged, GRID, tmp_path / "x.png", captions=["a", "b"])
    with pytest.raises(ValueError, match="input tokens"):
        viz.merge_sheet(frames[:2], merged, GRID, tmp_path / "x.png")
    with pytest.raises(ValueError, match="input tokens"):
        viz.merge_sheet(frames, merged, (2, 4), tmp_path / "x.png")
    with pytest.raises(TypeError):
        viz.merge_sheet(frames.astype(np.float32), merged, GRID, tmp_path / "x.png")
    with pytest.raises(ValueError, match="max_cols"):
        viz.merge_sheet(frames, merged, GRID, tmp_path / "x.png", max_cols=0)
    assert not (tmp_path / "x.png").exists()


def test_no_pyplot_state(tmp_path, merged):
    had_pyplot = "matplotlib.pyplot" in sys.modules
    viz.merge_sheet(
        solid_frames(), merged, GRID, tmp_path / "p.png", title="T", captions=["a", "b", "c"]
    )
    assert ("matplotlib.pyplot" in sys.modules) == had_pyplot


def assert_cells_painted(img, lay, merged, frame_rgb):
    colors = viz.token_colors(merged.num_tokens)
    src = merged.sources.reshape(3, *GRID).numpy()
    for t in range(3):
        for h in range(GRID[0]):
            for w in range(GRID[1]):
                got = np.median(interior(img, lay.cell_box(t, h, w, GRID)), axis=0)
                want = blend(frame_rgb[t], colors[src[t, h, w]], viz.OVERLAY_ALPHA)
                np.testing.assert_allclose(got, want, atol=2.5, err_msg=f"cell {t, h, w}")


@pytest.mark.parametrize(("hw", "panel_hw"), [((8000, 20), (1000, 250)), ((20, 8000), (63, 250))])
def test_odd_aspect_frames_are_squeezed_into_bounded_panels(tmp_path, merged, hw, panel_hw):
    frames = solid_frames(hw=hw)
    tracemalloc.start()
    try:
        path = viz.merge_sheet(frames, merged, GRID, tmp_path / "odd.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # a 400:1 frame used to make a 250 x 100000 panel: several GB of float64 arrays
    assert peak < 64 * 2**20
    lay = viz.sheet_layout(3, hw)
    assert (lay.panel_h, lay.panel_w) == panel_hw  # 4:1 at most, either way
    img = read_png(path)
    assert img.shape[:2] == (lay.height, lay.width)
    assert_cells_painted(img, lay, merged, FRAME_RGB)


def test_many_frames_shrink_the_panels_within_the_sheet_bounds():
    assert viz.sheet_layout(16, (720, 1280)).panel_w == viz.PANEL_W  # usual sizes unchanged
    for n, hw in [(1024, (720, 1280)), (1024, (8000, 20)), (5000, (720, 1280))]:
        lay = viz.sheet_layout(n, hw)
        assert lay.width * lay.height <= viz.MAX_SHEET_PIXELS
        assert max(lay.width, lay.height) <= viz.MAX_SHEET_SIDE
        assert viz.MIN_PANEL_W <= lay.panel_w < viz.PANEL_W and lay.rows * lay.cols >= n
    wide = viz.sheet_layout(300, (720, 1280), max_cols=300)  # one row of 300 panels
    assert wide.width <= viz.MAX_SHEET_SIDE < 300 * (viz.PANEL_W + viz.PAD)
    assert wide.panel_h == round(wide.panel_w * 720 / 1280)
    with pytest.raises(ValueError, match="100000 frames of 1280x720 in 8 columns do not fit"):
        viz.sheet_layout(100_000, (720, 1280))
    with pytest.raises(ValueError, match="frame_hw"):
        viz.sheet_layout(1, (0, 5))


def test_sheet_over_the_pixel_bound_is_drawn_smaller(tmp_path, merged, monkeypatch):
    monkeypatch.setattr(viz, "MAX_SHEET_PIXELS", 100_000)
    lay = viz.sheet_layout(3, FRAME_HW)
    assert lay.panel_w < viz.PANEL_W and lay.width * lay.height <= 100_000
    img = read_png(viz.merge_sheet(solid_frames(), merged, GRID, tmp_path / "small.png"))
    assert img.shape[:2] == (lay.height, lay.width)
    assert_cells_painted(img, lay, merged, FRAME_RGB)


def test_large_frames_are_subsampled_before_resizing(tmp_path, merged):
    frames = solid_frames(hw=(2000, 2400))  # more than 8 frame pixels per panel pixel
    path = viz.merge_sheet(frames, merged, GRID, tmp_path / "large.png")
    lay = viz.sheet_layout(3, (2000, 2400))
    assert_cells_painted(read_png(path), lay, merged, FRAME_RGB)
