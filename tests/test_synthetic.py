"""Synthetic video-QA benchmark: determinism, answers re-read from the pixels, balance, splits."""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter

import numpy as np
import pytest

from vistoken.eval import synthetic as syn
from vistoken.eval.synthetic import (
    ANSWERS,
    CHANCE,
    FONT,
    GLYPH_SCALE,
    PALETTE,
    PLATE_COLOUR,
    QTYPES,
    VOCAB,
    answer_from_scene,
    dataset,
    render,
    sample,
    sample_seed,
)


def colour_mask(frames: np.ndarray, rgb) -> np.ndarray:
    """(T, H, W) bool: pixels exactly of colour ``rgb``."""
    return (frames == np.asarray(rgb, dtype=np.uint8)).all(-1)


def per_type(qtype: str, m: int | None = None, split: str = "val", **kw) -> list[syn.Sample]:
    """Two full answer cycles of ``qtype`` by default (every answer at least twice)."""
    return dataset(split, m or 2 * len(ANSWERS[qtype]), qtypes=(qtype,), **kw)


def read_glyph(frame: np.ndarray) -> str:
    """Decode the plated glyph of one (H, W, 3) frame from its pixels alone."""
    ys, xs = np.nonzero(colour_mask(frame, PLATE_COLOUR))
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    s = GLYPH_SCALE
    assert (y1 - y0, x1 - x0) == (9 * s, 7 * s)
    ink = colour_mask(frame[y0 + s:y1 - s, x0 + s:x1 - s], (255, 255, 255))
    # every glyph pixel is an s x s block: downsample and check nothing is lost
    small = ink[::s, ::s]
    assert np.array_equal(np.kron(small, np.ones((s, s), dtype=bool)), ink)
    hits = [c for c, bitmap in FONT.items() if np.array_equal(bitmap, small)]
    assert len(hits) == 1, hits
    return hits[0]


def question_colour(question: str) -> str:
    named = [c for c in PALETTE if f" {c} " in f" {question} "]
    assert len(named) == 1, question
    return named[0]


# ---------------------------------------------------------------- constants


def test_constants_and_chance():
    assert set(QTYPES) == set(ANSWERS) == set(CHANCE) == set(syn.MIN_FRAMES)
    for q in QTYPES:
        # an order question names two of the four colours; the rest allow their whole set
        allowed = 2 if q == "order" else len(ANSWERS[q])
        assert CHANCE[q] == pytest.approx(1 / allowed)
        assert len(set(ANSWERS[q])) == len(ANSWERS[q]) >= 2
        assert set(ANSWERS[q]) <= set(VOCAB)
        # the module docstring documents each type's chance level
        assert f"1/{allowed} = " in syn.__doc__
    assert ANSWERS["order"] == tuple(PALETTE)
    assert len(VOCAB) == len(set(VOCAB)) == len(set().union(*ANSWERS.values()))
    assert all(" " not in a for a in VOCAB)  # single-token answers
    assert ANSWERS["count"] == ("1", "2", "3", "4", "5")
    # glyph answers are drawable and tell apart in the font
    for q in ("detail", "image_detail"):
        assert set(ANSWERS[q]) <= set(FONT)
    bitmaps = {FONT[c].tobytes() for c in FONT}
    assert len(bitmaps) == len(FONT)
    assert all(FONT[c].shape == (7, 5) for c in FONT)


def test_chance_matches_each_sample():
    for s in dataset("test", len(QTYPES), frames=10, size=48):
        assert s.chance == CHANCE[s.qtype] == 1 / len(s.choices)
        if s.qtype == "order":  # the two colours the question names, in its order
            assert len(set(s.choices)) == 2 and set(s.choices) <= set(ANSWERS["order"])
            assert s.question == f"Which colour appeared first: {s.choices[0]} or {s.choices[1]}?"
        else:
            assert s.choices == ANSWERS[s.qtype]
        assert s.answer in s.choices


# ---------------------------------------------------------------- shapes and determinism


