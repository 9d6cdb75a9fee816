"""vistoken.pvc: the progressive encoder, the PVC model, its conversion from InternVL and
its processor, on tiny random towers and models."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import (
    AutoModelForImageTextToText,
    CLIPVisionConfig,
    CLIPVisionModel,
    GotOcr2ImageProcessor,
    InternVLVisionConfig,
    InternVLVisionModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)
from transformers.models.internvl.modeling_internvl import InternVLModel

from vistoken import testing as vtt
from vistoken.models import _hf
from vistoken.pvc import (
    ProgressiveEncoder,
    ProgressiveLayer,
    PVCConfig,
    PVCForConditionalGeneration,
    PVCProcessor,
    pixel_shuffle,
    register,
    shuffle_factor,
)

SIDE = 32  # 32px images of 4px patches: an 8x8 grid
TOWER = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
}


def tower(kind: str, seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "siglip":
            cfg = SiglipVisionConfig(image_size=SIDE, patch_size=4, vision_use_head=False, **TOWER)
            model = SiglipVisionModel(cfg)
        elif kind == "clip":
            model = CLIPVisionModel(CLIPVisionConfig(image_size=SIDE, patch_size=4, **TOWER))
        else:
            cfg = InternVLVisionConfig(image_size=[SIDE, SIDE], patch_size=[4, 4], **TOWER)
            model = InternVLVisionModel(cfg)
    return model.eval()


def clips(b: int, t: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, t, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))


def perturb(module: torch.nn.Module, params=None, seed: int = 1, scale: float = 0.5) -> None:
    """Make PVC's zero-initialised parts non-zero (as training would)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params if params is not None else module.new_parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def encoder(kind: str = "siglip", **kw) -> tuple[ProgressiveEncoder, torch.nn.Module]:
    """(a progressive encoder around a tiny tower, an untouched copy of that tower)."""
    t = tower(kind)
    base = copy.deepcopy(t)
    kw.setdefault("tokens_per_frame", 16)
    return ProgressiveEncoder(t, 24, **kw).eval(), base


def per_frame_reference(enc: ProgressiveEncoder, base, x: torch.Tensor, layer: int = -1):
    """Each frame through the base tower alone, then the encoder's own compressor."""
    outs = []
    for t in range(x.shape[1]):
        if layer == -1:
            h = base(pixel_values=x[:, t]).last_hidden_state
        else:
            h = base(pixel_values=x[:, t], output_hidden_states=True).hidden_states[layer]
        outs.append(enc.compress(h))
    return torch.stack(outs, 1)


# -- functional --------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 4])
def test_pixel_shuffle_is_internvls_order(k):
    x = torch.randn(2, 8, 8, 6)
    ours = pixel_shuffle(x.reshape(2, 64, 6), k)
    theirs = InternVLModel.pixel_shuffle(None, x, scale_factor=1 / k).reshape(2, -1, 6 * k * k)
    assert ours.shape == (2, 64 // (k * k), 6 * k * k)
    assert torch.equal(ours, theirs)


def test_shuffle_factor_accepts_and_refuses():
    assert (
        shuffle_factor(32, 64) == 4 and shuffle_factor(32, 256) == 2 and shuffle_factor(8, 64) == 1
    )
    with pytest.raises(ValueError, match=r"8x8 patch grid.*accepted counts: \[64, 16, 4, 1\]"):
        shuffle_factor(8, 9)


# -- the encoder -------------------------------------------------------------------------------


def test_encoder_shapes_and_wrapping():
    enc, _ = encoder()
    x = clips(2, 3)
    with torch.no_grad():
        assert enc(x).shape == (2, 3, 16, 24)
        assert enc.encode_images(x[:, 0]).shape == (2, 4 * 16, 24)
    layers = _hf.vision_layers(enc.vision_model)
    assert [isinstance(layer, ProgressiveLayer) for layer in layers] == [False, False, True]
    assert enc.temporal_layers == 1  # round(3 / 3)
    enc_all, _ = encoder(adaln="all", temporal_layers=2)
    kinds = [(la.temporal_attn is not None, la.modulation is not None) for la in enc_all._layers]
    assert kinds == [(False, True), (True, True), (True, True)]
    # the wrappers reach the encoder's state through a plain holder: no module cycle
    assert len(list(enc.modules())) == len({id(m) for m in enc.modules()})


@pytest.mark.parametrize("kind", ["siglip", "clip", "internvl"])
def test_zero_init_encodes_each_frame_as_the_base_tower(kind):
    enc, base = encoder(kind)
    assert enc.has_cls == (kind != "siglip")
    x = clips(2, 3)
    with torch.no_grad():
        out = enc(x)
        ref = per_frame_reference(enc, base, x)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "options",
    [
        {"adaln": "all", "time": "normalised"},
        {"adaln": "none", "temporal_layers": 3},
        {"temporal_layers": 2, "feature_layer": -2},
    ],
)
def test_zero_init_equivalence_holds_for_every_option(options):
    enc, base = encoder("internvl", **options)
    x = clips(1, 3, seed=2)
    with torch.no_grad():
        ref = per_frame_reference(enc, base, x, layer=options.get("feature_layer", -1))
        torch.testing.assert_close(enc(x), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["siglip", "clip", "internvl"])
