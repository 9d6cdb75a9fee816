"""The reference VLM of the synthetic benchmark: a small LLaVA-OneVision trained here.

A real ``transformers`` ``LlavaOnevisionForConditionalGeneration`` built from a small config
(SigLIP tower on 112 px frames with 8 px patches = 14 x 14 patches, the 2-layer projector, the
model's own 2 x 2 video pooling to 7 x 7 = 49 tokens per frame, a Qwen2 LLM), with a word-level
tokenizer and the real ``LlavaOnevisionProcessor``, so every method and adapter runs on it exactly
as on LLaVA-OneVision-7B. A 16-frame video is 16 x 49 + 1 (newline) = 785 visual tokens; a
still image (``image_detail``) goes through the model's image path (anyres with one 112 x 112
tile: 196 base tokens + 14 x 14 tile tokens + 14 row newlines = 406).

:func:`load_reference` loads the checkpoint shipped in the package (``save_pretrained`` format,
trained by ``vistoken train-reference``, see :mod:`vistoken.eval.train`); :func:`build_reference`
makes the untrained model and processor it was trained from. :func:`prompts` turns benchmark
samples into a left-padded batch for ``model.generate`` and :func:`decode_answers` reads the
answers back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .synthetic import VOCAB, Sample

__all__ = [
    "DEFAULT_PATH",
    "FRAMES",
    "SIZE",
    "answer_token_ids",
    "build_reference",
    "decode_answers",
    "load_reference",
    "prompts",
]

#: Where the shipped checkpoint lives (model and processor, ``save_pretrained`` format).
DEFAULT_PATH = Path(__file__).resolve().parent / "reference_model"

#: The benchmark the reference model is trained on: frames per video and frame side in pixels.
FRAMES = 16
SIZE = 112
PATCH = 8

PAD, UNK, EOS = "<pad>", "<unk>", "<|im_end|>"
IMAGE, VIDEO = "<image>", "<video>"
_SPECIALS = (PAD, UNK, EOS, IMAGE, VIDEO)

#: The text after the visual placeholder: the question, then this cue; the answer follows.
CUE = "Answer:"

_WORD = r"[A-Za-z0-9]+|[^\sA-Za-z0-9]"


def _words(text: str) -> list[str]:
    return re.findall(_WORD, text)


def _question_words() -> list[str]:
    """Every word any question of the benchmark can contain (drawn from the generator)."""
    from .synthetic import PALETTE

    texts = [
        "Which letter is written in white?",
        "A white digit was shown in one frame only. Which digit was it?",
        *(f"What colour was the square in the {a} frame?" for a in ("first", "last")),
        # benchmark v2's order question, kept before v3's: it fixes the word ids ("circle"
        # after "or") that the shipped reference model was trained with
        *(f"Which appeared first: the {c} square or the {c} circle?" for c in PALETTE),
        *(f"Which colour appeared first: {c} or {c}?" for c in PALETTE),
        *(f"How many times did the {c} circle flash yellow?" for c in PALETTE),
        *(f"Which way did the {c} {s} move: left, right, up or down?"
          for c in PALETTE for s in ("square", "circle")),
        CUE,
    ]
    return [w for t in texts for w in _words(t)]


def tokenizer_words(tokenizer: Any) -> list[str]:
    """A word-level tokenizer's vocabulary in id order (what :func:`_tokenizer` rebuilds)."""
    vocab = tokenizer.get_vocab()
    words = sorted(vocab, key=vocab.get)
    if [vocab[w] for w in words] != list(range(len(words))):
        raise ValueError("the tokenizer's ids are not 0..n-1")
    return words


def _tokenizer(extra: Sequence[str] = (), words: Sequence[str] | None = None) -> Any:
    """The word-level tokenizer; ``extra`` words get the ids after the reference's own.

    ``words``: the vocabulary in id order to start from instead of this version's (a model
    trained on an earlier benchmark version keeps its own ids: see :func:`tokenizer_words`).
    """
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    base = [*_SPECIALS, *VOCAB, *_question_words()] if words is None else list(words)
    for w in [*base, *extra]:
        vocab.setdefault(w, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in _SPECIALS])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        unk_token=UNK,
        eos_token=EOS,
        padding_side="left",
        model_specific_special_tokens={"image_token": IMAGE, "video_token": VIDEO},
    )