def test_shapes_dtypes():
    for s in dataset("train", 2 * len(QTYPES), frames=12, size=64):
        t = 1 if s.qtype == "image_detail" else 12
        assert s.frames.shape == (t, 64, 64, 3)
        assert s.frames.dtype == np.uint8
        assert not s.frames.flags.writeable
        assert isinstance(s.question, str) and s.question.endswith("?")
        assert isinstance(s.answer, str)
        assert s.scene["frames"] == t and s.scene["size"] == 64
        json.dumps(s.scene)  # a plain description
    assert sample("train", 0, "motion").frames.shape == (16, 96, 96, 3)  # defaults


def test_deterministic_and_no_global_rng():
    state = np.random.get_state()
    np.random.seed(1)
    a = dataset("test", 12, seed=3)
    np.random.seed(2)
    b = dataset("test", 12, seed=3)
    np.random.set_state(state)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.frames, y.frames)
        assert (x.question, x.answer, x.qtype) == (y.question, y.answer, y.qtype)
        assert x.scene == y.scene
    # the global stream is not consumed
    before = np.random.get_state()[1].copy()
    sample("val", 5, "count")
    assert np.array_equal(np.random.get_state()[1], before)


def test_different_seeds_differ():
    for q in QTYPES:
        a, b = sample("test", 0, q, seed=0), sample("test", 0, q, seed=1)
        assert a.frames.shape == b.frames.shape
        assert not np.array_equal(a.frames, b.frames)
        assert a.scene["seed"] != b.scene["seed"]


def test_dataset_is_samples_round_robin():
    ds = dataset("val", 14, frames=10, size=40)
    assert [s.qtype for s in ds] == [QTYPES[i % len(QTYPES)] for i in range(14)]
    for i in (0, 7, 13):
        assert np.array_equal(ds[i].frames, sample("val", i, frames=10, size=40).frames)
    # with qtypes given, index counts within the type
    two = dataset("val", 4, qtypes=("motion", "order"), frames=10, size=40)
    assert [s.qtype for s in two] == ["motion", "order", "motion", "order"]
    assert np.array_equal(two[2].frames, sample("val", 1, "motion", frames=10, size=40).frames)


def test_render_reproduces_frames():
    for s in dataset("train", len(QTYPES)):
        assert np.array_equal(render(s.scene), s.frames)


# ---------------------------------------------------------------- answers from pixels


def test_answer_from_scene_agrees_and_is_sensitive():
    for s in dataset("train", 6 * len(QTYPES)):
        assert answer_from_scene(s.scene) == s.answer
    s = sample("train", 0, "motion")
    flipped = json.loads(json.dumps(s.scene))
    flipped["objects"][0]["xy"].reverse()  # the same path backwards
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    assert answer_from_scene(flipped) == opposite[s.answer]


def test_detail_glyph_in_exactly_one_frame():
    seen = set()
    for s in per_type("detail"):
        plate = colour_mask(s.frames, PLATE_COLOUR).any((1, 2))
        white = colour_mask(s.frames, (255, 255, 255)).any((1, 2))
        assert plate.sum() == 1 and np.array_equal(plate, white)
        t = int(np.argmax(plate))
        assert read_glyph(s.frames[t]) == s.answer
        assert s.scene["glyph_frame"] == t
        seen.add(s.answer)
    assert seen == set(ANSWERS["detail"])


def test_image_detail_glyph_among_clutter():
    seen = set()
    for s in per_type("image_detail", frames=16):
        assert s.frames.shape[0] == 1
        assert read_glyph(s.frames[0]) == s.answer
        # clutter: decoy letters and shapes in colours other than the target's
        decoys = [g for g in s.scene["glyphs"] if not g["plate"]]
        assert len(decoys) >= 2 and len(s.scene["clutter"]) >= 3
        seen.add(s.answer)
    assert seen == set(ANSWERS["image_detail"])


def present_colours(frame: np.ndarray) -> list[str]:
    return [c for c, rgb in PALETTE.items() if colour_mask(frame, rgb).any()]


def test_colour_at_time_from_pixels():
    asks = Counter()
    for s in per_type("colour_at_time", 16):
        first, last = present_colours(s.frames[0]), present_colours(s.frames[-1])
        assert len(first) == 1 and len(last) == 1
        assert first != last  # the object did change colour
        ask = "first" if "first frame" in s.question else "last"
        assert (first if ask == "first" else last)[0] == s.answer
        asks[ask] += 1
    assert set(asks) == {"first", "last"}


