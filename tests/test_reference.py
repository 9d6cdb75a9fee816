"""The reference VLM and its trainer: processor, prompts, auxiliary labels, resumable training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vistoken.eval import synthetic as syn
from vistoken.eval import train as tr
from vistoken.eval.reference import (
    CUE,
    SIZE,
    build_reference,
    decode_answers,
    load_reference,
    prompts,
)


@pytest.fixture(scope="module")
def ref():
    return build_reference(0)


def test_tokenizer_knows_every_question_and_answer(ref):
    _, proc = ref
    tok = proc.tokenizer
    unk = tok.unk_token_id
    for s in syn.dataset("val", 60, frames=16, size=SIZE):
        ids = tok(f"{s.question} {CUE} {s.answer}")["input_ids"]
        assert unk not in ids, s.question
        assert tok.convert_ids_to_tokens(ids[-1]) == s.answer  # answers are one token
    for seed in (1, 2):
        for s in syn.dataset("test", 30, seed=seed, frames=16, size=SIZE):
            assert unk not in tok(s.question)["input_ids"]


def test_prompts_expand_to_the_models_visual_token_counts(ref):
    model, proc = ref
    samples = syn.dataset("val", 6, frames=16, size=SIZE)  # one of each type
    batch = prompts(proc, samples)
    cfg = model.config
    video = (batch["input_ids"] == cfg.video_token_id).sum(1)
    image = (batch["input_ids"] == cfg.image_token_id).sum(1)
    for s, v, i in zip(samples, video.tolist(), image.tolist(), strict=True):
        if s.qtype == "image_detail":
            assert (v, i) == (0, 196 + 14 * 15)  # base grid + one tile with row newlines
        else:
            assert (v, i) == (16 * 49 + 1, 0)
    assert batch["pixel_values_videos"].shape == (5, 16, 3, SIZE, SIZE)
    # left padding: every row ends with the cue, the answer is the next token
    tok = proc.tokenizer
    assert all(tok.convert_ids_to_tokens(r[-1]) == ":" for r in batch["input_ids"].tolist())
    assert (batch["attention_mask"][:, -1] == 1).all()
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=1, do_sample=False)
    answers = decode_answers(proc, out[:, batch["input_ids"].shape[1]:])
    assert len(answers) == 6 and all(isinstance(a, str) for a in answers)


def test_load_reference_names_a_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no reference model at .*train-reference"):
        load_reference(tmp_path / "nothing")


@pytest.mark.parametrize("qtype", ["order", "detail", "image_detail", "count"])
def test_patch_labels_follow_the_pixels(qtype):
    s = syn.sample("val", 3, qtype, frames=16, size=SIZE)
    obj, glyph = tr.patch_labels(s.scene, 8)
    t = s.frames.shape[0]
    assert obj.shape == glyph.shape == (t, (SIZE // 8) ** 2)
    px = s.frames.reshape(t, 14, 8, 14, 8, 3).transpose(0, 1, 3, 2, 4, 5).reshape(t, 196, 64, 3)
    for cls in range(1, len(tr._OBJ_CLASSES)):
        colour = tr._OBJ_CLASSES[cls].split("_")[0]
        share = (px == np.array(syn.PALETTE[colour], np.uint8)).all(-1).mean(-1)
        labelled = (obj == cls).numpy()
        # a patch labelled with an object shows its colour over >= a quarter of its pixels,
        # less only where a glyph plate is drawn over it
        assert (share[labelled & (glyph == 0).numpy()] >= 0.25).all()
    plate = (px == np.array(syn.PLATE_COLOUR, np.uint8)).all(-1).mean(-1)
    white = (px == np.array(syn.GLYPH_COLOUR, np.uint8)).all(-1).mean(-1)
    g = (glyph > 0).numpy()
    if qtype in ("detail", "image_detail"):
        assert g.sum() >= 2
        assert ((plate + white)[g] >= 0.25).all()
        assert set(glyph[g].tolist()) == {tr._GLYPH_CLASSES.index(s.answer)}
    else:
        assert not g.any()
        assert (obj > 0).any()


def _tiny_cfg(**over):
    base = dict(steps=4, batch_size=2, warmup=1, curriculum=((2, 2),), frames=4,
                qtypes=("detail", "colour_at_time"), checkpoint_every=1, log_every=1,
                val_every=100, val_samples=2)
    base.update(over)
    return tr.TrainConfig(**base)


def _weights(path):
    model, _ = load_reference(path)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_training_moves_the_weights_and_resumes_exactly(tmp_path):
    cfg = _tiny_cfg()
    tr.train(tmp_path / "a", cfg, progress=False, echo=lambda m: None)
    a = _weights(tmp_path / "a")
    init, _ = build_reference(cfg.seed)
    assert any(not torch.equal(v, a[k]) for k, v in init.state_dict().items())
    # two steps, stop, then the same command again: the same weights as four in one go
    tr.train(tmp_path / "b", _tiny_cfg(steps=4, max_minutes=1e-9), progress=False,
             echo=lambda m: None)  # stops before its first step (time limit)
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    assert state["step"] == 0
    import shutil

    shutil.rmtree(tmp_path / "b")
    half = _tiny_cfg(steps=4)
    # interrupt after two steps by raising from the echo of the second step's log line
    seen = []

    def stop_after_two(msg):
        seen.append(msg)
        if msg.startswith("{") and json.loads(msg)["step"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tr.train(tmp_path / "b", half, progress=False, echo=stop_after_two)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["step"] == 2
    tr.train(tmp_path / "b", half, progress=False, echo=lambda m: None)
    b = _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(x) for x in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    assert json.loads((tmp_path / "b" / "train_args.json").read_text())["steps"] == 4


def test_resume_with_other_arguments_is_refused(tmp_path):
    tr.train(tmp_path, _tiny_cfg(steps=1), progress=False, echo=lambda m: None)
    with pytest.raises(ValueError, match="other arguments"):
        tr.train(tmp_path, _tiny_cfg(steps=2), progress=False, echo=lambda m: None)
    # the time limit is not part of the recipe: a run it stopped may go on without it
    msgs = []
    tr.train(tmp_path, _tiny_cfg(steps=1, max_minutes=5.0), progress=False, echo=msgs.append)
    assert any("resuming" in m and "step 1" in m for m in msgs)


@pytest.mark.parametrize("over, match", [
    ({"steps": 0}, "steps must be >= 1"),
    ({"lr": 0.0}, "lr must be > 0"),
    ({"curriculum": ((5, 2), (3, 4))}, "increasing steps"),
    ({"curriculum": ((5, 99),)}, "frames <="),
    ({"qtypes": ("nope",)}, "unknown qtype"),
    ({"max_minutes": 0.0}, "max_minutes"),
])
def test_bad_training_arguments(tmp_path, over, match):
    with pytest.raises(ValueError, match=match):
        tr.train(tmp_path, _tiny_cfg(**over), progress=False)
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_reveal_masks_only_background_visual_tokens(ref):
    model, proc = ref
    samples = syn.dataset("val", 6, frames=16, size=SIZE)
    batch = prompts(proc, samples)
    cfg = model.config
    visual = (batch["input_ids"] == cfg.video_token_id) | (batch["input_ids"] == cfg.image_token_id)
    gen = torch.Generator().manual_seed(0)
    hidden = tr._visible(batch, samples, cfg, 0.0, gen)
    text = batch["attention_mask"].bool() & ~visual
    assert torch.equal(hidden.bool() & text, text)  # text and padding untouched
    for row, s in enumerate(samples):
        seen = int((hidden[row].bool() & visual[row]).sum())
        assert 2 <= seen < int(visual[row].sum()) // 4, s.qtype
    # a detail prompt shows its plate cells (and the newline) only
    d = samples[0]
    assert d.qtype == "detail"
    obj, glyph = tr.patch_labels(d.scene, 8)
    cells = tr._pooled(glyph, 14).sum().item()
    assert int((hidden[0].bool() & visual[0]).sum()) == cells + 1
    half = tr._visible(batch, samples, cfg, 0.5, torch.Generator().manual_seed(0))
    share = (half.bool() & visual).sum() / visual.sum()
    assert 0.4 < share < 0.6
    assert torch.equal(tr._visible(batch, samples, cfg, 1.0, gen), batch["attention_mask"])
    c = tr.TrainConfig(reveal=(10, 20))
    assert [tr.reveal_share(c, s) for s in (0, 9, 10, 15, 20, 99)] == [0, 0, 0, 0.5, 1, 1]


@pytest.mark.parametrize("qtype", [q for q in syn.QTYPES if q != "image_detail"])
def test_frame_states_end_in_the_answer_and_are_causal(qtype):
    for index in range(6):
        s = syn.sample("val", index, qtype, frames=16, size=SIZE)
        st = tr.frame_states(s.scene)
        assert set(st) == set(tr.STATE_HEADS)
        for name, y in st.items():
            assert y.shape == (16,)
            known = y[y != -100]
            assert ((known >= 0) & (known < len(tr.STATE_HEADS[name]))).all(), name
        final = {"detail": "digit_seen", "colour_at_time": None, "order": "first_seen",
                 "count": "flashes", "motion": "direction"}[qtype]
        if final is not None:  # the head's last-frame state is the answer
            assert tr.STATE_HEADS[final][int(st[final][-1])] == s.answer
        else:
            head = "first_colour" if s.scene["ask"] == "first" else "colour_now"
            assert tr.STATE_HEADS[head][int(st[head][-1])] == s.answer
        # causality: the states of frames <= t follow from those frames alone
        cut = dict(s.scene, frames=8)
        for key in ("objects", "clutter"):
            cut[key] = [dict(o, xy=o["xy"][:8], **({"colour": o["colour"][:8]}
                                                   if "colour" in o and key == "objects" else {}))
                        for o in s.scene[key]]
        cut["glyphs"] = [g for g in s.scene["glyphs"] if g["frame"] < 8]
        if qtype == "detail" and not cut["glyphs"]:
            continue  # the digit comes later: no plated glyph in the first 8 frames
        short = tr.frame_states(cut)
        for name in tr.STATE_HEADS:
            assert torch.equal(short[name], st[name][:8]), (qtype, index, name)
        # the single target object's cell is where its centre is drawn
        if qtype in ("colour_at_time", "count", "motion"):
            o = s.scene["objects"][0]
            x, y = o["xy"][-1]
            cx, cy = (x + o["extent"] / 2) // 16, (y + o["extent"] / 2) // 16
            assert int(st["cell_now"][-1]) == int(cy) * 7 + int(cx)
            assert int(st["first_cell"][-1]) == int(st["cell_now"][0])
        else:
            assert (st["cell_now"] == -100).all()


@pytest.mark.parametrize("qtype", ["order", "motion", "count"])
def test_token_states_label_the_object_tokens_causally(qtype):
    for index in range(4):
        s = syn.sample("val", index, qtype, frames=12, size=SIZE)
        obj, _ = tr.patch_labels(s.scene, 8)
        st = tr.token_states(s.scene, obj)
        assert set(st) == set(tr.TOKEN_HEADS)
        shown = tr._pooled(obj, 14)  # (T, 49): the tokens that show an object
        for name, y in st.items():
            assert y.shape == (12, 49)
            assert ((y == -100) | shown).all(), name  # only object tokens are labelled
        if qtype == "order":
            y, ids = st["alone_so_far"], tr.TOKEN_HEADS["alone_so_far"]
            on = s.scene["onsets"]
            first, second = sorted(on, key=on.get)
            for t in range(12):
                got = {ids[v] for v in y[t][y[t] != -100].tolist()}
                if t < on[second]:  # only the first object shows, and says its shape
                    assert got == ({first} if t >= on[first] else set()), (index, t)
                else:
                    assert got == {"both"}, (index, t)
            # the answer is the colour of the shape whose tokens say they came first
            colour = {o["shape"]: next(c for c in o["colour"] if c is not None)
                      for o in s.scene["objects"]}
            assert s.answer == colour[first]
        elif qtype == "motion":
            y = st["moved"]
            known = y[y != -100]
            assert known.numel() > 0
            last = y[-1][y[-1] != -100]
            assert last.numel() > 0 and (last == tr.TOKEN_HEADS["moved"].index(s.answer)).all()
            # a labelled token's direction is its frame's "direction so far"
            so_far = tr.frame_states(s.scene)["direction"]
            rows, _ = (y != -100).nonzero(as_tuple=True)
            assert torch.equal(known, so_far[rows])
            assert (y[0] == -100).all()  # no displacement in frame 0
        else:
            assert all((y == -100).all() for y in st.values())
        # causality: the first 6 frames' labels follow from those frames alone
        cut = dict(s.scene, frames=6)
        cut["objects"] = [dict(o, xy=o["xy"][:6], colour=o["colour"][:6])
                          for o in s.scene["objects"]]
        short = tr.token_states(cut, obj[:6])
        for name in tr.TOKEN_HEADS:
            assert torch.equal(short[name], st[name][:6]), (qtype, index, name)


def test_token_heads_read_every_frame_token(ref):
    model, proc = ref
    samples = syn.dataset("val", 6, frames=4, size=SIZE, qtypes=("order", "motion", "detail"))
    batch = prompts(proc, samples)
    hidden = torch.arange(batch["input_ids"].numel(), dtype=torch.float).reshape(
        *batch["input_ids"].shape, 1)
    labels = [tr.patch_labels(s.scene, 8) for s in samples]
    picked, y = tr._video_tokens(batch, samples, model.config, hidden, labels)
    rows = [i for i, s in enumerate(samples) if s.qtype in ("order", "motion")]
    assert picked.shape == (len(rows), 4 * 49, 1)
    width = batch["input_ids"].shape[1]
    for r, i in enumerate(rows):
        cols = (batch["input_ids"][i] == model.config.video_token_id).nonzero().squeeze(1)
        assert (picked[r, :, 0].long() - i * width).tolist() == cols[:-1].tolist()
        st = tr.token_states(samples[i].scene, labels[i][0])
        for name in tr.TOKEN_HEADS:
            assert torch.equal(y[name][r], st[name].flatten())
    heads = tr.TokenHeads(1)
    loss = heads.loss(picked, y)
    assert torch.isfinite(loss) and loss > 0


def test_state_heads_read_each_frame_end_and_the_newline(ref):
    model, proc = ref
    samples = syn.dataset("val", 8, frames=4, size=SIZE,
                          qtypes=("detail", "colour_at_time", "motion", "image_detail"))
    batch = prompts(proc, samples)
    hidden = torch.arange(batch["input_ids"].numel(), dtype=torch.float).reshape(
        *batch["input_ids"].shape, 1)  # the hidden "state" of a position is its flat index
    picked, labels = tr._frame_ends(batch, samples, model.config, hidden)
    videos = [i for i, s in enumerate(samples) if s.qtype != "image_detail"]
    assert picked.shape == (len(videos), 4 + 1, 1)
    width = batch["input_ids"].shape[1]
    for row, i in enumerate(videos):
        cols = (batch["input_ids"][i] == model.config.video_token_id).nonzero().squeeze(1)
        want = [int(cols[49 * t + 48]) for t in range(4)] + [int(cols[-1])]
        assert (picked[row, :, 0].long() - i * width).tolist() == want
        assert int(cols[-1]) == int(cols[4 * 49])  # the newline is the last visual token
        st = tr.frame_states(samples[i].scene)
        for name in tr.STATE_HEADS:
            assert torch.equal(labels[name][row], torch.cat([st[name], st[name][-1:]]))
    assert samples[-1].qtype == "image_detail"
    still = prompts(proc, samples[-1:])
    assert tr._frame_ends(still, samples[-1:], model.config, hidden[-1:]) is None
    heads = tr.StateHeads(model.config.text_config.hidden_size)
    h = torch.randn(len(videos), 5, model.config.text_config.hidden_size)
    loss = heads.loss(h, labels)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    loss.backward()
    used = {n for n in tr.STATE_HEADS if (labels[n] != -100).any()}
    for n, head in heads.heads.items():  # only the heads the batch has labels for learn
        assert (head.weight.grad is not None and head.weight.grad.abs().sum() > 0) == (n in used)


def test_state_heads_on_every_token_see_only_earlier_frames(ref):
    model, proc = ref
    samples = syn.dataset("val", 4, frames=4, size=SIZE, qtypes=("order", "motion"))
    batch = prompts(proc, samples)
    hidden = torch.arange(batch["input_ids"].numel(), dtype=torch.float).reshape(
        *batch["input_ids"].shape, 1)
    picked, labels = tr._every_token(batch, samples, model.config, hidden)
    assert picked.shape == (4, 4 * 49 + 1, 1)
    width = batch["input_ids"].shape[1]
    for row, s in enumerate(samples):
        cols = (batch["input_ids"][row] == model.config.video_token_id).nonzero().squeeze(1)
        assert (picked[row, :, 0].long() - row * width).tolist() == cols.tolist()
        st = tr.frame_states(s.scene)
        for name in tr.STATE_HEADS:
            y = labels[name][row]
            for t in range(4):
                inner = y[49 * t:49 * t + 48]
                assert (inner == (st[name][t - 1] if t else -100)).all(), (name, t)
                assert y[49 * t + 48] == st[name][t]
            assert y[-1] == st[name][-1]
