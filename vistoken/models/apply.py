"""``vt.apply``: put a compressor into a transformers VLM instance, removably.

One forward pre-hook on the model's inner multimodal module (``model.model``) does the
work; nothing is patched at class level, so two models in one process can carry different
compressors, and ``handle.remove()`` leaves the model exactly as it was.

On a prefill with visual inputs the hook runs the model's own vision path, compresses every
``Unit`` through ``vt.compress`` (dispatching on the method's registered stage: an in-LLM
method's ``model_part`` is told the visual positions instead), and hands the language model a
shorter sequence: ``inputs_embeds``, ``attention_mask``, ``position_ids`` (and
``mm_token_type_ids``) all shortened, so the LLM really sees fewer tokens. On the decode
steps that follow, the same hook maps the generation loop's mask and positions (which
still count the uncompressed prompt) onto the shorter KV cache.

Positions: 1-D RoPE families (LLaVA-OneVision, InternVL) renumber the shortened sequence
contiguously, as the published pre-LLM methods do; M-RoPE families (Qwen2/2.5-VL) keep
each output token's anchor (t, h, w) position and the text's original positions.
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import Any

import torch

from ..core import Compressed, budget_for, check_retention, compress, get_method
from . import _hf
from .base import (
    DecodeState,
    check_mask,
    decode_kwargs,
    last_valid_column,
    place,
    shorten,
    text_next,
)
from .families import Family, family_of

log = logging.getLogger(__name__)


class Handle:
    """A compressor applied to one model instance. ``remove()`` (or leaving the ``with``
    block) takes it out again.

    After each compressed prefill: ``last`` holds the ``Compressed`` result of every unit
    (video, image, sample) in sequence order, and ``stats`` the visual token counts before
    and after and the compressor's own seconds.

    ``stats["compress_seconds"]`` is host time around the compression of every unit. By
    default nothing waits for the accelerator, so on CUDA it counts the time to launch the
    work (plus any wait a method itself makes), not the device time, and a prefill costs
    no extra synchronisation. Set ``handle.sync_timing = True`` to measure the compressor
    exactly: the device is synchronised before and after it (two
    ``torch.cuda.synchronize`` calls per compressed prefill on a CUDA model; no effect on
    the CPU). ``sync_timing`` is an attribute, not an ``apply`` keyword, so that it never
    collides with a method's options.
    """

    def __init__(
        self,
        model: Any,
        family: Family,
        method: str,
        retention: float | None,
        options: dict[str, Any],
    ) -> None:
        self.model = model
        self.family = family
        self.method = method
        self.spec = get_method(method)
        self.retention = retention
        self.options = dict(options)
        self._fn_options, self._model_options = self.spec.split_options(self.options)
        self.last: list[Compressed] = []
        self.stats: dict[str, Any] = {}
        self.sync_timing = False  # True: synchronise CUDA around the compressor (stats)
        self._hooks: list[Any] = []
        self._parts: list[Any] = []  # FastV / probe objects with their own remove()
        # DecodeState per KV-cache object, held weakly (a finished generate frees it)
        self._states: weakref.WeakKeyDictionary[Any, DecodeState] = weakref.WeakKeyDictionary()
        self._active = False
        # language-model arguments of the current prefill (Family.language_extras)
        self._lm_extras: dict[str, Any] = {}
        self._inner = family.inner(model)
        self._saved = family.save_state(self._inner)
        # the keyword the inner forward takes its KV cache under (transformers renames it)
        self._cache_key = _hf.cache_key(self._inner.forward, type(self._inner).__name__)

    @property
    def active(self) -> bool:
        return self._active

    def remove(self) -> None:
        """Take every hook out; the model computes exactly as before ``apply``."""
        for h in self._hooks:
            h.remove()
        for part in self._parts:
            part.remove()
        self._hooks.clear()
        self._parts.clear()
        self.family.restore_state(self._inner, self._saved)
        if self.model.__dict__.get("_vistoken_handle") is self:
            del self.model.__dict__["_vistoken_handle"]
        self._active = False

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "active" if self._active else "removed"
        return (
            f"Handle({type(self.model).__name__}, method={self.method!r}, "
            f"retention={self.retention}, {state})"
        )

    # -- the hook -----------------------------------------------------------------------

    def _pre_hook(self, module: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        if args:  # called positionally: the first positional argument is input_ids
            kwargs = {"input_ids": args[0], **kwargs}
        self._lm_extras = {}
        cache = _hf.get_cache(kwargs)
        past = _hf.cached_tokens(cache)
        if self.family.has_visual(kwargs):
            if past:
                raise ValueError(
                    "vt.apply compresses visual tokens in a prefill that starts from an empty "
                    f"cache; this call has {past} cached tokens"
                )
            if self.spec.stage == "llm":
                self._llm_prepare(kwargs)
                return (), kwargs
            return (), self._prefill(module, kwargs)
        state = self._states.get(cache) if cache is not None else None
        if state is not None and past > 0:
            return (), decode_kwargs(kwargs, state, past, self.family.shift_positions)
        return (), kwargs

    def _language_pre_hook(self, module: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        """Hand the language model what must follow the shortened sequence (DeepStack)."""
        extras, self._lm_extras = self._lm_extras, {}
        if not extras:
            return None
        return args, {**kwargs, **extras}

    def _outer_pre_hook(self, module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        if kwargs.get("labels") is not None and self.family.has_visual(kwargs):
            raise ValueError(
                "vt.apply does not support labels= (training): the compressed sequence is "
                "shorter than the labels; compute the loss from the returned logits, or "
                "call handle.remove() for training"
            )

    def _llm_prepare(self, kwargs: dict[str, Any]) -> None:
        """An in-LLM method's prefill: tell its part which positions are visual."""
        ids = kwargs.get("input_ids")
        if ids is None:
            raise ValueError("vt.apply needs input_ids to find the visual placeholder tokens")
        visual = torch.isin(
            ids, torch.tensor(self.family.visual_token_ids(self._inner.config), device=ids.device)
        )
        am = _hf.attention_mask(kwargs)
        check_mask(am)
        last = last_valid_column(am) if am is not None else None
        self._parts[0].prepare(visual, last)
        self.stats = {
            "visual_tokens": int(visual.sum()),
            "kept_tokens": sum(
                budget_for(self.retention, int(n)) if n else 0 for n in visual.sum(dim=1)
            ),
            "compress_seconds": 0.0,
        }
        self.stats.update(getattr(self._parts[0], "stats", {}))  # e.g. the layers FastV uses

    def _sync(self, device: torch.device) -> None:
        """Wait for a CUDA device, only when timing the compressor (``sync_timing``)."""
        if self.sync_timing and device.type == "cuda":
            torch.cuda.synchronize(device)

    def _compress_unit(self, unit: Any) -> Compressed:
        # unit.extra: a "vision" method's tower statistics on the unit's grid
        return compress(
            unit.tokens,
            self.method,
            retention=self.retention,
            grid=unit.grid,
            **self._fn_options,
            **unit.extra,
        )

    def _prefill(self, module: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        ids = kwargs.get("input_ids")
        if ids is None:
            raise ValueError(
                "vt.apply needs input_ids to find the visual placeholder tokens; pass the "
                "processor's outputs (input_ids, not inputs_embeds)"
            )
        am = _hf.attention_mask(kwargs)
        check_mask(am)
        embeds = module.get_input_embeddings()(ids)
        units = self.family.units(module, kwargs, ids, embeds)
        if not units:
            return kwargs
        if self.spec.stage == "vision":
            self.family.attach_vision_stats(module, units, self._parts[0].pop_stats())
        keep = torch.ones(ids.shape, dtype=torch.bool, device=ids.device)
        self._sync(embeds.device)
        t0 = time.perf_counter()
        results = []
        for unit in units:
            c = self._compress_unit(unit)
            place(embeds, keep, unit, c)
            results.append(c)
        self._sync(embeds.device)
        seconds = time.perf_counter() - t0
        short = shorten(embeds, keep, am)
        self._lm_extras = self.family.language_extras(
            module, units, results, short, tuple(ids.shape)
        )

        new = {k: v for k, v in kwargs.items() if k not in self.family.visual_keys}
        for key in self.family.strip_keys:
            new.pop(key, None)
        new["input_ids"] = None
        new["inputs_embeds"] = short.embeds
        padded = not bool(short.valid.all())
        if am is not None or padded:
            new[_hf.MASK_KEY] = short.mask.to(am.dtype if am is not None else torch.long)
        mask_old = am.long() if am is not None else torch.ones_like(ids)
        # how far the generation loop's 1-D (text-row) positions run ahead after the prompt
        text_old = self.family.text_row(_hf.position_ids(kwargs))
        offset = text_next(text_old, mask_old) - short.mask.sum(dim=1)
        new.update(self.family.shortened_positions(module, kwargs, ids, am, short))
        cache = _hf.get_cache(kwargs)
        if cache is None and kwargs.get("use_cache") is not False:
            cache = _hf.new_cache(self.family.language_model(self.model).config)
        if cache is not None:
            _hf.put_cache(new, self._cache_key, cache)
            self._states[cache] = DecodeState(mask=short.mask, offset=offset, padded=padded)
        self.last = results
        self.stats = {
            "visual_tokens": sum(u.tokens.shape[0] * u.tokens.shape[1] for u in units),
            "kept_tokens": sum(c.num_tokens for c in results),
            "sequence_before": int(ids.shape[1]),
            "sequence_after": int(short.embeds.shape[1]),
            "compress_seconds": seconds,
        }
        return new


def apply(model: Any, method: str, *, retention: float | None = None, **options: Any) -> Handle:
    """Make ``model`` see fewer visual tokens; returns a removable ``Handle``.

    model: a transformers ``LlavaOnevisionForConditionalGeneration``,
    ``Qwen2VLForConditionalGeneration``, ``Qwen2_5_VLForConditionalGeneration``,
    ``InternVLForConditionalGeneration``, ``Qwen3VLForConditionalGeneration``,
    ``Qwen3VLMoeForConditionalGeneration`` or ``Qwen3_5ForConditionalGeneration``
    instance (``vt.supported_models()``). method: any ``vt.methods()`` name;
    pre-LLM methods compress each video/image after the projector, "fastv" prunes inside
    the LLM at ``layer`` (default 2), "visionzip" uses the vision tower's attention
    (LLaVA-OneVision videos). retention: the share of visual tokens kept (exact count per
    video/image); options: the method's own options.

    The model's processor outputs go to ``model(**inputs)`` / ``model.generate(**inputs)``
    unchanged. Logits of a compressed prefill follow the shortened sequence.
    ``handle.stats["compress_seconds"]`` is host time; set ``handle.sync_timing = True``
    for the compressor's device time on CUDA (see :class:`Handle`).
    """
    family = family_of(model)
    _hf.warn_if_untested()
    spec = get_method(method)
    family.check_method(method, spec.stage)
    if retention is None:
        retention = spec.default_retention
    if retention is not None:
        retention = check_retention(retention)
    options = spec.check_options(options, retention)  # the one check, no probe run
    existing = model.__dict__.get("_vistoken_handle")
    if existing is not None and existing.active:
        raise ValueError(
            f"this model already carries {existing!r}; call .remove() on it before applying another"
        )
    if spec.stage != "tokens" and retention is None:
        raise ValueError(f"method {method!r} needs retention= (the share of visual tokens kept)")
    handle = Handle(model, family, method, retention, options)
    inner = handle._inner
    assert spec.model_part is not None or spec.stage == "tokens"
    if spec.stage == "llm":
        handle._parts.append(
            spec.model_part(
                family.language_model(model), retention=retention, **handle._model_options
            )
        )
        family.configure_llm_part(handle._parts[0], inner)
    elif spec.stage == "vision":
        tower = family.vision_tower(inner)  # TypeError for families without tower statistics
        handle._parts.append(spec.model_part(tower, **handle._model_options))
    handle._hooks.append(inner.register_forward_pre_hook(handle._pre_hook, with_kwargs=True))
    handle._hooks.append(model.register_forward_pre_hook(handle._outer_pre_hook, with_kwargs=True))
    if family.language_keys:
        handle._hooks.append(
            family.language_model(model).register_forward_pre_hook(
                handle._language_pre_hook, with_kwargs=True
            )
        )
    model.__dict__["_vistoken_handle"] = handle
    handle._active = True
    log.debug("applied %r", handle)
    return handle


def supported_models() -> list[str]:
    """Names of the transformers model classes ``vt.apply`` supports."""
    from .families import FAMILIES

    return [name for fam in FAMILIES for name in fam.class_names]