def test_order_from_pixels():
    import re

    firsts, named_first = set(), []
    for s in per_type("order", 12):
        # "Which colour appeared first: red or blue?" names the two objects' colours
        named = re.fullmatch(r"Which colour appeared first: (\w+) or (\w+)\?", s.question)
        assert named is not None, s.question
        colours = named.groups()
        assert colours[0] != colours[1] and set(colours) <= set(PALETTE)
        onset, shapes = {}, set()
        for colour in colours:
            mask = colour_mask(s.frames, PALETTE[colour])
            area = mask.sum((1, 2))
            t = int(np.argmax(area > 0))
            assert area[t] > 0 and (area[:t] == 0).all() and area[-1] > 0  # there to the end
            ys, xs = np.nonzero(mask[t])
            fill = area[t] / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
            shapes.add("square" if fill == 1.0 else "circle" if fill < 0.9 else "?")
            onset[colour] = t
        assert shapes == {"square", "circle"}  # one of each, whichever colour
        assert onset[colours[0]] != onset[colours[1]]
        assert min(onset, key=onset.get) == s.answer
        firsts.add(s.answer)
        named_first.append(colours[0] == s.answer)
    # every colour is an answer, and the question's order does not give it away
    assert firsts == set(PALETTE)
    assert 0 < sum(named_first) < len(named_first)


def test_count_flashes_from_pixels():
    for s in per_type("count", 15):
        on = colour_mask(s.frames, PALETTE[syn.FLASH]).any((1, 2))
        runs = int(on[0]) + int((on[1:] & ~on[:-1]).sum())
        assert str(runs) == s.answer
        # the circle is there in its base colour whenever it does not flash
        base = question_colour(s.question.split(" flash ")[0])
        assert np.array_equal(colour_mask(s.frames, PALETTE[base]).any((1, 2)), ~on)


def test_count_at_the_fewest_frames():
    for s in per_type("count", 5, frames=10, size=32):
        on = colour_mask(s.frames, PALETTE[syn.FLASH]).any((1, 2))
        assert int(on.sum()) == int(s.answer)


def test_motion_from_pixel_centroids():
    for s in per_type("motion", 12):
        c = question_colour(s.question)
        mask = colour_mask(s.frames, PALETTE[c])
        (y0, x0), (y1, x1) = (np.argwhere(mask[t]).mean(0) for t in (0, -1))
        dx, dy = x1 - x0, y1 - y0
        assert max(abs(dx), abs(dy)) >= 96 / 5  # it travels a good part of the frame
        if abs(dx) > abs(dy):
            got = "right" if dx > 0 else "left"
        else:
            got = "down" if dy > 0 else "up"
        assert got == s.answer


# ---------------------------------------------------------------- balance and splits


@pytest.mark.parametrize("qtype", QTYPES)
def test_answers_balanced(qtype):
    k = len(ANSWERS[qtype])
    exact = Counter(s.answer for s in per_type(qtype, 2 * k, frames=10, size=32))
    assert exact == {a: 2 for a in ANSWERS[qtype]}
    ragged = Counter(s.answer for s in per_type(qtype, 2 * k + 3, frames=10, size=32))
    assert set(ragged) == set(ANSWERS[qtype])
    assert max(ragged.values()) - min(ragged.values()) <= 1


def test_answer_order_is_shuffled():
    q = "detail"
    order = [syn._answer_for("train", q, i, 0) for i in range(30)]
    assert order != [ANSWERS[q][i % 10] for i in range(30)]
    assert order[:10] != order[10:20]  # a fresh order per cycle


