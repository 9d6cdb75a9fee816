"""Model families: where each transformers VLM keeps its visual tokens.

A family turns one prefill's keyword arguments into the full input embeddings (visual
features already in their placeholder slots, as the model itself would build them) and the
list of compressible ``Unit``s. It never changes the model.

- LLaVA-OneVision / LLaVA-Video (``LlavaOnevisionForConditionalGeneration``): a video is
  its frames' tokens after the projector and the model's 2x2 pooling, (F, h*w) on an (h, w)
  grid, plus one trailing newline token that is always kept. An image is its packed anyres
  tokens without the row newlines (kept in place), as one frame; on the base crop's grid
  when there is no high-resolution part, else without a grid.
- Qwen2-VL / Qwen2.5-VL: each image or video is (t, h/m, w/m) tokens after the patch
  merger (m = spatial_merge_size), on that grid; positions are M-RoPE (3 rows).
- InternVL: every image tile in a sample (video frames enter as images) is a frame of N
  tokens after pixel shuffle and the projector, so a sample's frames compress together.
- Qwen3-VL (dense, MoE) and Qwen3.5: the Qwen2-VL layout with one block per temporal
  patch, DeepStack features and (Qwen3.5) a hybrid linear-attention LLM; see ``qwen3.py``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from . import _hf
from .base import Shortened, Unit, contiguous_positions, last_valid_column


def _runs(input_ids: Tensor, token_id: int, lengths: list[int], what: str) -> list[Tensor]:
    """Split the placeholder slots of ``token_id`` (row-major) into runs of ``lengths``.

    Returns one (2, n) tensor (row, column) per run; every run must lie in one row.
    """
    where = (input_ids == token_id).nonzero()  # (K, 2), row-major
    total = sum(lengths)
    if where.shape[0] != total:
        raise ValueError(
            f"{what}: the sequence has {where.shape[0]} placeholder tokens but the features "
            f"have {total}; pass the processor's outputs unchanged"
        )
    runs = []
    for part in torch.split(where, lengths):
        if part.shape[0] and bool((part[:, 0] != part[0, 0]).any()):
            raise ValueError(f"{what}: one image or video spans two batch rows")
        runs.append(part.T)
    return runs


def _features(out: Any) -> Any:
    return out.pooler_output if hasattr(out, "pooler_output") else out


class Family:
    """Base class: a model family's visual layout."""

    name = ""
    class_names: tuple[str, ...] = ()
    mrope = False
    #: forward keyword arguments that carry pixels or their features (dropped once used)
    visual_keys: tuple[str, ...] = ("pixel_values", "pixel_values_videos", "mm_encoder_outputs")
    #: further keyword arguments only the vision path reads
    strip_keys: tuple[str, ...] = ()

    def inner(self, model: Any) -> Any:
        return model.model

    def language_model(self, model: Any) -> Any:
        return self.inner(model).language_model

    def has_visual(self, kwargs: dict[str, Any]) -> bool:
        for key in self.visual_keys:
            value = kwargs.get(key)
            if isinstance(value, dict):  # generate() passes {} for a text-only prompt
                if any(v is not None for v in value.values()):
                    return True
            elif value is not None:
                return True
        return False

    def visual_token_ids(self, config: Any) -> tuple[int, ...]:
        ids = []
        for key in ("image_token_id", "video_token_id", "image_token_index", "video_token_index"):
            value = getattr(config, key, None)
            if value is not None and value not in ids:
                ids.append(int(value))
        return tuple(ids)

    def units(
        self, inner: Any, kwargs: dict[str, Any], input_ids: Tensor, embeds: Tensor
    ) -> list[Unit]:
        """Fill ``embeds`` (B, L, D) in place with the visual features; list the units."""
        raise NotImplementedError

    def check_method(self, method: str, stage: str) -> None:
        """Raise TypeError when this family cannot run ``method`` (of ``stage``), saying why."""

    # -- positions (1-D RoPE by default) --------------------------------------------------

    def text_row(self, position_ids: Tensor | None) -> Tensor | None:
        """(B, L) the 1-D positions the generation loop counts in, or None."""
        return position_ids if position_ids is not None and position_ids.ndim == 2 else None

    def shortened_positions(
        self,
        inner: Any,
        kwargs: dict[str, Any],
        input_ids: Tensor,
        attention_mask: Tensor | None,
        short: Shortened,
    ) -> dict[str, Tensor]:
        """Forward arguments that give the shortened prefill its positions.

        1-D RoPE: the shortened sequence is numbered contiguously (what published pre-LLM
        methods do).
        """
        return {_hf.POSITION_KEY: contiguous_positions(short.mask)}

    def shift_positions(self, position_ids: Tensor, offset: Tensor) -> Tensor:
        """A decode step's position ids moved back by ``offset`` (B, 1)."""
        return position_ids - offset if position_ids.ndim == 2 else position_ids

    def save_state(self, inner: Any) -> Any:
        """What the hooks may change on ``inner`` (restored by ``Handle.remove``)."""
        return None

    # -- what the language model needs besides the sequence -------------------------------

    #: keyword arguments of the language model that ``language_extras`` may fill (the
    #: inner forward passes them itself, so they go in through a language-model pre-hook)
    language_keys: tuple[str, ...] = ()

    def language_extras(
        self,
        inner: Any,
        units: list[Unit],
        results: list[Any],
        short: Shortened,
        shape: tuple[int, int],
    ) -> dict[str, Any]:
        """Language-model arguments that must follow the shortened sequence (Qwen3-VL's
        DeepStack features), given each unit's ``Compressed`` result; shape: (B, L) of the
        uncompressed sequence. None by default."""
        return {}

    def configure_llm_part(self, part: Any, inner: Any) -> None:
        """Adapt an in-LLM method's part (FastV) to the family's LLM; nothing by default."""

    def restore_state(self, inner: Any, saved: Any) -> None:
        pass

    # -- vision-tower statistics (VisionZip) ----------------------------------------------

    def vision_tower(self, inner: Any) -> Any:
        """The SigLIP/CLIP-style tower whose attention VisionZip reads."""
        raise TypeError(
            "visionzip is implemented for the LLaVA-OneVision family "
            "(LlavaOnevisionForConditionalGeneration); use another method for "
            f"{', '.join(self.class_names)}"
        )

    def attach_vision_stats(self, inner: Any, units: list[Unit], stats: dict[str, Tensor]) -> None:
        """Give each unit the tower statistics of its frames, on the unit's token grid.

        stats: name -> (F', P) or (F', P, C) per-patch statistics of the latest tower calls
        (a "vision" method's probe); each unit's ``extra`` gets them by the same names.
        """
        self.vision_tower(inner)


