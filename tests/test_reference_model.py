"""The shipped reference model: loads offline from the package and answers from the pixels.

A small fixed sample of the test split (every type equally often), so that it stays fast;
the figures on 600 test samples are in benchmarks/RESULTS.md (bench_reference.py).
"""

from __future__ import annotations

import json

import pytest
import torch

from vistoken.eval import synthetic as syn
from vistoken.eval.reference import DEFAULT_PATH, FRAMES, SIZE, build_config, load_reference
from vistoken.eval.runner import evaluate

N = 96  # 16 per type

#: floors on the fixed sample, set below what the shipped model measured on it (see the
#: model card, vistoken/eval/reference_model/README.md)
FULL_FLOOR = {"overall": 0.85, "detail": 0.8, "colour_at_time": 0.9, "order": 0.9,
              "count": 0.75, "motion": 0.75, "image_detail": 0.75}
# measured (model v3, benchmark v3) 0.927: detail 0.938, colour_at_time 1.0, order 1.0,
# count 0.875, motion 0.875, image_detail 0.875


@pytest.fixture(scope="module")
def shipped():
    model, processor = load_reference()
    return model, processor


@pytest.fixture(scope="module")
def sample():
    return syn.dataset("test", N, frames=FRAMES, size=SIZE)


def test_the_checkpoint_ships_with_its_log_and_loads_offline(shipped):
    model, processor = shipped
    for name in ("config.json", "model.safetensors", "train_log.jsonl", "train_args.json",
                 "README.md"):
        assert (DEFAULT_PATH / name).is_file(), name
    # the architecture is the documented one
    want = build_config()
    got = model.config
    for part in ("vision_config", "text_config"):
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size"):
            assert getattr(getattr(got, part), key) == getattr(getattr(want, part), key)
    assert got.vision_config.image_size // got.vision_config.patch_size == 14
    assert not model.training
    log = [json.loads(x) for x in (DEFAULT_PATH / "train_log.jsonl").read_text().splitlines()]
    final = [r for r in log if r.get("final")]
    assert len(final) == 1 and 0 < final[0]["val"]["accuracy"] <= 1
    args = json.loads((DEFAULT_PATH / "train_args.json").read_text())
    assert args["steps"] == final[0]["step"]  # the run finished its recipe


def test_it_answers_from_the_pixels(shipped, sample):
    model, processor = shipped
    with torch.inference_mode():
        full = evaluate(model, processor, sample, [("uniform", 1e-9)], batch_size=16)
        blind = evaluate(model, processor, syn.blanked(sample), [], batch_size=16)
    acc = full["full"]["accuracy"]
    chance = sum(syn.CHANCE[s.qtype] for s in sample) / len(sample)
    assert acc >= FULL_FLOOR["overall"]
    for qtype, floor in FULL_FLOOR.items():
        if qtype != "overall":
            assert full["full"]["per_type"][qtype]["accuracy"] >= floor, qtype
    # blind (a blank video, or one visual token): near chance, far below the full model
    for row in (blind["full"], full["rows"][0]):
        assert row["accuracy"] <= chance + 0.1
        assert row["accuracy"] <= acc - 0.1
