"""vt.apply on the outputs of the real transformers processors, passed unchanged.

The processors are the families' own classes (``testing.tiny_processor``: real image / video
processors sized for the tiny models, a local character-level tokenizer whose placeholder
tokens sit at the tiny models' ids), run on the bundled real video and on generated images.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision  # noqa: F401
import transformers  # noqa: F401  (a test dependency: fail, never skip, without it)
from model_helpers import lengths_seen, logits  # noqa: E402

import vistoken as vt  # noqa: E402
from vistoken import testing  # noqa: E402

MODELS = {
    "llava-onevision": testing.tiny_llava_onevision,
    "qwen2-vl": testing.tiny_qwen2_vl,
    "qwen2.5-vl": testing.tiny_qwen2_5_vl,
    "internvl": testing.tiny_internvl,
}
CASES = [(name, kind) for name in MODELS for kind in ("video", "image")]
IDS = [f"{name}-{kind}" for name, kind in CASES]

# Qwen2.5-VL's processor adds second_per_grid_ts: with a frame array (no fps metadata,
# 24 assumed) the temporal M-RoPE positions of different frames can coincide, and in
# generate() (grids dropped) the adapter must still read the grid off the position ids.
GENERATE_CASES = [
    pytest.param(
        name,
        kind,
        id=f"{name}-{kind}",
    )
    for name, kind in CASES
]


@pytest.fixture(scope="module")
def models():
    return {}


@pytest.fixture(scope="module")
def processors():
    return {}


def model_of(models, name):
    if name not in models:
        models[name] = MODELS[name]()
    return models[name]


def processor_of(processors, name):
    if name not in processors:
        processors[name] = testing.tiny_processor(name)
    return processors[name]


@pytest.fixture(scope="module")
def visuals():
    """Two videos of 4 frames (real, then generated) and two images of different sizes."""
    from vistoken.video import bundled_video, load_frames

    gen = torch.Generator().manual_seed(0)
    real = load_frames(bundled_video(), 4).array
    noise = torch.randint(0, 256, (4, 40, 64, 3), generator=gen, dtype=torch.uint8).numpy()
    ramp = np.linspace(0, 255, 48 * 30 * 3).reshape(48, 30, 3).astype(np.uint8)
    wide = torch.randint(0, 256, (40, 70, 3), generator=gen, dtype=torch.uint8).numpy()
    return {"video": [real, noise], "image": [wide, ramp]}


QUESTIONS = ["What?", "Describe what happens here, in detail please."]


def encode(processor, kind, items, questions):
    texts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": kind}, {"type": "text", "text": q}]}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for q in questions
    ]
    key = "videos" if kind == "video" else "images"
    return processor(
        text=texts, **{key: items}, return_tensors="pt", padding=True, padding_side="left"
    )


def single(processors, visuals, name, kind, i=0):
    return encode(processor_of(processors, name), kind, [visuals[kind][i]], [QUESTIONS[i]])


def expected_visual_tokens(name, kind, x):
    """Compressible visual tokens of the first video / image per its placeholders."""
    ids = x["input_ids"]
    if name == "llava-onevision":
        if kind == "image":
            # the 40x70 image: best pinpoint 56x112, unpadded grid 7x12 plus one newline
            # per row (placeholders that stay uncompressed) and the 7x7 base crop
            assert int((ids == testing.IMAGE_ID).sum()) == 7 * 12 + 7 + 49
            return 7 * 12 + 49
        return int((ids == testing.VIDEO_ID).sum()) - ids.shape[0]  # one trailing newline each
    if name == "internvl":
        return int((ids == testing.IMAGE_ID).sum())
    return int((ids == (testing.VIDEO_ID if kind == "video" else testing.IMAGE_ID)).sum())


def test_processor_outputs_have_the_expected_layout(processors, visuals):
    """The processors really expand placeholders to the tiny models' token counts."""
    x = single(processors, visuals, "llava-onevision", "video")
    assert x["pixel_values_videos"].shape == (1, 4, 3, 56, 56)
    assert int((x["input_ids"] == testing.VIDEO_ID).sum()) == 4 * 16 + 1
    x = single(processors, visuals, "qwen2-vl", "video")
    (t, gh, gw) = x["video_grid_thw"].tolist()[0]
    assert t == 2 and gh * gw * 16 <= 32 * 32 and gh % 2 == gw % 2 == 0
    assert int((x["input_ids"] == testing.VIDEO_ID).sum()) == t * gh * gw // 4
    assert "mm_token_type_ids" in x
    x = single(processors, visuals, "qwen2.5-vl", "video")
    assert "second_per_grid_ts" in x
    x = single(processors, visuals, "internvl", "video")
    assert x["pixel_values"].shape == (4, 3, 32, 32)
    assert int((x["input_ids"] == testing.IMAGE_ID).sum()) == 4 * 16
    x = single(processors, visuals, "llava-onevision", "image")
    assert x["pixel_values"].shape[1] == 3  # base crop + two 56px crops of 56x112
    assert x["image_sizes"].tolist() == [[40, 70]]


