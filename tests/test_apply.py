"""vt.apply on tiny random-weight models of every supported family."""

from __future__ import annotations

import pytest
import torch
import transformers  # noqa: F401  (a test dependency: fail, never skip, without it)
from model_helpers import lengths_seen, logits  # noqa: E402

import vistoken as vt  # noqa: E402
from vistoken import testing  # noqa: E402

FAMILIES = {
    "llava-onevision": (
        testing.tiny_llava_onevision,
        lambda m, s=0: testing.llava_onevision_inputs(m, [4], seed=s),
    ),
    "qwen2-vl": (
        testing.tiny_qwen2_vl,
        lambda m, s=0: testing.qwen_vl_inputs(m, [(4, 8, 8)], seed=s),
    ),
    "qwen2.5-vl": (
        testing.tiny_qwen2_5_vl,
        lambda m, s=0: testing.qwen_vl_inputs(m, [(4, 8, 8)], seed=s),
    ),
    "internvl": (testing.tiny_internvl, lambda m, s=0: testing.internvl_inputs(m, [4], seed=s)),
}


@pytest.fixture(scope="module")
def models():
    return {name: build() for name, (build, _) in FAMILIES.items()}


def inputs_for(name, model, seed=0):
    return FAMILIES[name][1](model, seed)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_retention_one_gives_identical_logits(models, name):
    model = models[name]
    x = inputs_for(name, model)
    ref = logits(model, x)
    with vt.apply(model, "uniform", retention=1.0) as h:
        out = logits(model, x)
    assert torch.equal(ref, out)
    assert h.stats["kept_tokens"] == h.stats["visual_tokens"] == 64


@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.parametrize("method", ["scc", "uniform", "pool"])
def test_compression_shortens_the_prefill_and_generate_works(models, name, method):
    model = models[name]
    x = inputs_for(name, model)
    length = x["input_ids"].shape[1]
    seen, hook = lengths_seen(model)
    try:
        with vt.apply(model, method, retention=0.25) as h:
            out = logits(model, x)
            with torch.no_grad():
                gen = model.generate(**x, max_new_tokens=4, do_sample=False)
    finally:
        hook.remove()
    kept = h.stats["kept_tokens"]
    assert kept == 16  # ceil(0.25 * 64)
    assert out.shape[1] == length - 64 + kept
    # prefill of the forward, prefill of generate, then one token per decode step
    assert seen[0] == seen[1] == length - 64 + kept
    assert seen[2:] == [1, 1, 1]
    assert gen.shape == (1, length + 4)
    assert torch.equal(gen[:, :length], x["input_ids"])


@pytest.mark.parametrize("name", list(FAMILIES))
def test_remove_restores_bit_identical_outputs(models, name):
    model = models[name]
    x = inputs_for(name, model, seed=1)
    hooks_before = {k: len(v) for k, v in _hook_dicts(model).items()}
    ref = logits(model, x)
    h = vt.apply(model, "scc", retention=0.1)
    assert logits(model, x).shape[1] < ref.shape[1]
    h.remove()
    assert not h.active
    assert torch.equal(logits(model, x), ref)
    assert {k: len(v) for k, v in _hook_dicts(model).items()} == hooks_before
    h.remove()  # a second remove is harmless


def _hook_dicts(model):
    out = {}
    for mod_name, mod in model.named_modules():
        out[mod_name + ":pre"] = mod._forward_pre_hooks
        out[mod_name + ":post"] = mod._forward_hooks
    return out


