"""FastV: prune visual tokens inside the language model (Chen et al., 2024).

After decoder layer ``K - 1`` (``K = layer``), every visual token is scored by the attention
the LAST query position pays to it in that layer (softmax over keys, mean over heads), and
only the top ``max(1, ceil(retention * n_visual))`` visual tokens of each sample go on to
layers ``>= K``. Text tokens (and padding) always stay. Kept tokens keep their original
positions (RoPE), so layers ``>= K`` really run on fewer tokens and write fewer entries to
their KV cache, while layers ``< K`` see the full sequence.

SDPA and FlashAttention never return attention weights, so the one score row is recomputed
from the layer's own ``q_proj``/``k_proj`` (plus ``q_norm``/``k_norm`` where present), the
rotary ``position_embeddings`` the layer receives and the layer's attention mask; the layer
itself runs once, untouched.

Hybrid LLMs (Qwen3.5: Gated DeltaNet linear-attention layers between full-attention
ones, ``text_config.layer_types``): a linear-attention layer has no attention to score
with, so the scores come from the first full-attention layer at or after ``layer - 1``
and pruning starts right after it (``FastV.layer``, with the layers actually used in
``FastV.stats`` and ``handle.stats``); when ``layer - 1`` is itself full attention nothing
moves. A ValueError names the full-attention layers when none is left. The
linear-attention layers from ``layer`` on run their recurrence over the kept positions
only (2-D padding mask gathered like the hidden states, the index's padding zeroed, which
leaves a left-padded recurrence at its zero start), so their recurrent and convolution
states after the prefill are those of the shortened sequence and decode steps go on from
them unchanged.

Everything is done with removable forward hooks on one model instance
(``register_forward_pre_hook(..., with_kwargs=True)``): no class is patched and no model
attribute is written. :meth:`FastV.remove` leaves the model exactly as it was.

Mask formats handled (what the decoder layers receive; the pure mask functions live in
:mod:`vistoken.models.masks`, the hooks and their state here):

- ``None``: SDPA/eager with no padding (plain causal); FastV builds the mask it needs in
  the format of the attention implementation (bool for SDPA, additive float for eager,
  a 2D keep mask for FlashAttention).
- 4D bool ``(B|1, 1, q, kv)`` (SDPA, True = attend) or 4D float (eager, 0 / dtype min):
  gathered at the kept rows and columns.
- 2D ``(B, kv)`` padding mask (FlashAttention): gathered at the kept columns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ..core import as_int, budget_for, check_retention
from . import _hf, masks

__all__ = ["FastV"]

logger = logging.getLogger(__name__)


class FastV:
    """FastV in-LLM visual token pruning, as removable hooks on one decoder-only text model.

    Args:
        text_model: a HF decoder stack (``Qwen2Model``-style: ``.layers``, each with
            ``input_layernorm`` and ``self_attn.q_proj/k_proj``, optional ``q_norm/k_norm``,
            and a ``.config`` with ``num_attention_heads``, ``num_key_value_heads`` and
            ``head_dim`` or ``hidden_size``).
        retention: fraction in (0, 1] of each sample's visual tokens kept for layers >= layer.
        layer: K >= 1: the scores come from layer K - 1, layers >= K see the kept tokens.

    Attributes:
        last_keep: (B, L_keep) long after the last pruned prefill: the original sequence
            index of every position layers >= K ran on, ascending per row. Rows with fewer
            kept positions than the longest are left-padded with -1. None before any
            prefill, after a prefill that was not prepared, or when nothing was dropped.
        last_scores: (B, L) float32: the last query's attention to every key at layer K-1
            (mean over heads; 0 on masked keys) from the last prepared prefill.

    Use::

        fastv = FastV(model.model.language_model, retention=0.5, layer=2)
        fastv.prepare(input_ids == image_token_id)   # (B, L) bool, before each prefill
        model.generate(**inputs)
        fastv.remove()
    """

    last_keep: Tensor | None
    last_scores: Tensor | None

    def __init__(self, text_model: nn.Module, *, retention: float, layer: int = 2) -> None:
        self.retention = check_retention(retention)
        layers = getattr(text_model, "layers", None)
        if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
            raise ValueError(
                "text_model must be a decoder stack with a non-empty `.layers` ModuleList "
                f"(e.g. Qwen2Model), got {type(text_model).__name__}"
            )
        n_layers = len(layers)
        layer = as_int(layer, "layer")
        if not 1 <= layer < n_layers:
            raise ValueError(
                f"layer must satisfy 1 <= layer < num_layers = {n_layers} (scores come from "
                f"layer - 1, pruning applies from layer on), got {layer}"
            )
        config = text_model.config
        self.requested_layer = layer
        kinds = _hf.layer_kinds(config, n_layers)
        # A hybrid LLM (Qwen3.5): scores need softmax attention, so they come from the first
        # full-attention layer at or after layer - 1, and pruning starts right after it.
        score = next(
            (i for i in range(layer - 1, n_layers - 1) if kinds[i] != _hf.LINEAR_ATTENTION), None
        )
        if score is None:
            full = [i for i, k in enumerate(kinds) if k != _hf.LINEAR_ATTENTION]
            raise ValueError(
                f"FastV scores visual tokens at a full-attention layer at or after layer - 1 = "
                f"{layer - 1} with a layer after it to prune; this model's full-attention "
                f"layers are {full} of {n_layers} (the others are linear attention): use a "
                f"layer <= {max(full) if full else 0}, or a pre-LLM method"
            )
        layer = score + 1
        self._linear = {i for i, k in enumerate(kinds) if k == _hf.LINEAR_ATTENTION}
        #: the layers actually used: ``layer`` (pruned from), ``score_layer`` (scored at)
        #: and the ``requested_layer`` (``vt.apply`` copies these into ``handle.stats``)
        self.stats = {
            "layer": layer,
            "score_layer": score,
            "requested_layer": self.requested_layer,
        }
        self.text_model = text_model
        self.layer = layer
        self.num_heads = int(config.num_attention_heads)
        self.num_kv_heads = int(getattr(config, "num_key_value_heads", None) or self.num_heads)
        self.head_dim = int(
            getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        )
        attn = layers[layer - 1].self_attn
        self.scaling = float(getattr(attn, "scaling", self.head_dim**-0.5))

        self.last_keep = None
        self.last_scores = None
        self._pending: Tensor | None = None  # (B, L) bool from prepare()
        self._pending_last: Tensor | None = None  # (B,) from prepare()
        # Selection of the last pruned prefill (persists over its decode steps):
        self._index: Tensor | None = None  # (B, Lk) long, always a valid position
        self._valid: Tensor | None = None  # (B, Lk) bool, False on left padding of the index
        self._prefill_len = 0
        self._pruning_now = False  # the current forward is a pruned prefill
        self._memo: dict[str, tuple[Any, Any]] = {}  # per-forward cache of sliced inputs

        self._handles: list[RemovableHandle] = [
            text_model.register_forward_pre_hook(self._on_model_start, with_kwargs=True),
            text_model.register_forward_hook(self._on_model_end),
            layers[layer - 1].register_forward_pre_hook(self._score_hook, with_kwargs=True),
        ]
        for i in range(layer, n_layers):
            self._handles.append(
                layers[i].register_forward_pre_hook(self._make_prune_hook(i), with_kwargs=True)
            )

    # ------------------------------------------------------------------ public API

    def prepare(self, visual_mask: Tensor, last: Tensor | None = None) -> None:
        """Mark the visual positions of the next prefill.

        visual_mask: (B, L) bool (or 0/1 integer), True where the NEXT prefill's sequence
        position holds a visual token. last: (B,) int64, each row's last real token (the
        query whose attention scores the keys; right padding puts it before column L-1);
        default L-1. Call right before the prefill forward/generate.
        """
        if not isinstance(visual_mask, Tensor):
            raise TypeError(
                f"visual_mask must be a (B, L) bool tensor, got {type(visual_mask).__name__}"
            )
        if visual_mask.ndim != 2 or visual_mask.shape[0] == 0 or visual_mask.shape[1] == 0:
            raise ValueError(
                "visual_mask must have shape (B, L) with B, L >= 1 (batch, sequence length "
                f"of the next prefill), got {tuple(visual_mask.shape)}"
            )
        if visual_mask.dtype != torch.bool:
            if visual_mask.is_floating_point() or visual_mask.is_complex():
                raise ValueError(f"visual_mask must be bool, got dtype {visual_mask.dtype}")
            if not bool(((visual_mask == 0) | (visual_mask == 1)).all()):
                raise ValueError("an integer visual_mask must hold only 0 and 1")
            visual_mask = visual_mask != 0
        if last is not None and tuple(last.shape) != (visual_mask.shape[0],):
            raise ValueError(
                f"last must have shape ({visual_mask.shape[0]},), got {tuple(last.shape)}"
            )
        self._pending = visual_mask
        self._pending_last = last

    def remove(self) -> None:
        """Remove every hook and forget all state; the model is exactly as before."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._pending = self._index = self._valid = None
        self._memo.clear()
        self._pruning_now = False

    # ------------------------------------------------------------------ hooks

    def _on_model_start(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._pruning_now = False
        self._memo.clear()

    def _on_model_end(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._pruning_now = False
        self._memo.clear()

    def _score_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """Pre-hook of layer K-1: on a prefill, score the keys and choose what to keep."""
        hidden = _hf.layer_hidden(args, kwargs)
        if _hf.cached_tokens(_hf.get_cache(kwargs), self.layer - 1) > 0:
            return  # a decode step (or a continuation): the selection stays
        # A prefill: whatever the last prefill selected no longer applies.
        self._index = self._valid = None
        self.last_keep = None
        visual, last = self._pending, self._pending_last
        self._pending = self._pending_last = None
        if visual is None:
            logger.debug("FastV: prefill without prepare(); passing through unpruned")
            return
        b, length = hidden.shape[:2]
        if tuple(visual.shape) != (b, length):
            raise ValueError(
                f"FastV: prepare() got a visual_mask of shape {tuple(visual.shape)} but the "
                f"prefill has batch {b} and sequence length {length}"
            )
        visual = visual.to(hidden.device)
        if last is None:
            last = torch.full((b,), length - 1, dtype=torch.long, device=hidden.device)
        last = last.to(hidden.device)
        mask = _hf.attention_mask(kwargs)
        key_ok = masks.last_row_allowed(mask, last, length)
        if _hf.rotary(kwargs) is None:
            raise RuntimeError(
                f"FastV: layer {self.layer - 1} was called without `position_embeddings` "
                "(cos, sin); FastV needs the rotary embeddings the decoder loop passes"
            )
        cos, sin = _hf.rotary(kwargs)
        scores = self._last_query_scores(module, hidden, cos, sin, mask, key_ok, last)
        self.last_scores = scores
        keep = self._select(scores, visual & key_ok)
        counts = keep.sum(1)
        if bool((counts == length).all()):
            logger.debug("FastV: every position kept; passing through")
            return
        lk = int(counts.max())
        # Stable sort puts dropped positions first, kept ones last, each in original order:
        # the index is right-aligned, so the last column is every row's last position.
        order = torch.sort(keep.to(torch.int8), dim=1, stable=True).indices[:, length - lk :]
        valid = keep.gather(1, order)
        self._index, self._valid, self._prefill_len = order, valid, length
        self._pruning_now = True
        self.last_keep = order.masked_fill(~valid, -1)

    def _make_prune_hook(self, i: int) -> Callable[[nn.Module, tuple, dict], Any]:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            if self._index is None:
                return None
            if self._pruning_now:
                return self._prune_prefill(args, kwargs, linear=i in self._linear)
            if i in self._linear:  # its recurrent state already follows the kept tokens
                return None
            if _hf.cached_tokens(_hf.get_cache(kwargs), i) == 0:
                return None
            return self._fix_decode(i, args, kwargs)

        return hook

    # ------------------------------------------------------------------ scoring

    def _last_query_scores(
        self,
        layer: nn.Module,
        hidden: Tensor,
        cos: Tensor,
        sin: Tensor,
        mask: Tensor | None,
        key_ok: Tensor,
        last: Tensor,
    ) -> Tensor:
        """(B, L) float32: softmax attention of the last query over all keys, head mean.

        hidden: (B, L, D) the layer's input; cos/sin: (B|1, L, head_dim); mask: the layer's
        attention mask (None, 2D, 4D bool or 4D additive float); key_ok: (B, L) bool;
        last: (B,) the column of each row's last real token (the scoring query).
        """
        attn = layer.self_attn
        b, length, _ = hidden.shape
        h, g, d = self.num_heads, self.num_kv_heads, self.head_dim
        with torch.no_grad():
            x = layer.input_layernorm(hidden)
            at_last = last[:, None, None]
            x_last = x.gather(1, at_last.expand(b, 1, x.shape[-1]))
            q = _hf.attention_query(attn, x_last, h, d)
            k = attn.k_proj(x).view(b, length, g, d)
            if getattr(attn, "q_norm", None) is not None:
                q = attn.q_norm(q)
            if getattr(attn, "k_norm", None) is not None:
                k = attn.k_norm(k)
            q = q.transpose(1, 2).float()  # (B, H, 1, d)
            k = k.transpose(1, 2).float()  # (B, G, L, d)
            cos_f, sin_f = cos.float().expand(b, -1, -1), sin.float().expand(b, -1, -1)
            r = cos_f.shape[-1]  # rotary dims: head_dim, or fewer (partial rotary)
            cos_q = cos_f.gather(1, at_last.expand(b, 1, r))[:, None]  # (B, 1, 1, r)
            sin_q = sin_f.gather(1, at_last.expand(b, 1, r))[:, None]
            q = masks.apply_rope(q, cos_q, sin_q)
            k = masks.apply_rope(k, cos_f[:, None], sin_f[:, None])
            q = q.reshape(b, g, h // g, d)  # head j uses kv head j // (H / G), as repeat_kv
            logits = torch.einsum("bgrd,bgld->bgrl", q, k) * self.scaling  # (B, G, H/G, L)
            if mask is not None and mask.ndim == 4 and mask.dtype != torch.bool:
                logits = logits + masks.query_row(mask, last).float()[:, None, None]
            else:
                logits = logits.masked_fill(~key_ok[:, None, None], float("-inf"))
            return logits.softmax(dim=-1).mean(dim=(1, 2))

    def _select(self, scores: Tensor, candidates: Tensor) -> Tensor:
        """(B, L) bool keep mask: every non-candidate, plus each row's top-budget candidates.

        scores: (B, L) float; candidates: (B, L) bool (visual and not padding). The budget
        of row b is ``budget_for(retention, n_b)`` (0 when n_b = 0); ties go to the lower
        index. Override to pin a selection (tests do).
        """
        n = candidates.sum(1).tolist()
        budget = torch.tensor(
            [budget_for(self.retention, c) if c > 0 else 0 for c in n], device=scores.device
        )
        ranked = scores.float().masked_fill(~candidates, -1.0)
        order = torch.sort(ranked, dim=1, descending=True, stable=True).indices
        rank = torch.empty_like(order).scatter_(
            1, order, torch.arange(order.shape[1], device=order.device).expand_as(order)
        )
        return ~candidates | (rank < budget[:, None])

    # ------------------------------------------------------------------ slicing

    def _impl(self) -> str:
        return _hf.attn_implementation(self.text_model.config)

    def _memoized(self, key: str, source: Any, make: Callable[[], Any]) -> Any:
        hit = self._memo.get(key)
        if hit is not None and hit[0] is source:
            return hit[1]
        value = make()
        self._memo[key] = (source, value)
        return value

    def _prune_prefill(self, args: tuple, kwargs: dict, linear: bool = False) -> tuple[tuple, dict]:
        """Slice hidden states, rotary embeddings, position ids and the mask of a prefill.

        linear: a linear-attention layer, whose mask is the 2-D padding mask (or None):
        it runs its recurrence over the kept positions only, padding of the index zeroed.
        """
        index, valid, length = self._index, self._valid, self._prefill_len
        assert index is not None and valid is not None
        hidden = _hf.layer_hidden(args, kwargs)
        if hidden.shape[1] == length:  # layer K: the first to see the kept positions only
            hidden = masks.gather_seq(hidden, index, 1)
        elif hidden.shape[1] != index.shape[1]:
            raise RuntimeError(
                f"FastV: layer input has {hidden.shape[1]} positions, expected {length} or "
                f"{index.shape[1]}"
            )
        kwargs = dict(kwargs)
        pe = _hf.rotary(kwargs)
        if pe is not None:
            kwargs[_hf.ROTARY_KEY] = self._memoized(
                "pe", pe[0], lambda: tuple(masks.gather_seq(t, index, -2) for t in pe)
            )
        pos = _hf.position_ids(kwargs)
        if isinstance(pos, Tensor) and pos.shape[-1] == length:
            kwargs[_hf.POSITION_KEY] = self._memoized(
                "pos", pos, lambda: masks.gather_seq(pos, index, -1)
            )
        mask = _hf.attention_mask(kwargs)
        if linear:
            kwargs[_hf.MASK_KEY] = self._memoized(
                "linear_mask", mask, lambda: masks.padding_mask(mask, index, valid)
            )
        else:
            kwargs[_hf.MASK_KEY] = self._memoized(
                "mask",
                mask,
                lambda: masks.prefill_mask(mask, index, valid, self._impl(), hidden.dtype),
            )
        return _hf.with_layer_hidden(args, kwargs, hidden)

    def expand_after(self, layers: Any) -> None:
        """Give the outputs of ``layers`` (each >= ``layer``) back their full prefill length.

        For an LLM that adds features at the (full-length) visual positions after some
        layers (Qwen3-VL's DeepStack): on a pruned prefill each such layer's output is
        scattered back to (B, L, D) (dropped positions zero), the model adds its features
        where it knows, and the next layer's pre-hook drops the same positions again, so
        every kept token gets exactly its own features. Decode steps are untouched.
        """
        n_layers = len(self.text_model.layers)
        for i in layers:
            if not self.layer <= i < n_layers - 1:
                raise ValueError(
                    f"FastV can restore full length after layers {self.layer}..{n_layers - 2} "
                    f"(a pruned layer with a layer after it), got {i}"
                )
            self._handles.append(
                self.text_model.layers[i].register_forward_hook(self._expand_output)
            )

    def _expand_output(self, module: nn.Module, args: tuple, output: Any) -> Any:
        if not self._pruning_now or self._index is None:
            return None
        hidden = output[0] if isinstance(output, tuple) else output
        index, valid = self._index, self._valid
        assert valid is not None
        if hidden.shape[1] != index.shape[1]:
            return None
        full = hidden.new_zeros(hidden.shape[0], self._prefill_len, hidden.shape[-1])
        rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None].expand_as(index)
        full[rows[valid], index[valid]] = hidden[valid]
        return (full, *output[1:]) if isinstance(output, tuple) else full

    def _fix_decode(self, i: int, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Decode step at layer i >= K: map the model's mask onto this layer's shorter cache."""
        index, valid, length = self._index, self._valid, self._prefill_len
        assert index is not None and valid is not None
        hidden = _hf.layer_hidden(args, kwargs)
        b, q = hidden.shape[:2]
        past = _hf.get_cache(kwargs)
        lk = index.shape[1]
        new_before = past.get_seq_length(i) - lk  # tokens this layer cached after the prefill
        full_before = past.get_seq_length(0) - q  # layer 0 already holds this step's tokens
        if new_before < 0 or full_before - length != new_before or b != index.shape[0]:
            raise RuntimeError(
                f"FastV: the KV cache of layer {i} ({past.get_seq_length(i)} entries, batch "
                f"{b}) does not continue the last pruned prefill ({length} -> {lk} positions, "
                f"batch {index.shape[0]}); call prepare() before every new prefill"
            )
        mask = _hf.attention_mask(kwargs)
        kwargs = dict(kwargs)
        kwargs[_hf.MASK_KEY] = self._memoized(
            "mask",
            mask,
            lambda: masks.decode_mask(
                mask, index, valid, length, q, new_before, self._impl(), hidden.dtype
            ),
        )
        return args, kwargs
