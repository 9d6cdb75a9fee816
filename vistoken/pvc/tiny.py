"""A tiny PVC made from the synthetic benchmark's reference VLM, as the authors made theirs
from InternVL2-8B.

:func:`from_reference` takes the trained reference ``LlavaOnevisionForConditionalGeneration``
(:mod:`vistoken.eval.reference`: SigLIP tower on 112 px frames, 14 x 14 patches, a Qwen2 LLM)
and builds a :class:`~vistoken.pvc.PVCForConditionalGeneration` around its parts: the tower
becomes a :class:`~vistoken.pvc.ProgressiveEncoder` (its weights carried over, the new
temporal attention and AdaLN zero-initialised), the LLM (decoder and tied head) is carried
over, and the compressor is new: pixel shuffle by 2 of the 14 x 14 grid to 49 tokens per frame
(the reference's own count after its 2 x 2 pooling, a quarter of the 196 patches, as PVC's
64 are a quarter of InternVL's 256), or by 1 for the uncompressed control (196 per frame).

The tokenizer is the reference's word-level one with the words of PVC's prompt layout added
at the end (``Frame1`` ... ``Frame{MAX_FRAMES}``), so every id of the reference keeps its
meaning; the LLM's embedding matrix grows by as many rows, each the mean of the old rows.
Prompts are the reference's (:func:`vistoken.eval.reference.prompt_text`): ``<video>`` becomes
``Frame1: <image>\\nFrame2: <image>\\n...`` and a still image one static-video block of
``image_repeats`` frames (:class:`~vistoken.pvc.PVCProcessor`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .configuration import PVCConfig
from .modeling import PVCForConditionalGeneration
from .processing import PVCProcessor

__all__ = ["DEFAULT_PATH", "MAX_FRAMES", "build_processor", "from_reference", "load_pvc",
           "prompts", "save"]

#: The tiny PVC shipped in the package (trained by ``vistoken train-pvc`` from the shipped
#: reference VLM; its card, log and arguments beside it).
DEFAULT_PATH = Path(__file__).resolve().parent / "tiny_model"

#: Frame labels the tiny PVC's tokenizer knows (``Frame1`` ... ``Frame64``).
MAX_FRAMES = 64
_FRAME_WORDS = tuple(f"Frame{i}" for i in range(1, MAX_FRAMES + 1))

_PROCESSOR_FILE = "pvc_processor.json"


def _tokenizer(words: Sequence[str] | None = None) -> Any:
    """The reference's tokenizer plus the frame labels; ``words``: the whole vocabulary in id
    order (a saved PVC's), else this version's reference words and the labels after them."""
    from ..eval.reference import _tokenizer as reference_tokenizer

    if words is not None:
        return reference_tokenizer(words=words)
    return reference_tokenizer(extra=_FRAME_WORDS)


def _image_processor(reference_processor: Any | None = None) -> Any:
    """One (3, 112, 112) row per picture, normalised as the reference's tower expects."""
    from transformers import SiglipImageProcessor

    from ..eval.reference import SIZE

    if reference_processor is None:
        from ..eval.reference import build_processor as reference_processor_of

        reference_processor = reference_processor_of()
    ref = reference_processor.video_processor
    return SiglipImageProcessor(
        size={"height": SIZE, "width": SIZE},
        resample=ref.resample,
        image_mean=list(ref.image_mean),
        image_std=list(ref.image_std),
    )


def build_processor(tokens_per_frame: int = 49, image_repeats: int = 4,
                    words: Sequence[str] | None = None) -> PVCProcessor:
    """The tiny PVC's processor (the reference's tokenizer plus frame labels; ``words``: its
    vocabulary in id order, as :func:`save` records it)."""
    return PVCProcessor(
        _image_processor(),
        _tokenizer(words),
        tokens_per_frame=tokens_per_frame,
        image_repeats=image_repeats,
        image_token="<image>",
    )


def from_reference(
    reference: Any | None = None,
    *,
    reference_processor: Any | None = None,
    tokens_per_frame: int = 49,
    progressive: bool = True,
    image_repeats: int = 4,
    seed: int = 0,
    **options: Any,
) -> tuple[PVCForConditionalGeneration, PVCProcessor]:
    """A PVC model and processor converted from the reference VLM (default: the shipped one).

    ``tokens_per_frame``: 49 (PVC's 4x compression of the 14 x 14 patches) or 196 (no
    compression). ``progressive=False``: the no-progressive control (``temporal_layers=0``,
    ``adaln="none"``: each frame compressed alone to the same count). ``options``: other
    :class:`~vistoken.pvc.PVCConfig` fields. The new parts draw their initial weights from
    ``seed`` (the global RNG is left alone). The reference model is not modified.

    The tokenizer extends ``reference_processor``'s (the shipped reference's when
    ``reference`` is None), so every word keeps the id the reference was trained with; with
    a ``reference`` and no processor, this version's reference tokenizer is assumed.
    """
    from ..eval.reference import load_reference, tokenizer_words

    if reference is None:
        reference, reference_processor = load_reference()
    cfg = reference.config
    words = None
    if reference_processor is not None:
        words = [*tokenizer_words(reference_processor.tokenizer), *_FRAME_WORDS]
    tok = _tokenizer(words)
    if cfg.text_config.vocab_size != len(tok) - MAX_FRAMES:
        raise ValueError(
            f"the reference's vocabulary has {cfg.text_config.vocab_size} rows, its tokenizer "
            f"{len(tok) - MAX_FRAMES} words: pass reference_processor= with the reference's own"
        )
    text_config = cfg.text_config.to_dict()
    text_config["vocab_size"] = len(tok)
    vision_config = cfg.vision_config.to_dict()
    # SigLIP's attention-pooling head makes a pooled vector nothing reads (LLaVA-OV uses the
    # patch features too): left out, it neither costs time nor sits untrained in stage 2
    vision_config["vision_use_head"] = False
    fields: dict[str, Any] = {
        "vision_config": vision_config,
        "text_config": text_config,
        "tokens_per_frame": tokens_per_frame,
        "image_repeats": image_repeats,
        "image_token_id": tok.convert_tokens_to_ids("<image>"),
        "tie_word_embeddings": True,
    }
    if not progressive:
        fields.update(temporal_layers=0, adaln="none")
    fields.update(options)
    config = PVCConfig(**fields)
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PVCForConditionalGeneration(config)
    inner = reference.model
    with torch.no_grad():
        model.encoder.load_tower_state_dict(
            {k: v for k, v in inner.vision_tower.state_dict().items()
             if not k.startswith("head.")})
        decoder = model.language_model.get_decoder()
        state = dict(inner.language_model.state_dict())
        old = state["embed_tokens.weight"]
        grown = old.mean(0, keepdim=True).expand(len(tok) - old.shape[0], -1)
        state["embed_tokens.weight"] = torch.cat([old, grown])
        decoder.load_state_dict(state)
        model.language_model.tie_weights()
    model.train(reference.training)
    return model, build_processor(model.encoder.frame_tokens, image_repeats, words)


def prompts(processor: PVCProcessor, samples: Sequence[Any]) -> Any:
    """A left-padded batch of benchmark samples for the tiny PVC (the reference's prompts)."""
    from ..eval.reference import prompt_text

    texts, images, videos = [], [], []
    for s in samples:
        texts.append(prompt_text(s))
        if s.qtype == "image_detail":
            images.append(s.frames[0].copy())
        else:
            videos.append(s.frames.copy())
    return processor(texts, images=images or None, videos=videos or None, padding=True,
                     padding_side="left")


def save(model: PVCForConditionalGeneration, processor: PVCProcessor, path: str | Path) -> None:
    """``save_pretrained`` of the model, and the processor's settings beside it."""
    path = Path(path)
    model.save_pretrained(path)
    from ..eval.reference import tokenizer_words

    (path / _PROCESSOR_FILE).write_text(json.dumps(
        {"tokens_per_frame": processor.tokens_per_frame,
         "image_repeats": processor.image_repeats,
         "words": tokenizer_words(processor.tokenizer)}, indent=2) + "\n")


def load_pvc(path: str | Path | None = None, *, device: Any = "cpu",
             ) -> tuple[PVCForConditionalGeneration, PVCProcessor]:
    """A tiny PVC saved by ``vistoken train-pvc`` (eval mode) and its processor; ``path``
    defaults to the one shipped in the package (:data:`DEFAULT_PATH`, offline)."""
    path = Path(DEFAULT_PATH if path is None else path)
    if not (path / "config.json").is_file() or not (path / _PROCESSOR_FILE).is_file():
        raise FileNotFoundError(
            f"no tiny PVC at {path} (expected config.json and {_PROCESSOR_FILE}; train one "
            "with 'vistoken train-pvc --out DIR')"
        )
    model = PVCForConditionalGeneration.from_pretrained(path, local_files_only=True)
    settings = json.loads((path / _PROCESSOR_FILE).read_text())
    return model.to(device).eval(), build_processor(**settings)
