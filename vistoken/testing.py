"""Test support: tiny random-weight VLMs of every supported family, and their inputs.

``vistoken.testing`` plays the part of transformers' ``testing_utils``: it is shipped in
the package but used by the test suite, benchmarks and anyone trying ``vt.apply``
without downloading a checkpoint (``vistoken`` itself never imports it). Each
builder makes a real transformers model class from a small config (a few hundred thousand
parameters, CPU-friendly) with deterministic weights, and ``*_inputs`` builds what that
family's processor would return (placeholder runs of the right length, pixels, grids,
``mm_token_type_ids``, left padding for batches). :func:`prototype_video` makes video-like
visual tokens for the compressors.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

VOCAB = 256
IMAGE_ID = 250
VIDEO_ID = 251
PAD_ID = 0


def prototype_video(
    frames: int, side: int = 14, dim: int = 896, k: int = 48, noise: float = 0.35, seed: int = 0
) -> Tensor:
    """(frames, side * side, dim) video-like tokens: side x side label maps of k prototypes,
    from slowly drifting smooth random fields, plus Gaussian noise. Regions persist across
    frames and similarities cluster sharply (SCC's counts jump by many components at single
    taus). Deterministic for a seed."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(k, dim, generator=g)
    base = torch.randn(1, k, 4, 4, generator=g)
    drift = torch.randn(1, k, 4, 4, generator=g) * 0.05
    fields = base + drift * torch.arange(frames).view(frames, 1, 1, 1)
    fields = torch.nn.functional.interpolate(fields, size=(side, side), mode="bicubic")
    labels = fields.argmax(1).reshape(frames, side * side)
    return protos[labels] + noise * torch.randn(frames, side * side, dim, generator=g)


def _text(**over: Any) -> dict[str, Any]:
    cfg = {
        "vocab_size": VOCAB,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "pad_token_id": PAD_ID,
    }
    cfg.update(over)
    return cfg


def _build(model_cls: Any, config: Any, seed: int, attn: str) -> Any:
    config._attn_implementation = attn
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    return model.eval()


def tiny_llava_onevision(seed: int = 0, attn: str = "sdpa", **text: Any) -> Any:
    """LlavaOnevisionForConditionalGeneration: SigLIP 56px/8px patches (7x7, pooled to 4x4
    = 16 tokens per video frame), Qwen2 LLM of width 64."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    config = LlavaOnevisionConfig(
        vision_config={
            "model_type": "siglip_vision_model",
            "image_size": 56,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
        },
        text_config={"model_type": "qwen2", **_text(**text)},
        image_token_id=IMAGE_ID,
        video_token_id=VIDEO_ID,
        image_grid_pinpoints=[[56, 56], [56, 112]],
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    return _build(LlavaOnevisionForConditionalGeneration, config, seed, attn)


def _qwen_text(**over: Any) -> dict[str, Any]:
    return _text(rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3]}, **over)


def _qwen_config(config_cls: Any, vision: dict[str, Any], text: dict[str, Any]) -> Any:
    """A Qwen2/2.5-VL config: vision tower of 2 heads, 4px patches, 2x2 merge, temporal
    patch 2 (plus ``vision``), the tiny Qwen2 LLM and the tiny token ids."""
    return config_cls(
        vision_config={
            "depth": 2,
            "num_heads": 2,
            "patch_size": 4,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            **vision,
        },
        text_config=_qwen_text(**text),
        image_token_id=IMAGE_ID,
        video_token_id=VIDEO_ID,
        vision_start_token_id=252,
        vision_end_token_id=253,
    )


def tiny_qwen2_vl(seed: int = 0, attn: str = "sdpa", **text: Any) -> Any:
    """Qwen2VLForConditionalGeneration: 4px patches, 2x2 merge, temporal patch 2."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    vision = {"embed_dim": 32, "hidden_size": 64, "mlp_ratio": 2}
    config = _qwen_config(Qwen2VLConfig, vision, text)
    return _build(Qwen2VLForConditionalGeneration, config, seed, attn)