def test_causal_a_later_frame_never_changes_earlier_ones(kind):
    enc, _ = encoder(kind, adaln="all", temporal_layers=2)
    perturb(enc)
    x = clips(2, 4)
    y = x.clone()
    y[:, 2] += torch.randn(y[:, 2].shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        a, b = enc(x), enc(y)
    assert torch.equal(a[:, :2], b[:, :2])
    assert not torch.allclose(a[:, 2:], b[:, 2:], atol=1e-4)


def test_a_frame_depends_on_earlier_frames_once_the_new_parts_are_nonzero():
    enc, _ = encoder()
    x = clips(1, 3)
    y = x.clone()
    y[:, 0] = torch.randn(y[:, 0].shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert torch.equal(enc(x)[:, 1:], enc(y)[:, 1:])  # zero init: frames are independent
        perturb(enc)
        a, b = enc(x), enc(y)
    assert (a[:, 1:] - b[:, 1:]).abs().max() > 1e-3


def test_no_leakage_between_the_clips_of_a_batch():
    enc, _ = encoder("internvl")
    perturb(enc)
    x = clips(3, 3)
    y = x.clone()
    y[1] = torch.randn(y[1].shape, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        a, b = enc(x), enc(y)
        alone = enc(x[2:3])
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    assert not torch.allclose(a[1], b[1], atol=1e-4)
    torch.testing.assert_close(a[2:3], alone, rtol=1e-5, atol=1e-6)


def test_time_conditioning_changes_a_static_video_per_frame():
    enc, _ = encoder(temporal_layers=0, adaln="all")  # AdaLN alone, no temporal attention
    img = clips(1, 1)[:, 0]
    with torch.no_grad():
        static = enc.encode_images(img).view(1, 4, 16, 24)
        assert all(torch.equal(static[:, 0], static[:, i]) for i in range(4))
        perturb(enc)
        static = enc.encode_images(img).view(1, 4, 16, 24)
    assert (static[:, 0] - static[:, 1]).abs().max() > 1e-3


def test_image_path_token_count_and_static_video():
    enc, _ = encoder(image_repeats=3, tokens_per_frame=4)
    perturb(enc)
    img = clips(2, 1)[:, 0]
    with torch.no_grad():
        out = enc.encode_images(img)
        video = enc(img.unsqueeze(1).repeat(1, 3, 1, 1, 1))
    assert out.shape == (2, 3 * 4, 24)
    assert torch.equal(out, video.flatten(1, 2))


def test_encoder_is_deterministic():
    enc, _ = encoder("clip")
    perturb(enc)
    x = clips(2, 3)
    with torch.no_grad():
        assert torch.equal(enc(x), enc(x))
        assert torch.equal(copy.deepcopy(enc)(x), enc(x))


def test_kept_cls_is_an_extra_leading_token():
    enc, _ = encoder("clip", drop_cls=False)
    with torch.no_grad():
        out = enc(clips(1, 2))
    assert enc.frame_tokens == 17 and out.shape == (1, 2, 17, 24)
    with pytest.raises(ValueError, match="no CLS token"):
        encoder("siglip", drop_cls=True)


def test_gradients_reach_the_zero_initialised_parts():
    enc, _ = encoder(adaln="all")
    enc.train()
    enc(clips(1, 3)).square().sum().backward()
    layer = enc._layers[-1]
    assert layer.temporal_attn.proj.weight.grad.abs().sum() > 0
    assert layer.modulation[1].weight.grad.abs().sum() > 0


def test_encoder_bad_inputs_get_clear_errors():
    enc, _ = encoder()
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        enc(torch.randn(2, 3, SIDE, SIDE))
    with pytest.raises(ValueError, match="0 frames"):
        enc(torch.randn(2, 0, 3, SIDE, SIDE))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        enc.encode_images(clips(1, 2))
    for h, w in [(34, 34), (32, 48), (36, 36)]:
        with pytest.raises(ValueError, match=f"{h}x{w} pixels do not give the tower's 8x8 grid"):
            enc(torch.randn(1, 2, 3, h, w))
    with pytest.raises(ValueError, match="3 channels"):
        enc(torch.randn(1, 2, 4, SIDE, SIDE))
    with pytest.raises(ValueError, match=r"tokens_per_frame=12 .*8x8.*accepted counts"):
        ProgressiveEncoder(tower("siglip"), 24, tokens_per_frame=12)
    with pytest.raises(ValueError, match="adaln"):
        ProgressiveEncoder(tower("siglip"), 24, tokens_per_frame=16, adaln="some")
    with pytest.raises(ValueError, match="temporal_layers"):
        ProgressiveEncoder(tower("siglip"), 24, tokens_per_frame=16, temporal_layers=4)
    with pytest.raises(ValueError, match="already wrapped"):
        ProgressiveEncoder(enc.vision_model, 24, tokens_per_frame=16)


# -- the model ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def internvl():
    return vtt.tiny_internvl()


@pytest.fixture(scope="module")
def pvc(internvl):
    """A converted tiny PVC model: 4 tokens per frame (a new projector), images as 2-frame
    static videos, its new parts perturbed."""
    model = PVCForConditionalGeneration.from_base(internvl, tokens_per_frame=4, image_repeats=2)
    perturb(model, list(model.encoder.new_parameters()), seed=3)
    return model


@pytest.fixture(scope="module")
def processor():
    tok = vtt.tiny_processor("internvl").tokenizer
    return PVCProcessor(GotOcr2ImageProcessor(size={"height": SIDE, "width": SIDE}), tok, 4, 2)


def test_from_base_gives_the_base_logits(internvl):
    x = vtt.internvl_inputs(internvl, [2, 1])
    model = PVCForConditionalGeneration.from_base(internvl, tokens_per_frame=16, image_repeats=1)
    assert model.encoder.projector.k == 2  # InternVL's downsample_ratio 0.5: projector carried
    assert torch.equal(
        model.encoder.projector.linear_1.weight,
        internvl.model.multi_modal_projector.linear_1.weight,
    )
    frames = torch.ones(x["pixel_values"].shape[0], dtype=torch.long)
    with torch.no_grad():
        ref = internvl(**x).logits
        out = model(**x, frames_per_clip=frames).logits
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    # the compressed features are InternVL's image features exactly
    with torch.no_grad():
        feats = model.get_clip_features(x["pixel_values"], frames)
        theirs = internvl.model.get_image_features(x["pixel_values"]).pooler_output
    torch.testing.assert_close(feats, theirs.flatten(0, 1), rtol=1e-6, atol=1e-6)


def test_from_base_with_fewer_tokens_makes_a_new_projector(internvl, pvc):
    assert pvc.encoder.projector.k == 4 and pvc.encoder.projector.linear_1.in_features == 32 * 16
    base_tower = internvl.model.vision_tower.state_dict()
    ours = pvc.encoder.vision_model.state_dict()
    key = "encoder.layer.1.attention.q_proj.weight"
    assert torch.equal(ours[key.replace("layer.1.", "layer.1.base.")], base_tower[key])
    with pytest.raises(TypeError, match="unknown PVC options"):
        PVCForConditionalGeneration.from_base(internvl, tokens_per_frame=4, temporal_layer=1)


def _pool2x2(tokens: torch.Tensor) -> torch.Tensor:
    """(N, g*g, D) row-major tokens -> (N, (g/2)^2, D): the mean of each 2 x 2 block."""
    n, m, d = tokens.shape
    g = int(m**0.5)
    grid = tokens.transpose(1, 2).reshape(n, d, g, g)
    return torch.nn.functional.avg_pool2d(grid, 2).flatten(2).transpose(1, 2)


def test_merge_projector_starts_as_the_2x2_mean_of_the_base_projector():
    enc, _ = encoder("siglip", tokens_per_frame=4, projector="merge")  # 8x8 grid: k = 4
    assert enc.projector.k == 2 and enc.merge is not None
    feats = torch.randn(3, 64, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = enc.compress(feats)
        want = _pool2x2(enc.projector(feats))  # the base shuffle by 2: 16 tokens, pooled
    assert got.shape == (3, 4, 24)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    with torch.no_grad():  # once trained, no longer a mean
        enc.merge.linear.weight.add_(0.1)
        assert not torch.allclose(enc.compress(feats), want, atol=1e-3)
    with pytest.raises(ValueError, match="even pixel-shuffle factor"):
        encoder("siglip", tokens_per_frame=64, projector="merge")  # k = 1: no 2 x 2 left
    with pytest.raises(ValueError, match="projector must be one of"):
        encoder("siglip", projector="pool")


def test_from_base_merge_carries_internvls_projector_and_pools_its_tokens(internvl):
    x = vtt.internvl_inputs(internvl, [2, 1])
    model = PVCForConditionalGeneration.from_base(
        internvl, tokens_per_frame=4, image_repeats=1, projector="merge")
    assert model.config.projector == "merge" and model.encoder.projector.k == 2
    assert torch.equal(model.encoder.projector.linear_2.weight,
                       internvl.model.multi_modal_projector.linear_2.weight)
    frames = torch.ones(x["pixel_values"].shape[0], dtype=torch.long)
    with torch.no_grad():
        feats = model.get_clip_features(x["pixel_values"], frames)
        theirs = internvl.model.get_image_features(x["pixel_values"]).pooler_output  # 16 each
    torch.testing.assert_close(feats, _pool2x2(theirs).flatten(0, 1), rtol=1e-6, atol=1e-6)
    # stage 1 trains the merge with the projector
    from vistoken.pvc.train import stage_params

    trained = {id(p) for p in stage_params(model, 1)}
    assert all(id(p) in trained for p in model.encoder.merge.parameters())


def test_clips_of_mixed_lengths_encode_as_each_clip_alone(pvc):
    lengths = [3, 1, 3, 2]
    px = torch.randn(sum(lengths), 3, SIDE, SIDE, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        feats = pvc.get_clip_features(px, torch.tensor(lengths)).view(-1, 4, 64)
        start = 0
        for t in lengths:
            alone = pvc.encoder(px[start : start + t].unsqueeze(0))[0]
            torch.testing.assert_close(feats[start : start + t], alone, rtol=1e-5, atol=1e-6)
            start += t


def test_processor_prompt_layout(processor):
    tok = processor.tokenizer
    video = torch.randint(0, 255, (3, 3, 40, 40), dtype=torch.uint8)
    image = torch.randint(0, 255, (3, 36, 30), dtype=torch.uint8)
    out = processor("<video>Q?<image>A", images=[image], videos=[video])
    ctx = "<IMG_CONTEXT>"
    expected = f"Frame1: {ctx * 4}\nFrame2: {ctx * 4}\nFrame3: {ctx * 4}\nQ?" + ctx * 8 + "A"
    assert "".join(tok.convert_ids_to_tokens(out["input_ids"][0])) == expected
    assert out["input_ids"][0].tolist() == tok(expected)["input_ids"]
    assert int((out["input_ids"] == vtt.IMAGE_ID).sum()) == 3 * 4 + 2 * 4
    assert out["frames_per_clip"].tolist() == [3, 2]
    assert out["pixel_values"].shape == (5, 3, SIDE, SIDE)
    assert torch.equal(out["pixel_values"][3], out["pixel_values"][4])  # the static video
    assert not torch.equal(out["pixel_values"][0], out["pixel_values"][1])
    wrapped = PVCProcessor(
        processor.image_processor, tok, 4, 2, image_start="<img>", image_end="</img>"
    )
    assert wrapped.video_text(2) == f"Frame1: <img>{ctx * 4}</img>\nFrame2: <img>{ctx * 4}</img>\n"
    assert wrapped.image_text() == f"<img>{ctx * 8}</img>"
    with pytest.raises(ValueError, match="more <video> placeholders than the 0 videos"):
        processor("<video> and <image>", images=[image])
    with pytest.raises(ValueError, match="1 images and 1 videos given but the text has 0 <image>"):
        processor("<video> only", images=[image], videos=[video])
    with pytest.raises(ValueError, match="more <image> placeholders"):
        processor("<image><image>", images=[image])


def test_processor_decodes_a_video_path(processor):
    from vistoken.media import bundled_video

    two = PVCProcessor(processor.image_processor, processor.tokenizer, 4, 2, video_frames=2)
    out = two("<video>", videos=[bundled_video()])
    assert out["frames_per_clip"].tolist() == [2] and out["pixel_values"].shape == (
        2,
        3,
        SIDE,
        SIDE,
    )
    assert int((out["input_ids"] == vtt.IMAGE_ID).sum()) == 2 * 4


def test_processor_outputs_run_the_model_and_generate(pvc, processor):
    video = torch.randint(0, 255, (2, 3, SIDE, SIDE), dtype=torch.uint8)
    image = torch.randint(0, 255, (3, SIDE, SIDE), dtype=torch.uint8)
    batch = processor(["<video>What moves?", "Look: <image>ok"], images=[image], videos=[video])
    assert batch["attention_mask"].shape == batch["input_ids"].shape
    with torch.no_grad():
        logits = pvc(**batch).logits
    assert logits.shape == (*batch["input_ids"].shape, vtt.VOCAB) and torch.isfinite(logits).all()
    single = processor("Look: <image>ok", images=[image])
    new = pvc.generate(**single, max_new_tokens=3, do_sample=False)[
        :, single["input_ids"].shape[1] :
    ]
    # greedy decoding by hand, the whole prompt (pixels included) recomputed at every step
    ids = single["input_ids"]
    with torch.no_grad():
        for _ in range(3):
            step = pvc(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                pixel_values=single["pixel_values"],
                frames_per_clip=single["frames_per_clip"],
            ).logits[:, -1]
            ids = torch.cat([ids, step.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(new, ids[:, -3:])


def test_labels_give_the_language_model_loss(pvc, processor):
    image = torch.randint(0, 255, (3, SIDE, SIDE), dtype=torch.uint8)
    batch = processor("<image>cat", images=[image])
    labels = batch["input_ids"].masked_fill(batch["input_ids"] == vtt.IMAGE_ID, -100)
    with torch.no_grad():
        out = pvc(**batch, labels=labels)
    ce = torch.nn.functional.cross_entropy(out.logits[0, :-1], labels[0, 1:], ignore_index=-100)
    torch.testing.assert_close(out.loss, ce)


def test_save_load_round_trip_is_bit_identical(pvc, processor, tmp_path):
    image = torch.randint(0, 255, (3, SIDE, SIDE), dtype=torch.uint8)
    video = torch.randint(0, 255, (3, 3, SIDE, SIDE), dtype=torch.uint8)
    batch = processor("<video>and<image>", images=[image], videos=[video])
    pvc.save_pretrained(tmp_path)
    loaded = PVCForConditionalGeneration.from_pretrained(tmp_path).eval()
    register()
    auto = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert type(auto) is PVCForConditionalGeneration
    fields = ["tokens_per_frame", "temporal_layers", "image_repeats", "adaln", "time", "drop_cls"]
    fields += ["time_dim", "feature_layer", "image_token_id", "tie_word_embeddings"]
    assert [getattr(loaded.config, f) for f in fields] == [getattr(pvc.config, f) for f in fields]
    for sub in ("vision_config", "text_config"):
        a, b = getattr(loaded.config, sub), getattr(pvc.config, sub)
        assert (a.model_type, a.hidden_size, a.num_hidden_layers) == (
            b.model_type,
            b.hidden_size,
            b.num_hidden_layers,
        )
    assert loaded.config.model_type == "vistoken_pvc" and loaded.config.image_repeats == 2
    with torch.no_grad():
        ref = pvc(**batch).logits
        assert torch.equal(loaded(**batch).logits, ref)
        assert torch.equal(auto(**batch).logits, ref)
    proj = loaded.encoder._layers[-1].temporal_attn.proj.weight
    assert proj.abs().sum() > 0  # the perturbed new parts were loaded, not re-initialised


def test_model_bad_inputs_get_clear_errors(pvc, processor):
    image = torch.randint(0, 255, (3, SIDE, SIDE), dtype=torch.uint8)
    batch = dict(processor("<image>x", images=[image]))
    with pytest.raises(ValueError, match="needs frames_per_clip"):
        pvc(**{k: v for k, v in batch.items() if k != "frames_per_clip"})
    with pytest.raises(ValueError, match="sums to 3 frames but pixel_values holds 2"):
        pvc(**{**batch, "frames_per_clip": torch.tensor([3])})
    with pytest.raises(ValueError, match="8 image tokens .* 4 visual features"):
        pvc(
            **{
                **batch,
                "pixel_values": batch["pixel_values"][:1],
                "frames_per_clip": torch.tensor([1]),
            }
        )
    with pytest.raises(ValueError, match="clip lengths >= 1"):
        pvc(**{**batch, "frames_per_clip": torch.tensor([2, 0])})
    with pytest.raises(ValueError, match="adaln must be"):
        PVCConfig(adaln="sometimes")
    with pytest.raises(ValueError, match="tokens_per_frame must be"):
        PVCConfig(tokens_per_frame=0)