class LlavaOnevisionFamily(Family):
    name = "llava-onevision"
    class_names = ("LlavaOnevisionForConditionalGeneration",)
    strip_keys = (
        "image_sizes",
        "image_sizes_videos",
        "batch_num_images",
        "vision_aspect_ratio",
    )

    def base_grid(self, config: Any) -> tuple[int, int]:
        side = config.vision_config.image_size // config.vision_config.patch_size
        return side, side

    def video_grid(self, config: Any) -> tuple[int, int]:
        h, w = self.base_grid(config)
        return math.ceil(h / 2), math.ceil(w / 2)

    def vision_tower(self, inner: Any) -> Any:
        return inner.vision_tower

    def attach_vision_stats(self, inner: Any, units: list[Unit], stats: dict[str, Tensor]) -> None:
        """The latest F frames of each statistic are this prefill's (older records come
        from direct feature calls). They are resized from the tower's patch grid to the
        pooled grid with the model's own bilinear pooling (our choice: VisionZip selects
        before pooling, LLaVA-OneVision pools after the projector)."""
        from .attention import resize_stats

        frames = sum(u.tokens.shape[0] for u in units)
        recorded = min(v.shape[0] for v in stats.values())
        if recorded < frames:
            raise RuntimeError(
                f"the vision tower's attention was recorded for {recorded} frames, "
                f"the prefill has {frames}"
            )
        src, dst = self.base_grid(inner.config), self.video_grid(inner.config)
        start = 0
        for unit in units:
            t = unit.tokens.shape[0]
            if unit.grid != dst:
                raise ValueError(
                    "visionzip in LLaVA-OneVision supports videos (frames on the pooled grid); "
                    "use a pre-LLM method for images"
                )
            unit.extra = {
                name: resize_stats(v[v.shape[0] - frames + start :][:t], src, dst)
                for name, v in stats.items()
            }
            start += t

    def units(
        self, inner: Any, kwargs: dict[str, Any], input_ids: Tensor, embeds: Tensor
    ) -> list[Unit]:
        cfg = inner.config
        mm = dict(kwargs.get("mm_encoder_outputs") or {})
        vision_args = {
            "vision_feature_layer": kwargs.get("vision_feature_layer"),
            "vision_feature_select_strategy": kwargs.get("vision_feature_select_strategy"),
        }
        units: list[Unit] = []
        if mm.get("image") is None and kwargs.get("pixel_values") is not None:
            mm["image"] = inner.get_image_features(
                kwargs["pixel_values"],
                kwargs.get("image_sizes"),
                vision_aspect_ratio=kwargs.get("vision_aspect_ratio"),
                batch_num_images=kwargs.get("batch_num_images"),
                return_dict=True,
                **vision_args,
            )
        if mm.get("image") is not None:
            feats = [f.to(embeds.dtype) for f in _features(mm["image"])]
            newline = inner.image_newline.to(embeds.device, embeds.dtype)
            base_h, base_w = self.base_grid(cfg)
            runs = _runs(input_ids, cfg.image_token_id, [f.shape[0] for f in feats], "images")
            for f, (rows, cols) in zip(feats, runs, strict=True):
                row = int(rows[0])
                embeds[row, cols] = f
                tokens = ~(f == newline).all(dim=-1)
                n = int(tokens.sum())
                grid = (base_h, base_w) if n == base_h * base_w else None
                units.append(Unit(row, cols[tokens], f[tokens][None], grid))
        if mm.get("video") is None and kwargs.get("pixel_values_videos") is not None:
            mm["video"] = inner.get_video_features(
                kwargs["pixel_values_videos"], return_dict=True, **vision_args
            )
        if mm.get("video") is not None:
            feats = _features(mm["video"]).to(embeds.dtype)  # (V, F*h*w + 1, D)
            h, w = self.video_grid(cfg)
            per = feats.shape[1] - 1
            if per % (h * w):
                raise ValueError(
                    f"video features of {feats.shape[1]} tokens are not frames of {h}x{w} "
                    "tokens plus one newline"
                )
            runs = _runs(input_ids, cfg.video_token_id, [feats.shape[1]] * feats.shape[0], "videos")
            for f, (rows, cols) in zip(feats, runs, strict=True):
                row = int(rows[0])
                embeds[row, cols] = f
                frames = f[:-1].reshape(per // (h * w), h * w, f.shape[-1])
                units.append(Unit(row, cols[:-1], frames, (h, w)))
        return units


class QwenVLFamily(Family):
    name = "qwen2-vl"
    class_names = ("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration")
    mrope = True
    strip_keys = ("image_grid_thw", "video_grid_thw", "second_per_grid_ts")

    def units(
        self, inner: Any, kwargs: dict[str, Any], input_ids: Tensor, embeds: Tensor
    ) -> list[Unit]:
        cfg = inner.config
        m = cfg.vision_config.spatial_merge_size
        mm = dict(kwargs.get("mm_encoder_outputs") or {})
        units: list[Unit] = []
        for kind, pix_key, grid_key, token_id, get in (
            (
                "image",
                "pixel_values",
                "image_grid_thw",
                cfg.image_token_id,
                inner.get_image_features,
            ),
            (
                "video",
                "pixel_values_videos",
                "video_grid_thw",
                cfg.video_token_id,
                inner.get_video_features,
            ),
        ):
            grids = kwargs.get(grid_key)
            if mm.get(kind) is None and kwargs.get(pix_key) is not None:
                mm[kind] = get(kwargs[pix_key], grids, return_dict=True)
            if mm.get(kind) is None:
                continue
            feats, levels = self._item_features(
                mm[kind], grids, m, f"{grid_key} is needed with {kind} inputs"
            )
            runs = _runs(input_ids, token_id, [f.shape[0] for f in feats], f"{kind}s")
            if grids is not None:
                llm_grids = [(t, h // m, w // m) for t, h, w in grids.tolist()]
            else:  # generate() encoded the pixels and dropped the grids: read them off M-RoPE
                llm_grids = [self._grid_from_positions(kwargs, r) for r in runs]
            for i, (f, (rows, cols), (t, h, w)) in enumerate(
                zip(feats, runs, llm_grids, strict=True)
            ):
                if t * h * w != f.shape[0]:
                    raise ValueError(f"{kind} {i}: {f.shape[0]} features for a {t}x{h}x{w} grid")
                f = f.to(embeds.dtype)
                row = int(rows[0])
                embeds[row, cols] = f
                tokens = f.reshape(t, h * w, f.shape[-1])
                units.append(self._unit(row, cols, tokens, (h, w), [lv[i] for lv in levels]))
        return units

    def _item_features(
        self, out: Any, grids: Tensor | None, m: int, missing: str
    ) -> tuple[list[Tensor], list[list[Tensor]]]:
        """(one (tokens, D) tensor per image or video, per-level features that must follow
        the tokens (none here; Qwen3-VL's DeepStack)) of a vision output."""
        feats = _features(out)
        if isinstance(feats, Tensor):
            if grids is None:
                raise ValueError(missing)
            feats = torch.split(feats, (grids.prod(-1) // (m * m)).tolist())
        return list(feats), []

    def _unit(
        self, row: int, cols: Tensor, tokens: Tensor, grid: tuple[int, int], levels: list[Tensor]
    ) -> Unit:
        """The unit of one image or video (levels: its ``_item_features`` levels)."""
        return Unit(row, cols, tokens, grid)

    #: the family's name in the error of :meth:`_run_positions`
    _positions_label = "Qwen-VL"

    @classmethod
    def _run_positions(cls, kwargs: dict[str, Any], run: Tensor) -> Tensor:
        """(3, n) the (t, h, w) M-RoPE positions of one visual run's n tokens."""
        pos = _hf.position_ids(kwargs)
        if pos is None or pos.ndim != 3:
            raise ValueError(
                f"{cls._positions_label} inputs need image_grid_thw/video_grid_thw (or the "
                "model's 3-D position_ids) to lay out visual tokens"
            )
        rows, cols = run
        return pos[-3:, rows, cols]

    @classmethod
    def _grid_from_positions(cls, kwargs: dict[str, Any], run: Tensor) -> tuple[int, int, int]:
        """(t, h, w) token grid of one visual run from its (t, h, w) M-RoPE positions."""
        p = cls._run_positions(kwargs, run)
        cols = run[1]
        # height and width positions are contiguous ranges; temporal ones are scaled by
        # time (Qwen2.5-VL) and may repeat, so t is what is left
        h, w = (int(torch.unique(p[i]).numel()) for i in (1, 2))
        t = cols.numel() // (h * w)
        if t * h * w != cols.numel():
            raise ValueError("could not read the visual grid off the position ids")
        return t, h, w

    def rope_positions(
        self, inner: Any, kwargs: dict[str, Any], input_ids: Tensor, attention_mask: Tensor | None
    ) -> Tensor:
        """(3, B, L) the model's own M-RoPE positions of the uncompressed sequence."""
        pos = _hf.position_ids(kwargs)
        if pos is not None and pos.ndim == 3:
            return pos[1:] if pos.shape[0] == 4 else pos
        mm_types = kwargs.get("mm_token_type_ids")
        if mm_types is None:
            raise ValueError(
                "Qwen-VL models need mm_token_type_ids (0 text, 1 image, 2 video) with visual "
                "inputs; the processor returns them alongside input_ids"
            )
        extra = {}
        if kwargs.get("second_per_grid_ts") is not None:
            extra["second_per_grid_ts"] = kwargs["second_per_grid_ts"]
        positions, _ = inner.get_rope_index(
            input_ids,
            mm_token_type_ids=mm_types,
            image_grid_thw=kwargs.get("image_grid_thw"),
            video_grid_thw=kwargs.get("video_grid_thw"),
            attention_mask=attention_mask,
            **extra,
        )
        return positions

    def text_row(self, position_ids: Tensor | None) -> Tensor | None:
        """generate() passes (4, B, L) ids whose first row is the 1-D text position."""
        if position_ids is not None and position_ids.ndim == 3:
            return position_ids[0] if position_ids.shape[0] == 4 else None
        return super().text_row(position_ids)

    def shortened_positions(
        self,
        inner: Any,
        kwargs: dict[str, Any],
        input_ids: Tensor,
        attention_mask: Tensor | None,
        short: Shortened,
    ) -> dict[str, Tensor]:
        """M-RoPE: every kept or merged token keeps its anchor's (t, h, w) position and the
        text keeps its uncompressed index; the text row is numbered contiguously. Sets the
        model's ``rope_deltas`` so decode steps continue after the highest position, and
        shortens ``mm_token_type_ids``."""
        rope = self.rope_positions(inner, kwargs, input_ids, attention_mask)
        rope = rope.gather(2, short.index[None].expand(rope.shape[0], -1, -1))
        rope = rope.masked_fill(~short.valid[None], 0)
        out = {_hf.POSITION_KEY: torch.cat((contiguous_positions(short.mask)[None], rope), 0)}
        if hasattr(inner, "rope_deltas"):
            # decode steps go on after the last prompt token (generate's rule: its last
            # column + 1; a text token has one position in all three rows)
            kept = short.mask.sum(dim=1)
            last = last_valid_column(short.mask)
            top = rope.gather(2, last[None, :, None].expand(rope.shape[0], -1, 1)).amax(dim=(0, 2))
            inner.rope_deltas = (top + 1 - kept)[:, None]
        if kwargs.get("mm_token_type_ids") is not None:
            mmt = kwargs["mm_token_type_ids"].gather(1, short.index)
            out["mm_token_type_ids"] = mmt.masked_fill(~short.valid, 0)
        return out

    def shift_positions(self, position_ids: Tensor, offset: Tensor) -> Tensor:
        """Only the text row of (4, B, q) ids moves; the (t, h, w) rows stay."""
        if position_ids.ndim == 3 and position_ids.shape[0] == 4:
            position_ids = position_ids.clone()
            position_ids[0] = position_ids[0] - offset
            return position_ids
        return super().shift_positions(position_ids, offset)

    def save_state(self, inner: Any) -> Any:
        return getattr(inner, "rope_deltas", None)

    def restore_state(self, inner: Any, saved: Any) -> None:
        if hasattr(inner, "rope_deltas"):
            inner.rope_deltas = saved


class InternVLFamily(Family):
    name = "internvl"
    class_names = ("InternVLForConditionalGeneration",)
    visual_keys = ("pixel_values", "mm_encoder_outputs")

    def units(
        self, inner: Any, kwargs: dict[str, Any], input_ids: Tensor, embeds: Tensor
    ) -> list[Unit]:
        cfg = inner.config
        mm = dict(kwargs.get("mm_encoder_outputs") or {})
        if mm.get("image") is None:
            mm["image"] = inner.get_image_features(
                pixel_values=kwargs["pixel_values"],
                vision_feature_layer=kwargs.get("vision_feature_layer"),
                vision_feature_select_strategy=kwargs.get("vision_feature_select_strategy"),
                return_dict=True,
            )
        feats = _features(mm["image"]).to(embeds.dtype)  # (tiles, N, D)
        n = feats.shape[1]
        per_row = (input_ids == cfg.image_token_id).sum(dim=1)
        if bool((per_row % n).any()):
            raise ValueError(f"image placeholders per sample are not multiples of {n} tokens")
        tiles = (per_row // n).tolist()
        runs = _runs(input_ids, cfg.image_token_id, [t * n for t in tiles], "images")
        side = math.isqrt(n)
        grid = (side, side) if side * side == n else None
        units = []
        start = 0
        for row, (count, (_, cols)) in enumerate(zip(tiles, runs, strict=True)):
            if count == 0:
                continue
            f = feats[start : start + count]
            start += count
            embeds[row, cols] = f.reshape(count * n, -1)
            units.append(Unit(row, cols, f, grid))
        return units


class PVCFamily(Family):
    """vistoken's own PVC (:class:`vistoken.pvc.PVCForConditionalGeneration`): each clip (a
    video, or an image as its static video of ``image_repeats`` frames) is one unit of
    (frames, N) progressive-encoder tokens on its sqrt(N) x sqrt(N) grid, so a training-free
    method compresses on top of PVC's own compression (or of the uncompressed control's
    tokens, as issue 11's comparison does)."""

    name = "pvc"
    class_names = ("PVCForConditionalGeneration",)
    visual_keys = ("pixel_values",)
    strip_keys = ("frames_per_clip",)

    def inner(self, model: Any) -> Any:
        return model

    def language_model(self, model: Any) -> Any:
        return model.language_model.get_decoder()

    def units(
        self, inner: Any, kwargs: dict[str, Any], input_ids: Tensor, embeds: Tensor
    ) -> list[Unit]:
        clips = kwargs.get("frames_per_clip")
        if clips is None:
            raise ValueError(
                "pixel_values needs frames_per_clip (the frame count of each clip in prompt "
                "order); pass the PVCProcessor's outputs unchanged"
            )
        lengths = torch.as_tensor(clips, dtype=torch.long).flatten().tolist()
        feats = inner.get_clip_features(kwargs["pixel_values"], lengths).to(embeds.dtype)
        n = inner.encoder.frame_tokens
        feats = feats.reshape(-1, n, feats.shape[-1])  # (frames, N, D) in prompt order
        runs = _runs(input_ids, inner.config.image_token_id, [t * n for t in lengths], "clips")
        side = math.isqrt(n)
        grid = (side, side) if side * side == n else None
        units, start = [], 0
        for t, run in zip(lengths, runs, strict=True):
            f = feats[start : start + t]
            start += t
            row, cols = int(run[0, 0]), run[1]
            embeds[row, cols] = f.reshape(t * n, -1)
            units.append(Unit(row, cols, f, grid))
        return units


# Qwen3-VL and Qwen3.5 build on QwenVLFamily in their own module (imported after it; the
# package always imports this module first)
from .qwen3 import Qwen3_5Family, Qwen3VLFamily  # noqa: E402


def _gemma4() -> Family:
    from .gemma4 import Gemma4Family  # its own module; it imports this one

    return Gemma4Family()


FAMILIES: tuple[Family, ...] = (
    LlavaOnevisionFamily(),
    QwenVLFamily(),
    InternVLFamily(),
    Qwen3VLFamily(),
    Qwen3_5Family(),
    PVCFamily(),
    _gemma4(),
)


def family_of(model: Any) -> Family:
    """The family of a transformers model instance, or a TypeError naming the supported."""
    names = {cls.__name__ for cls in type(model).__mro__}
    for fam in FAMILIES:
        if names.intersection(fam.class_names):
            return fam
    supported = ", ".join(name for fam in FAMILIES for name in fam.class_names)
    raise TypeError(
        f"vt.apply does not support {type(model).__name__}; supported model classes: {supported}"
    )
