"""Gemma 4 (``Gemma4ForConditionalGeneration``): where its visual tokens enter the LLM.

Layout (what ``Gemma4Processor`` writes and ``Gemma4Model.forward`` fills):

- An image is ``<boi>`` + n soft-token placeholders + ``<eoi>``. The vision tower pools its
  patches k x k (``pooling_kernel_size``) into soft tokens, row-major on an (H, W) grid of
  the image's own aspect ratio (n = H * W <= the processor's ``max_soft_tokens``; the count
  is fixed per image size, so the prompt is written before the model runs), and
  ``embed_vision`` (norm + linear) projects them to the LLM width. The compressible unit is
  one image: (1, n, D) on its (H, W) grid.
- A video is one ``mm:ss <boi> n placeholders <eoi>`` block per sampled frame, blocks
  separated by a space; every frame of a video has the same grid. The unit is the whole
  video, (F, n, D), so temporal methods see its frames. Every output token goes to the
  block of its anchor frame (``Compressed.anchors``): a frame block may become short or
  empty. An emptied block is kept as ``mm:ss <boi><eoi>`` with zero visual tokens: the
  timestamps stay in order and in the prompt the model was trained on, and no text is
  removed (only visual tokens are ever dropped).
- Compression happens after ``embed_vision``, on the tokens exactly as they would be put
  into ``inputs_embeds``.

What the shortened prefill carries besides the embeddings:

- Positions: 1-D RoPE; the shortened sequence is numbered contiguously (as for
  LLaVA-OneVision and InternVL). Sliding-window layers then count their window over the
  shortened sequence, the sequence the LLM really runs on.
- ``mm_token_type_ids``: Gemma 4 with ``use_bidirectional_attention="vision"`` lets the
  soft tokens of one image (one video frame) attend to each other both ways in its
  sliding-window layers; the blocks are the contiguous runs of non-zero type ids. The ids
  are shortened with the sequence, so every kept or merged token stays in its own image's
  (frame's) block and blocks stay separate.
- ``per_layer_inputs`` (PLE, the E2B/E4B models): the token-identity part is computed from
  the uncompressed ``input_ids`` exactly as the model does (placeholders read as padding)
  and shortened with the sequence; the model adds the context part from the shortened
  embeddings itself.

Soft-token grids: ``generate()`` encodes the pixels before the forward and drops
``image_position_ids``/``video_position_ids``, so a forward hook on the vision tower
(installed by ``vt.apply``, removed by ``handle.remove()``) records each call's grids
from its ``pixel_position_ids``. Features encoded before ``vt.apply`` have no recorded
grid: methods that need a grid then raise their own error.

Refused, with the reason:

- FastV (TypeError at ``vt.apply``). Five of every six Gemma 4 decoder layers are
  sliding-window layers (window 512 for E2B/E4B, 1024 for 26B/31B). (1) Scoring at such a
  layer, the last query cannot attend to visual tokens further back than the window, so
  they would get no score. (2) A sliding layer's KV cache keeps only the last window - 1
  entries and its decode mask is sized by the model for the first sliding layer's cache;
  a layer pruned by FastV holds a different number of entries standing for other
  original positions, so every decode step would need a mask rebuilt from the original
  positions of what the rolling cache still holds. (3) With KV sharing (E2B/E4B) the last
  layers reuse the keys and values stored by earlier layers, which a pruning layer
  between them would leave at the full length. Pre-LLM compression has none of these
  problems: every layer runs on the same shortened sequence.
- VisionZip (TypeError): it reads LLaVA-OneVision's SigLIP attention; Gemma 4's tower is
  a different one.
- Audio in the same prompt as images or videos (ValueError): only visual tokens are
  placed and compressed; an audio-only prompt passes through untouched.
- ``labels=`` (as for every family) and, on transformers 5.19, video through the
  top-level ``forward`` (ValueError: that release's ``Gemma4ForConditionalGeneration``
  drops ``num_frames_per_video``; ``generate`` encodes videos itself and works).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor

from ..core import methods
from . import _hf
from .base import Shortened, Unit
from .families import Family, _features, _runs


class _GridRecorder:
    """Forward hook on a Gemma 4 vision tower: the (H, W) soft-token grid of every row
    (image or video frame) of each call, keyed by the call's output features tensor."""

    def __init__(self, tower: Any, kernel: int) -> None:
        self.kernel = kernel
        # (weak reference to the output tensor, its grids); matched by identity (a tensor's
        # == is elementwise, so no dict of tensors), dead entries dropped on each record
        self._grids: list[tuple[weakref.ref[Tensor], list[tuple[int, int]]]] = []
        self._hook = tower.register_forward_hook(self._record, with_kwargs=True)

    def _record(self, module: Any, args: tuple, kwargs: dict[str, Any], output: Any) -> None:
        pos = _hf.gemma4_patch_positions(args, kwargs)
        hidden = getattr(output, "last_hidden_state", None)
        if pos is None or not isinstance(hidden, Tensor):
            return
        self._grids = [(r, g) for r, g in self._grids if r() is not None]
        self._grids.append((weakref.ref(hidden), soft_token_grids(pos, self.kernel)))

    def grids(self, encoded: Any) -> list[tuple[int, int]] | None:
        """The recorded grids of one ``get_image_features``/``get_video_features`` result."""
        hidden = getattr(encoded, "last_hidden_state", None)
        for ref, grids in reversed(self._grids):
            if ref() is hidden:
                return grids
        return None

    def remove(self) -> None:
        self._hook.remove()


