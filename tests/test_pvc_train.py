"""The tiny PVC made from the reference VLM, and its trainer: stages, resumption, two processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from vistoken.eval import synthetic as syn
from vistoken.eval.reference import _tokenizer as _reference_tokenizer
from vistoken.eval.reference import build_reference, prompt_text
from vistoken.pvc import train as pt
from vistoken.pvc.tiny import from_reference, load_pvc, prompts

QTYPES = ("detail", "colour_at_time", "motion", "image_detail")

#: floor of the shipped tiny PVC on the first 50 test samples of the five types it was trained
#: on as they still are (see its card: 0.715 on 600 samples of benchmark v1)
PVC_FLOOR = 0.55


@pytest.fixture(scope="module")
def reference():
    model, processor = build_reference(3)
    return model.eval(), processor


def _cfg(**over):
    base = dict(base="untrained", stage1_steps=2, stage2_steps=2, batch_size=4, warmup=1,
                frames=4, qtypes=QTYPES, checkpoint_every=1, log_every=1, val_every=100,
                val_samples=4)
    base.update(over)
    return pt.PVCTrainConfig(**base)


def test_from_reference_carries_the_llm_and_the_tower(reference):
    ref, ref_proc = reference
    model, proc = from_reference(ref)
    model.eval()
    assert model.encoder.frame_tokens == 49 and model.config.image_repeats == 4
    # the reference's words keep their ids; the frame labels come after them
    tok, rtok = proc.tokenizer, ref_proc.tokenizer
    assert all(tok.convert_tokens_to_ids(w) == i for w, i in rtok.get_vocab().items())
    assert tok.convert_tokens_to_ids("Frame1") == len(rtok)
    # text alone: the reference's logits on its vocabulary
    ids = rtok(["Which way did the red circle move : left , right , up or down ? Answer:"],
               return_tensors="pt")
    with torch.no_grad():
        want = ref(**ids).logits
        got = model(**ids).logits
    torch.testing.assert_close(got[..., :want.shape[-1]], want, rtol=0, atol=1e-6)
    # the tower's weights are the reference's
    inner = ref.model.vision_tower.state_dict()
    mine = {k.replace(".base.", "."): v for k, v in model.encoder.vision_model.state_dict().items()}
    kept = {k: v for k, v in inner.items() if not k.startswith("head.")}  # the unused pooler
    assert set(kept) <= set(mine)
    assert all(k in kept or any(w in k for w in ("temporal", "modulation")) for k in mine)
    assert all(torch.equal(mine[k], v) for k, v in kept.items())
    # the control has no temporal attention and no AdaLN
    flat, _ = from_reference(ref, progressive=False)
    assert flat.config.temporal_layers == 0 and flat.config.adaln == "none"
    assert list(flat.encoder.new_parameters()) == []
    full, fproc = from_reference(ref, tokens_per_frame=196)
    assert full.encoder.frame_tokens == 196 and fproc.tokens_per_frame == 196


def test_the_tokenizer_is_the_references_own_and_saved_with_the_model(reference, tmp_path):
    from vistoken.eval.reference import tokenizer_words
    from vistoken.pvc.tiny import save

    ref, ref_proc = reference
    # a reference trained with other word ids (as models of earlier benchmark versions
    # were): the PVC extends that model's tokenizer, not this version's
    words = tokenizer_words(ref_proc.tokenizer)
    moved = [*words[:5], *reversed(words[5:])]
    other = type(ref_proc)(image_processor=ref_proc.image_processor,
                           video_processor=ref_proc.video_processor,
                           tokenizer=_reference_tokenizer(words=moved),
                           num_image_tokens=ref_proc.num_image_tokens,
                           vision_feature_select_strategy="full")
    model, proc = from_reference(ref, reference_processor=other)
    assert tokenizer_words(proc.tokenizer)[:len(moved)] == moved
    assert proc.tokenizer.convert_tokens_to_ids("Frame1") == len(moved)
    save(model, proc, tmp_path)
    _, loaded = load_pvc(tmp_path)
    assert tokenizer_words(loaded.tokenizer) == tokenizer_words(proc.tokenizer)
    # a reference whose vocabulary does not match the tokenizer is refused
    small = type(ref_proc)(image_processor=ref_proc.image_processor,
                           video_processor=ref_proc.video_processor,
                           tokenizer=_reference_tokenizer(words=words[:-1]),
                           num_image_tokens=ref_proc.num_image_tokens,
                           vision_feature_select_strategy="full")
    with pytest.raises(ValueError, match="reference_processor"):
        from_reference(ref, reference_processor=small)


def test_prompts_follow_pvcs_layout(reference):
    ref, _ = reference
    model, proc = from_reference(ref)
    video, image = syn.sample("val", 0, "motion", frames=4), syn.sample("val", 0, "image_detail")
    batch = prompts(proc, [video, image])
    assert batch["frames_per_clip"].tolist() == [4, 4]
    assert batch["pixel_values"].shape == (8, 3, 112, 112)
    # the image's four frames are one picture
    assert all(torch.equal(batch["pixel_values"][4], batch["pixel_values"][i]) for i in (5, 6, 7))
    image_id = model.config.image_token_id
    assert (batch["input_ids"] == image_id).sum(1).tolist() == [4 * 49, 4 * 49]
    text = proc.tokenizer.decode(batch["input_ids"][0][batch["attention_mask"][0].bool()])
    assert text.replace("<image>", "").split()[:8] == ["Frame1", ":", "Frame2", ":", "Frame3",
                                                      ":", "Frame4", ":"]
    # after the video: the reference's question and cue, word for word
    row = batch["input_ids"][0].tolist()
    last = max(i for i, t in enumerate(row) if t == image_id)
    tail = prompt_text(video).split("> ", 1)[1]
    assert row[last + 1:] == proc.tokenizer(tail, add_special_tokens=False)["input_ids"]
    assert proc.tokenizer.convert_ids_to_tokens(row[-1]) == ":"
    assert proc.tokenizer.unk_token_id not in batch["input_ids"].tolist()[0]


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_stages_train_what_they_say_and_resume_exactly(tmp_path):
    cfg = _cfg()
    start, _ = from_reference(build_reference(cfg.seed)[0], seed=cfg.seed)
    init = _weights(start)
    new = {n for n, p in start.named_parameters()
           if any(p is q for q in [*start.encoder.new_parameters(),
                                   *start.encoder.projector.parameters()])}
    # stage 1 only: the new parts and the projector move, nothing else
    pt.train_pvc(tmp_path / "s1", _cfg(stage2_steps=0), progress=False, echo=lambda m: None)
    s1, _ = load_pvc(tmp_path / "s1")
    w1 = _weights(s1)
    moved = {k for k in init if not torch.equal(init[k], w1[k])}
    assert moved and moved <= new
    assert any("temporal" in k or "ada" in k.lower() or "time" in k for k in moved)
    # both stages: the LLM moves too
    pt.train_pvc(tmp_path / "a", cfg, progress=False, echo=lambda m: None)
    a = _weights(load_pvc(tmp_path / "a")[0])
    assert any(not torch.equal(init[k], a[k]) for k in init if "language_model" in k)
    # interrupted in stage 2 and resumed: the weights of one uninterrupted run
    def stop_at_three(msg):
        if msg.startswith("{") and json.loads(msg)["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pt.train_pvc(tmp_path / "b", cfg, progress=False, echo=stop_at_three)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["step"] == 3
    pt.train_pvc(tmp_path / "b", cfg, progress=False, echo=lambda m: None)
    b = _weights(load_pvc(tmp_path / "b")[0])
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(x) for x in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["stage"]) for r in log if "loss" in r] == [(1, 1), (2, 1), (3, 2),
                                                                    (4, 2)]
    with pytest.raises(ValueError, match="other arguments"):
        pt.train_pvc(tmp_path / "b", _cfg(stage2_steps=3), progress=False, echo=lambda m: None)


def test_the_saved_model_answers_through_generate(tmp_path):
    pt.train_pvc(tmp_path, _cfg(stage1_steps=1, stage2_steps=0), progress=False,
                 echo=lambda m: None)
    model, proc = load_pvc(tmp_path)
    samples = syn.dataset("test", 4, frames=4, qtypes=QTYPES)
    batch = prompts(proc, samples)
    with torch.no_grad():
        logits = model(**batch, logits_to_keep=1).logits[:, -1]
        out = model.generate(**batch, max_new_tokens=1, do_sample=False)
    assert out[:, -1].tolist() == logits.argmax(-1).tolist()
    v = pt.evaluate(model, proc, samples)
    assert set(v["per_type"]) == set(QTYPES)
    assert v["accuracy"] == pytest.approx(sum(
        proc.tokenizer.convert_ids_to_tokens(int(t)) == s.answer
        for t, s in zip(logits.argmax(-1), samples, strict=True)) / 4)
    with pytest.raises(FileNotFoundError, match="train-pvc"):
        load_pvc(tmp_path / "nothing")


def test_two_processes_give_the_loss_curve_of_one(tmp_path):
    args = ["--base", "untrained", "--stage1-steps", "2", "--stage2-steps", "2",
            "--batch-size", "4", "--frames", "4", "--log-every", "1", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    one = subprocess.run([sys.executable, "-m", "vistoken", "train-pvc", "--out",
                          str(tmp_path / "one"), *args], capture_output=True, text=True, env=env,
                         timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node", "2", "-m", "vistoken", "train-pvc", "--out",
                          str(tmp_path / "two"), *args], capture_output=True, text=True, env=env,
                         timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]

    def curve(d):
        lines = (tmp_path / d / "train_log.jsonl").read_text().splitlines()
        return [json.loads(x)["loss"] for x in lines if '"loss"' in x]

    c1, c2 = curve("one"), curve("two")
    assert len(c1) == len(c2) == 4
    assert c1 == pytest.approx(c2, rel=1e-4, abs=1e-5)
    w1 = _weights(load_pvc(tmp_path / "one")[0])
    w2 = _weights(load_pvc(tmp_path / "two")[0])
    # the weights, through both stages (a DistributedDataParallel each): those of one process
    assert all(torch.allclose(w1[k], w2[k], rtol=1e-4, atol=1e-5) for k in w1)


@pytest.mark.parametrize("over, match", [
    ({"stage1_steps": 0, "stage2_steps": 0}, "not both 0"),
    ({"lr2": 0.0}, "lr1 and lr2"),
    ({"qtypes": ("count",)}, "frames >= 10"),
    ({"qtypes": ("nope",)}, "unknown qtype"),
    ({"batch_size": 0}, "batch_size"),
    ({"max_minutes": -1.0}, "max_minutes"),
])
def test_bad_training_arguments(tmp_path, over, match):
    with pytest.raises(ValueError, match=match):
        pt.train_pvc(tmp_path, _cfg(**over), progress=False, echo=lambda m: None)
    with pytest.raises(ValueError, match="multiple of 3"):
        pt.check_config(_cfg(batch_size=4), world=3)


def test_the_shipped_tiny_pvc_answers_from_the_pixels():
    from vistoken.pvc.tiny import DEFAULT_PATH

    for name in ("config.json", "model.safetensors", "pvc_processor.json", "train_log.jsonl",
                 "train_args.json", "README.md"):
        assert (DEFAULT_PATH / name).is_file(), name
    model, proc = load_pvc()
    assert not model.training and model.encoder.frame_tokens == 49
    args = json.loads((DEFAULT_PATH / "train_args.json").read_text())
    log = [json.loads(x) for x in (DEFAULT_PATH / "train_log.jsonl").read_text().splitlines()]
    final = [r for r in log if r.get("final")]
    assert len(final) == 1 and final[0]["step"] == args["stage1_steps"] + args["stage2_steps"]
    # the tiny PVC was trained on benchmark v1 (its card); since v3 an order question asks
    # for a colour, which it never learnt, so it is checked on the five unchanged types
    assert "order" in syn.QTYPES and syn.VERSION == 3
    samples = syn.dataset("test", 50, frames=16,
                          qtypes=[q for q in syn.QTYPES if q != "order"])
    full = pt.evaluate(model, proc, samples)
    blind = pt.evaluate(model, proc, syn.blanked(samples))
    chance = sum(syn.CHANCE[s.qtype] for s in samples) / len(samples)
    assert full["accuracy"] >= PVC_FLOOR
    assert blind["accuracy"] <= chance + 0.1 and blind["accuracy"] <= full["accuracy"] - 0.2
    # generate's first token is the argmax the accuracy counts
    batch = prompts(proc, samples[:6])
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=1, do_sample=False)
        logits = model(**batch, logits_to_keep=1).logits[:, -1]
    assert out[:, -1].tolist() == logits.argmax(-1).tolist()


def test_train_pvc_cli_errors_are_one_line(tmp_path, capsys):
    from vistoken.cli.app import main

    assert main(["train-pvc", "--out", str(tmp_path), "--stage1-steps", "0", "--stage2-steps",
                 "0", "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not both 0" in err[0]
    assert main(["train-pvc", "--out", str(tmp_path), "--base", str(tmp_path / "none"),
                 "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no reference model" in err[0] and "train-reference" in err[0]
    assert not (tmp_path / "train_args.json").exists()