@pytest.mark.parametrize("name", list(FAMILIES))
def test_decoding_with_the_cache_matches_full_recompute(models, name):
    """generate() (KV cache, shortened prefill) picks the tokens a full forward of the
    growing sequence under the same compressor picks, step by step."""
    model = models[name]
    x = inputs_for(name, model, seed=2)
    with vt.apply(model, "tome", retention=0.3):
        with torch.no_grad():
            gen = model.generate(**x, max_new_tokens=5, do_sample=False)
            seq = x["input_ids"]
            for _ in range(5):
                step = dict(x, input_ids=seq, attention_mask=torch.ones_like(seq))
                if "mm_token_type_ids" in x:
                    pad = torch.zeros(
                        1, seq.shape[1] - x["mm_token_type_ids"].shape[1], dtype=torch.long
                    )
                    step["mm_token_type_ids"] = torch.cat((x["mm_token_type_ids"], pad), dim=1)
                nxt = model(**step, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
                seq = torch.cat((seq, nxt), dim=1)
    assert torch.equal(gen, seq)


BATCHES = {
    "llava-onevision": lambda m: [
        testing.llava_onevision_inputs(m, [3], text=t, seed=s) for t, s in ((4, 0), (9, 1))
    ],
    "qwen2-vl": lambda m: [
        testing.qwen_vl_inputs(m, [g], seed=s) for g, s in (((4, 8, 8), 0), ((2, 8, 4), 1))
    ],
    "qwen2.5-vl": lambda m: [
        testing.qwen_vl_inputs(m, [g], seed=s) for g, s in (((4, 8, 8), 0), ((2, 8, 4), 1))
    ],
    "internvl": lambda m: [testing.internvl_inputs(m, [f], seed=s) for f, s in ((3, 0), (1, 1))],
}


def _batch(name, singles):
    """Left-pad single-sample inputs into one batch, as a processor would."""
    longest = max(s["input_ids"].shape[1] for s in singles)
    out = {}
    for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
        if key in singles[0]:
            rows = [
                torch.nn.functional.pad(s[key], (longest - s[key].shape[1], 0)) for s in singles
            ]
            out[key] = torch.cat(rows)
    for key in ("pixel_values", "pixel_values_videos", "video_grid_thw", "image_grid_thw"):
        if key in singles[0]:
            out[key] = torch.cat([s[key] for s in singles])
    return out


@pytest.mark.parametrize("name", list(FAMILIES))
def test_batch_gives_the_answers_of_one_sample_at_a_time(models, name):
    model = models[name]
    singles = BATCHES[name](model)
    batch = _batch(name, singles)
    with vt.apply(model, "scc", retention=0.2), torch.no_grad():
        alone = [model.generate(**s, max_new_tokens=4, do_sample=False) for s in singles]
        last_alone = [model(**s).logits[:, -1] for s in singles]
        together = model.generate(**batch, max_new_tokens=4, do_sample=False)
        last_together = model(**batch).logits[:, -1]
    for i, a in enumerate(alone):
        assert torch.equal(together[i, -4:], a[0, -4:])
        assert torch.allclose(last_together[i], last_alone[i][0], atol=1e-4)


def test_qwen_positions_equal_a_hand_built_sequence(models):
    """After a compressed video, every kept token carries its anchor's (t, h, w) M-RoPE
    position and the text after it continues from the uncompressed sequence's index."""
    model = models["qwen2-vl"]
    x = testing.qwen_vl_inputs(model, [(4, 8, 8)], seed=3, prompt_first=3, text=5)
    seen = {}
    lm = model.model.language_model
    hook = lm.register_forward_pre_hook(
        lambda mod, args, kw: seen.update(pos=kw["position_ids"], emb=kw["inputs_embeds"]),
        with_kwargs=True,
    )
    try:
        with vt.apply(model, "uniform", retention=0.25) as h:
            got = logits(model, x)
    finally:
        hook.remove()
    c = h.last[0]
    # by hand: 3 text + vision_start at 0..3, the video on a (2, 4, 4) grid from 4, then
    # vision_end and text from 4 + max(4, 4) = 8
    video = torch.stack([4 + c.positions[:, 0], 4 + c.positions[:, 1], 4 + c.positions[:, 2]], 0)
    order = torch.argsort(c.anchors)  # slot order: the anchors' flat (frame-major) index
    text_before = torch.arange(4).expand(3, -1)
    text_after = (8 + torch.arange(6)).expand(3, -1)
    expected = torch.cat((text_before, video[:, order], text_after), dim=1)
    assert torch.equal(seen["pos"][1:, 0], expected)
    assert torch.equal(seen["pos"][0, 0], torch.arange(expected.shape[1]))
    # the same sequence fed by hand (no vt.apply) gives the same logits
    with torch.no_grad():
        by_hand = model(inputs_embeds=seen["emb"], position_ids=seen["pos"]).logits
    assert torch.allclose(by_hand, got, atol=1e-5)


def test_two_models_carry_different_compressors():
    a = testing.tiny_qwen2_vl(seed=0)
    b = testing.tiny_qwen2_vl(seed=0)
    x = testing.qwen_vl_inputs(a, [(4, 8, 8)])
    with vt.apply(a, "uniform", retention=0.5), vt.apply(b, "uniform", retention=0.25):
        la, lb = logits(a, x), logits(b, x)
    assert la.shape[1] == x["input_ids"].shape[1] - 32
    assert lb.shape[1] == x["input_ids"].shape[1] - 48
    assert torch.equal(logits(a, x), logits(b, x))  # same weights, both restored


def test_bad_use(models):
    model = models["qwen2-vl"]
    with pytest.raises(TypeError, match="Qwen2VLForConditionalGeneration"):
        vt.apply(torch.nn.Linear(2, 2), "scc")
    with pytest.raises(ValueError, match="unknown method"):
        vt.apply(model, "nope")
    with pytest.raises(ValueError, match="unknown option"):
        vt.apply(model, "uniform", retention=0.5, bogus=1)
    with pytest.raises(ValueError, match="retention"):
        vt.apply(model, "uniform", retention=1.5)
    with vt.apply(model, "uniform", retention=0.5):
        with pytest.raises(ValueError, match="already carries"):
            vt.apply(model, "scc", retention=0.5)
        x = testing.qwen_vl_inputs(model, [(4, 8, 8)])
        x.pop("mm_token_type_ids")
        with pytest.raises(ValueError, match="mm_token_type_ids"):
            logits(model, x)
    with vt.apply(model, "uniform", retention=0.5):  # the first one was removed
        pass


def test_image_inputs(models):
    model = models["qwen2-vl"]
    x = testing.qwen_vl_inputs(model, [(1, 8, 8)], kind="image")
    with vt.apply(model, "divprune", retention=0.25) as h:
        out = logits(model, x)
    assert h.stats["visual_tokens"] == 16 and h.stats["kept_tokens"] == 4
    assert out.shape[1] == x["input_ids"].shape[1] - 12


def test_visionzip_in_llava_onevision(models):
    from vistoken.compressors.visionzip import visionzip
    from vistoken.models.attention import AttentionProbe, resize_stats

    model = models["llava-onevision"]
    x = inputs_for("llava-onevision", model, seed=4)
    with vt.apply(model, "visionzip", retention=0.25) as h:
        out = logits(model, x)
        with torch.no_grad():
            gen = model.generate(**x, max_new_tokens=3, do_sample=False)
    c = h.last[0]
    assert c.num_tokens == 16 and out.shape[1] == x["input_ids"].shape[1] - 48
    assert gen.shape[1] == x["input_ids"].shape[1] + 3
    # the same selection computed by hand from the tower's layer -2 attention
    inner = model.model
    with AttentionProbe(inner.vision_tower, layer=-2) as probe, torch.no_grad():
        feats = inner.get_video_features(x["pixel_values_videos"], return_dict=True).pooler_output
        received, keys = probe.pop()
    frames = feats[0, :-1].reshape(4, 16, -1)
    r = resize_stats(received[:, :, None], (7, 7), (4, 4))[..., 0]
    k = resize_stats(keys, (7, 7), (4, 4))
    ref = visionzip(frames, r, k, 16, grid=(4, 4))
    assert torch.equal(ref.sources, c.sources) and torch.allclose(ref.tokens, c.tokens)
    with pytest.raises(TypeError, match="LLaVA-OneVision"):
        vt.apply(models["qwen2-vl"], "visionzip", retention=0.25)


@pytest.mark.parametrize("name", ["llava-onevision", "qwen2-vl"])
def test_fastv_in_a_vlm_selects_the_same_under_sdpa_and_eager(name):
    build = FAMILIES[name][0]
    sdpa, eager = build(attn="sdpa"), build(attn="eager")
    x = inputs_for(name, sdpa, seed=5)
    keeps, outs = [], []
    for model in (sdpa, eager):
        seen, hook = lengths_seen(model)
        later = []

        def out_length(mod, args, out, later=later):
            later.append((out[0] if isinstance(out, tuple) else out).shape[1])

        h2 = model.model.language_model.layers[2].register_forward_hook(out_length)
        try:
            with vt.apply(model, "fastv", retention=0.25, layer=2) as h:
                outs.append(logits(model, x))
                with torch.no_grad():
                    gen = model.generate(**x, max_new_tokens=3, do_sample=False)
                keeps.append(h._parts[0].last_keep.clone())
        finally:
            hook.remove()
            h2.remove()
        length = x["input_ids"].shape[1]
        assert seen[0] == length  # layers before K see every token
        # FastV treats every placeholder as visual (LLaVA-OneVision's newline too: 65)
        visual = h.stats["visual_tokens"]
        assert visual == (65 if name == "llava-onevision" else 64)
        assert h.stats["kept_tokens"] == -(-visual // 4)
        assert later[0] == length - visual + h.stats["kept_tokens"]  # layers from K on
        assert gen.shape[1] == length + 3
    assert torch.equal(keeps[0], keeps[1])
    assert torch.allclose(outs[0], outs[1], atol=1e-4)


def test_fastv_default_is_half_and_rejects_a_bad_layer(models):
    model = models["internvl"]
    with vt.apply(model, "fastv") as h:
        assert h.retention == 0.5
    with pytest.raises(ValueError, match="layer"):
        vt.apply(model, "fastv", retention=0.5, layer=9)
    assert "_vistoken_handle" not in model.__dict__


def test_llava_onevision_anyres_images_keep_their_row_newlines(models):
    model = models["llava-onevision"]
    sizes = [(56, 100), (40, 56)]
    batch = testing.llava_onevision_image_inputs(model, sizes, seed=6)
    singles = []
    for i in range(2):  # each sample alone: its unpadded row, its pixels
        ids = batch["input_ids"][i][batch["attention_mask"][i].bool()][None]
        singles.append(
            {
                "input_ids": ids,
                "attention_mask": torch.ones_like(ids),
                "pixel_values": batch["pixel_values"][i : i + 1],
                "image_sizes": batch["image_sizes"][i : i + 1],
                "batch_num_images": batch["batch_num_images"][i : i + 1],
            }
        )
    newline = model.model.image_newline
    with vt.apply(model, "uniform", retention=0.25) as h, torch.no_grad():
        seen = {}

        def first_embeds(mod, args, kw):
            seen.setdefault("emb", kw["inputs_embeds"])

        hook = model.model.language_model.register_forward_pre_hook(first_embeds, with_kwargs=True)
        try:
            together = model.generate(**batch, max_new_tokens=3, do_sample=False)
        finally:
            hook.remove()
        last = list(h.last)
        alone = [model.generate(**s, max_new_tokens=3, do_sample=False) for s in singles]
    assert len(last) == 2
    for c in last:
        assert c.positions[:, 1].max() == 0  # no grid: one row per image
    total = [int((batch["input_ids"][i] == testing.IMAGE_ID).sum()) for i in range(2)]
    rows_nl = [(seen["emb"][i] == newline).all(-1).sum().item() for i in range(2)]
    # every row newline survives; the image tokens are cut to 25% (ceil) of the rest
    for i in range(2):
        n = total[i] - rows_nl[i]
        assert last[i].num_tokens == -(-n // 4)
    assert rows_nl[0] > 0 and rows_nl[1] > 0
    for i, a in enumerate(alone):
        assert torch.equal(together[i, -3:], a[0, -3:])


@pytest.mark.parametrize("name", ["llava-onevision", "qwen2-vl"])
def test_text_only_prompts_pass_through(models, name):
    model = models[name]
    ids = torch.arange(3, 15)[None]
    x = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        ref = model.generate(**x, max_new_tokens=4, do_sample=False)
        ref_logits = model(**x).logits
        with vt.apply(model, "scc", retention=0.1) as h:
            out = model.generate(**x, max_new_tokens=4, do_sample=False)
            out_logits = model(**x).logits
    assert torch.equal(ref, out) and torch.equal(ref_logits, out_logits)
    assert h.last == []