def soft_token_grids(positions: Tensor, kernel: int) -> list[tuple[int, int]]:
    """(H, W) soft-token grid of each row of (R, P, 2) patch (x, y) positions (-1 = pad):
    the tower pools k x k patches row-major over the row's own patch width."""
    valid = (positions != -1).all(dim=-1)
    x = positions[..., 0].masked_fill(~valid, -1).amax(dim=1) + 1
    y = positions[..., 1].masked_fill(~valid, -1).amax(dim=1) + 1
    pairs = zip(y.tolist(), x.tolist(), strict=True)
    return [(int(h) // kernel, int(w) // kernel) for h, w in pairs]


def _frames(cols: Tensor) -> list[int]:
    """Lengths of the contiguous runs of one video's placeholder columns (its frames)."""
    if cols.numel() == 0:
        return []
    breaks = (torch.nonzero(cols[1:] - cols[:-1] != 1).flatten() + 1).tolist()
    edges = [0, *breaks, cols.numel()]
    return [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]


class Gemma4Family(Family):
    name = "gemma4"
    class_names = ("Gemma4ForConditionalGeneration",)
    strip_keys = ("image_position_ids", "video_position_ids", "num_frames_per_video")

    def __init__(self) -> None:
        self._recorders: weakref.WeakKeyDictionary[Any, _GridRecorder] = (
            weakref.WeakKeyDictionary()
        )

    def check_method(self, method: str, stage: str) -> None:
        """In-LLM pruning (FastV) is refused: see the module docstring."""
        if stage == "llm":
            raise TypeError(
                f"{method} is not supported on Gemma 4 (Gemma4ForConditionalGeneration): most of "
                "its decoder layers are sliding-window layers, whose last query cannot see visual "
                "tokens further back than the window (so FastV's attention score would miss "
                "them) and whose rolling KV cache of the last window positions gets a decode "
                "mask sized for the first layers' full-length cache; and with KV sharing (E2B, "
                "E4B) the last layers reuse the keys and values of earlier layers. Caches pruned "
                "from a middle layer on cannot stay consistent with either. Use a pre-LLM "
                f"method: {', '.join(methods(stage='tokens'))}"
            )

    # -- the hook's state: the vision tower's grid recorder ------------------------------

    def save_state(self, inner: Any) -> Any:
        """Installs the grid recorder on the vision tower (removed by ``restore_state``)."""
        tower = getattr(inner, "vision_tower", None)
        if tower is None:
            return None
        rec = _GridRecorder(tower, int(inner.config.vision_config.pooling_kernel_size))
        self._recorders[inner] = rec
        return rec

    def restore_state(self, inner: Any, saved: Any) -> None:
        if saved is not None:
            saved.remove()
        self._recorders.pop(inner, None)

    # -- units ---------------------------------------------------------------------------

    def units(
        self, inner: Any, kwargs: dict[str, Any], input_ids: Tensor, embeds: Tensor
    ) -> list[Unit]:
        cfg = inner.config
        if kwargs.get("input_features") is not None:
            raise ValueError(
                "vt.apply on Gemma 4 compresses images and videos; audio (input_features) in "
                "the same prompt is not supported: pass audio and visual inputs separately"
            )
        rec = self._recorders.get(inner)
        mm = dict(kwargs.get("mm_encoder_outputs") or {})
        if mm.get("image") is None and kwargs.get("pixel_values") is not None:
            mm["image"] = inner.get_image_features(
                kwargs["pixel_values"], kwargs.get("image_position_ids"), return_dict=True
            )
        if mm.get("video") is None and kwargs.get("pixel_values_videos") is not None:
            frames = kwargs.get("num_frames_per_video")
            if frames is None:
                raise ValueError(
                    "Gemma 4 video inputs need num_frames_per_video (the video processor "
                    "returns it with pixel_values_videos). transformers 5.19's "
                    "Gemma4ForConditionalGeneration.forward does not pass it on to the inner "
                    "model (model(**inputs) fails there without vt.apply as well): use "
                    "model.generate(**inputs), which encodes the video itself"
                )
            mm["video"] = inner.get_video_features(
                kwargs["pixel_values_videos"],
                kwargs.get("video_position_ids"),
                num_frames_per_video=frames,
                return_dict=True,
            )
        units: list[Unit] = []
        for kind, token_id in (("image", cfg.image_token_id), ("video", cfg.video_token_id)):
            if mm.get(kind) is None:
                continue
            feats = list(_features(mm[kind]))
            grids = rec.grids(mm[kind]) if rec is not None else None
            runs = _runs(input_ids, token_id, [f.shape[0] for f in feats], f"{kind}s")
            start = 0
            for f, (rows, cols) in zip(feats, runs, strict=True):
                f = f.to(embeds.dtype)
                row = int(rows[0])
                embeds[row, cols] = f
                sizes = _frames(cols) if kind == "video" else [cols.numel()]
                if len(set(sizes)) > 1:
                    raise ValueError(
                        f"a Gemma 4 video's frame blocks hold {sizes} soft tokens; every frame "
                        "of one video must have the same count (pass the processor's outputs)"
                    )
                n = sizes[0] if sizes else 0
                grid = None
                if grids is not None and start + len(sizes) <= len(grids):
                    own = set(grids[start : start + len(sizes)])
                    if len(own) == 1 and next(iter(own))[0] * next(iter(own))[1] == n:
                        grid = next(iter(own))
                start += len(sizes)
                units.append(Unit(row, cols, f.reshape(len(sizes), n, f.shape[-1]), grid))
        return units

    # -- what the shortened prefill carries besides embeddings and positions --------------

    def shortened_positions(
        self,
        inner: Any,
        kwargs: dict[str, Any],
        input_ids: Tensor,
        attention_mask: Tensor | None,
        short: Shortened,
    ) -> dict[str, Tensor]:
        """Contiguous 1-D positions, plus ``mm_token_type_ids`` (the bidirectional blocks)
        and the PLE token-identity inputs, both taken at the kept columns."""
        out = super().shortened_positions(inner, kwargs, input_ids, attention_mask, short)
        ple = _hf.gemma4_per_layer_inputs(inner, input_ids)
        if ple is not None:
            out[_hf.PER_LAYER_KEY] = _at_kept(ple, short)
        if kwargs.get("mm_token_type_ids") is not None:
            out["mm_token_type_ids"] = _at_kept(kwargs["mm_token_type_ids"], short)
        return out


def _at_kept(x: Tensor, short: Shortened) -> Tensor:
    """(B, L, ...) per-column inputs -> (B, L', ...) at the shortened sequence's columns,
    zero on its padding."""
    index = short.index.reshape(*short.index.shape, *[1] * (x.ndim - 2))
    taken = x.gather(1, index.expand(-1, -1, *x.shape[2:]))
    valid = short.valid.reshape(*short.valid.shape, *[1] * (x.ndim - 2))
    return taken * valid.to(taken.dtype)