def tiny_qwen2_5_vl(seed: int = 0, attn: str = "sdpa", **text: Any) -> Any:
    """Qwen2_5_VLForConditionalGeneration with the same sizes as ``tiny_qwen2_vl``."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "out_hidden_size": 64,
        "window_size": 16,
        "fullatt_block_indexes": [1],
    }
    config = _qwen_config(Qwen2_5_VLConfig, vision, text)
    return _build(Qwen2_5_VLForConditionalGeneration, config, seed, attn)


def tiny_internvl(seed: int = 0, attn: str = "sdpa", **text: Any) -> Any:
    """InternVLForConditionalGeneration: 32px tiles of 4px patches, pixel shuffle 0.5 ->
    16 tokens per tile."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    config = InternVLConfig(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": [32, 32],
            "patch_size": [4, 4],
        },
        text_config={"model_type": "qwen2", **_text(**text)},
        image_token_id=IMAGE_ID,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
    )
    return _build(InternVLForConditionalGeneration, config, seed, attn)


def _pad_left(rows: list[Tensor], pad: int = PAD_ID) -> tuple[Tensor, Tensor]:
    longest = max(r.numel() for r in rows)
    ids = torch.full((len(rows), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, longest - r.numel() :] = r
        mask[i, longest - r.numel() :] = 1
    return ids, mask


def _text_ids(n: int, gen: torch.Generator) -> Tensor:
    return torch.randint(1, 240, (n,), generator=gen)


def llava_onevision_inputs(
    model: Any, frames: list[int], text: int = 6, seed: int = 0, prompt_first: int = 3
) -> dict[str, Tensor]:
    """Video inputs for ``tiny_llava_onevision``: one video of ``frames[i]`` frames per
    sample, ``prompt_first`` text tokens before it and ``text`` after."""
    gen = torch.Generator().manual_seed(seed)
    size = model.config.vision_config.image_size
    per_frame = (-(-(size // model.config.vision_config.patch_size) // 2)) ** 2
    longest = max(frames)
    pixels = torch.zeros(len(frames), longest, 3, size, size)
    rows = []
    for i, f in enumerate(frames):
        pixels[i, :f] = torch.randn(f, 3, size, size, generator=gen)
        rows.append(
            torch.cat(
                (
                    _text_ids(prompt_first, gen),
                    torch.full((f * per_frame + 1,), VIDEO_ID),
                    _text_ids(text, gen),
                )
            )
        )
    if len(set(frames)) != 1:
        raise ValueError("LLaVA-OneVision batches videos of one frame count")
    ids, mask = _pad_left(rows)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values_videos": pixels}


def qwen_vl_inputs(
    model: Any,
    videos: list[tuple[int, int, int]],
    text: int = 6,
    seed: int = 0,
    prompt_first: int = 3,
    kind: str = "video",
) -> dict[str, Tensor]:
    """Inputs for ``tiny_qwen2_vl``/``tiny_qwen2_5_vl``: one video (or image, with
    ``kind="image"``) per sample with patch grid (t, h, w) (t a multiple of the temporal
    patch for videos, 1 for images; h, w multiples of the merge size)."""
    gen = torch.Generator().manual_seed(seed)
    vc = model.config.vision_config
    patch_dim = vc.in_channels * vc.temporal_patch_size * vc.patch_size**2
    m2 = vc.spatial_merge_size**2
    token = VIDEO_ID if kind == "video" else IMAGE_ID
    type_id = 2 if kind == "video" else 1
    rows, types, pixels = [], [], []
    for t, h, w in videos:
        n = t * h * w // m2
        pixels.append(torch.randn(t * h * w, patch_dim, generator=gen))
        rows.append(
            torch.cat(
                (
                    _text_ids(prompt_first, gen),
                    torch.tensor([252]),
                    torch.full((n,), token),
                    torch.tensor([253]),
                    _text_ids(text, gen),
                )
            )
        )
        types.append(
            torch.cat(
                (
                    torch.zeros(prompt_first + 1, dtype=torch.long),
                    torch.full((n,), type_id),
                    torch.zeros(1 + text, dtype=torch.long),
                )
            )
        )
    ids, mask = _pad_left(rows)
    mm_types, _ = _pad_left(types, pad=0)
    grid = torch.tensor(videos, dtype=torch.long)
    out = {"input_ids": ids, "attention_mask": mask, "mm_token_type_ids": mm_types}
    if kind == "video":
        out |= {"pixel_values_videos": torch.cat(pixels), "video_grid_thw": grid}
    else:
        out |= {"pixel_values": torch.cat(pixels), "image_grid_thw": grid}
    return out


def internvl_inputs(
    model: Any, frames: list[int], text: int = 6, seed: int = 0
) -> dict[str, Tensor]:
    """Inputs for ``tiny_internvl``: per sample, ``frames[i]`` frames, each entering as an
    image between text tokens ("Frame k: <img>...</img>"-like layout)."""
    gen = torch.Generator().manual_seed(seed)
    vc = model.config.vision_config
    size = vc.image_size[0]
    per_tile = int((size // vc.patch_size[0]) ** 2 * model.config.downsample_ratio**2)
    rows, pixels = [], []
    for f in frames:
        parts = [_text_ids(2, gen)]
        for _ in range(f):
            parts += [_text_ids(2, gen), torch.full((per_tile,), IMAGE_ID)]
        parts.append(_text_ids(text, gen))
        rows.append(torch.cat(parts))
        pixels.append(torch.randn(f, 3, size, size, generator=gen))
    ids, mask = _pad_left(rows)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": torch.cat(pixels)}


def llava_onevision_image_inputs(
    model: Any, sizes: list[tuple[int, int]], text: int = 6, seed: int = 0
) -> dict[str, Tensor]:
    """Single-image inputs for ``tiny_llava_onevision``: one image of (height, width)
    ``sizes[i]`` per sample. Like the processor, the placeholder count is the length of
    the packed anyres features (asked of the model itself)."""
    from transformers.models.llava_onevision.modeling_llava_onevision import (
        image_size_to_num_patches,
    )

    gen = torch.Generator().manual_seed(seed)
    cfg = model.config
    size = cfg.vision_config.image_size
    counts = [
        image_size_to_num_patches(torch.tensor(s), cfg.image_grid_pinpoints, size) for s in sizes
    ]
    pixels = torch.zeros(len(sizes), max(counts), 3, size, size)
    for i, n in enumerate(counts):
        pixels[i, :n] = torch.randn(n, 3, size, size, generator=gen)
    image_sizes = torch.tensor(sizes)
    with torch.no_grad():
        feats = model.model.get_image_features(
            pixels, image_sizes, batch_num_images=torch.ones(len(sizes), dtype=torch.long)
        ).pooler_output
    rows = [
        torch.cat((_text_ids(3, gen), torch.full((f.shape[0],), IMAGE_ID), _text_ids(text, gen)))
        for f in feats
    ]
    ids, mask = _pad_left(rows)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values": pixels,
        "image_sizes": image_sizes,
        "batch_num_images": torch.ones(len(sizes), dtype=torch.long),
    }


# -- real processors for the tiny models ----------------------------------------------------

#: special tokens of each family's tiny tokenizer, at the ids the tiny models use
_SPECIAL_IDS = {
    "llava-onevision": {IMAGE_ID: "<image>", VIDEO_ID: "<video>"},
    "qwen2-vl": {
        IMAGE_ID: "<|image_pad|>",
        VIDEO_ID: "<|video_pad|>",
        252: "<|vision_start|>",
        253: "<|vision_end|>",
    },
    "internvl": {IMAGE_ID: "<IMG_CONTEXT>", VIDEO_ID: "<video>", 252: "<img>", 253: "</img>"},
}
_NAMED_TOKENS = {
    "llava-onevision": {"image_token": "<image>", "video_token": "<video>"},
    "qwen2-vl": {
        "image_token": "<|image_pad|>",
        "video_token": "<|video_pad|>",
        "vision_start_token": "<|vision_start|>",
        "vision_end_token": "<|vision_end|>",
    },
    "internvl": {
        "context_image_token": "<IMG_CONTEXT>",
        "start_image_token": "<img>",
        "end_image_token": "</img>",
        "video_token": "<video>",
    },
}
#: what the chat template writes for an image / a video content item
_PLACEHOLDERS = {
    "llava-onevision": ("<image>", "<video>"),
    "qwen2-vl": (
        "<|vision_start|><|image_pad|><|vision_end|>",
        "<|vision_start|><|video_pad|><|vision_end|>",
    ),
    "internvl": ("<IMG_CONTEXT>", "<video>"),
}
IM_START_ID = 254
IM_END_ID = 255

_CHAT_TEMPLATE = (
    "{%- for m in messages -%}"
    "<|im_start|>{{ m['role'] }}{{ '\\n' }}"
    "{%- if m['content'] is string -%}{{ m['content'] }}"
    "{%- else -%}{%- for c in m['content'] -%}"
    "{%- if c['type'] == 'image' -%}IMAGE"
    "{%- elif c['type'] == 'video' -%}VIDEO"
    "{%- else -%}{{ c['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "<|im_end|>{{ '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant{{ '\\n' }}{%- endif -%}"
)


def tiny_tokenizer(specials: dict[int, str], named: dict[str, str] | None = None) -> Any:
    """A character-level ``PreTrainedTokenizerFast`` of ``VOCAB`` ids, built offline.

    Id 0 is ``<pad>``, 1 ``<unk>``, then printable ASCII and ``"\\n"`` one id each;
    ``specials`` (id -> token) are special tokens at those exact ids (``<|im_start|>`` and
    ``<|im_end|>``, the end-of-sequence token, are always at ``IM_START_ID``/``IM_END_ID``)
    and every other id is an unused filler. ``named`` sets model-specific attributes such
    as ``tokenizer.image_token`` (and ``image_token_id``), as hub tokenizers have them.
    """
    from tokenizers import AddedToken, Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    specials = {**specials, IM_START_ID: "<|im_start|>", IM_END_ID: "<|im_end|>"}
    vocab = {"<pad>": PAD_ID, "<unk>": 1}
    for ch in [chr(c) for c in range(32, 127)] + ["\n"]:
        vocab[ch] = len(vocab)
    if any(i < len(vocab) or i >= VOCAB for i in specials):
        raise ValueError(f"special token ids must lie in [{len(vocab)}, {VOCAB})")
    for i in range(len(vocab), VOCAB):
        vocab[specials.get(i, f"<unused{i}>")] = i
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in ["<pad>", *specials.values()]]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<|im_end|>",
        model_specific_special_tokens=dict(named or {}),
    )


def tiny_processor(family: str) -> Any:
    """The real transformers processor of ``family`` sized for its tiny model, built offline.

    - ``"llava-onevision"``: ``LlavaOnevisionProcessor`` (56px SigLIP frames, 7x7 patches =
      49 tokens per crop, anyres pinpoints [[56, 56], [56, 112]]) for ``tiny_llava_onevision``;
    - ``"qwen2-vl"``: ``Qwen2VLProcessor`` (4px patches, 2x2 merge, temporal patch 2, images
      and frames resized to at most 32x32 pixels) for ``tiny_qwen2_vl``, and
      ``"qwen2.5-vl"``: the same as ``Qwen2_5_VLProcessor`` (which adds
      ``second_per_grid_ts`` for videos) for ``tiny_qwen2_5_vl``;
    - ``"internvl"``: ``InternVLProcessor`` (``GotOcr2ImageProcessor`` 32px tiles, up to 4
      plus a thumbnail, and ``InternVLVideoProcessor`` 32px frames, 16 tokens each) for
      ``tiny_internvl``.

    The tokenizer (``tiny_tokenizer``) puts the image / video placeholder tokens at
    ``IMAGE_ID`` / ``VIDEO_ID`` (and Qwen's vision start / end, InternVL's ``<img>`` /
    ``</img>``, at 252 / 253), the ids the tiny models are configured with, so the
    processor's outputs go to the model unchanged. A minimal chat template writes the
    family's placeholder for ``{"type": "image"}`` / ``{"type": "video"}`` items.
    """
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLProcessor,
        InternVLVideoProcessor,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    qwen25 = family == "qwen2.5-vl"
    family = "qwen2-vl" if qwen25 else family
    if family not in _SPECIAL_IDS:
        known = sorted([*_SPECIAL_IDS, "qwen2.5-vl"])
        raise ValueError(f"unknown family {family!r}; expected one of {known}")
    tokenizer = tiny_tokenizer(_SPECIAL_IDS[family], _NAMED_TOKENS[family])
    image, video = _PLACEHOLDERS[family]
    template = _CHAT_TEMPLATE.replace("IMAGE", image).replace("VIDEO", video)
    if family == "llava-onevision":
        side = {"height": 56, "width": 56}
        return LlavaOnevisionProcessor(
            image_processor=LlavaOnevisionImageProcessor(
                size=side, crop_size=side, image_grid_pinpoints=[[56, 56], [56, 112]]
            ),
            video_processor=LlavaOnevisionVideoProcessor(size=side),
            tokenizer=tokenizer,
            num_image_tokens=(56 // 8) ** 2,
            vision_feature_select_strategy="full",
            chat_template=template,
        )
    if family == "qwen2-vl":
        sizes = {
            "patch_size": 4,
            "merge_size": 2,
            "temporal_patch_size": 2,
            "min_pixels": 16 * 16,
            "max_pixels": 32 * 32,
        }
        processor_cls = Qwen2_5_VLProcessor if qwen25 else Qwen2VLProcessor
        return processor_cls(
            image_processor=Qwen2VLImageProcessor(**sizes),
            video_processor=Qwen2VLVideoProcessor(**sizes, cap_pixels_per_frame=False),
            tokenizer=tokenizer,
            chat_template=template,
        )
    side = {"height": 32, "width": 32}
    return InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size=side, max_patches=4),
        video_processor=InternVLVideoProcessor(size=side),
        tokenizer=tokenizer,
        image_seq_length=int((32 // 4) ** 2 * 0.5**2),
        chat_template=template,
    )


# -- Qwen3-VL and Qwen3.5 -------------------------------------------------------------------


def _qwen3_vision(**over: Any) -> dict[str, Any]:
    """A Qwen3-VL/Qwen3.5 vision tower: 2 blocks of width 32, 4px patches, 2x2 merge,
    temporal patch 2, an 8x8 learned position grid, output width 64."""
    cfg = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "patch_size": 4,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": 64,
        "num_position_embeddings": 64,
    }
    cfg.update(over)
    return cfg


def _qwen3_ids() -> dict[str, int]:
    return {
        "image_token_id": IMAGE_ID,
        "video_token_id": VIDEO_ID,
        "vision_start_token_id": 252,
        "vision_end_token_id": 253,
    }


def tiny_qwen3_vl(seed: int = 0, attn: str = "sdpa", **text: Any) -> Any:
    """Qwen3VLForConditionalGeneration: the tiny Qwen3-VL vision tower with DeepStack
    levels from both of its blocks (added after LLM layers 0 and 1), and a 4-layer Qwen3
    LLM of width 64 (head_dim 16) with interleaved M-RoPE."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    config = Qwen3VLConfig(
        vision_config=_qwen3_vision(deepstack_visual_indexes=[0, 1]),
        text_config=_qwen3_text(**text),
        **_qwen3_ids(),
    )
    return _build(Qwen3VLForConditionalGeneration, config, seed, attn)


def _qwen3_text(**over: Any) -> dict[str, Any]:
    rope = {"rope_type": "default", "mrope_section": [2, 3, 3], "mrope_interleaved": True}
    return _text(num_hidden_layers=4, head_dim=16, rope_parameters=rope, **over)


def tiny_qwen3_vl_moe(seed: int = 0, attn: str = "sdpa", **text: Any) -> Any:
    """Qwen3VLMoeForConditionalGeneration: ``tiny_qwen3_vl`` with 4 experts of width 32
    (2 per token) in every LLM layer."""
    from transformers import Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration

    moe = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}
    config = Qwen3VLMoeConfig(
        vision_config=_qwen3_vision(deepstack_visual_indexes=[0, 1]),
        text_config=_qwen3_text(**{**moe, **text}),
        **_qwen3_ids(),
    )
    return _build(Qwen3VLMoeForConditionalGeneration, config, seed, attn)


#: the tiny Qwen3.5 LLM's layers: Gated DeltaNet ("linear_attention") and full attention
QWEN3_5_LAYERS = (
    "linear_attention",
    "full_attention",
    "linear_attention",
    "full_attention",
    "linear_attention",
    "linear_attention",
)


def tiny_qwen3_5(seed: int = 0, attn: str = "sdpa", **text: Any) -> Any:
    """Qwen3_5ForConditionalGeneration: the tiny Qwen3-VL vision tower (no DeepStack) and
    a 6-layer hybrid LLM of width 64, ``QWEN3_5_LAYERS`` (full attention at 1 and 3),
    gated attention of head_dim 32 with partial rotary (a quarter, interleaved M-RoPE),
    Gated DeltaNet of 2 key / 4 value heads of 8 channels."""
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration

    rope = {"rope_type": "default", "mrope_section": [2, 1, 1], "mrope_interleaved": True}
    hybrid = {
        "num_hidden_layers": len(QWEN3_5_LAYERS),
        "layer_types": list(QWEN3_5_LAYERS),
        "head_dim": 32,
        "rope_parameters": rope,
        "partial_rotary_factor": 0.25,
        "linear_key_head_dim": 8,
        "linear_value_head_dim": 8,
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 4,
    }
    config = Qwen3_5Config(
        vision_config=_qwen3_vision(),
        text_config=_text(**{**hybrid, **text}),
        **_qwen3_ids(),
    )
    return _build(Qwen3_5ForConditionalGeneration, config, seed, attn)


def qwen3_vl_inputs(
    model: Any,
    items: list[tuple[int, int, int]],
    text: int = 6,
    seed: int = 0,
    prompt_first: int = 3,
    kind: str = "video",
    stamp: int = 3,
) -> dict[str, Tensor]:
    """Inputs for ``tiny_qwen3_vl``/``tiny_qwen3_vl_moe``/``tiny_qwen3_5``: one video (or
    image, ``kind="image"``, t = 1) per sample with patch grid (t, h, w) (t temporal
    patches of two frames; h, w multiples of the merge size), laid out as the Qwen3-VL
    processor does: a video is one ``<vision_start> <video_pad>*(h*w/4) <vision_end>``
    block per temporal patch, each after ``stamp`` text tokens standing for its timestamp
    ("<0.5 seconds>"); an image is one block."""
    gen = torch.Generator().manual_seed(seed)
    vc = model.config.vision_config
    patch_dim = vc.in_channels * vc.temporal_patch_size * vc.patch_size**2
    m2 = vc.spatial_merge_size**2
    video = kind == "video"
    token, type_id = (VIDEO_ID, 2) if video else (IMAGE_ID, 1)
    rows, types, pixels = [], [], []
    for t, h, w in items:
        blocks = t if video else 1
        per = h * w // m2
        pixels.append(torch.randn(t * h * w, patch_dim, generator=gen))
        ids = [_text_ids(prompt_first, gen)]
        tt = [torch.zeros(prompt_first, dtype=torch.long)]
        for _ in range(blocks):
            lead = stamp if video else 0
            ids += [_text_ids(lead, gen), torch.tensor([252]), torch.full((per,), token)]
            ids.append(torch.tensor([253]))
            tt += [torch.zeros(lead + 1, dtype=torch.long), torch.full((per,), type_id)]
            tt.append(torch.zeros(1, dtype=torch.long))
        ids.append(_text_ids(text, gen))
        tt.append(torch.zeros(text, dtype=torch.long))
        rows.append(torch.cat(ids))
        types.append(torch.cat(tt))
    ids, mask = _pad_left(rows)
    mm_types, _ = _pad_left(types, pad=0)
    grid = torch.tensor(items, dtype=torch.long)
    out = {"input_ids": ids, "attention_mask": mask, "mm_token_type_ids": mm_types}
    if video:
        out |= {"pixel_values_videos": torch.cat(pixels), "video_grid_thw": grid}
    else:
        out |= {"pixel_values": torch.cat(pixels), "image_grid_thw": grid}
    return out


def tiny_qwen3_processor() -> Any:
    """The real ``Qwen3VLProcessor`` (the processor of Qwen3-VL and of Qwen3.5) sized for
    ``tiny_qwen3_vl``/``tiny_qwen3_5``, built offline: ``Qwen2VLImageProcessor`` and
    ``Qwen3VLVideoProcessor`` with 4px patches, 2x2 merge, temporal patch 2, at most 32x32
    pixels per image or frame (of up to 8 frames), and the character-level
    ``tiny_tokenizer`` with Qwen's placeholder, vision start / end tokens at the tiny
    models' ids. The chat template
    writes ``<|vision_start|><|image_pad|><|vision_end|>`` for an image and
    ``<|video_pad|>`` for a video (the processor expands it into one timestamped block per
    temporal patch)."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    tokenizer = tiny_tokenizer(_SPECIAL_IDS["qwen2-vl"], _NAMED_TOKENS["qwen2-vl"])
    template = _CHAT_TEMPLATE.replace("IMAGE", _PLACEHOLDERS["qwen2-vl"][0])
    template = template.replace("VIDEO", "<|video_pad|>")
    sizes = {"patch_size": 4, "merge_size": 2, "temporal_patch_size": 2}
    image = {"shortest_edge": 16 * 16, "longest_edge": 32 * 32}
    # a video's budget is over all its frames: 32x32 pixels for each of up to 8 frames
    video = {"shortest_edge": 16 * 16, "longest_edge": 8 * 32 * 32}
    return Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(**sizes, size=image),
        video_processor=Qwen3VLVideoProcessor(
            **sizes, size=video, do_sample_frames=False, cap_pixels_per_frame=False
        ),
        tokenizer=tokenizer,
        chat_template=template,
    )


# -- Gemma 4 --------------------------------------------------------------------------------

GEMMA4_BOI_ID = 252
GEMMA4_EOI_ID = 253
GEMMA4_AUDIO_ID = 249
#: the processor's smallest soft-token budget per image / frame (it accepts 70, 140, ...)
GEMMA4_MAX_SOFT_TOKENS = 70


def tiny_gemma4(seed: int = 0, attn: str = "sdpa", **text: Any) -> Any:
    """Gemma4ForConditionalGeneration with every part of the real design, small: a vision
    tower of 2px patches pooled 2x2 into soft tokens (a 16x16-pixel image is 4x4 = 16 soft
    tokens); an LLM of width 64 with six layers [sliding, sliding, full] x 2 (sliding
    window 16, full-attention layers with their own head_dim 32), soft tokens of one image
    attending bidirectionally (``use_bidirectional_attention="vision"``), Per-Layer
    Embeddings (8 per layer) and the last two layers sharing earlier layers' KV
    (``num_kv_shared_layers=2``), as in Gemma 4 E2B/E4B."""
    from transformers import Gemma4Config, Gemma4ForConditionalGeneration

    cfg = {
        **_text(),
        "num_hidden_layers": 6,
        "head_dim": 16,
        "global_head_dim": 32,
        "layer_types": ["sliding_attention", "sliding_attention", "full_attention"] * 2,
        "sliding_window": 16,
        "hidden_size_per_layer_input": 8,
        "vocab_size_per_layer_input": VOCAB,
        "use_bidirectional_attention": "vision",
        "num_kv_shared_layers": 2,
        "bos_token_id": 2,
        "eos_token_id": IM_END_ID,
    }
    cfg.update(text)
    config = Gemma4Config(
        text_config=cfg,
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "head_dim": 8,
            "patch_size": 2,
            "pooling_kernel_size": 2,
            "position_embedding_size": 64,
        },
        image_token_id=IMAGE_ID,
        video_token_id=VIDEO_ID,
        boi_token_id=GEMMA4_BOI_ID,
        eoi_token_id=GEMMA4_EOI_ID,
        audio_token_id=GEMMA4_AUDIO_ID,
    )
    return _build(Gemma4ForConditionalGeneration, config, seed, attn)


def _gemma4_patches(
    vc: Any, grid: tuple[int, int], count: int, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """(count, P, 3 p^2) pixels in [0, 1] and (count, P, 2) patch (x, y) positions of
    ``count`` frames with an (H, W) soft-token grid, padded to P = 70 k^2 patches with -1
    positions, as Gemma 4's processors lay them out."""
    k, p = vc.pooling_kernel_size, vc.patch_size
    ph, pw = grid[0] * k, grid[1] * k
    total = GEMMA4_MAX_SOFT_TOKENS * k * k
    if ph * pw > total:
        raise ValueError(f"a {grid} soft-token grid exceeds {GEMMA4_MAX_SOFT_TOKENS} soft tokens")
    pixels = torch.zeros(count, total, 3 * p * p)
    pixels[:, : ph * pw] = torch.rand(count, ph * pw, 3 * p * p, generator=gen)
    xy = torch.stack(torch.meshgrid(torch.arange(pw), torch.arange(ph), indexing="xy"), -1)
    pos = torch.full((count, total, 2), -1, dtype=torch.long)
    pos[:, : ph * pw] = xy.reshape(ph * pw, 2)
    return pixels, pos


def gemma4_inputs(
    model: Any,
    grids: list[tuple[int, int, int]],
    kind: str = "image",
    text: int = 6,
    seed: int = 0,
    prompt_first: int = 3,
) -> dict[str, Tensor]:
    """Inputs for ``tiny_gemma4``: per sample one image (``kind="image"``, grid (1, H, W)
    in soft tokens) or one video of t frames (``kind="video"``, grid (t, H, W)), laid out
    as ``Gemma4Processor`` writes them: ``<boi>`` + H*W placeholders + ``<eoi>`` per image,
    and per video frame a 5-character ``mm:ss`` timestamp and a space before its block,
    blocks separated by a space; ``mm_token_type_ids`` 1 / 2 on the placeholders; left
    padding."""
    if kind not in ("image", "video"):
        raise ValueError(f"kind must be 'image' or 'video', got {kind!r}")
    gen = torch.Generator().manual_seed(seed)
    vc = model.config.vision_config
    token, type_id = (IMAGE_ID, 1) if kind == "image" else (VIDEO_ID, 2)
    rows, pixels, positions = [], [], []
    for t, h, w in grids:
        if kind == "image" and t != 1:
            raise ValueError(f"an image grid has t = 1, got {(t, h, w)}")
        pix, pos = _gemma4_patches(vc, (h, w), t, gen)
        pixels.append(pix)
        positions.append(pos)
        parts = [_text_ids(prompt_first, gen)]
        for f in range(t):
            if kind == "video":
                stamp = f"00:{f:02d} " if f == 0 else f" 00:{f:02d} "
                parts.append(torch.tensor([ord(c) - 30 for c in stamp]))
            parts += [
                torch.tensor([GEMMA4_BOI_ID]),
                torch.full((h * w,), token),
                torch.tensor([GEMMA4_EOI_ID]),
            ]
        parts.append(_text_ids(text, gen))
        rows.append(torch.cat(parts))
    ids, mask = _pad_left(rows)
    out = {
        "input_ids": ids,
        "attention_mask": mask,
        "mm_token_type_ids": (ids == token).long() * type_id,
    }
    if kind == "image":
        out |= {"pixel_values": torch.cat(pixels), "image_position_ids": torch.cat(positions)}
    else:
        out |= {
            "pixel_values_videos": torch.cat(pixels),
            "video_position_ids": torch.cat(positions),
            "num_frames_per_video": torch.tensor([g[0] for g in grids]),
        }
    return out


_GEMMA4_TOKENS = {
    IMAGE_ID: "<|image|>",
    VIDEO_ID: "<|video|>",
    GEMMA4_BOI_ID: "<|image>",
    GEMMA4_EOI_ID: "<image|>",
    GEMMA4_AUDIO_ID: "<|audio|>",
    247: "<|audio>",
    248: "<audio|>",
}


def tiny_gemma4_processor() -> Any:
    """The real ``Gemma4Processor`` sized for ``tiny_gemma4``, built offline:
    ``Gemma4ImageProcessor`` / ``Gemma4VideoProcessor`` with 2px patches, 2x2 pooling and
    the smallest soft-token budget (70 per image / frame: a square image becomes 32x32
    pixels = 8x8 soft tokens), the default audio feature extractor, and ``tiny_tokenizer``
    with Gemma 4's image / video / begin- and end-of-image (and audio) tokens at the tiny
    model's ids. A minimal chat template writes ``<|image|>`` / ``<|video|>`` for
    ``{"type": "image"}`` / ``{"type": "video"}`` items (the processor expands them)."""
    from transformers import (
        Gemma4AudioFeatureExtractor,
        Gemma4ImageProcessor,
        Gemma4Processor,
        Gemma4VideoProcessor,
    )

    named = {
        "image_token": "<|image|>",
        "boi_token": "<|image>",
        "eoi_token": "<image|>",
        "audio_token": "<|audio|>",
        "boa_token": "<|audio>",
        "eoa_token": "<audio|>",
    }
    sizes = {"patch_size": 2, "pooling_kernel_size": 2, "max_soft_tokens": GEMMA4_MAX_SOFT_TOKENS}
    template = _CHAT_TEMPLATE.replace("IMAGE", "<|image|>").replace("VIDEO", "<|video|>")
    return Gemma4Processor(
        feature_extractor=Gemma4AudioFeatureExtractor(),
        image_processor=Gemma4ImageProcessor(**sizes),
        tokenizer=tiny_tokenizer(_GEMMA4_TOKENS, named),
        video_processor=Gemma4VideoProcessor(**sizes, num_frames=4),
        chat_template=template,
        image_seq_length=GEMMA4_MAX_SOFT_TOKENS,
    )