def build_processor() -> Any:
    """The reference ``LlavaOnevisionProcessor``: 112 px frames, one-tile anyres images."""
    from transformers import (
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    side = {"height": SIZE, "width": SIZE}
    return LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(
            size=side, crop_size=side, image_grid_pinpoints=[[SIZE, SIZE]]
        ),
        video_processor=LlavaOnevisionVideoProcessor(size=side),
        tokenizer=_tokenizer(),
        num_image_tokens=(SIZE // PATCH) ** 2,
        vision_feature_select_strategy="full",
    )


def build_config(**over: Any) -> Any:
    """The reference ``LlavaOnevisionConfig`` (its sizes overridable for experiments)."""
    from transformers import LlavaOnevisionConfig

    tok = _tokenizer()
    vision = {
        "model_type": "siglip_vision_model",
        "image_size": SIZE,
        "patch_size": PATCH,
        "hidden_size": 96,
        "intermediate_size": 192,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    }
    text = {
        "model_type": "qwen2",
        "vocab_size": len(tok),
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
        "bos_token_id": None,
        "tie_word_embeddings": True,
    }
    vision.update(over.pop("vision", {}))
    text.update(over.pop("text", {}))
    cfg = {
        "vision_config": vision,
        "text_config": text,
        "image_token_id": tok.convert_tokens_to_ids(IMAGE),
        "video_token_id": tok.convert_tokens_to_ids(VIDEO),
        "image_grid_pinpoints": [[SIZE, SIZE]],
        "vision_feature_layer": -1,
        "vision_feature_select_strategy": "full",
        "tie_word_embeddings": True,
    }
    cfg.update(over)
    return LlavaOnevisionConfig(**cfg)


def build_reference(seed: int = 0, **over: Any) -> tuple[Any, Any]:
    """The untrained reference model (weights drawn from ``seed``) and its processor."""
    import torch
    from transformers import LlavaOnevisionForConditionalGeneration

    config = build_config(**over)
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaOnevisionForConditionalGeneration(config)
    return model, build_processor()


def load_reference(path: str | Path | None = None, *, device: Any = "cpu") -> tuple[Any, Any]:
    """The trained reference model (in eval mode) and its processor, from ``path``.

    ``path`` defaults to the checkpoint shipped in the package (:data:`DEFAULT_PATH`); nothing
    is downloaded. Raises FileNotFoundError naming the path when it holds no checkpoint.
    """
    from transformers import LlavaOnevisionForConditionalGeneration, LlavaOnevisionProcessor

    path = Path(DEFAULT_PATH if path is None else path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"no reference model at {path} (expected a save_pretrained directory with "
            "config.json; train one with 'vistoken train-reference --out DIR')"
        )
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(path, local_files_only=True)
    processor = LlavaOnevisionProcessor.from_pretrained(path, local_files_only=True)
    return model.to(device).eval(), processor


def prompt_text(s: Sample) -> str:
    """The prompt of one sample: the visual placeholder, the question and the answer cue."""
    return f"{IMAGE if s.qtype == 'image_detail' else VIDEO} {s.question} {CUE}"


def prompts(processor: Any, samples: Sequence[Sample], answers: bool = False) -> Any:
    """A left-padded batch (``BatchFeature``) of ``samples`` for ``model.generate``.

    Videos go to ``pixel_values_videos``, ``image_detail`` stills through the image path
    (``pixel_values``, ``image_sizes``). With ``answers=True`` each prompt is followed by its
    answer and the end token (teacher forcing, for training).
    """
    texts, images, videos = [], [], []
    for s in samples:
        text = prompt_text(s)
        if answers:
            text = f"{text} {s.answer}{EOS}"
        texts.append(text)
        if s.qtype == "image_detail":
            images.append(s.frames[0])
        else:
            videos.append(s.frames)
    kwargs: dict[str, Any] = {}
    if images:
        kwargs["images"] = images
    if videos:
        kwargs["videos"] = videos
    return processor(text=texts, padding=True, return_tensors="pt", **kwargs)


def answer_token_ids(processor: Any) -> dict[str, int]:
    """The token id of every answer word (:data:`~vistoken.eval.synthetic.VOCAB`)."""
    tok = processor.tokenizer
    return {a: tok.convert_tokens_to_ids(a) for a in VOCAB}


def decode_answers(processor: Any, generated: Any) -> list[str]:
    """The first generated word of each row of ``generated`` (new tokens only)."""
    tok = processor.tokenizer
    out = []
    for row in generated.tolist():
        words = [tok.convert_ids_to_tokens(i) for i in row]
        out.append(next((w for w in words if w not in _SPECIALS), ""))
    return out