@pytest.mark.parametrize(("name", "kind"), CASES, ids=IDS)
def test_retention_one_gives_identical_logits(models, processors, visuals, name, kind):
    model = model_of(models, name)
    x = single(processors, visuals, name, kind)
    ref = logits(model, x)  # (a) the processor's outputs run unchanged without vt.apply
    assert ref.shape == (1, x["input_ids"].shape[1], testing.VOCAB)
    assert torch.isfinite(ref).all()
    with vt.apply(model, "uniform", retention=1.0) as h:
        out = logits(model, x)
    assert torch.equal(ref, out)
    assert h.stats["kept_tokens"] == h.stats["visual_tokens"] > 0
    assert h.stats["visual_tokens"] == expected_visual_tokens(name, kind, x)


@pytest.mark.parametrize("method", ["scc", "uniform"])
@pytest.mark.parametrize(("name", "kind"), GENERATE_CASES)
def test_compression_shortens_the_prefill_and_generate_works(
    models, processors, visuals, name, kind, method
):
    model = model_of(models, name)
    x = single(processors, visuals, name, kind)
    length = x["input_ids"].shape[1]
    seen, hook = lengths_seen(model)
    try:
        with vt.apply(model, method, retention=0.25) as h, torch.no_grad():
            gen = model.generate(**x, max_new_tokens=3, do_sample=False)
    finally:
        hook.remove()
    visual, kept = h.stats["visual_tokens"], h.stats["kept_tokens"]
    assert visual == expected_visual_tokens(name, kind, x)
    assert h.last, "no unit was compressed"
    for c in h.last:  # per video / image (InternVL: per sample's tiles)
        assert c.num_tokens == math.ceil(0.25 * c.sources.numel())
    assert sum(c.sources.numel() for c in h.last) == visual
    assert kept == sum(c.num_tokens for c in h.last) < visual
    assert seen[0] == h.stats["sequence_after"] == length - visual + kept < length
    assert seen[1:] == [1, 1]
    assert gen.shape == (1, length + 3)
    assert torch.equal(gen[:, :length], x["input_ids"])


@pytest.mark.parametrize(("name", "kind"), GENERATE_CASES)
def test_left_padded_batch_gives_the_answers_of_one_sample_at_a_time(
    models, processors, visuals, name, kind
):
    model = model_of(models, name)
    processor = processor_of(processors, name)
    alone_inputs = [encode(processor, kind, [visuals[kind][i]], [QUESTIONS[i]]) for i in range(2)]
    batch = encode(processor, kind, visuals[kind], QUESTIONS)
    assert not bool(batch["attention_mask"][:, 0].all()), "expected left padding"
    assert bool(batch["attention_mask"][:, -1].all())
    with vt.apply(model, "scc", retention=0.25) as h, torch.no_grad():
        alone = [model.generate(**s, max_new_tokens=3, do_sample=False) for s in alone_inputs]
        last_alone = [model(**s).logits[:, -1] for s in alone_inputs]
        together = model.generate(**batch, max_new_tokens=3, do_sample=False)
        last_together = model(**batch).logits[:, -1]
    assert len(h.last) == 2
    for i, a in enumerate(alone):
        assert torch.equal(together[i, -3:], a[0, -3:])
        assert torch.allclose(last_together[i], last_alone[i][0], atol=1e-4)
