"""Every contact vistoken has with the names transformers passes between its modules.

The hooks of ``vt.apply`` and FastV read and rewrite a forward's keyword arguments before
the forward runs. This module is the only code that knows what those arguments are called
and how they are shaped; the rest of ``vistoken.models`` goes through it. When a release
renames one of them, this is the one file to change.

Assumptions about transformers internals, each one a place a release can break us (checked
on every CI run by the model tests at both ends of the tested range, ``TESTED``):

1. The KV cache reaches a forward as the keyword ``cache`` (transformers >= 5.24) or
   ``past_key_values`` (<= 5.23). In 5.24 the old name survives through a
   ``deprecate_kwarg`` shim that renames it *inside* ``forward``, after forward pre-hooks
   ran, so a hook must read both names and write the one the forward's signature takes
   (:func:`cache_key`, read once at ``vt.apply``; a forward that takes neither is refused
   at once, so the next rename fails loudly instead of silently).
2. A cache object has ``get_seq_length(layer_idx=0)``; an empty ``DynamicCache`` is falsy,
   so presence is always tested with ``is not None``. ``DynamicCache(config=...)`` builds an
   empty one for a text config.
3. The top-level forward takes a 2-D ``attention_mask`` (B, L) (1 = token, 0 = padding) and
   ``position_ids`` (B, L) for 1-D RoPE; Qwen-VL families pass (3, B, L) or, from
   ``generate()``, (4, B, L) with the text row first (the family adapters know which).
4. Decoder layers get ``hidden_states`` as the first positional argument or a keyword,
   ``position_embeddings=(cos, sin)`` (B|1, L, head_dim) and, as ``attention_mask``, what
   the mask interface built: None, 4-D bool (sdpa), 4-D additive float (eager) or 2-D
   (flash attention).
5. ``config._attn_implementation`` names the attention backend ("sdpa", "eager",
   "flash_attention_2", ...).
6. The decoder stack is ``<inner>.language_model.layers`` with ``self_attn.q_proj/k_proj``
   (optional ``q_norm/k_norm``) and ``input_layernorm`` per layer (FastV re-scores with
   them); the inner multimodal module is ``model.model``.
7. ``generate()`` (the whole tested range) encodes pixels itself, passes the features as
   ``mm_encoder_outputs`` (a dict; ``{}`` for a text-only prompt) and may drop
   ``image_grid_thw``/``video_grid_thw`` before the forward (families.py reads the grid off
   the M-RoPE positions then).
8. The top-level ``*ForConditionalGeneration.forward`` computes the loss from ``labels``
   against the logits it returns; vt.apply refuses ``labels`` (their columns would not
   follow the shortened sequence).

13. Qwen3-VL / Qwen3.5 vision outputs (``get_image_features``/``get_video_features``,
    and ``mm_encoder_outputs`` from ``generate()``) carry ``pooler_output`` as one tensor
    per image or video (a tuple) and, for Qwen3-VL, ``deepstack_features``: one such tuple
    per DeepStack level; the text model takes ``visual_pos_masks`` (B, L) and
    ``deepstack_visual_embeds`` (a list of (visual tokens, D), row-major over the mask) and
    adds level j after decoder layer j. ``vision_config.deepstack_visual_indexes`` lists
    the levels.
14. Hybrid LLMs (Qwen3.5) name each decoder layer's kind in ``text_config.layer_types``
    ("full_attention", "linear_attention"); a linear-attention layer has no ``self_attn``,
    receives a 2-D padding mask (or None) and keeps recurrent state in the cache, whose
    ``get_seq_length(i)`` raises for such a layer ``i`` (``get_seq_length()`` reads the
    first full-attention layer). A gated attention's ``q_proj`` gives per head the query
    and then its output gate (2 * head_dim).
15. A video processor decodes a video file in ``fetch_videos(urls, sample_indices_fn)``,
    with torchcodec only; ``transformers.video_utils.load_video(..., backend="pyav")``
    decodes the same file with PyAV (:func:`decode_videos_with_pyav`, for lmms-eval's
    wrappers that hand the processor video paths).

Family-specific layouts (where visual features sit, M-RoPE, ``rope_deltas``,
``mm_token_type_ids``, vision-tower grids) live in ``families.py``.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

from torch import Tensor

#: the keyword names the KV cache has had, newest first
CACHE_KEYS: tuple[str, ...] = ("cache", "past_key_values")
MASK_KEY = "attention_mask"
POSITION_KEY = "position_ids"
ROTARY_KEY = "position_embeddings"

#: (oldest, newest) transformers release the model tests ran on (both ends run in CI)
TESTED: tuple[str, str] = ("5.19.0", "5.24.0")

_warned: set[str] = set()


def version() -> str:
    """The installed transformers version."""
    import transformers

    return str(transformers.__version__)


def _release(v: str) -> tuple[int, ...]:
    parts = []
    for p in v.split("+")[0].split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if not p.isdigit():
            break
    return tuple(parts)


def in_tested_range(v: str) -> bool:
    """Whether release ``v`` lies within the tested range, compared by minor release
    (a patch release newer than the newest tested one of the same minor counts as tested)."""
    lo, hi = (_release(x) for x in TESTED)
    r = _release(v)
    return lo <= r and r[:2] <= hi[:2]


def warn_if_untested() -> None:
    """Warn once per process when transformers is outside the tested range."""
    v = version()
    if v in _warned or in_tested_range(v):
        return
    _warned.add(v)
    warnings.warn(
        f"vistoken's model integration was tested with transformers {TESTED[0]} to "
        f"{TESTED[1]}; this is {v}. It may work, but check the results (or install a "
        "version in the tested range).",
        UserWarning,
        stacklevel=3,
    )


def cache_key(forward: Callable[..., Any], what: str) -> str:
    """The keyword under which ``forward`` takes its KV cache: "cache" or "past_key_values".

    Read from the signature (``inspect`` follows the deprecation shim's ``__wrapped__``).
    Raises TypeError when the forward takes neither, naming the transformers version.
    """
    params = inspect.signature(forward).parameters
    for key in CACHE_KEYS:
        if key in params:
            return key
    raise TypeError(
        f"{what}.forward takes its KV cache under neither of {list(CACHE_KEYS)} "
        f"(transformers {version()}); vistoken supports transformers {TESTED[0]} to "
        f"{TESTED[1]}: vistoken/models/_hf.py needs the new name"
    )


def get_cache(kwargs: dict[str, Any]) -> Any | None:
    """The KV cache in a forward's keyword arguments, under either name, or None."""
    for key in CACHE_KEYS:
        value = kwargs.get(key)
        if value is not None:
            return value
    return None


def put_cache(kwargs: dict[str, Any], key: str, cache: Any) -> None:
    """Set the cache under ``key`` (the forward's own name), dropping the other names."""
    for k in CACHE_KEYS:
        kwargs.pop(k, None)
    kwargs[key] = cache


def cached_tokens(cache: Any | None, layer: int = 0) -> int:
    """How many tokens ``cache`` holds for ``layer`` (0 for no cache)."""
    return int(cache.get_seq_length(layer)) if cache is not None else 0


def new_cache(text_config: Any) -> Any:
    """An empty dynamic KV cache for a language model of ``text_config``."""
    from transformers import DynamicCache

    return DynamicCache(config=text_config)


def attention_mask(kwargs: dict[str, Any]) -> Any | None:
    return kwargs.get(MASK_KEY)


def position_ids(kwargs: dict[str, Any]) -> Tensor | None:
    return kwargs.get(POSITION_KEY)


def rotary(kwargs: dict[str, Any]) -> tuple[Tensor, Tensor] | None:
    """The (cos, sin) rotary embeddings a decoder layer receives, or None."""
    return kwargs.get(ROTARY_KEY)


def attention_inputs(args: tuple, kwargs: dict[str, Any]) -> tuple[Tensor, Any | None]:
    """(hidden_states, attention_mask) an attention module was called with (a vision
    tower's ``self_attn``: positional or keyword)."""
    hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    mask = kwargs.get(MASK_KEY, args[1] if len(args) > 1 else None)
    return hidden, mask


def attn_implementation(config: Any) -> str:
    """The attention backend a config selects ("eager" when unset)."""
    return str(getattr(config, "_attn_implementation", None) or "eager")


def mask_format(impl: str) -> str | None:
    """The format of the ``attention_mask`` decoder layers receive under backend ``impl``
    (assumption 4): "bool" (sdpa, 4-D True = attend), "additive" (eager, 4-D 0 / dtype
    min), "keep" (any FlashAttention, 2-D (B, kv) 1 = key present), None when unknown."""
    if "flash" in impl:
        return "keep"
    return {"sdpa": "bool", "eager": "additive"}.get(impl)


def layer_hidden(args: tuple, kwargs: dict[str, Any]) -> Tensor:
    """A decoder layer's input hidden states (positional or keyword)."""
    return args[0] if args else kwargs["hidden_states"]


def with_layer_hidden(
    args: tuple, kwargs: dict[str, Any], hidden: Tensor
) -> tuple[tuple, dict[str, Any]]:
    """(args, kwargs) with the layer's hidden states replaced, in the place they came."""
    if args:
        return (hidden, *args[1:]), kwargs
    kwargs = dict(kwargs)
    kwargs["hidden_states"] = hidden
    return args, kwargs


# -- vision towers and composite models, as vistoken.pvc reads them ----------------------------
#
# 9. A vision tower (SigLIP, CLIP, InternViT, ...) keeps its transformer layers in a
#    ``ModuleList`` at ``<...>encoder.layers`` (SigLIP, CLIP: ``vision_model.encoder.layers``)
#    or ``<...>encoder.layer`` (InternVL's vision model), calls each layer with the hidden
#    states (frames, tokens, channels) first, and each layer holds exactly two norms as
#    direct children, registered in the order they run: before attention, before the MLP
#    (``layer_norm1``/``layer_norm2``; InternVL ``layernorm_before``/``layernorm_after``).
# 10. A vision config gives ``image_size`` and ``patch_size`` (an int or a (h, w) pair),
#    ``hidden_size`` and ``num_attention_heads``.
# 11. ``InternVLForConditionalGeneration`` (5.x) is ``model.vision_tower``,
#    ``model.multi_modal_projector`` (``layer_norm``, ``linear_1``, ``act``, ``linear_2``),
#    ``model.language_model`` (the decoder without head) and ``lm_head``.
# 12. Configs are dataclasses (5.x): a subclass declares typed fields and may extend
#    ``__post_init__(**kwargs)``; a composite config names its sub-config fields in a
#    ``sub_configs`` class attribute (5.19; from 5.20 derived from ``sub_configs_defaults``,
#    and a class attribute still overrides it). ``vistoken.pvc.PVCConfig`` relies on this.


def vision_layers(vision_model: Any) -> Any:
    """The ``nn.ModuleList`` of a vision tower's transformer layers (assumption 9).

    Raises ValueError naming the tower when there is no ``encoder.layers`` /
    ``encoder.layer`` list.
    """
    from torch import nn

    found = [
        (name, module)
        for name, module in vision_model.named_modules()
        if isinstance(module, nn.ModuleList)
        and name.rsplit(".", 2)[-2:] in (["encoder", "layers"], ["encoder", "layer"])
    ]
    if len(found) != 1:
        raise ValueError(
            f"{type(vision_model).__name__} has {len(found)} 'encoder.layers' / 'encoder.layer' "
            "lists; expected exactly one (SigLIP, CLIP and InternVL vision towers have one)"
        )
    return found[0][1]


def layer_norms(layer: Any) -> tuple[Any, Any]:
    """A vision layer's two norms, (before attention, before the MLP) (assumption 9)."""
    from torch import nn

    norms = [
        m
        for m in layer.children()
        if isinstance(m, nn.LayerNorm)
        or "LayerNorm" in type(m).__name__
        or "RMSNorm" in type(m).__name__
    ]
    if len(norms) != 2:
        raise ValueError(
            f"{type(layer).__name__} has {len(norms)} norm children; expected 2 (the norm before "
            "attention and the norm before the MLP)"
        )
    return norms[0], norms[1]


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def vision_patch_grid(config: Any) -> tuple[int, int] | None:
    """(rows, columns) of patches a vision config's native image size gives, or None when
    the config does not say (assumption 10)."""
    size, patch = getattr(config, "image_size", None), getattr(config, "patch_size", None)
    if size is None or patch is None:
        return None
    (h, w), (ph, pw) = _pair(size), _pair(patch)
    return h // ph, w // pw


def vision_width(config: Any) -> tuple[int, int]:
    """(hidden_size, num_attention_heads) of a vision config (assumption 10)."""
    return int(config.hidden_size), int(config.num_attention_heads)


def internvl_parts(model: Any) -> dict[str, Any]:
    """The parts of an ``InternVLForConditionalGeneration`` (assumption 11): ``vision_tower``,
    ``projector``, ``decoder``, ``lm_head``. Raises TypeError for anything else."""
    inner = getattr(model, "model", None)
    names = ("vision_tower", "multi_modal_projector", "language_model")
    if inner is None or not all(hasattr(inner, n) for n in names) or not hasattr(model, "lm_head"):
        raise TypeError(
            f"expected a transformers InternVLForConditionalGeneration (model.vision_tower, "
            "model.multi_modal_projector, model.language_model, lm_head); got "
            f"{type(model).__name__}"
        )
    return {
        "vision_tower": inner.vision_tower,
        "projector": inner.multi_modal_projector,
        "decoder": inner.language_model,
        "lm_head": model.lm_head,
    }


def vision_has_cls(vision_model: Any) -> bool:
    """Whether a vision tower prepends a CLS token: its embeddings module holds a
    ``cls_token`` (InternVL) or ``class_embedding`` (CLIP); SigLIP has neither."""
    for name, module in vision_model.named_modules():
        if name.rsplit(".", 1)[-1] == "embeddings" and (
            hasattr(module, "cls_token") or hasattr(module, "class_embedding")
        ):
            return (
                getattr(module, "cls_token", getattr(module, "class_embedding", None)) is not None
            )
    return False


def vision_patch_size(config: Any) -> tuple[int, int] | None:
    """(height, width) of a vision config's patches, or None (assumption 10)."""
    patch = getattr(config, "patch_size", None)
    return None if patch is None else _pair(patch)


# -- Qwen3-VL / Qwen3.5 (assumptions 13, 14) ---------------------------------------------------


def vision_features(out: Any) -> tuple[list[Tensor], list[list[Tensor]]]:
    """(per-item features, per-level per-item DeepStack features) of a Qwen3-VL/Qwen3.5
    vision output (assumption 13). Items: images or videos, each (tokens, D); the level
    list is empty when the model has no DeepStack."""
    feats = out.pooler_output if hasattr(out, "pooler_output") else out
    if isinstance(feats, Tensor):
        feats = [feats]
    levels = getattr(out, "deepstack_features", None) or []
    levels = [[lv] if isinstance(lv, Tensor) else list(lv) for lv in levels]
    for lv in levels:
        if [x.shape[0] for x in lv] != [f.shape[0] for f in feats]:
            raise ValueError(
                "the DeepStack features do not follow the visual features item by item "
                f"({[x.shape[0] for x in lv]} vs {[f.shape[0] for f in feats]} tokens)"
            )
    return list(feats), levels


def deepstack_layers(config: Any) -> list[int]:
    """The vision layers whose DeepStack features a Qwen3-VL config adds to the LLM (one
    level each, added after LLM layer 0, 1, ...); empty without DeepStack."""
    vision = getattr(config, "vision_config", None)
    return list(getattr(vision, "deepstack_visual_indexes", None) or [])


LINEAR_ATTENTION = "linear_attention"


def layer_kinds(text_config: Any, n_layers: int) -> list[str]:
    """Each decoder layer's kind (assumption 14): "full_attention" for every layer of a
    model that does not say, else ``text_config.layer_types``."""
    kinds = getattr(text_config, "layer_types", None)
    if kinds is None:
        return ["full_attention"] * n_layers
    return [str(k) for k in list(kinds)[:n_layers]]


def attention_query(attn: Any, x: Tensor, heads: int, head_dim: int) -> Tensor:
    """(B, L, heads, head_dim) queries of attention ``attn`` for its normed input ``x``,
    before any q_norm; a gated attention's output gate is split off (assumption 14)."""
    q = attn.q_proj(x)
    b, length = x.shape[:2]
    if q.shape[-1] == 2 * heads * head_dim:
        return q.view(b, length, heads, 2 * head_dim)[..., :head_dim]
    return q.view(b, length, heads, head_dim)


# -- Gemma 4 (vistoken/models/gemma4.py) --------------------------------------------------------
#
# 15. ``Gemma4Model.forward`` takes ``per_layer_inputs`` (B, L, layers, d_ple), the
#    token-identity part of Per-Layer Embeddings, with ``inputs_embeds`` (never with
#    ``input_ids``); it builds them as ``language_model.get_per_layer_inputs(ids, None)``
#    with every image / video / audio placeholder read as ``pad_token_id``, and only when
#    ``text_config.hidden_size_per_layer_input`` is set. ``mm_token_type_ids`` (B, L)
#    (0 text, 1 image, 2 video, 3 audio) defines the bidirectional blocks of the
#    sliding-window masks (contiguous non-zero runs) when
#    ``use_bidirectional_attention == "vision"``.
# 16. Its vision tower is called as ``vision_tower(pixel_values=..., pixel_position_ids=...)``
#    with (R, P, 2) patch (x, y) positions (-1 = padding) and returns an output whose
#    ``last_hidden_state`` is the pooled soft tokens of every row, which
#    ``get_image_features``/``get_video_features`` return again (same object) with the
#    projected ``pooler_output`` split per image / video.

PER_LAYER_KEY = "per_layer_inputs"


def gemma4_patch_positions(args: tuple, kwargs: dict[str, Any]) -> Tensor | None:
    """The (R, P, 2) ``pixel_position_ids`` a Gemma 4 vision tower was called with."""
    pos = kwargs.get("pixel_position_ids")
    if pos is None and len(args) > 1:
        pos = args[1]
    return pos if isinstance(pos, Tensor) else None


def gemma4_per_layer_inputs(inner: Any, input_ids: Tensor) -> Tensor | None:
    """(B, L, layers, d_ple) the PLE token-identity inputs ``Gemma4Model.forward`` builds
    from ``input_ids`` (assumption 15), or None for a model without PLE."""
    import torch

    text = inner.language_model
    if not getattr(text.config, "hidden_size_per_layer_input", None):
        return None
    cfg = inner.config
    ids = [
        getattr(cfg, k, None) for k in ("image_token_id", "video_token_id", "audio_token_id")
    ]
    special = torch.tensor([i for i in ids if i is not None], device=input_ids.device)
    plain = input_ids.masked_fill(torch.isin(input_ids, special), text.config.pad_token_id)
    return text.get_per_layer_inputs(plain, None)


def per_layer_attention(text_config: Any) -> list[tuple[int, int, int]] | None:
    """(query heads, key/value heads, head_dim) of every decoder layer where a config gives
    layers different attention shapes (Gemma 4: its full-attention layers have their own
    head_dim and KV heads), else None.

    transformers >= 5.2x keeps such overrides in ``per_layer_config`` (a heterogeneous config,
    whose global ``head_dim`` then refuses to be read); older releases name them
    ``global_head_dim`` / ``num_global_key_value_heads`` beside ``layer_types``.
    """
    if getattr(text_config, "is_heterogeneous", False):
        return [(int(c.num_attention_heads), int(c.num_key_value_heads), int(c.head_dim))
                for c in text_config.per_layer_config]
    wide = getattr(text_config, "global_head_dim", None)
    kinds = getattr(text_config, "layer_types", None)
    if not wide or not kinds:
        return None
    h, g = int(text_config.num_attention_heads), int(text_config.num_key_value_heads)
    g_full = int(getattr(text_config, "num_global_key_value_heads", None) or g)
    return [(h, g_full, int(wide)) if k == "full_attention" else (h, g, int(text_config.head_dim))
            for k in kinds]


def kv_shared_layers(text_config: Any) -> int:
    """How many last decoder layers reuse an earlier layer's keys and values (Gemma 4's
    ``num_kv_shared_layers``): they compute no k/v projections of their own."""
    return int(getattr(text_config, "num_kv_shared_layers", 0) or 0)


# -- video files in transformers' video processors -------------------------------------------


def pyav_fetch_videos(video_url_or_urls: Any, sample_indices_fn: Callable | None = None) -> Any:
    """``BaseVideoProcessor.fetch_videos`` decoding with PyAV: transformers 5.x decodes a
    video path with torchcodec only (torchvision's decoder, its old fallback, is gone from
    torchvision 0.26); its own ``load_video`` also reads with PyAV, which bundles FFmpeg.
    Same return values: (frames, metadata), or lists of them for a list."""
    from transformers.video_utils import load_video

    if isinstance(video_url_or_urls, list):
        fetched = [pyav_fetch_videos(x, sample_indices_fn) for x in video_url_or_urls]
        return list(zip(*fetched, strict=True))  # (frames, metadata) pairs
    return load_video(video_url_or_urls, backend="pyav", sample_indices_fn=sample_indices_fn)


def torchcodec_usable() -> bool:
    """Whether transformers' video processors can decode a video file as they are."""
    from transformers.utils import is_torchcodec_usable

    return bool(is_torchcodec_usable(decode="video"))


def decode_videos_with_pyav(processor: Any) -> bool:
    """Let ``processor`` (a processor or a video processor) decode video files with PyAV
    when torchcodec cannot (:func:`pyav_fetch_videos`, set on that instance only).
    Returns whether it did."""
    video = getattr(processor, "video_processor", processor)
    if video is None or not hasattr(video, "fetch_videos") or torchcodec_usable():
        return False
    video.fetch_videos = pyav_fetch_videos
    return True