def test_mixed_dataset_balanced():
    k = math.lcm(*(len(a) for a in ANSWERS.values()))
    ds_answers = Counter()
    n = len(QTYPES) * k  # every type gets k samples, a whole number of cycles of its answers
    for i in range(n):
        q = QTYPES[i % len(QTYPES)]
        ds_answers[q, syn._answer_for("test", q, i // len(QTYPES), 0)] += 1
    for q in QTYPES:
        counts = [ds_answers[q, a] for a in ANSWERS[q]]
        assert counts == [k // len(ANSWERS[q])] * len(ANSWERS[q])


def digest(frame: np.ndarray) -> str:
    return hashlib.sha1(frame.tobytes()).hexdigest()


def test_splits_disjoint():
    frames = {}
    for split in ("train", "val", "test"):
        ds = dataset(split, 120, frames=10, size=32)
        frames[split] = {digest(f) for s in ds for f in s.frames}
    assert not frames["train"] & frames["test"]
    assert not frames["train"] & frames["val"]
    assert not frames["val"] & frames["test"]
    seeds = [sample_seed(sp, i, q, seed=sd) for sp in ("train", "val", "test") for q in QTYPES
             for i in range(100) for sd in (0, 1)]
    assert len(set(seeds)) == len(seeds)
    s = sample("test", 4, "count", seed=1)
    assert s.scene["seed"] == sample_seed("test", 4, "count", seed=1)


# ---------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("call, match", [
    (lambda: sample("dev", 0), "unknown split 'dev'; expected one of train, val, test"),
    (lambda: sample("train", 0, "colour"), "expected one of detail, colour_at_time"),
    (lambda: sample("train", -1), "index must be >= 0"),
    (lambda: sample("train", True), "index must be an int"),
    (lambda: sample("train", 0, seed=-2), "seed must be >= 0"),
    (lambda: sample("train", 0, "count", frames=8), "'count' needs frames >= 10"),
    (lambda: sample("train", 0, "order", frames=3), "'order' needs frames >= 4"),
    (lambda: sample("train", 0, "detail", frames=0), "frames must be >= 1"),
    (lambda: sample("train", 0, size=16), "size must be >= 32"),
    (lambda: sample("train", 0, size=96.0), "size must be an int"),
    (lambda: dataset("train", 0), "n must be >= 1"),
    (lambda: dataset("test", 3, frames=8), "'count' needs frames >= 10"),
    (lambda: dataset("test", 3, qtypes=()), "at least one of detail"),
    (lambda: dataset("test", 3, qtypes=("motion", "motion")), "must not repeat"),
    (lambda: dataset("test", 3, qtypes=("motion", "zoom")), "unknown qtype 'zoom'"),
    (lambda: dataset("nope", 3), "expected one of train, val, test"),
    (lambda: sample_seed("train", 0, "zoom"), "unknown qtype"),
    (lambda: syn.glyph_mask("?"), "no glyph"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_dataset_checks_before_drawing():
    # fewer frames are fine when no chosen type needs more
    ds = dataset("test", 4, frames=4, qtypes=("order", "motion"), size=32)
    assert [s.frames.shape for s in ds] == [(4, 32, 32, 3)] * 4


@pytest.mark.parametrize("size, frames", [(32, None), (57, 11), (112, 33)])
def test_other_shapes(size, frames):
    for q in QTYPES:
        t = frames or syn.MIN_FRAMES[q]
        for s in per_type(q, len(ANSWERS[q]), frames=t, size=size):
            assert s.frames.shape == (1 if q == "image_detail" else t, size, size, 3)
            assert answer_from_scene(s.scene) == s.answer
            if q in ("detail", "image_detail"):
                assert read_glyph(s.frames[s.scene["glyph_frame"]]) == s.answer
            if q == "motion":
                c = colour_mask(s.frames, PALETTE[question_colour(s.question)])
                assert c[0].any() and c[-1].any()


def test_blanked_keeps_questions_and_answers_and_leaves_the_originals():
    samples = dataset("val", 6, frames=10, size=48)
    before = [s.frames.copy() for s in samples]
    blind = syn.blanked(samples)
    for s, b, f in zip(samples, blind, before, strict=True):
        assert (b.question, b.answer, b.qtype, b.index) == (s.question, s.answer, s.qtype, s.index)
        assert b.frames.shape == s.frames.shape and (b.frames == 128).all()
        assert not b.frames.flags.writeable
        assert np.array_equal(s.frames, f)
